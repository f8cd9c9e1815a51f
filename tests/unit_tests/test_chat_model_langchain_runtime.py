"""MoAChatModel under LangChain's runtime features: cache, rate limiter, configurable, pickle."""

import itertools
import pickle

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.rate_limiters import BaseRateLimiter
from langchain_core.runnables import ConfigurableField

from langgraph_moa import MoAChatModel, MoAConfig, OpenAIEndpoint, create_moa_graph
from tests.fakes import FakeChat


@pytest.fixture
def global_cache():
    before = get_llm_cache()
    set_llm_cache(InMemoryCache())
    yield
    set_llm_cache(before)


def _self_moa(fake, **model):
    sampled = fake("A", **model)
    return MoAConfig(proposers=[{"model": sampled, "samples": 3}], aggregator=fake("AGG"), layers=2)


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.usefixtures("global_cache")
@pytest.mark.parametrize("tools", [False, True], ids=["plain", "with-tools-bound"])
def test_the_samples_of_one_model_stay_distinct_under_the_global_llm_cache(fake, log, tools):
    moa = MoAChatModel(config=_self_moa(fake))
    llm = moa.bind_tools([add]) if tools else moa
    answer = llm.invoke("hi")
    proposals = [c.output for c in log.by("A")]
    assert sorted(proposals) == ["A #1", "A #2", "A #3"]  # three calls, three answers
    calls = len(log.calls)
    assert llm.invoke("hi").text == answer.text  # the whole MoA answer is cached
    assert len(log.calls) == calls


def test_the_samples_of_one_model_stay_distinct_under_its_own_cache(fake, log):
    MoAChatModel(config=_self_moa(fake, cache=InMemoryCache())).invoke("hi")
    assert sorted(c.output for c in log.by("A")) == ["A #1", "A #2", "A #3"]


@pytest.mark.usefixtures("global_cache")
@pytest.mark.parametrize("instances", ["one", "two equal", "two equal named apart"])
def test_two_proposers_of_one_model_stay_distinct_under_the_global_llm_cache(fake, log, instances):
    # Listing a model twice is the same call twice, as its samples are: the second was
    # served the first's cached answer (on a later run, always), one proposal repeated. Two
    # equal instances are one entry of LangChain's cache as well (its key is their settings),
    # under two role names too, though the call cache names them apart ("A as x", "A as y").
    shared = itertools.count(1)  # two instances, numbered as one model's answers are
    first = fake("A", counter=shared)
    second = first if instances == "one" else fake("A", counter=shared)
    proposers: list = [first, second]
    if instances == "two equal named apart":
        proposers = [{"model": first, "name": "x"}, {"model": second, "name": "y"}]
    graph = create_moa_graph(MoAConfig(proposers=proposers, aggregator=fake("AGG"), layers=2))
    for _ in range(2):
        calls = graph.invoke({"messages": [("user", "hi")]})["calls"]
        proposals = [c["output"] for c in calls if c["role"] == "proposer"]
        assert len(set(proposals)) == 2, proposals


def test_a_model_pickles_for_multiprocessing_and_the_copy_runs_its_own_config():
    llm = MoAChatModel(config="moa-lite", max_tokens=77, model="mine")
    _ = llm.graph, llm._identifying_params  # compiled and keyed, as after a first call
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.moa_config == llm.moa_config
    assert copy._identifying_params == llm._identifying_params
    assert copy._graph is None  # not pickled: in this process, the shared one is found
    assert copy.graph is llm.graph


def test_a_pickled_model_equals_its_original():
    # pydantic compared the private caches too: the copy's empty graph cache (and its graph
    # not yet compiled) made an unpickled model unequal to the one it was made from.
    llm = MoAChatModel(config="moa-lite", max_tokens=77, model="mine")
    _ = llm.graph, llm._identifying_params
    assert pickle.loads(pickle.dumps(llm)) == llm
    assert llm != MoAChatModel(config="moa-lite", max_tokens=78, model="mine")


def test_a_deep_copy_of_a_model_that_ran_is_made_and_equals_it():
    # A deep copy copied the compiled graph too, which holds locks: model_copy(deep=True)
    # raised "cannot pickle '_thread.lock' object" for every model that had been called.
    llm = MoAChatModel(config="moa-lite", max_tokens=77)
    _ = llm.graph
    copied = llm.model_copy(deep=True)
    assert copied == llm and copied._graph is None
    assert copied.graph is llm.graph  # one config, one compiled graph (`_SHARED_GRAPHS`)


def test_a_deep_copy_of_a_model_beside_its_graph_leaves_the_caller_s_memo_alone():
    # The model told deepcopy that its graph's copy was None, in the caller's memo: a copy
    # of {"m": llm, "g": llm.graph} held None for the graph, silently. Copied alone, a
    # compiled graph cannot be (it holds locks): beside the model, it cannot either.
    import copy

    llm = MoAChatModel(config="moa-lite", max_tokens=77)
    with pytest.raises(TypeError, match="pickle"):
        copy.deepcopy({"m": llm, "g": llm.graph})
    memo: dict = {}
    copied = copy.deepcopy(llm, memo)
    assert copied == llm and copied._graph is None and id(llm.graph) not in memo


def test_models_of_one_config_made_at_once_share_one_compiled_graph(fake, monkeypatch):
    # Each thread compiled the graph outside the lock and put its own, replacing the one
    # kept: the models made at once each ran a graph of their own, one config compiled four
    # times over and kept four times while they lived.
    import threading

    import langgraph_moa.chat_model as chat_model

    compiled = []
    together = threading.Barrier(4, timeout=60)

    def compile_at_once(*args, **kwargs):
        compiled.append(kwargs.get("name"))
        together.wait()  # every thread is compiling before any keeps its graph
        return create_moa_graph(*args, **kwargs)

    monkeypatch.setattr(chat_model, "create_moa_graph", compile_at_once)
    config = _two_proposers(fake)
    graphs: list = []

    def make() -> None:
        graphs.append(MoAChatModel(config=config).graph)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(compiled) == 4 and len(graphs) == 4
    assert len({id(graph) for graph in graphs}) == 1
    assert MoAChatModel(config=config).graph is graphs[0] and len(compiled) == 4


def test_configured_models_of_one_config_share_a_compiled_graph(fake, log, monkeypatch):
    # `configurable_fields` makes a new model for every call, and each compiled its graph
    # again though its fields were the same; another value still compiles its own.
    import langgraph_moa.chat_model as chat_model

    compiled = []

    def counting(*args, **kwargs):
        compiled.append(kwargs.get("name"))
        return create_moa_graph(*args, **kwargs)

    monkeypatch.setattr(chat_model, "create_moa_graph", counting)
    llm = MoAChatModel(config=_two_proposers(fake), temperature=0.1)
    configurable = llm.configurable_fields(temperature=ConfigurableField(id="temperature"))
    for temperature in (0.9, 0.9, 0.5, 0.9):
        configurable.with_config(configurable={"temperature": temperature}).invoke("hi")
    assert len(compiled) == 2
    assert [c.temperature for c in log.by("A")] == [0.9, 0.9, 0.5, 0.9]


def test_a_pickled_model_leaves_its_compiled_override_graphs_behind():
    # The model put a new, default-sized cache in its pickle; the cache pickles itself
    # empty now, keeping its bound.
    from langgraph_moa.chat_model import GRAPH_CACHE_SIZE, _GraphCache

    llm = MoAChatModel(config="moa-lite")
    llm._graphs = _GraphCache(GRAPH_CACHE_SIZE + 3)
    llm._graphs.get("override", lambda: lambda: "a graph cannot be pickled")
    copy = pickle.loads(pickle.dumps(llm))
    assert len(copy._graphs) == 0 and len(llm._graphs) == 1
    assert copy._graphs._graphs.size == GRAPH_CACHE_SIZE + 3


class _CountingLimiter(BaseRateLimiter):
    """A rate limiter that never waits and counts what it was asked for."""

    taken: int = 0

    def acquire(self, *, blocking: bool = True) -> bool:
        self.taken += 1
        return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        return self.acquire(blocking=blocking)


def _two_proposers(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)


def test_a_rate_limiter_is_taken_once_per_moa_call_not_per_inner_call(fake, log):
    limiter = _CountingLimiter()
    MoAChatModel(config=_two_proposers(fake), rate_limiter=limiter).invoke("hi")
    assert (limiter.taken, len(log.calls)) == (1, 3)


def test_configurable_fields_run_the_moa_with_the_configured_values(fake, log):
    llm = MoAChatModel(config=_two_proposers(fake), temperature=0.1, max_tokens=10)
    configurable = llm.configurable_fields(
        temperature=ConfigurableField(id="temperature"), max_tokens=ConfigurableField(id="cap")
    )
    configurable.with_config(configurable={"temperature": 0.9, "cap": 50}).invoke("hi")
    assert {c.temperature for c in log.by("A") + log.by("B")} == {0.9}
    assert [c.max_tokens for c in log.by("AGG")] == [50]


@pytest.mark.usefixtures("global_cache")
async def test_the_samples_of_a_chunkwise_layer_stay_distinct_under_the_global_llm_cache(fake):
    # The last layer of chunk-wise aggregation streams its proposals; a model that cannot
    # stream is invoked instead, through LangChain's cache, as the other layers' calls are.
    sampled = {"model": fake("A", disable_streaming=True), "samples": 2}
    chunks = {"start": "chunks", "chunk_tokens": 2}
    config = MoAConfig(proposers=[sampled], aggregator=fake("AGG"), layers=2, aggregation=chunks)
    graph = create_moa_graph(config)
    for _ in range(2):
        calls = (await graph.ainvoke({"messages": [("user", "hi")]}))["calls"]
        proposals = [c["output"] for c in calls if c["role"] == "proposer"]
        assert len(set(proposals)) == 2, proposals


@pytest.mark.usefixtures("global_cache")
def test_a_repeated_stream_is_answered_by_the_inner_calls_cached_answers(fake, log):
    # `stream` never looks up the MoA's own entry, but its inner calls are cached calls:
    # a repeated question streams the cached answer, and no model is called.
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))
    first = "".join(chunk.text for chunk in llm.stream("hi"))
    calls = len(log.calls)
    assert "".join(chunk.text for chunk in llm.stream("hi")) == first
    assert len(log.calls) == calls


def test_a_config_of_model_strings_and_endpoints_pickles_and_a_locked_instance_does_not(fake):
    endpoint = OpenAIEndpoint(base_url="http://127.0.0.1:9/v1", model="x")
    llm = MoAChatModel(
        config=MoAConfig(proposers=[endpoint, "local:m"], aggregator="y@http://h/v1")
    )
    assert pickle.loads(pickle.dumps(llm)).moa_config == llm.moa_config
    held = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator="y@http://h/v1"))
    with pytest.raises(TypeError, match="cannot pickle"):  # the instance's own lock
        pickle.dumps(held)


class _Unmetered(FakeChat):
    """A model that reports no token usage (some local servers and proxies)."""

    def _answer(self, messages, n=None, kwargs=None):
        return super()._answer(messages, n, kwargs).model_copy(update={"usage_metadata": None})


@pytest.mark.usefixtures("global_cache")
@pytest.mark.parametrize("metered", [True, False], ids=["with-usage", "without-usage"])
def test_an_answer_from_the_llm_cache_is_recorded_cached_and_ok(log, metered):
    # LangChain marks a cache hit's usage `{**usage, "total_cost": 0}`: without usage that
    # was a record missing its token counts, and the call failed with a KeyError.
    model = FakeChat if metered else _Unmetered
    config = MoAConfig(
        proposers=[model(label="A", log=log)], aggregator=model(label="AGG", log=log)
    )
    graph = create_moa_graph(config)
    first = graph.invoke({"messages": [("user", "hi")]})["calls"]
    calls = len(log.calls)
    again = graph.invoke({"messages": [("user", "hi")]})["calls"]
    assert len(log.calls) == calls  # the second run called no model
    assert [(c["status"], c["cached"]) for c in first] == [("ok", False)] * calls
    assert [(c["status"], c["cached"]) for c in again] == [("ok", True)] * calls
    assert [c["total_tokens"] for c in again] == [c["total_tokens"] for c in first]


def test_a_new_model_reads_a_key_set_after_another_model_of_its_config_ran(monkeypatch):
    # Models of one config share a compiled graph, and with it the clients it built: a key
    # fixed in the environment (after a 401) was never read by a new model of that config,
    # which kept sending the first model's key.
    from langgraph_moa.providers import _models

    real = _models.build_model

    def answering_with_its_key(spec, params, **clients):
        key = real(spec, params, **clients).openai_api_key.get_secret_value()
        return FakeChat(label=key)  # says the key the real client would send

    monkeypatch.setattr(_models, "build_model", answering_with_its_key)
    endpoint = OpenAIEndpoint(
        base_url="http://127.0.0.1:9/v1", model="m", api_key_env="MOA_ROTATED_KEY"
    )
    cfg = MoAConfig(proposers=[endpoint], aggregator=endpoint, layers=2)
    answers = []
    for key in ("sk-old", "sk-new"):
        monkeypatch.setenv("MOA_ROTATED_KEY", key)
        answers.append(MoAChatModel(config=cfg).invoke("hi").text.split(" #")[0])
    assert answers == ["sk-old", "sk-new"]


def test_a_new_model_of_a_config_runs_the_model_instance_the_config_holds_now(fake, log):
    # The shared graph's key counted a model instance by its settings: a proposer replaced
    # in the config by one differing only in what no digest reads (its client, its api_key,
    # here its log) was never called, a new model running the first one's graph.
    from tests.fakes import CallLog

    cfg = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    MoAChatModel(config=cfg, temperature=0.1).invoke("hi")
    replaced = CallLog()
    cfg.proposers[0].model = FakeChat(label="A", log=replaced)
    MoAChatModel(config=cfg, temperature=0.1).invoke("hi")
    assert len(log.by("A")) == 1
    assert len(replaced.by("A")) == 1
