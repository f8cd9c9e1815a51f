"""Model calls skip LangChain's run bookkeeping only when nothing would read it (`run._direct`).

Every way LangChain finds a listener (a handler on the run or the model, verbose, debug,
LangSmith tracing, the context hooks such as `get_usage_metadata_callback`) must still see
every call, and what a call does for its caller (cache, rate limiter, normalization, ids)
must be the same either way.
"""

import asyncio
import functools
import importlib

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import (
    AsyncCallbackManager,
    BaseCallbackHandler,
    CallbackManager,
    get_usage_metadata_callback,
)
from langchain_core.globals import set_debug, set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.context import collect_runs
from langsmith import RunTree, tracing_context

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.errors import CallTimeoutError
from langgraph_moa.run import _direct as direct
from langgraph_moa.run._calls import acall_model
from langgraph_moa.run._direct import (
    DIRECT_CALLS_ENV,
    ainvoke_direct,
    invoke_direct,
    nobody_listens,
)
from tests.fakes import FakeChat
from tests.helpers import QUESTION

CALLS_PER_RUN = 7  # 2 proposer layers x 3 proposers + the aggregator


@pytest.fixture
def llm_runs_started(monkeypatch) -> list[str]:
    """Count the LLM runs LangChain starts (each a callback manager's chat model start)."""
    started: list[str] = []
    for manager in (CallbackManager, AsyncCallbackManager):
        original = manager.on_chat_model_start

        def counting(self, serialized, messages, *args, _original=original, **kwargs):
            started.append(kwargs.get("name") or "")
            return _original(self, serialized, messages, *args, **kwargs)

        monkeypatch.setattr(manager, "on_chat_model_start", counting)
    return started


@pytest.fixture
def graph(fake):
    config = MoAConfig(
        proposers=[fake("A"), fake("B"), fake("C")], aggregator=fake("AGG"), layers=3
    )
    return create_moa_graph(config)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[str] = []
        self.ends = 0

    def on_chat_model_start(self, serialized, messages, *, name=None, **kwargs):
        self.starts.append(name)

    def on_llm_end(self, response, **kwargs):
        self.ends += 1


def run_both_ways(graph, config=None):
    """Run the graph with `invoke` and with `ainvoke`; return both answers."""
    sync = graph.invoke(QUESTION, config)
    async_ = asyncio.run(graph.ainvoke(QUESTION, config))
    return sync, async_


def test_a_run_nobody_listens_to_starts_no_llm_run(graph, llm_runs_started, log):
    sync, async_ = run_both_ways(graph)
    assert llm_runs_started == []
    assert len(log.calls) == 2 * CALLS_PER_RUN
    assert sync["messages"][-1].text and async_["messages"][-1].text


def test_the_switch_sends_every_call_the_usual_way(graph, llm_runs_started, monkeypatch):
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    run_both_ways(graph)
    assert len(llm_runs_started) == 2 * CALLS_PER_RUN


def test_a_handler_on_the_run_sees_every_call_with_its_name(graph):
    recorder = Recorder()
    run_both_ways(graph, {"callbacks": [recorder]})
    assert len(recorder.starts) == recorder.ends == 2 * CALLS_PER_RUN
    assert recorder.starts.count("layer 1 / proposer 2 / B") == 2, recorder.starts
    assert sum(name.endswith("/ aggregator / AGG") for name in recorder.starts) == 2


def test_the_usage_callback_counts_every_call(graph, log):
    with get_usage_metadata_callback() as usage:
        run_both_ways(graph)
    counted = sum(u["total_tokens"] for u in usage.usage_metadata.values())
    assert set(usage.usage_metadata) == {"A", "B", "C", "AGG"}
    assert counted == sum(
        len(c.output.split()) + sum(len(m.text.split()) for m in c.messages) for c in log.calls
    )


def test_collect_runs_sees_every_call(graph):
    with collect_runs() as collector:
        asyncio.run(graph.ainvoke(QUESTION))
    assert sum(run.run_type == "llm" for run in collector.traced_runs) == CALLS_PER_RUN


def test_debug_mode_and_a_verbose_model_go_the_usual_way(fake, llm_runs_started):
    quiet, verbose = fake("Q"), fake("V", verbose=True)
    set_debug(True)
    try:
        invoke_direct(quiet, [HumanMessage("hi")], None)
    finally:
        set_debug(False)
    assert len(llm_runs_started) == 1
    asyncio.run(ainvoke_direct(verbose, [HumanMessage("hi")], None))
    assert len(llm_runs_started) == 2
    invoke_direct(quiet, [HumanMessage("hi")], None)
    assert len(llm_runs_started) == 2


def test_langsmith_tracing_goes_the_usual_way(fake):
    model = fake("T")
    with tracing_context(enabled=True, client=None):
        assert not nobody_listens(model, None)
    parent = RunTree(name="an app's traced function", run_type="chain")
    with tracing_context(parent=parent):  # inside a @traceable function
        assert not nobody_listens(model, None)
    assert nobody_listens(model, None)


def test_a_none_callbacks_key_keeps_the_runs_handlers(fake):
    """As in LangChain's `ensure_config`, ``callbacks: None`` does not override the run's."""
    recorder = Recorder()

    async def body(_: object) -> None:
        await ainvoke_direct(fake("A"), [HumanMessage("hi")], {"callbacks": None})

    asyncio.run(RunnableLambda(body).ainvoke(None, {"callbacks": [recorder]}))
    assert len(recorder.starts) == 1


def test_handlers_on_the_model_or_in_the_config_go_the_usual_way(fake):
    on_model = Recorder()
    model = fake("M", callbacks=[on_model])
    invoke_direct(model, [HumanMessage("hi")], None)
    assert on_model.starts == [None]
    given = Recorder()
    invoke_direct(fake("N"), [HumanMessage("hi")], {"callbacks": [given]})
    asyncio.run(ainvoke_direct(fake("N"), [HumanMessage("hi")], {"callbacks": [given]}))
    assert len(given.starts) == 2


def test_a_class_that_overrides_invoke_is_called_through_it(log, llm_runs_started):
    class Wrapped(FakeChat):
        async def ainvoke(self, input, config=None, **kwargs):
            message = await super().ainvoke(input, config, **kwargs)
            message.content = f"wrapped: {message.content}"
            return message

    answer = asyncio.run(ainvoke_direct(Wrapped(label="W", log=log), [HumanMessage("hi")], None))
    assert answer.text == "wrapped: W #1"
    assert len(llm_runs_started) == 1


def test_the_models_cache_and_rate_limiter_still_apply(log, llm_runs_started):
    class Counting(InMemoryRateLimiter):
        taken = 0

        async def aacquire(self, *, blocking: bool = True) -> bool:
            Counting.taken += 1
            return True

    model = FakeChat(label="C", log=log, cache=InMemoryCache(), rate_limiter=Counting())
    first = asyncio.run(ainvoke_direct(model, [HumanMessage("same")], None))
    again = asyncio.run(ainvoke_direct(model, [HumanMessage("same")], None))
    assert first.text == again.text == "C #1"
    assert len(log.calls) == 1  # the second was the cache's
    assert Counting.taken == 1  # the limiter is asked before each request, not a cache hit
    assert llm_runs_started == []


def test_the_global_llm_cache_still_applies(log):
    model = FakeChat(label="G", log=log)
    set_llm_cache(InMemoryCache())
    try:
        invoke_direct(model, [HumanMessage("same")], None)
        invoke_direct(model, [HumanMessage("same")], None)
    finally:
        set_llm_cache(None)
    assert len(log.calls) == 1


class Streaming(FakeChat):
    streaming: bool = False


@pytest.mark.parametrize("streams", [False, True], ids=["generates", "streams"])
@pytest.mark.parametrize("way", ["sync", "async"])
def test_an_answer_is_the_same_either_way_with_langchains_id(log, monkeypatch, way, streams):
    def answer() -> dict:
        model = Streaming(label="S", log=log, streaming=streams)
        messages = [("user", "hi there")]  # a tuple is converted too
        if way == "sync":
            message = invoke_direct(model, messages, None)
        else:
            message = asyncio.run(ainvoke_direct(model, messages, None))
        run_id = "-".join(message.id.split("-")[2:7])  # lc_run--<uuid>[-0]
        return message.model_dump() | {"id": message.id.replace(run_id, "<run>")}

    direct = answer()
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    usual = answer()
    assert direct == usual
    assert direct["id"] == ("lc_run--<run>" if streams else "lc_run--<run>-0")
    assert direct["usage_metadata"]["output_tokens"] == 2


@pytest.mark.parametrize("installed", ["before", "after"])
def test_instrumentation_that_patches_langchain_sees_every_call(fake, installed):
    """ddtrace, for one, wraps ``BaseChatModel.agenerate`` (functools-style) at startup,
    which may be before or after this package is imported."""
    seen: list[str] = []
    original = BaseChatModel.agenerate

    @functools.wraps(original)
    async def traced(self, *args, **kwargs):
        seen.append(self.label)
        return await original(self, *args, **kwargs)

    if installed == "after":
        BaseChatModel.agenerate = traced
    try:
        if installed == "before":  # import the module again under the instrumentation
            BaseChatModel.agenerate = traced
            importlib.reload(direct)
        asyncio.run(direct.ainvoke_direct(fake("A"), [HumanMessage("hi")], None))
    finally:
        BaseChatModel.agenerate = original
        importlib.reload(direct)
    assert seen == ["A"]


def test_a_class_patched_after_its_first_call_is_called_through_the_patch(log):
    class Later(FakeChat):
        pass

    asyncio.run(ainvoke_direct(Later(label="L", log=log), [HumanMessage("hi")], None))

    async def patched(self, input, config=None, **kwargs):
        return AIMessage("patched")

    Later.ainvoke = patched  # as mocker.patch.object(Later, "ainvoke", ...) does
    answer = asyncio.run(ainvoke_direct(Later(label="L", log=log), [HumanMessage("hi")], None))
    assert answer.text == "patched"


class RunIdChat(BaseChatModel):
    """Answers with its run manager's run id, as a model tagging its requests might."""

    @property
    def _llm_type(self) -> str:
        return "run-id"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=AIMessage(str(run_manager.run_id)))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        return self._generate(messages, stop, run_manager)


def test_a_model_gets_a_run_manager_as_from_ainvoke(llm_runs_started):
    sync = invoke_direct(RunIdChat(), [HumanMessage("hi")], None)
    async_ = asyncio.run(ainvoke_direct(RunIdChat(), [HumanMessage("hi")], None))
    assert len(sync.text) == len(async_.text) == 36 and sync.text != async_.text
    assert llm_runs_started == []


class CancelledChat(BaseChatModel):
    """Turns its cancellation into another error, or swallows it and answers anyway."""

    swallow: bool = False

    @property
    def _llm_type(self) -> str:
        return "cancelled"

    def _generate(self, *args, **kwargs):
        raise NotImplementedError

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if self.swallow:
                return ChatResult(generations=[ChatGeneration(message=AIMessage("partial"))])
            raise ConnectionError("connection closed by client") from None
        raise AssertionError("not cancelled")


@pytest.mark.parametrize("swallow", [False, True], ids=["converts", "swallows"])
def test_a_call_past_its_timeout_is_a_timeout_whatever_the_model_does_with_it(swallow):
    with pytest.raises(CallTimeoutError, match=r"did not answer within 0\.05s"):
        asyncio.run(acall_model(CancelledChat(swallow=swallow), [HumanMessage("hi")], "M", 0.05))
