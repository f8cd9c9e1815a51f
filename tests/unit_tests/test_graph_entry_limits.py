"""The LangGraph server entry points (graphs/*.py) hold every run to `moa serve`'s limits."""

import importlib.util
from pathlib import Path

import pytest

from langgraph_moa import MoAConfig
from langgraph_moa.config import RequestLimits
from langgraph_moa.config.context import ContextConfigCache, MoAContext
from langgraph_moa.errors import LimitExceededError, MoAConfigError

GRAPHS = Path(__file__).resolve().parents[2] / "graphs"


def entry(name):
    spec = importlib.util.spec_from_file_location(f"entry_{name}", GRAPHS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.graph


@pytest.mark.parametrize("name", ["moa", "self_moa", "self_moa_seq"])
@pytest.mark.parametrize(
    ("context", "flag"),
    [
        (
            {
                "variant": "moa",
                "proposers": ["local:qwen2.5-coder-0.5b"]
                * 200,  # under the config's own cap of 256
                "samples": 256,
                "layers": 16,
                "max_tokens": 10**9,
            },
            "--max-proposers",
        ),
        ({"samples": 256}, "--max-samples"),
        ({"layers": 16, "variant": "moa"}, "--max-layers"),
        ({"max_tokens": 10**9}, "--max-answer-tokens"),
        ({"aggregator_max_tokens": 10**9}, "--max-answer-tokens"),
    ],
)
def test_a_context_past_the_limits_is_refused_before_any_call(name, context, flag):
    graph = entry(name)
    with pytest.raises(LimitExceededError, match=flag):
        graph.invoke({"messages": [("user", "q")]}, context=context)


def test_the_entry_points_carry_the_token_budget_of_moa_serve():
    graph = entry("moa")
    config = graph.nodes["prepare"].bound.func.__self__.configs.base  # the compiled base
    assert config.budget.max_tokens == RequestLimits().max_run_tokens


def test_contexts_within_the_limits_pass_and_a_preset_keeps_the_budget():
    base = MoAConfig.from_preset("local-moa")
    cache = ContextConfigCache(base, limits=RequestLimits())
    assert cache.get(MoAContext(layers=2)).layers == 2
    assert cache.get(MoAContext(preset="moa-lite")).budget.max_tokens == 1_000_000
    with pytest.raises(LimitExceededError, match="--max-layers"):
        cache.get(MoAContext(layers=16))
    with pytest.raises(LimitExceededError, match="--max-calls"):
        cache.get(MoAContext(layers=4, samples=8))


@pytest.mark.parametrize("name", ["self_moa", "self_moa_seq"])
def test_a_self_moa_entry_point_runs_the_model_its_context_names(name):
    """Self-MoA is one model: a context that names another proposer has it aggregate too,
    instead of refusing the run because the preset's aggregator is still the old model."""
    configs = entry(name).nodes["prepare"].bound.func.__self__.configs
    config = configs.get({"proposers": ["local:qwen2.5-coder-0.5b"], "samples": 2})
    assert config.proposers[0].model == "local:qwen2.5-coder-0.5b"
    assert config.aggregator is not None
    assert config.aggregator.model == "local:qwen2.5-coder-0.5b"
    assert config.aggregator.temperature == configs.base.aggregator.temperature
    with pytest.raises(MoAConfigError, match="aggregates with the proposer's own model"):
        configs.get(
            {"proposers": ["local:qwen2.5-coder-0.5b"], "aggregator": "local:qwen2.5-coder-1.5b"}
        )
    with pytest.raises(MoAConfigError, match="proposers"):
        configs.get({"proposers": []})


@pytest.mark.parametrize(
    "context",
    [
        {"proposers": ["m@http://169.254.169.254/latest"]},
        {"aggregator": "m@http://10.0.0.7:8080/v1"},
        {"proposers": ["local:qwen2.5-coder-0.5b", "m@http://10.0.0.7:8080/v1?key=x"]},
    ],
)
def test_an_entry_point_refuses_an_endpoint_url_its_operator_did_not_configure(context):
    """A LangGraph server client chooses its run's context: naming `model@url` made the server
    post the conversation to any host the client chose (server-side request forgery, port
    scans of the server's network), where `moa serve` refuses it unless the operator passed
    --allow-client-endpoints. The entry points hold their runs to `moa serve`'s defaults."""
    from langgraph_moa import ModelNotAllowedError

    configs = entry("moa").nodes["prepare"].bound.func.__self__.configs
    with pytest.raises(ModelNotAllowedError) as refused:
        configs.get(context)
    message = str(refused.value)
    assert "allow_client_endpoints=True" in message and "\n" not in message
    assert "'proposers" in message or "'aggregator'" in message
    assert "key=x" not in message  # a URL's key is never repeated


def test_a_graph_with_limits_calls_no_endpoint_its_config_does_not_name(fake, log):
    """The refusal comes before the first call, the run's own models included; the config's
    own endpoints stay callable by their label (a keyed one with its key), and the operator
    can let callers name endpoints of their own."""
    from langgraph_moa import ModelNotAllowedError, create_moa_graph

    own = "m@http://127.0.0.1:9/v1"
    config = MoAConfig(proposers=[fake("A"), own], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, limits=RequestLimits())
    with pytest.raises(ModelNotAllowedError, match="'proposers'"):
        graph.invoke({"messages": [("user", "q")]}, context={"proposers": ["x@http://evil/v1"]})
    assert log.calls == []
    configs = graph.nodes["prepare"].bound.func.__self__.configs
    assert configs.get({"aggregator": own}).aggregator.model == own
    open_graph = create_moa_graph(config, limits=RequestLimits(allow_client_endpoints=True))
    chosen = open_graph.nodes["prepare"].bound.func.__self__.configs.get(
        {"proposers": ["x@http://evil/v1"]}
    )
    assert chosen.proposers[0].model == "x@http://evil/v1"


def test_a_configured_endpoint_named_with_its_host_in_other_letters_is_not_refused(fake):
    """A host name is case-insensitive, but an endpoint's label kept the host as written:
    a caller naming the operator's own ``m@http://Models.Lan:9/v1`` as
    ``m@http://models.lan:9/v1`` was refused as an endpoint the operator did not configure.
    An unconfigured host stays refused however it is spelt."""
    from langgraph_moa import ModelNotAllowedError, create_moa_graph
    from langgraph_moa.config._limits import endpoint_label

    config = MoAConfig(proposers=["m@http://Models.Lan:9/v1"], aggregator=fake("AGG"), layers=2)
    configs = create_moa_graph(config, limits=RequestLimits()).nodes["prepare"].bound.func
    configs = configs.__self__.configs
    chosen = configs.get({"aggregator": "m@HTTP://models.LAN:9/v1/"})
    assert endpoint_label(chosen.aggregator.model) == "m@http://models.lan:9/v1"
    with pytest.raises(ModelNotAllowedError):
        configs.get({"aggregator": "m@http://Models.Lan:10/v1"})


@pytest.fixture
def plugin_variant():
    """A variant some module the server's process imported registered, unknown to the operator."""
    from langgraph_moa.variants import Plan, register, unregister

    toy = type("Toy", (Plan,), {"name": "plugin-deep", "description": "a toy", "default_layers": 3})
    register(toy)
    yield toy.name
    unregister(toy.name)


def test_an_entry_point_runs_no_variant_its_operator_did_not_choose(plugin_variant, fake, log):
    """A LangGraph server client picked any registered variant in its run context, where
    `moa serve` lets a client pick only a shipped variant or a served system's own: a variant
    registered by an imported module ran code the operator never chose."""
    from langgraph_moa import create_moa_graph

    configs = entry("moa").nodes["prepare"].bound.func.__self__.configs
    with pytest.raises(MoAConfigError, match=r"^The run context's 'variant' 'plugin-deep' is no"):
        configs.get({"variant": plugin_variant})
    with pytest.raises(MoAConfigError, match="not served by this graph") as refused:
        configs.get(MoAContext(variant=plugin_variant))
    assert "'self-moa'" in str(refused.value) and "\n" not in str(refused.value)
    assert configs.get({"variant": "ranker"}).variant == "ranker"  # shipped: a caller's
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"))
    graph = create_moa_graph(config, limits=RequestLimits())
    with pytest.raises(MoAConfigError, match="not served by this graph"):
        graph.invoke({"messages": [("user", "q")]}, context={"variant": plugin_variant})
    assert log.calls == []
    own = create_moa_graph(config.with_overrides(variant=plugin_variant), limits=RequestLimits())
    chosen = own.nodes["prepare"].bound.func.__self__.configs.get({"variant": plugin_variant})
    assert chosen.variant == plugin_variant  # the operator's own variant is served
    free = create_moa_graph(config)  # no limits: a Python caller's own graph picks any
    assert (
        free.nodes["prepare"].bound.func.__self__.configs.get({"variant": plugin_variant}).variant
        == plugin_variant
    )


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("plugin-dee", "choose one of 'moa'"),
        ("zz-top", "choose one of"),
        ("self-mao", "'self-moa'?"),
    ],
)
def test_an_unknown_variant_is_answered_with_the_served_choices_only(plugin_variant, name, told):
    """A typo must not name (nor tell apart) a registered variant the operator did not serve:
    the context's own check named every registered one."""
    configs = entry("moa").nodes["prepare"].bound.func.__self__.configs
    with pytest.raises(MoAConfigError) as refused:
        configs.get({"variant": name})
    message = str(refused.value)
    assert f"'variant' {name!r} is not served by this graph" in message and told in message
    assert plugin_variant not in message and "\n" not in message


def test_the_variant_check_adds_no_work_to_a_run_that_names_no_variant(fake):
    """The plan is looked up for every model call (`MoANodes.plan`); with limits it checked
    the context's variant each time, building the served choices even for a run that names
    none (seven more function calls per model call in every entry point's run)."""
    from tests.unit_tests.test_resume import function_calls

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    free, held = ContextConfigCache(config), ContextConfigCache(config, limits=RequestLimits())

    def extra(context):
        free.get(context), held.get(context)  # cached, as for every call after a run's first
        return function_calls(lambda: held.get(context)) - function_calls(lambda: free.get(context))

    assert extra(None) <= 0 and extra({}) <= 0
    # `_variant_asked` and its type check; the dict (the server's) is tried first: on pydantic
    # 2.7 (the floor) `isinstance(d, MoAContext)` costs three Python-level calls more.
    assert extra({"layers": 2}) <= 3 and extra(MoAContext(layers=2)) <= 3


def test_a_context_naming_another_preset_and_the_configs_keyed_endpoint_is_refused(
    fake, log, monkeypatch
):
    """`moa serve` refuses a keyed endpoint of another preset; a graph took it: the label,
    resolved against the context's preset (which does not configure it), called the endpoint
    without its key, and the caller read the upstream's 401. Now refused before any call, in
    one sentence that names neither the key nor its variable."""
    from langgraph_moa import create_moa_graph
    from langgraph_moa.providers._models import OpenAIEndpoint

    monkeypatch.setenv("EXAMPLE_KEY", "sk-secret-value")
    keyed = OpenAIEndpoint(
        base_url="https://api.example/v1", model="big", api_key_env="EXAMPLE_KEY"
    )
    config = MoAConfig(proposers=[{"model": keyed}], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, limits=RequestLimits())
    label = "big@https://api.example/v1"
    for context in (
        {"preset": "moa-lite", "aggregator": label},
        {"preset": "moa-lite", "proposers": [label]},
    ):
        with pytest.raises(MoAConfigError, match="preset") as refused:
            graph.invoke({"messages": [("user", "q")]}, context=context)
        message = str(refused.value)
        assert label in message and "\n" not in message
        assert "EXAMPLE_KEY" not in message and "sk-secret" not in message
    assert log.calls == []
    own = graph.nodes["prepare"].bound.func.__self__.configs.get({"aggregator": label})
    assert own.aggregator.model.api_key_env == "EXAMPLE_KEY"  # without a preset: its key
