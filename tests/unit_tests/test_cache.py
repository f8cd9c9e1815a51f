"""The call cache: a rerun or an added system costs no repeated generation."""

import itertools
import threading
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.run.cache import SQLiteCallCache
from tests.helpers import QUESTION, sqlite_format

DEADLINE_S = 30.0
"""How long a step of a threaded test may wait for another thread: a bound, never a timing."""


def test_a_rerun_is_served_from_the_cache(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    first = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    assert len(log.calls) == 5 and not any(c["cached"] for c in first["calls"])
    # A new graph, a new process's worth of state: same answers, no model called.
    second = create_moa_graph(config, call_cache=SQLiteCallCache(tmp_path / "calls.db")).invoke(
        QUESTION
    )
    assert len(log.calls) == 5
    assert all(c["cached"] for c in second["calls"])
    assert second["messages"][-1].text == first["messages"][-1].text
    assert (
        second["usage"]["total"] == first["usage"]["total"]
    )  # the cost of the answer, as recorded


def test_samples_of_one_model_are_not_merged_by_the_cache(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    config = MoAConfig(variant="self-moa", proposers=[{"model": fake("M"), "samples": 4}])
    create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    samples = [c.output for c in log.calls[:4]]
    assert len(set(samples)) == 4  # four distinct calls, four distinct keys
    assert cache.misses == 5 and cache.hits == 0


@pytest.mark.parametrize("instances", ["one", "two equal"])
def test_two_proposers_of_one_model_are_not_merged_by_the_cache(fake, tmp_path, instances):
    # `proposers=[m, m]` is the same call twice, as two samples of m are: one key served
    # the second proposer the first's answer, on every run after the first. Two equal
    # instances (`[make(), make()]`) are one call to the cache too: they were keyed alike.
    cache = SQLiteCallCache(tmp_path / "calls.db")
    shared = itertools.count(1)  # two instances, numbered as one model's answers are
    first = fake("M", counter=shared)
    second = first if instances == "one" else fake("M", counter=shared)
    graph = create_moa_graph(
        MoAConfig(proposers=[first, second], aggregator=fake("AGG"), layers=2), call_cache=cache
    )
    for _ in range(2):
        calls = graph.invoke(QUESTION)["calls"]
        proposals = [c["output"] for c in calls if c["role"] == "proposer"]
        assert len(set(proposals)) == 2, proposals


def test_a_calls_draw_is_worked_out_once_per_config_not_per_call(fake, monkeypatch):
    # Which draw of its model a proposer's call is follows from the config alone: compared
    # per call with every earlier proposer, it was about 20 of a model call's Python function
    # calls (benchmarks/graph_call_work.py). A second run of the graph compares none.
    import langgraph_moa.run._calls as calls_module

    compared = []
    call_keys = calls_module._call_keys
    monkeypatch.setattr(
        calls_module, "_call_keys", lambda m, label: compared.append(m) or call_keys(m, label)
    )
    same = fake("M")
    graph = create_moa_graph(
        MoAConfig(proposers=[same, fake("B"), same], aggregator=fake("AGG"), layers=3)
    )
    first = graph.invoke(QUESTION)["calls"]
    after_first = len(compared)
    second = graph.invoke(QUESTION)["calls"]
    assert len(compared) == after_first == 3  # each proposer, once
    draws = [len({c["output"] for c in run if c["role"] == "proposer"}) for run in (first, second)]
    assert draws == [6, 6]  # still two draws of M per layer, three proposals, two layers


def test_an_added_system_reuses_the_shared_calls(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    a, b = fake("A"), fake("B")
    create_moa_graph(
        MoAConfig(proposers=[a, b], aggregator=fake("AGG"), layers=2), call_cache=cache
    ).invoke(QUESTION)
    log.calls.clear()
    # Another system with the same proposers: only its new aggregator is called.
    create_moa_graph(
        MoAConfig(proposers=[a, b], aggregator=fake("OTHER"), layers=2), call_cache=cache
    ).invoke(QUESTION)
    assert [c.label for c in log.calls] == ["OTHER"]


def test_a_changed_prompt_or_parameter_misses(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    create_moa_graph(config, call_cache=cache).invoke({"messages": [("user", "Explain Y")]})
    hotter = config.with_overrides(
        proposers=[{"model": config.proposers[0].model, "temperature": 1.2}]
    )
    create_moa_graph(hotter, call_cache=cache).invoke(QUESTION)
    # Three runs, two proposer layers each, all misses: a new prompt and a new temperature.
    assert [c.label for c in log.calls].count("A") == 6


def test_every_variant_is_served_from_the_cache_on_a_rerun(fake, log, tmp_path):
    """The ranker's own call was once left out of the cache: every model call must go in."""
    configs = [
        MoAConfig(variant="ranker", proposers=[fake("A"), fake("B")], aggregator=fake("R")),
        MoAConfig(variant="self-moa", proposers=[{"model": fake("S"), "samples": 3}]),
        MoAConfig(
            variant="self-moa-seq",
            proposers=[{"model": fake("Q"), "samples": 5}],
            seq={"window_size": 3},
        ),
        MoAConfig(variant="single-proposer", proposers=[fake("P")], aggregator=fake("G")),
    ]
    for config in configs:
        cache = SQLiteCallCache(tmp_path / f"{config.variant}.db")
        create_moa_graph(config, call_cache=cache).invoke(QUESTION)
        made = len(log.calls)
        again = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
        assert len(log.calls) == made, config.variant
        assert all(c["cached"] for c in again["calls"]), config.variant


def test_a_merged_cache_serves_the_other_runs_calls_and_keeps_its_own(fake, log, tmp_path):
    """Two evaluation folders share their common calls, also after both have run."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"))
    create_moa_graph(config, call_cache=SQLiteCallCache(tmp_path / "other.db")).invoke(QUESTION)
    ours = SQLiteCallCache(tmp_path / "ours.db")
    ours.put("a call only we made", AIMessage("ours"))
    assert ours.merge(tmp_path / "other.db") == len(log.calls)  # every call the other made
    assert ours.merge(tmp_path / "other.db") == 0  # nothing new the second time
    called = len(log.calls)
    again = create_moa_graph(config, call_cache=ours).invoke(QUESTION)
    assert len(log.calls) == called and all(c["cached"] for c in again["calls"])
    assert ours.get("a call only we made") == AIMessage("ours")
    with pytest.raises(FileNotFoundError, match="No call cache at"):
        ours.merge(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_a_renamed_role_is_not_served_the_old_models_answers(fake, log, tmp_path):
    """The key once held the role's display name: a new model under an old name got its answers."""
    cache = SQLiteCallCache(tmp_path / "calls.db")
    agg = fake("AGG")
    old = MoAConfig(proposers=[{"model": fake("OLD"), "name": "drafter"}], aggregator=agg)
    create_moa_graph(old, call_cache=cache).invoke(QUESTION)
    log.calls.clear()
    new = MoAConfig(proposers=[{"model": fake("NEW"), "name": "drafter"}], aggregator=agg)
    create_moa_graph(new, call_cache=cache).invoke(QUESTION)
    assert "NEW" in [c.label for c in log.calls]


def test_a_spec_keeps_its_cached_answers_whatever_its_role_is_called():
    from langgraph_moa.run._calls import cache_name

    assert cache_name("openai:gpt-4o", "drafter") == cache_name("openai:gpt-4o", "writer")
    assert cache_name("m@http://h:8000/v1", "x") == "m@http://h:8000/v1"


def test_endpoints_that_differ_only_by_their_key_do_not_share_answers(monkeypatch):
    # Two accounts (or two deployments behind one gateway) at one URL, their keys in two
    # variables: both were named "m@url" in the cache, so the second was served the first
    # one's answers. The key tells them apart now, and no form of it is in the name.
    from langgraph_moa.providers._models import OpenAIEndpoint
    from langgraph_moa.run._calls import cache_name

    monkeypatch.setenv("MOA_TEST_KEY_A", "key-of-account-a-0123")
    monkeypatch.setenv("MOA_TEST_KEY_B", "key-of-account-b-4567")
    url = "https://gateway.example/v1"
    first = OpenAIEndpoint(base_url=url, model="m", api_key_env="MOA_TEST_KEY_A")
    second = OpenAIEndpoint(base_url=url, model="m", api_key_env="MOA_TEST_KEY_B")
    keyless = OpenAIEndpoint(base_url=url, model="m")
    names = {cache_name(e, "x") for e in (first, second, keyless)}
    assert len(names) == 3, names
    assert cache_name(keyless, "x") == f"m@{url}"  # as it always was
    assert cache_name(first, "x") == cache_name(first, "y")  # the model, whatever the role
    for name in names:
        assert name.startswith(f"m@{url}")
        assert "key-of-account" not in name and "0123" not in name and "4567" not in name
    # The same key read from another variable is the same account: its answers are shared.
    monkeypatch.setenv("MOA_TEST_KEY_B", "key-of-account-a-0123")
    assert cache_name(first, "x") == cache_name(second, "x")


def test_a_local_model_whose_pinned_file_changed_misses_the_cache(monkeypatch):
    """A release that pins another file under the same name must not get the old answers."""
    import dataclasses

    from langgraph_moa.local import catalog
    from langgraph_moa.run._calls import cache_name

    name = "local:qwen2.5-coder-0.5b"
    before = cache_name(name, "drafter")
    assert before == cache_name(name, "writer")  # still the model, whatever the role
    assert catalog.CATALOG["qwen2.5-coder-0.5b"].sha256 in before
    requantized = dataclasses.replace(catalog.CATALOG["qwen2.5-coder-0.5b"], sha256="0" * 64)
    monkeypatch.setitem(catalog.CATALOG, "qwen2.5-coder-0.5b", requantized)
    assert cache_name(name, "drafter") != before
    assert cache_name("local:no-such-model", "x") == "local:no-such-model"


def test_an_unnamed_instance_keeps_the_key_it_always_had(fake):
    from langgraph_moa.run._calls import cache_name

    model = fake("A")
    assert cache_name(model, "A") == "A"  # its label is its model name
    assert cache_name(model, "drafter") == "A as drafter"  # a renamed instance misses


def test_two_proposers_sharing_a_display_name_get_their_own_answers(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    config = MoAConfig(
        proposers=[{"model": fake("A"), "name": "p"}, {"model": fake("B"), "name": "p"}],
        aggregator=fake("AGG"),
    )
    create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    rerun = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    outputs = [c["output"] for c in rerun["calls"] if c["role"] == "proposer"]
    assert all(c["cached"] for c in rerun["calls"])
    assert len(set(outputs)) == len(outputs), outputs  # each proposer kept its own answers


def _weather_conversation(city: str, call_id: str = "c1", extra: dict | None = None):
    from langchain_core.messages import HumanMessage, ToolMessage

    return [
        HumanMessage("What's the weather where I'm going?"),
        AIMessage(
            "",
            tool_calls=[{"name": "weather", "args": {"city": city}, "id": call_id}],
            additional_kwargs=extra or {},
        ),
        ToolMessage("20C and sunny", tool_call_id=call_id),
    ]


def test_the_tool_calls_in_the_history_are_part_of_the_key():
    """Two conversations differing only in a tool call's arguments shared one cached answer."""
    from langgraph_moa.run.cache import call_key

    def key(messages):
        return call_key(model="openai:gpt-4o", params={}, messages=messages, role="p", sample=0)

    paris = key(_weather_conversation("Paris"))
    assert paris == key(_weather_conversation("Paris"))  # stable
    assert paris != key(_weather_conversation("London"))
    assert paris != key(_weather_conversation("Paris", call_id="c2"))
    assert paris != key(_weather_conversation("Paris", extra={"reasoning_content": "hm"}))


def test_the_key_of_a_plain_conversation_is_unchanged():
    """Caches written before tool calls entered the key still answer plain conversations."""
    import hashlib
    import json

    from langchain_core.messages import HumanMessage

    from langgraph_moa.run.cache import call_key

    messages = [HumanMessage("hi"), AIMessage("hello")]
    before = {
        "model": "openai:gpt-4o",
        "params": {"temperature": 0.5},
        "messages": [{"type": m.type, "content": m.content, "name": m.name} for m in messages],
        "role": "proposer",
        "sample": 1,
    }
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert digest == call_key(
        model="openai:gpt-4o",
        params={"temperature": 0.5},
        messages=messages,
        role="proposer",
        sample=1,
    )


class _SameModelName(BaseChatModel):
    """A client of one model name; `server` says which server it talks to."""

    model_name: str = "llama3"
    server: str

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        text = f"from {self.server}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    @property
    def _llm_type(self) -> str:
        return "same-model-name"


def test_named_instances_of_one_model_name_keep_their_own_cached_answers(tmp_path):
    # An instance has no spec that tells it apart: its role's name does, as before.
    config = MoAConfig(
        proposers=[
            {"model": _SameModelName(server="A"), "name": "llama3 on A"},
            {"model": _SameModelName(server="B"), "name": "llama3 on B"},
        ],
        aggregator=_SameModelName(server="AGG"),
        layers=2,
    )
    for _ in range(2):
        cache = SQLiteCallCache(tmp_path / "calls.db")
        out = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    proposals = sorted(c["output"] for c in out["calls"] if c["role"] == "proposer")
    assert proposals == ["from A", "from B"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"\x00\xffnot a database" * 300), id="garbage"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:1500]), id="truncated"),
    ],
)
def test_a_damaged_cache_file_is_one_sentence_naming_it_and_the_fix(tmp_path, damage):
    from langgraph_moa import MoAConfigError

    path = tmp_path / "calls.db"
    cache = SQLiteCallCache(path)
    for i in range(50):
        cache.put(f"k{i}", AIMessage(content="x" * 200))
    cache.close()
    damage(path)
    with pytest.raises(MoAConfigError) as caught:
        SQLiteCallCache(path)
    message = str(caught.value)
    assert str(path) in message and "delete it" in message and "\n" not in message
    assert path.exists()  # left for the user to look at, never replaced behind their back


def test_a_cache_locked_by_another_run_is_not_called_damaged(tmp_path, monkeypatch):
    # "database is locked" is no damage: the advice to delete the file would throw away
    # the other run's paid-for answers.
    import sqlite3

    from langgraph_moa import MoAConfigError

    path = tmp_path / "calls.db"
    SQLiteCallCache(path).close()
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(SQLiteCallCache, "busy_s", 0.05)
    try:
        with pytest.raises(MoAConfigError) as caught:
            SQLiteCallCache(path)
    finally:
        other.rollback()
        other.close()
    message = str(caught.value)
    assert str(path) in message and "another run" in message and "delete" not in message
    SQLiteCallCache(path).close()  # once the other run lets go, it opens


def test_an_unreadable_cached_reply_is_a_miss_and_is_answered_again(fake, log, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    cache._conn.execute('UPDATE calls SET message = \'{"type": "ai", "da\'')  # cut off
    cache._conn.commit()
    out = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    assert all(c["status"] == "ok" and not c["cached"] for c in out["calls"])
    assert len(log.calls) == 4  # both calls made again
    again = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    assert all(c["cached"] for c in again["calls"])  # and their answers stored anew


# A reply as commit aaea531 (2026-12-03) stored it: the table, its columns and this row as
# they are in the calls.db that version wrote (its file carried no format mark).
_OLD_KEY = "be5478e0ecd8a478f2af43dc40578eed72abacd35d813017af9d345c16d16c84"
_OLD_REPLY = (
    '{"type": "ai", "data": {"content": "P #1", "additional_kwargs": {}, "response_metadata": '
    '{"model_name": "P"}, "type": "ai", "name": null, "id": "lc_run--01a2466f-3ee4-71f1-84bb-'
    '90b13f0e8d61-0", "tool_calls": [], "invalid_tool_calls": [], "usage_metadata": '
    '{"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}}'
)


def _cache_file(path, user_version=0):
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, message TEXT, stored REAL)")
    db.execute("INSERT INTO calls VALUES (?, ?, ?)", (_OLD_KEY, _OLD_REPLY, 1.7e9))
    db.execute(f"PRAGMA user_version = {user_version}")
    db.commit()
    db.close()


def test_a_cache_an_earlier_version_wrote_serves_its_replies_and_is_marked_with_its_format(
    tmp_path,
):
    """A file without a format mark is the format every earlier version wrote: it reads as it is.

    Opened, it gets the mark (SQLite's user_version), so that a later change of the format
    can tell its files from older ones and a version that does not read a file can say so.
    """
    from langgraph_moa.run.cache import CACHE_FORMAT

    path = tmp_path / "calls.db"
    _cache_file(path)
    cache = SQLiteCallCache(path)
    assert cache.get(_OLD_KEY).content == "P #1"
    cache.close()
    assert sqlite_format(path) == CACHE_FORMAT == 1
    fresh = tmp_path / "new.db"
    SQLiteCallCache(fresh).close()
    assert sqlite_format(fresh) == CACHE_FORMAT


def test_a_cache_of_a_later_format_is_refused_in_one_sentence_naming_it(tmp_path):
    """Its rows may mean something this version cannot read: they are never served."""
    from langgraph_moa import MoAConfigError
    from langgraph_moa.run.cache import CACHE_FORMAT

    path = tmp_path / "calls.db"
    _cache_file(path, user_version=CACHE_FORMAT + 1)
    with pytest.raises(MoAConfigError) as caught:
        SQLiteCallCache(path)
    message = str(caught.value)
    assert str(path) in message and "newer version" in message and "\n" not in message
    assert sqlite_format(path) == CACHE_FORMAT + 1  # left as it was, for the version that wrote it
    mine = SQLiteCallCache(tmp_path / "mine.db")
    with pytest.raises(MoAConfigError) as caught:
        mine.merge(path)
    assert str(path) in str(caught.value) and "newer version" in str(caught.value)
    assert mine.get(_OLD_KEY) is None


@pytest.mark.parametrize("mark", [-1, -2])
def test_a_cache_of_any_format_mark_but_this_ones_or_none_is_refused(tmp_path, mark):
    """Only a later mark was refused: a file marked -1 (no version writes it) was served as
    this format, while the history and the rows files refuse any mark they do not know."""
    from langgraph_moa import MoAConfigError

    path = tmp_path / "calls.db"
    _cache_file(path, user_version=mark)
    with pytest.raises(MoAConfigError) as caught:
        SQLiteCallCache(path)
    assert str(path) in str(caught.value) and f"format {mark}" in str(caught.value)
    assert sqlite_format(path) == mark  # left as it was
    mine = SQLiteCallCache(tmp_path / "mine.db")
    with pytest.raises(MoAConfigError, match=f"format {mark}"):
        mine.merge(path)
    assert mine.get(_OLD_KEY) is None


def test_an_earlier_versions_cache_this_process_may_only_read_still_serves_its_replies(
    tmp_path, monkeypatch
):
    """A copy of an earlier run's cache on a read-only mount, or another user's, rescored.

    Marking it with its format is a write: refused there, the file opened as before (its
    replies served) became a refusal to open it at all. Unmarked is the format this version
    reads, so it is served unmarked; whoever may write it marks it.
    """
    import sqlite3

    from langgraph_moa.run import cache as cache_module

    path = tmp_path / "calls.db"
    _cache_file(path)
    connect = sqlite3.connect

    def read_only(where, **options):
        return connect(f"file:{where}?mode=ro", uri=True, **options)

    monkeypatch.setattr(cache_module.sqlite3, "connect", read_only)
    cache = SQLiteCallCache(path)
    assert cache.get(_OLD_KEY).content == "P #1"
    cache.close()
    assert sqlite_format(path) == 0


def test_a_cache_of_a_later_format_is_refused_before_anything_is_written_into_it(tmp_path):
    """A later format may keep its replies in another table: this version adds none to it."""
    import sqlite3

    from langgraph_moa import MoAConfigError
    from langgraph_moa.run.cache import CACHE_FORMAT

    path = tmp_path / "calls.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, reply BLOB)")
    db.execute(f"PRAGMA user_version = {CACHE_FORMAT + 1}")
    db.commit()
    db.close()
    with pytest.raises(MoAConfigError, match="newer version"):
        SQLiteCallCache(path)
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    finally:
        db.close()
    assert "calls" not in tables


@pytest.mark.parametrize("other", ["damaged", "not_a_cache"])
def test_merging_a_file_that_is_no_call_cache_is_one_sentence_naming_it(tmp_path, other):
    """A damaged file, or another SQLite file given by mistake, ended in a bare SQLite error."""
    import sqlite3

    from langgraph_moa import MoAConfigError

    path = tmp_path / "other.db"
    if other == "damaged":
        path.write_bytes(b"\x00not sqlite\x00" * 400)
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
        db.close()
    mine = SQLiteCallCache(tmp_path / "mine.db")
    mine.put("k", AIMessage(content="kept"))
    with pytest.raises(MoAConfigError) as caught:
        mine.merge(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert mine.get("k").content == "kept"  # this cache is as it was, and still usable
    SQLiteCallCache(tmp_path / "another.db").close()
    assert mine.merge(tmp_path / "another.db") == 0  # `other` was let go


class _Saying(BaseChatModel):
    """A model that gives `message` to every call; `calls` counts its calls."""

    message: Any
    calls: Any

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls.append(1)
        return ChatResult(generations=[ChatGeneration(message=self.message)])

    @property
    def _llm_type(self) -> str:
        return "saying"


NO_ANSWERS = {
    "cut off while thinking": AIMessage(
        "<think>maybe 12", response_metadata={"finish_reason": "length"}
    ),
    "empty, max_tokens spent": AIMessage("", response_metadata={"finish_reason": "length"}),
    "a refusal": AIMessage("", additional_kwargs={"refusal": "I can't help with that."}),
    "content-filtered": AIMessage(
        "The start of", response_metadata={"finish_reason": "content_filter"}
    ),
}


def _run_twice(fake, tmp_path, message):
    """Run a graph whose proposer "m" says `message` twice, each with the cache reopened;
    return how often "m" was called and its call records of each run."""
    calls: list[int] = []
    proposer = {"model": _Saying(message=message, calls=calls), "name": "m"}
    config = MoAConfig(proposers=[proposer, fake("B")], aggregator=fake("AGG"), layers=2)
    runs = []
    for _ in range(2):
        out = create_moa_graph(config, call_cache=SQLiteCallCache(tmp_path / "calls.db")).invoke(
            QUESTION
        )
        runs.append([c for c in out["calls"] if c["model"] == "m"])
    return len(calls), runs


@pytest.mark.parametrize("case", list(NO_ANSWERS))
def test_a_response_that_is_no_answer_is_not_cached(fake, tmp_path, case):
    # It was (all but the cut-off thinking): every rerun failed again at once from the
    # cache, the model never asked.
    called, runs = _run_twice(fake, tmp_path, NO_ANSWERS[case])
    assert [[(c["status"], c.get("cached", False)) for c in run] for run in runs] == [
        [("failed", False)]
    ] * 2
    assert called == 2


def test_an_answer_is_cached(fake, tmp_path):
    called, runs = _run_twice(fake, tmp_path, AIMessage("14"))
    assert [[(c["status"], c["cached"]) for c in run] for run in runs] == [
        [("ok", False)],
        [("ok", True)],
    ]
    assert called == 1


@pytest.mark.parametrize("case", list(NO_ANSWERS))
def test_a_no_answer_an_earlier_version_cached_is_asked_again(fake, tmp_path, case):
    # Versions before fa6a85e stored it: served from the cache, every rerun failed at once.
    called, _ = _run_twice(fake, tmp_path, AIMessage("14"))
    cache = SQLiteCallCache(tmp_path / "calls.db")
    keys = [k for (k, m) in cache._conn.execute("SELECT key, message FROM calls") if '"14"' in m]
    assert len(keys) == 1
    cache.put(keys[0], NO_ANSWERS[case])  # what an earlier version left for "m"
    again, runs = _run_twice(fake, tmp_path, AIMessage("14"))
    assert [[(c["status"], c["cached"]) for c in run] for run in runs] == [
        [("ok", False)],
        [("ok", True)],  # the answer stored over it
    ]
    assert (called, again) == (1, 1)


def test_a_close_waits_for_a_write_another_thread_is_making(tmp_path):
    """`close` took no lock: a close while another thread's `put` was writing closed the
    file under it, and the write failed ("Cannot operate on a closed database") and was
    lost. Here the write is held until the close has begun."""
    cache = SQLiteCallCache(tmp_path / "calls.db")
    writing, go_on, closing = threading.Event(), threading.Event(), threading.Event()
    conn, lock = cache._conn, cache._lock

    class Held:
        """The connection, holding the write until the close has begun."""

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("INSERT"):
                writing.set()
                go_on.wait(DEADLINE_S)
            return conn.execute(sql, *args)

        def commit(self) -> None:
            conn.commit()

        def close(self) -> None:
            conn.close()
            closing.set()

    class Watched:
        """The cache's lock, telling when the closing thread asks for it."""

        def __enter__(self) -> Any:
            if threading.current_thread() is closer:
                closing.set()
            return lock.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            return lock.__exit__(*exc)

    cache._conn, cache._lock = Held(), Watched()  # type: ignore[assignment]
    errors: list[Exception] = []

    def write() -> None:
        try:
            cache.put("k", AIMessage("stored"))
        except Exception as exc:
            errors.append(exc)

    writer, closer = threading.Thread(target=write), threading.Thread(target=cache.close)
    writer.start()
    assert writing.wait(DEADLINE_S)
    closer.start()
    assert closing.wait(DEADLINE_S)
    go_on.set()
    writer.join(DEADLINE_S)
    closer.join(DEADLINE_S)
    assert errors == []
    reopened = SQLiteCallCache(tmp_path / "calls.db")
    assert (hit := reopened.get("k")) is not None and hit.text == "stored"


def test_a_closed_cache_neither_serves_nor_stores_and_fails_no_call(tmp_path):
    """A call answered after its cache was closed (a run still going when its owner closed
    the cache) failed with "Cannot operate on a closed database", its paid answer lost."""
    cache = SQLiteCallCache(tmp_path / "calls.db")
    cache.put("k", AIMessage("stored"))
    cache.close()
    cache.put("j", AIMessage("late"))
    assert cache.get("k") is None
    cache.close()
    assert SQLiteCallCache(tmp_path / "calls.db").get("j") is None


def test_a_refused_cached_reply_counts_as_a_miss_as_its_call_record_says(fake, tmp_path):
    """The cache counted a reply it returned as a hit even where the call refused it and
    asked the model again: its record said ``cached: false``, the count a hit."""
    _run_twice(fake, tmp_path, AIMessage("14"))
    cache = SQLiteCallCache(tmp_path / "calls.db")
    [key] = [k for (k, m) in cache._conn.execute("SELECT key, message FROM calls") if '"14"' in m]
    cache.put(key, NO_ANSWERS["a refusal"])  # what an earlier version left for "m"
    proposer = {"model": _Saying(message=AIMessage("14"), calls=[]), "name": "m"}
    config = MoAConfig(proposers=[proposer, fake("B")], aggregator=fake("AGG"), layers=2)
    out = create_moa_graph(config, call_cache=cache).invoke(QUESTION)
    cached = [c["cached"] for c in out["calls"]]
    assert False in cached and True in cached
    assert (cache.hits, cache.misses) == (cached.count(True), cached.count(False))
