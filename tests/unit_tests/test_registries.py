"""Variants and providers are registries: a toy of each is added by one module's worth of code.

Each toy below is defined here, in this one test module, and registered with one line; the
config, the budget, the graph, the run context, the CLI's help, model building, retries,
timeouts and accounting all pick it up without any other file changing.
"""

import sys
import types

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa import MoAChatModel, MoAConfig, MoAContext, create_moa_graph
from langgraph_moa.errors import (
    LimitExceededError,
    MissingAPIKeyError,
    MoAConfigError,
    ModelResolutionError,
)
from langgraph_moa.providers._models import build_model
from langgraph_moa.providers._retry import is_retryable
from langgraph_moa.providers._table import (
    Provider,
    is_sdk_timeout,
    provider_of,
    providers,
    register_provider,
    unregister_provider,
)
from langgraph_moa.run._accounting import answering_model, finish_reason
from langgraph_moa.variants import Plan, register, unregister, variant_names, variants_help
from tests.helpers import QUESTION, fork_while_held


@pytest.fixture(autouse=True)
def _registries_restored():
    """The registries are process-wide: whatever a test here leaves in them, even failing, goes."""
    from langgraph_moa.providers import _table
    from langgraph_moa.variants import _REGISTRY

    variants, table = dict(_REGISTRY), _table.current
    yield
    _REGISTRY.clear()
    _REGISTRY.update(variants)
    # The rows as they were, under a new version: the old number back let the next test that
    # registers a row reuse a graph cached with this test's row (`table_version` keys them).
    _table._change(lambda rows: (rows.clear(), rows.update(table.rows)))


# --- a toy variant: one class, one register line ---------------------------------------------


class DeepMoA(Plan):
    """Layered MoA that defaults to four layers and refuses fewer than three."""

    name = "deep-moa"
    description = "layered MoA, four layers unless told otherwise"
    default_layers = 4

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if cfg.layers < 3:
            raise ValueError("variant 'deep-moa' needs layers >= 3")


@pytest.fixture
def deep_moa():
    register(DeepMoA)
    yield DeepMoA
    unregister(DeepMoA.name)


def test_a_registered_variant_is_known_everywhere(deep_moa, fake, log):
    assert "deep-moa" in variant_names()
    assert "deep-moa: layered MoA" in variants_help()
    config = MoAConfig(variant="deep-moa", proposers=[fake("A"), fake("B")], aggregator=fake("C"))
    assert config.layers == 4 and config.rules is DeepMoA
    assert config.calls_per_run() == 3 * 2 + 1
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.calls) == config.calls_per_run()
    assert [c["layer"] for c in out["calls"]] == [1, 1, 2, 2, 3, 3, 4]
    # The run context and its JSON schema accept it too.
    assert MoAContext(variant="deep-moa").variant == "deep-moa"
    assert "deep-moa" in MoAContext.model_json_schema()["properties"]["variant"]["anyOf"][0]["enum"]


def test_a_registered_variants_own_rules_are_applied(deep_moa, fake):
    with pytest.raises(MoAConfigError, match="needs layers >= 3"):
        MoAConfig(variant="deep-moa", proposers=[fake("A")], aggregator=fake("C"), layers=2)
    with pytest.raises(LimitExceededError):  # the budget counts with the variant's own rule
        MoAConfig(
            variant="deep-moa",
            proposers=[fake("A")],
            aggregator=fake("C"),
            budget={"max_calls": 3},
        )


def test_an_unregistered_variant_is_refused_with_the_choices(fake):
    with pytest.raises(MoAConfigError, match="unknown variant 'zz-top'; choose one of: 'moa'"):
        MoAConfig(variant="zz-top", proposers=[fake("A")], aggregator=fake("C"))
    # A name close to one (a typo) is named with the one meant instead.
    with pytest.raises(
        MoAConfigError, match=r"unknown variant 'deep-moa'; did you mean 'self-moa'\?"
    ):
        MoAConfig(variant="deep-moa", proposers=[fake("A")], aggregator=fake("C"))


def test_registering_needs_a_name_and_a_description():
    class Nameless(Plan):
        pass

    with pytest.raises(ValueError, match="needs a `name`"):
        register(Nameless)


def test_registering_a_taken_name_is_refused_naming_the_fix(deep_moa):
    class Other(Plan):
        name = "deep-moa"
        description = "another"

    with pytest.raises(ValueError, match=r"already registered .*DeepMoA.*choose another name"):
        register(Other)
    register(DeepMoA)  # the same class again is no conflict
    shadow = type("Shadow", (Plan,), {"name": "moa", "description": "another"})
    with pytest.raises(
        ValueError,
        match=r"\(by langgraph_moa\.variants\.layered\.LayeredMoA\): choose another name$",
    ):
        register(shadow)  # a shipped one cannot be unregistered, so that is not offered


@pytest.mark.parametrize("name", ["my variant", "Deep", "deep_moa", "a:b", "-x", "x\n", "é"])
def test_a_variant_name_outside_lower_case_words_and_hyphens_is_refused(name):
    bad = type("Bad", (Plan,), {"name": name, "description": "a toy"})
    with pytest.raises(ValueError, match=r"variant name .* lower-case letters, digits and"):
        register(bad)
    assert name not in variant_names()


def test_a_variant_name_starting_with_a_digit_is_refused_saying_so():
    # "2moa" is letters, digits and hyphens: the message must name the rule it breaks.
    bad = type("Bad", (Plan,), {"name": "2moa", "description": "a toy"})
    with pytest.raises(ValueError, match=r"start with a letter"):
        register(bad)
    assert "2moa" not in variant_names()


@pytest.mark.parametrize("name", ["moa-2", "deep-moa", "x"])
def test_a_variant_name_of_lower_case_words_digits_and_hyphens_is_accepted(name):
    register(type("Fine", (Plan,), {"name": name, "description": "a toy"}))
    assert name in variant_names()


@pytest.mark.parametrize(
    "thing",
    [42, lambda cfg: None, type("Loose", (), {"name": "loose", "description": "no Plan"})],
    ids=["number", "function", "class-not-a-plan"],
)
def test_registering_anything_but_a_plan_subclass_is_refused_at_once(thing):
    with pytest.raises(TypeError, match=r"register\(\) takes a `Plan` subclass"):
        register(thing)
    assert "loose" not in variant_names()


def _toy_variant(name: str, derived: dict) -> type[Plan]:
    """A variant whose `derive` returns `derived` as its defaults."""
    return type(
        "Toy",
        (Plan,),
        {"name": name, "description": "a toy", "derive": classmethod(lambda cls, cfg: derived)},
    )


def test_a_variants_derived_default_is_held_to_the_fields_own_bounds(fake):
    # layers has ge=2: a variant may not derive what a user may not write.
    toy = register(_toy_variant("one-layer", {"layers": 1}))
    try:
        with pytest.raises(
            MoAConfigError, match=r"variant 'one-layer' derived layers=1, .*greater than or equal"
        ):
            MoAConfig(variant="one-layer", proposers=[fake("A")], aggregator=fake("C"))
    finally:
        unregister(toy.name)


def test_a_variant_deriving_no_config_field_is_named_with_the_field(fake):
    toy = register(_toy_variant("typo-field", {"layer": 3}))
    try:
        with pytest.raises(
            MoAConfigError, match=r"variant 'typo-field' derived 'layer', which is no MoAConfig"
        ):
            MoAConfig(variant="typo-field", proposers=[fake("A")], aggregator=fake("C"))
    finally:
        unregister(toy.name)


def test_a_shipped_variant_cannot_be_unregistered():
    # Presets, the default config and moa serve's clients name it.
    with pytest.raises(ValueError, match=r"variant 'moa' ships with the package"):
        unregister("moa")
    assert "moa" in variant_names()


# --- a toy provider: one row -----------------------------------------------------------------


class _ToyStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


@pytest.fixture
def toy_provider(monkeypatch):
    sdk = types.ModuleType("toy_sdk")
    sdk.APITimeoutError = type("APITimeoutError", (Exception,), {})
    sdk.APIConnectionError = type("APIConnectionError", (Exception,), {})
    sdk.APIStatusError = _ToyStatusError
    monkeypatch.setitem(sys.modules, "toy_sdk", sdk)
    row = register_provider(
        Provider(
            "ollama",  # a provider init_chat_model knows and the shipped table does not
            key_env="TOY_OLLAMA_KEY",
            client_retries="max_retries",
            sdk="toy_sdk",
            finish_reason_key="done_reason",
            model_name_key="served_by",
        )
    )
    yield sdk
    unregister_provider(row.prefix)


def test_a_registered_provider_is_read_by_building_retries_timeouts_and_accounting(toy_provider):
    assert provider_of("ollama").key_env == "TOY_OLLAMA_KEY"
    # Model building: its key is checked before the integration is even imported.
    with pytest.raises(MissingAPIKeyError, match="TOY_OLLAMA_KEY"):
        build_model("ollama:llama3", {})
    # Retries and timeouts: its SDK's errors are classified by the row.
    assert is_sdk_timeout(toy_provider.APITimeoutError())
    assert is_retryable(toy_provider.APIConnectionError())
    assert is_retryable(_ToyStatusError(503)) and is_retryable(_ToyStatusError(429))
    assert not is_retryable(_ToyStatusError(401))
    # Accounting: its finish reason and answering model are found under its own keys.
    reply = AIMessage("hi", response_metadata={"done_reason": "length", "served_by": "llama3:8b"})
    assert finish_reason(reply) == "length"
    assert answering_model(reply, "ollama:llama3") == "llama3:8b"


def test_accounting_reads_the_keys_of_the_table_as_it_is_now():
    # The keys are remembered between calls; registering or removing a row must renew them.
    reply = AIMessage("hi", response_metadata={"done_reason": "stop", "served_by": "toy-1"})
    assert finish_reason(reply) is None and answering_model(reply, "toy") == "toy"
    row = register_provider(
        Provider("ollama", finish_reason_key="done_reason", model_name_key="served_by")
    )
    try:
        assert finish_reason(reply) == "stop" and answering_model(reply, "toy") == "toy-1"
    finally:
        unregister_provider(row.prefix)
    assert finish_reason(reply) is None and answering_model(reply, "toy") == "toy"


@pytest.mark.parametrize("prefix", ["myprov", "my prov", "ollama:x", ""])
def test_a_prefix_init_chat_model_cannot_build_is_refused_when_registered(prefix):
    # A row for it would never be read: no "myprov:<model>" spec can be built.
    with pytest.raises(ValueError, match=r"init_chat_model .* BaseChatModel instance"):
        register_provider(Provider(prefix, key_env="MYPROV_KEY"))
    assert prefix not in [row.prefix for row in providers()]


def test_every_shipped_row_is_a_provider_init_chat_model_builds():
    from langgraph_moa.providers._models import known_providers

    assert {row.prefix for row in providers()} <= set(known_providers())


def test_registering_anything_but_a_provider_row_is_refused():
    with pytest.raises(TypeError, match=r"register_provider\(\) takes a `Provider` row"):
        register_provider("ollama")  # type: ignore[arg-type]
    assert "ollama" not in [row.prefix for row in providers()]


def test_the_provider_registry_is_public():
    # Extending it must not need a private module.
    import langgraph_moa.providers as public

    assert public.register_provider is register_provider and public.Provider is Provider
    assert public.unregister_provider is unregister_provider and public.providers is providers
    assert {"Provider", "register_provider", "unregister_provider"} <= set(public.__all__)


def test_without_its_row_a_provider_gets_no_key_check():
    assert provider_of("ollama") == Provider("ollama")
    # No key is asked for: building goes on to the integration (not installed here).
    with pytest.raises(ModelResolutionError, match="langchain-ollama") as err:
        build_model("ollama:llama3", {})
    assert not isinstance(err.value, MissingAPIKeyError)


@pytest.mark.parametrize("row", [r for r in providers() if r.key_env], ids=lambda r: r.prefix)
def test_every_keyed_provider_is_refused_without_its_key(row):
    with pytest.raises(MissingAPIKeyError, match=row.key_env):
        build_model(f"{row.prefix}:some-model", {})


@pytest.mark.parametrize("prefix", ["openai", "together"])
def test_providers_on_the_shared_client_have_no_client_retries(monkeypatch, prefix):
    row = provider_of(prefix)
    monkeypatch.setenv(row.key_env, "test-key")
    model = build_model(f"{prefix}:some-model", {})
    assert getattr(model, row.client_retries) == 0
    assert row.own_timeout and row.shares_http_client


def test_the_readme_variant_table_is_the_registry():
    from pathlib import Path

    from langgraph_moa.variants import variants_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert variants_table() in readme, "regenerate the README's table from variants_table()"


def test_a_model_compiled_before_a_provider_was_replaced_is_not_run_with_the_old_row():
    # The shared graphs were keyed by config, name, digests and instances, not by the
    # provider table: a graph compiled before `register_provider` replaced a row kept the
    # models it had built by the old row (its key check, its client retries) for ever.
    before = MoAChatModel(config="moa-lite", max_tokens=71).graph
    assert MoAChatModel(config="moa-lite", max_tokens=71).graph is before  # shared until then
    register_provider(Provider("ollama", key_env="TOY_OLLAMA_KEY"))
    after = MoAChatModel(config="moa-lite", max_tokens=71).graph
    assert after is not before
    unregister_provider("ollama")
    assert MoAChatModel(config="moa-lite", max_tokens=71).graph not in (before, after)


class _ReadPausedIn(Provider):
    """A row whose `sdk` and `finish_reason_key`, read in one thread, wait there for `go`."""

    def __getattribute__(self, name):
        pause = object.__getattribute__(self, "__dict__").get("pause")
        if pause is not None and name in ("sdk", "finish_reason_key"):
            pause()
        return super().__getattribute__(name)


def test_a_provider_registered_while_a_run_reads_the_table_neither_breaks_nor_is_missed():
    # A run reads the table on every call (its finish-reason keys) and on every error (its
    # SDKs). A row registered in another thread while it read them failed that run with
    # "dictionary changed size during iteration", and keys read from the table as it was
    # were kept after the row came in: its finish reason went unread from then on.
    import threading

    reader, reached, go, failed = None, threading.Event(), threading.Event(), []
    row = _ReadPausedIn("cohere", sdk="toy_sdk", finish_reason_key="cohere_reason")
    register_provider(row)

    def pause():
        if threading.current_thread() is reader and not reached.is_set():
            reached.set()
            assert go.wait(30)

    object.__setattr__(row, "pause", pause)

    def read():
        try:
            finish_reason(AIMessage("hi"))
            is_sdk_timeout(TimeoutError())
        except Exception as exc:
            failed.append(exc)
        finally:
            reached.set()  # also when it read the table without reading a row

    reader = threading.Thread(target=read)
    reader.start()
    assert reached.wait(30)
    register_provider(Provider("ollama", finish_reason_key="done_reason"))
    go.set()
    reader.join(30)
    assert failed == []
    reply = AIMessage("hi", response_metadata={"done_reason": "length"})
    assert finish_reason(reply) == "length"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="forks")
def test_a_forked_child_registers_a_provider_while_a_parent_thread_was_registering_one():
    # A process forked (a gunicorn or multiprocessing worker) while another of its threads
    # was in register_provider: the child inherited the table's write lock taken, with no
    # thread of its own to release it, and its first register_provider waited forever.
    from langgraph_moa.providers import _table

    def child() -> bool:
        register_provider(Provider("ollama", finish_reason_key="done_reason"))
        return provider_of("ollama").finish_reason_key == "done_reason"

    assert fork_while_held(_table._writing, child) == 0


class _HashPausedIn(str):
    """A variant name whose hashes after the first, in one thread, wait there for `go`."""

    def __hash__(self):
        pause = getattr(self, "pause", None)
        if pause is not None:
            pause()
        return str.__hash__(self)


def test_two_variants_registered_at_once_under_one_name_are_not_both_taken():
    # register() looked the name up, then stored the class: a second class of that name
    # registered in another thread between the two was told it was registered, and then
    # silently replaced, so the configs that named it ran the other one.
    import threading

    first, reached, go, outcomes = None, threading.Event(), threading.Event(), {}
    name = _HashPausedIn("toy-twice")
    hashes = []

    def pause():
        if threading.current_thread() is first:
            hashes.append(1)
            if len(hashes) > 1 and not reached.is_set():  # past its lookup: at the store
                reached.set()
                assert go.wait(30)

    name.pause = pause
    classes = [type(f"Toy{i}", (Plan,), {"name": name, "description": "a toy"}) for i in (1, 2)]

    def registers(variant):
        try:
            register(variant)
            outcomes[variant] = "registered"
        except ValueError as exc:
            outcomes[variant] = str(exc)
        finally:
            reached.set()  # also when it stored the class without a second lookup

    first = threading.Thread(target=registers, args=(classes[0],))
    first.start()
    assert reached.wait(30)
    second = threading.Thread(target=registers, args=(classes[1],))
    second.start()
    second.join(1)  # done at once, unless it waits for the first to finish
    go.set()
    first.join(30)
    second.join(30)
    from langgraph_moa.variants import variant_of

    taken = [v for v in classes if outcomes[v] == "registered"]
    assert len(taken) == 1, outcomes
    assert variant_of("toy-twice") is taken[0]
    refused = next(v for v in classes if v is not taken[0])
    assert "already registered" in outcomes[refused]


@pytest.mark.parametrize("listing", ["variants_help", "variants_table"])
def test_the_variants_listed_while_one_is_registered_neither_fail_nor_miss_it(listing):
    # The CLI's help and the README's table went through the registry one variant at a
    # time: a variant registered in another thread meanwhile failed the listing with
    # "dictionary changed size during iteration".
    import threading

    from langgraph_moa import variants

    lister, reached, go, failed = None, threading.Event(), threading.Event(), []

    class ReadSlowly(type(Plan)):
        def __getattribute__(cls, name):
            if name == "description" and threading.current_thread() is lister:
                if not reached.is_set():
                    reached.set()
                    assert go.wait(30)
            return super().__getattribute__(name)

    register(ReadSlowly("SlowToy", (Plan,), {"name": "slow-toy", "description": "a toy"}))

    def lists():
        try:
            getattr(variants, listing)()
        except Exception as exc:
            failed.append(exc)
        finally:
            reached.set()

    lister = threading.Thread(target=lists)
    lister.start()
    assert reached.wait(30)
    register(type("LateToy", (Plan,), {"name": "late-toy", "description": "came late"}))
    go.set()
    lister.join(30)
    assert failed == []
    assert "came late" in getattr(variants, listing)()
