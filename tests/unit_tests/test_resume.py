"""A run cut off mid-layer and resumed by a new graph (as another process would) keeps its history."""

import asyncio

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION, references_in

THREAD = {"configurable": {"thread_id": "t"}}


class Killed(BaseException):
    """Stands for the process dying: no node catches it, nothing after it runs."""


def flaky_config(fake, **flaky):
    return MoAConfig(
        proposers=[fake("A"), fake("FLAKY", **flaky)],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )


def assert_both_attempts_recorded(out):
    record = next(c for c in out["calls"] if c["configured_model"] == "FLAKY")
    assert (record["status"], record["attempts"]) == ("ok", 2)
    assert record["retried_errors"] == ["ConnectionError: reset by peer"]


def test_a_resumed_call_counts_the_attempts_made_before_the_resume(fake):
    def fail(n, messages):
        return {1: ConnectionError("reset by peer"), 2: Killed()}.get(n)

    config = flaky_config(fake, fail=fail)
    saver = InMemorySaver()
    with pytest.raises(Killed):
        create_moa_graph(config, checkpointer=saver).invoke(QUESTION, THREAD)
    # A new graph has none of the first one's memory, like a worker in another process.
    assert_both_attempts_recorded(create_moa_graph(config, checkpointer=saver).invoke(None, THREAD))


async def test_an_async_run_cancelled_mid_retry_resumes_with_its_history(fake):
    def fail(n, messages):
        return ConnectionError("reset by peer") if n == 1 else None

    config = flaky_config(fake, fail=fail, delay=lambda n: 30.0 if n == 2 else 0.0)
    saver = InMemorySaver()
    with pytest.raises(TimeoutError):  # the second attempt hangs; the run is cut off
        await asyncio.wait_for(
            create_moa_graph(config, checkpointer=saver).ainvoke(QUESTION, THREAD), 1.0
        )
    out = await create_moa_graph(config, checkpointer=saver).ainvoke(None, THREAD)
    assert_both_attempts_recorded(out)


def killed_mid_layer(fake, saver):
    """Run a 3-proposer MoA on THREAD until its third proposer 'dies' in layer 1."""
    config = MoAConfig(
        proposers=[
            fake("A"),
            fake("B"),
            # Dies after A's and B's answers were saved (a dead process saves nothing more).
            fake(
                "C",
                fail=lambda n, m: Killed() if n == 1 else None,
                delay=lambda n: 0.5 if n == 1 else 0.0,
            ),
        ],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    with pytest.raises(Killed):
        create_moa_graph(config, checkpointer=saver).invoke(QUESTION, THREAD)
    return config


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda config, fake: {"proposers": config.proposers[:2]}, id="fewer"),
        pytest.param(
            lambda config, fake: {"proposers": [fake("X"), *config.proposers[1:]]}, id="other"
        ),
        pytest.param(lambda config, fake: {"layers": 3}, id="layers"),
        pytest.param(lambda config, fake: {"aggregator": fake("OTHER")}, id="aggregator"),
    ],
)
def test_a_run_resumed_with_another_moa_is_refused_in_one_sentence(fake, log, change):
    """Proposals of one MoA must never be mixed into another's, nor end in an IndexError."""
    from langgraph_moa import MoAConfigError

    saver = InMemorySaver()
    config = killed_mid_layer(fake, saver)
    before = len(log.calls)
    other = config.model_copy(update=change(config, fake))
    with pytest.raises(MoAConfigError) as caught:
        create_moa_graph(other, checkpointer=saver).invoke(None, THREAD)
    message = str(caught.value)
    assert "thread" in message and "config it started with" in message
    assert "\n" not in message
    assert len(log.calls) == before  # nothing was asked of the other MoA
    # Nothing computed is lost: the run still resumes with the MoA it started with.
    out = create_moa_graph(config, checkpointer=saver).invoke(None, THREAD)
    assert [c.label for c in log.calls[before:]] == ["C", "AGG"]
    assert out["messages"][-1].text.startswith("AGG")


def test_a_run_resumed_with_other_retry_and_timeout_settings_goes_on(fake, log):
    """Settings that do not change who is asked (retries, timeouts) may change on a resume."""
    saver = InMemorySaver()
    config = killed_mid_layer(fake, saver)
    before = len(log.calls)
    patient = config.model_copy(
        update={"retry": RetrySettings(max_attempts=2, initial_interval=0.0), "call_timeout_s": 99}
    )
    out = create_moa_graph(patient, checkpointer=saver).invoke(None, THREAD)
    assert [c.label for c in log.calls[before:]] == ["C", "AGG"]
    assert out["messages"][-1].text.startswith("AGG")


def old_checkpoint(tmp_path, fixture="checkpoint_before_moa_digest.json"):
    """A SqliteSaver holding the rows an earlier version wrote, as it wrote them.

    The default fixture (2026-12-03): the run (proposers A, B, C; aggregator AGG; 2 layers)
    was killed in layer 1 after A and B answered; its run token holds no digest of its MoA,
    which was recorded only later. Each fixture's ``written_by`` says what it holds.
    """
    import base64
    import json
    import sqlite3
    from pathlib import Path

    from langgraph.checkpoint.sqlite import SqliteSaver

    data = json.loads((Path(__file__).parents[1] / "fixtures" / fixture).read_text())
    saver = SqliteSaver(sqlite3.connect(tmp_path / "moa.db", check_same_thread=False))
    saver.setup()
    with saver.conn:
        for table in ("checkpoints", "writes"):
            # The fixture was written by checkpoint-sqlite 3.1.2; the declared minimum's
            # writes table has no task_path column (its saver never reads one).
            columns = {c[1] for c in saver.conn.execute(f"PRAGMA table_info({table})")}
            for full_row in data[table]:
                row = {k: v for k, v in full_row.items() if k in columns}
                blobs = {"checkpoint", "metadata", "value"}
                values = [
                    base64.b64decode(v) if k in blobs and v is not None else v
                    for k, v in row.items()
                ]
                marks = ", ".join("?" * len(values))
                saver.conn.execute(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", values
                )
    return saver


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda fake: {}, id="same"),
        pytest.param(lambda fake: {"proposers": [fake("A"), fake("B")]}, id="fewer"),
        pytest.param(lambda fake: {"proposers": [fake("X"), fake("B"), fake("C")]}, id="other"),
        pytest.param(lambda fake: {"aggregator": fake("OTHER")}, id="aggregator"),
    ],
)
def test_a_run_an_earlier_version_checkpointed_mid_layer_is_refused_in_one_sentence(
    fake, log, tmp_path, change
):
    """Its token names no MoA, so a resume cannot tell the MoA that started it from another.

    Resumed by a graph with fewer proposers it ended in a bare IndexError; with another
    proposer or aggregator it silently mixed the two MoAs' proposals. It is refused, before
    any call, in one sentence that says what to do; the thread still takes new input.
    """
    from langgraph_moa import MoAConfigError

    saver = old_checkpoint(tmp_path)
    started = {"proposers": [fake("A"), fake("B"), fake("C")], "aggregator": fake("AGG")}
    config = MoAConfig(**{**started, **change(fake)}, layers=2, retry=RetrySettings(max_attempts=1))
    graph = create_moa_graph(config, checkpointer=saver)
    assert graph.get_state(THREAD).next == ("propose",)
    with pytest.raises(MoAConfigError) as caught:
        graph.invoke(None, THREAD)
    message = str(caught.value)
    assert "earlier version" in message and "new input" in message and "thread_id" in message
    # "finish it with that version": that version, resuming with another config, mixes
    # the two MoAs itself.
    assert "finish it with that version and the config it started with" in message
    assert "\n" not in message
    assert log.calls == []
    out = graph.invoke(QUESTION, THREAD)  # new input starts a run of this MoA afresh
    assert out["messages"][-1].text.startswith(config.final_chain[0].label)


FIXTURE_LIBRARIES = {"core": "1.7.2", "langchain": "1.4.7"}
"""The langchain-core and langchain that checkpoint_before_delta_calls.json was written with."""


def libraries_at(monkeypatch, core, langchain):
    """Chat models made from now on record these versions, as under these installed ones."""
    import langchain_core.version
    from langchain_core.language_models import base

    monkeypatch.setattr(langchain_core.version, "VERSION", core)
    monkeypatch.setattr(base, "_get_langchain_version", lambda: langchain)


def seq_of(fake):
    """The Self-MoA-Seq config of checkpoint_before_delta_calls.json's thread 'seq'."""
    from langgraph_moa import SelfMoASeqConfig

    return MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": fake("M"), "samples": 4}],
        seq=SelfMoASeqConfig(window_size=3),
    )


def test_threads_saved_before_the_call_records_were_a_delta_channel_resume_and_go_on(
    fake, log, tmp_path, monkeypatch
):
    """The call records' channel became LangGraph's `DeltaChannel` (a checkpoint saves the
    records a step wrote); an earlier version (69bfb89) saved the whole list in every
    checkpoint. Its Self-MoA-Seq run stopped before the second window's aggregation resumes
    with each record once and that window's references, and reads back the same after new
    checkpoints; its finished thread takes a follow-up turn that counts only its own calls.
    """
    saver = old_checkpoint(tmp_path, "checkpoint_before_delta_calls.json")
    # Its run token's digest took in the versions a chat model records in its metadata:
    # this fixture resumes under the libraries that wrote it (as under 1.7.0 it is refused).
    libraries_at(monkeypatch, **FIXTURE_LIBRARIES)
    graph = create_moa_graph(seq_of(fake), checkpointer=saver)
    thread = {"configurable": {"thread_id": "seq"}}
    state = graph.get_state(thread)
    saved = state.values["calls"]
    assert state.next == ("aggregate",)
    assert [(c["role"], c["sample"]) for c in saved] == [
        *[("proposer", i) for i in range(3)],
        ("aggregator", 0),
        ("proposer", 3),
    ]
    out = graph.invoke(None, thread)
    assert [c.label for c in log.calls] == ["M"]  # the last aggregation, nothing asked again
    assert references_in(log.calls[0]) == [saved[3]["output"], saved[4]["output"]]
    assert out["calls"] == [*saved, out["calls"][-1]]
    assert out["calls"][-1]["output"] == out["messages"][-1].text == log.calls[0].output
    assert out["usage"]["total"]["calls"] == 6
    assert graph.get_state(thread).values["calls"] == out["calls"]
    out = graph.invoke({"messages": [("user", "And Y?")]}, thread)
    assert len(log.calls) == 1 + 6 and len(out["calls"]) == 6  # this turn's records alone
    assert graph.get_state(thread).values["calls"] == out["calls"]

    moa = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"))
    graph = create_moa_graph(moa, checkpointer=saver)
    thread = {"configurable": {"thread_id": "done"}}
    assert len(graph.get_state(thread).values["calls"]) == 5
    out = graph.invoke({"messages": [("user", "And Y?")]}, thread)
    assert sorted(c.label for c in log.calls[7:]) == ["A", "A", "AGG", "B", "B"]
    assert sorted(c["output"] for c in out["calls"]) == sorted(c.output for c in log.calls[7:])
    assert out["usage"]["total"]["calls"] == 5 and len(out["messages"]) == 4


def test_an_edit_of_a_run_an_earlier_version_checkpointed_mid_run_routes(
    fake, log, tmp_path, monkeypatch
):
    """update_state checks the run token's route digest, which 69bfb89 took in its own form."""
    saver = old_checkpoint(tmp_path, "checkpoint_before_delta_calls.json")
    libraries_at(monkeypatch, **FIXTURE_LIBRARIES)
    graph = create_moa_graph(seq_of(fake), checkpointer=saver)
    thread = {"configurable": {"thread_id": "seq"}}
    graph.update_state(thread, {"running_synthesis": "an edited synthesis"})
    state = graph.get_state(thread)
    assert state.next == ("aggregate",)
    assert state.values["running_synthesis"] == "an edited synthesis"
    assert graph.invoke(None, thread)["messages"][-1].text == log.calls[0].output


def test_a_run_an_earlier_version_checkpointed_under_other_libraries_is_refused_for_both(
    fake, log, tmp_path, monkeypatch
):
    """69bfb89's digest of a MoA took in every field of each model, a chat model's record of
    the installed langchain-core included: it cannot tell an upgrade from another MoA, and
    the refusal said the proposers, aggregators or layers differed, which they did not."""
    from langgraph_moa import MoAConfigError

    saver = old_checkpoint(tmp_path, "checkpoint_before_delta_calls.json")
    libraries_at(monkeypatch, **{**FIXTURE_LIBRARIES, "core": "1.7.0"})
    graph = create_moa_graph(seq_of(fake), checkpointer=saver)
    with pytest.raises(MoAConfigError) as caught:
        graph.invoke(None, {"configurable": {"thread_id": "seq"}})
    message = str(caught.value)
    assert "another MoA, or by another version of langgraph-moa or of its libraries" in message
    assert "other proposers" not in message and "\n" not in message
    assert "config it started with, under the versions it started with" in message
    assert "thread_id" in message
    assert log.calls == []


def a_later_release(cls, **fields):
    """`cls` as a later release defines it: the same class, with `fields` more at defaults."""
    from pydantic import create_model

    later = create_model(cls.__name__, __base__=cls, **{k: (type(v), v) for k, v in fields.items()})
    later.__qualname__ = cls.__qualname__
    return later


def as_set(model):
    """The fields a user set of `model`, to build it again as a later release would."""
    return {name: getattr(model, name) for name in model.model_fields_set}


def both_digests(config):
    from langgraph_moa.config._digest import route_digest, shape_digest

    return shape_digest(config), route_digest(config)


def test_a_config_field_a_later_release_adds_with_a_default_keeps_the_digests(fake):
    """A release of langgraph-moa that adds a setting with a default changed every digest:
    each mid-run checkpoint was refused on resume, as if its MoA were another."""
    from langgraph_moa.config import AggregationConfig, ProposerConfig

    config = MoAConfig(
        proposers=[fake("A"), {"model": fake("B"), "samples": 2}], aggregator=fake("AGG")
    )
    proposer = a_later_release(ProposerConfig, knob=3)
    aggregation = a_later_release(AggregationConfig, switch=False)
    later = config.model_copy(
        update={
            "proposers": [proposer(**dict(p)) for p in config.proposers],
            "aggregation": aggregation(**dict(config.aggregation)),
        }
    )
    assert [type(p).model_fields["knob"].default for p in later.proposers] == [3, 3]
    assert both_digests(later) == both_digests(config)
    # What a user sets still counts, a setting at its default or not.
    assert both_digests(config.model_copy(update={"layers": 4})) != both_digests(config)


@pytest.mark.parametrize("section", ["seq", "proposer"])
def test_a_section_default_a_later_release_changes_changes_the_digests(fake, section):
    """A field inside a section (`seq`, a proposer) left at its default was left out of the
    digests, so a release that changed that default (Self-MoA-Seq's window 6 to 5, a
    proposer's samples 1 to 2) kept them: a mid-run checkpoint resumed with other windows or
    other samples than it started with, mixing the two. A top-level one counted by value."""
    from langgraph_moa.config import ProposerConfig, SelfMoASeqConfig

    if section == "seq":
        config = MoAConfig(
            variant="self-moa-seq",
            proposers=[{"model": fake("A"), "samples": 8}],
            seq={"samples_per_step": 3},  # set in part: its window_size is at its default
        )
        seq = a_later_release(SelfMoASeqConfig, window_size=5)
        later = config.model_copy(update={"seq": seq(**as_set(config.seq))})
        assert later.seq.window_size == 5
    else:
        config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"))
        proposer = a_later_release(ProposerConfig, samples=2)
        later = config.model_copy(
            update={"proposers": [proposer(**as_set(p)) for p in config.proposers]}
        )
        assert [p.samples for p in later.proposers] == [2, 2]
    assert both_digests(later)[0] != both_digests(config)[0]


def test_a_model_of_the_users_named_as_a_config_section_keeps_the_digests_after_an_upgrade(log):
    """The sections' first defaults were found by class name: a chat model of the user's whose
    class is named `SelectionConfig` had its fields compared with the selection's, not with
    its own defaults, so a release of its package that added `round_size` (default 3)
    changed every digest taken of it, as if a field more were a setting of the user's."""
    from pydantic import create_model

    from tests.fakes import FakeChat

    named = create_model("SelectionConfig", __base__=FakeChat)

    def config_of(chat):
        return MoAConfig(proposers=[chat(label="A", log=log)], aggregator=FakeChat(label="AGG"))

    later = a_later_release(named, round_size=3)
    assert both_digests(config_of(later)) == both_digests(config_of(named))


@pytest.mark.parametrize("upgrade", ["a field more", "other library versions"])
def test_a_chat_model_after_an_upgrade_keeps_the_digests(log, monkeypatch, upgrade):
    """A chat model records the installed langchain-core's and langchain's versions in its
    metadata, and a release of a model's package may give its class a field with a default:
    neither is a setting of the user's, and either changed every digest taken of it."""
    from functools import partial

    from pydantic import Field, create_model

    from tests.fakes import FakeChat

    def config_of(chat):
        return MoAConfig(proposers=[chat(label="A", log=log)], aggregator=chat(label="AGG"))

    config = config_of(FakeChat)
    if upgrade == "a field more":
        later = config_of(a_later_release(FakeChat, knob=3))
    else:
        libraries_at(monkeypatch, core="99.0.0", langchain="99.1.0")
        later = config_of(FakeChat)
        assert "99.0.0" in str(later.proposers[0].model.metadata)
    assert both_digests(later) == both_digests(config)

    # A model's own setting still counts, and so does one whose default cannot be worked out.
    def unset_variable():
        raise ValueError("set API_KEY or pass api_key")

    keyed = create_model(
        "Keyed", __base__=FakeChat, api_key=(str, Field(default_factory=unset_variable))
    )
    assert both_digests(config_of(partial(keyed, api_key="k1"))) != both_digests(
        config_of(partial(keyed, api_key="k2"))
    )
    tuned = MoAConfig(
        proposers=[FakeChat(label="A", log=log, temperature=0.3)], aggregator=FakeChat(label="AGG")
    )
    assert both_digests(tuned) != both_digests(config)


def test_a_chat_model_setting_an_environment_variable_may_give_keeps_the_digests(log, monkeypatch):
    """A chat model's API key passed to it counted in the digest only where the variable
    its default reads was unset (a default that differs from it), so the same MoA, resumed in
    a process with the variable set, was refused as another."""
    from langchain_core.utils import secret_from_env
    from pydantic import Field, SecretStr, create_model

    from tests.fakes import FakeChat

    keyed = create_model(
        "Keyed",
        __base__=FakeChat,
        api_key=(SecretStr | None, Field(default_factory=secret_from_env("MOA_KEY", default=None))),
    )

    def config_of(**fields):
        return MoAConfig(
            proposers=[keyed(label="A", log=log, **fields)], aggregator=FakeChat(label="AGG")
        )

    monkeypatch.delenv("MOA_KEY", raising=False)
    passed, unset = both_digests(config_of(api_key="k")), both_digests(config_of())
    monkeypatch.setenv("MOA_KEY", "k2")
    assert both_digests(config_of(api_key="k")) == passed
    assert both_digests(config_of()) == unset


def test_a_run_checkpointed_mid_layer_resumes_after_an_upgrade_of_its_libraries(
    fake, log, monkeypatch
):
    """The run of the same MoA, resumed in a process with another langchain-core, was refused
    as started by a MoA with other proposers."""
    saver = InMemorySaver()
    config = killed_mid_layer(fake, saver)
    before = len(log.calls)
    libraries_at(monkeypatch, core="99.0.0", langchain="99.1.0")
    upgraded = config.model_copy(
        update={
            "proposers": [
                *(p.model_copy(update={"model": fake(p.label)}) for p in config.proposers[:2]),
                config.proposers[2],  # the one that 'died', told apart by its own functions
            ],
            "aggregator": config.aggregator.model_copy(update={"model": fake("AGG")}),
        }
    )
    assert "99.0.0" in str(upgraded.proposers[0].model.metadata)
    out = create_moa_graph(upgraded, checkpointer=saver).invoke(None, THREAD)
    assert [c.label for c in log.calls[before:]] == ["C", "AGG"]
    assert out["messages"][-1].text.startswith("AGG")


def function_calls(fn, times=100):
    """Python function calls (cProfile's count, the same on every run) of `times` calls of fn."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(times):
        fn()
    profiler.disable()
    return pstats.Stats(profiler).total_calls / times


def test_the_resume_check_adds_at_most_two_function_calls_to_a_node(fake):
    """Every node checks the run's MoA (issue 23: a model call's own work is budgeted).

    The check is one comparison with the digest the graph already knows: no lock, no
    lookup, no digest computed again. The digest rides in the run's token (which every
    node and proposer task carries already), not in a state channel of its own, which cost
    LangGraph about six further function calls per model call.
    """
    from langchain_core.messages import HumanMessage

    from langgraph_moa.graph._nodes import MoANodes

    nodes = MoANodes(MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG")))
    token = nodes.prepare({"messages": [HumanMessage("Explain X")]})["run_token"]
    nodes.checked_plan(token)  # the digest is computed once, here or in prepare
    assert (
        function_calls(lambda: nodes.checked_plan(token)) - function_calls(lambda: nodes.plan())
        <= 2
    )
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    assert "config_digest" not in graph.channels


def test_a_run_without_a_response_format_adds_no_work_to_its_start(fake, monkeypatch):
    """The structure check at the run's start (931bc59) is for runs with a response_format;
    without one it still computed each aggregator's label a second time, about ten function
    calls per aggregator in every run, on the common path."""
    from langchain_core.messages import HumanMessage

    from langgraph_moa.config._schema import RoleConfig
    from langgraph_moa.graph._nodes import MoANodes

    labels = []
    label = RoleConfig.label

    def counted(role):
        labels.append(role)
        return label.fget(role)

    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), aggregator_fallbacks=[fake("F")]
    )
    nodes = MoANodes(config)
    state = {"messages": [HumanMessage("Explain X")]}
    nodes.prepare(state)  # the models are built and cached by the first run
    monkeypatch.setattr(RoleConfig, "label", property(counted))
    nodes.prepare(state)
    assert len(labels) == 4  # each proposer's and aggregator's once, for its call options


DIGEST_IN_A_PROCESS = """
from tests.fakes import FakeChat
from langgraph_moa import MoAConfig
from langgraph_moa.config._digest import fingerprint, shape_digest


class Tagged(FakeChat):
    stop_words: set[str] = set()


words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"}
config = MoAConfig(
    proposers=[Tagged(label="A", stop_words=words)], aggregator=Tagged(label="AGG")
)
print(shape_digest(config), fingerprint(config))
"""


def test_a_models_set_field_gives_the_same_digest_in_every_process():
    """A resume runs in another process, where strings hash (and sets iterate) otherwise."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST_IN_A_PROCESS],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(2)
    }
    assert len(digests) == 1


def test_a_new_turn_after_a_cut_off_run_may_use_another_moa(fake, log):
    """New input on the thread starts a new run: only a resume (input None) is checked."""
    saver = InMemorySaver()
    killed_mid_layer(fake, saver)
    other = MoAConfig(proposers=[fake("X")], aggregator=fake("Y"), layers=2)
    before = len(log.calls)
    out = create_moa_graph(other, checkpointer=saver).invoke(QUESTION, THREAD)
    assert [c.label for c in log.calls[before:]] == ["X", "Y"]
    # and a later turn with a run context of other layers is a new run too
    out = create_moa_graph(other, checkpointer=saver).invoke(
        QUESTION, THREAD, context={"layers": 3}
    )
    assert out["messages"][-1].text.startswith("Y")
    assert [c.label for c in log.calls[before + 2 :]] == ["X", "X", "Y"]


@pytest.mark.parametrize("budget", [None, 0, 4096])
def test_a_run_token_reads_back_the_fields_it_was_made_with(budget):
    from langgraph_moa.run.state import make_token, token_fields

    token = make_token(budget, "route digest", "shape digest")
    assert token_fields(token) == (str(budget or ""), "route digest", "shape digest")
    assert token.endswith("shape digest")  # what every node checks without splitting
    assert make_token(budget, "r", "s") != make_token(budget, "r", "s")  # each run its own id
