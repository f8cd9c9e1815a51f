"""MoAChatModel: MoA wherever LangChain takes a chat model."""

import dataclasses
import json
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import START, MessagesState, StateGraph

from langgraph_moa import MoAChatModel, MoAConfig, MoAInputError, create_moa_graph

LONG = lambda label, n, msgs: f"{label} says alpha beta gamma STOP delta"  # noqa: E731


@pytest.fixture
def llm(fake):
    config = MoAConfig(
        proposers=[fake("A", reply=LONG), fake("B", reply=LONG)],
        aggregator=fake("AGG", reply=LONG),
        layers=2,
    )
    return MoAChatModel(config=config, model="test-moa")


def test_invoke_returns_the_answer_with_usage_of_every_call(llm, log):
    answer = llm.invoke("hi")
    assert answer.text == "AGG says alpha beta gamma STOP delta"
    assert len(log.calls) == 3
    calls = answer.response_metadata["moa"]["calls"]
    assert (
        answer.usage_metadata["output_tokens"] == sum(c["completion_tokens"] for c in calls) == 21
    )
    assert answer.usage_metadata["input_tokens"] == sum(c["prompt_tokens"] for c in calls) > 0


def test_stream_yields_tokens_then_a_last_chunk_with_usage(llm):
    chunks = list(llm.stream("hi"))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 6 and "".join(texts) == "AGG says alpha beta gamma STOP delta"
    assert chunks[-1].usage_metadata["output_tokens"] == 21
    total = sum(chunks[1:], chunks[0])
    assert isinstance(total, AIMessageChunk) and total.usage_metadata["total_tokens"] > 21


async def test_async_stream_and_invoke(llm):
    chunks = [c async for c in llm.astream("hi")]
    assert "".join(c.text for c in chunks) == "AGG says alpha beta gamma STOP delta"
    assert (await llm.ainvoke("hi")).text.startswith("AGG says")


@pytest.mark.parametrize("streaming", [False, True])
def test_stop_truncates(llm, streaming):
    if streaming:
        text = "".join(c.text for c in llm.stream("hi", stop=["STOP"]))
    else:
        text = llm.invoke("hi", stop=["STOP"]).text
    assert text == "AGG says alpha beta gamma "


def test_parameters_map_onto_the_moa_config(fake, log):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config, temperature=0.2, max_tokens=77, timeout=9, max_retries=4)
    llm.invoke("hi")
    assert (log.by("A")[0].temperature, log.by("AGG")[0].max_tokens) == (0.2, 77)
    assert llm.moa_config.call_timeout_s == 9 and llm.moa_config.retry.max_attempts == 5


def test_works_in_a_chain(llm):
    chain = ChatPromptTemplate.from_messages([("user", "Tell me about {topic}")]) | llm
    assert chain.invoke({"topic": "MoA"}).text.startswith("AGG says")


def test_preset_names_and_files_are_accepted(tmp_path):
    assert MoAChatModel(config="moa-lite").moa_config.name == "moa-lite"
    MoAConfig.from_preset("moa-lite").to_file(tmp_path / "c.yaml")
    assert MoAChatModel(config=str(tmp_path / "c.yaml")).moa_config.layers == 2


class City(__import__("pydantic").BaseModel):
    city: str
    confidence: float


def test_structured_output_comes_from_the_aggregator(fake, log):
    agg = fake("AGG", reply=lambda *a: '{"city": "Paris", "confidence": 0.9}')
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2)
    structured = MoAChatModel(config=config).with_structured_output(City)
    assert structured.invoke("Capital of France?") == City(city="Paris", confidence=0.9)
    # The proposers answered freely; only the aggregator was asked for the structure.
    assert [c.label for c in log.calls].count("A") == 1
    raw = MoAChatModel(config=config).with_structured_output(City, include_raw=True).invoke("q")
    assert raw["parsed"].city == "Paris" and raw["raw"].response_metadata["moa"]["calls"]


def test_the_models_annotations_resolve_at_run_time(fake):
    """`typing.get_type_hints` reads the model's annotations (documentation tools; LangChain's
    `with_fallbacks` wrapper, on each method it forwards): `.graph`'s and the class's named
    `CompiledStateGraph`, imported for type checkers only, and raised NameError."""
    import typing

    from langgraph.graph.state import CompiledStateGraph

    assert typing.get_type_hints(MoAChatModel)["_graph"] is not None
    graph_type = typing.get_type_hints(MoAChatModel.graph.fget)["return"]
    assert typing.get_origin(graph_type) is CompiledStateGraph
    agg = fake("AGG", reply=lambda *a: '{"city": "Paris", "confidence": 0.9}')
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=agg))
    chain = llm.with_fallbacks([llm]).with_structured_output(City)
    assert chain.invoke("q") == City(city="Paris", confidence=0.9)


def test_json_mode_without_a_schema_answers_any_json_object(fake):
    # with_structured_output(None, method="json_mode") built the graph for a plain answer:
    # the parsed object came back None, with no parsing error, from a valid JSON answer.
    json_reply = lambda *a: '{"city": "Paris", "confidence": 0.9}'  # noqa: E731
    for variant in ("moa", "select"):
        proposers = [fake("A", reply=json_reply), fake("B", reply=json_reply)]
        agg = fake("AGG", reply=json_reply) if variant == "moa" else None
        config = MoAConfig(variant=variant, proposers=proposers, aggregator=agg, layers=2)
        llm = MoAChatModel(config=config)
        expected = {"city": "Paris", "confidence": 0.9}
        assert llm.with_structured_output(None, method="json_mode").invoke("q") == expected
        raw = llm.with_structured_output(None, method="json_mode", include_raw=True).invoke("q")
        assert raw["parsed"] == expected and raw["parsing_error"] is None
    for method in ("json_schema", "function_calling"):
        with pytest.raises(MoAInputError, match=r"no schema to answer in.*json_mode"):
            llm.with_structured_output(None, method=method)


def test_unparseable_structure_is_an_error_not_free_text(fake):
    from langgraph_moa import AggregatorFailedError

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", reply=lambda *a: "not json"),
        retry={"max_attempts": 1},
    )
    with pytest.raises(AggregatorFailedError, match="did not return the requested structure"):
        MoAChatModel(config=config).with_structured_output(City).invoke("q")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"layers": 3},
            "MoAChatModel has no field 'layers': set it in the config, "
            "config=MoAConfig(layers=3, ...)",
        ),
        (
            {"temprature": 0.1},
            "MoAChatModel has no field 'temprature': did you mean 'temperature'?",
        ),
        ({"max_token": 5}, "did you mean 'max_tokens'?"),
        ({"api_key": "sk-x"}, "each inner model reads its own provider's key"),
        ({"wizardry": True}, "MoAChatModel has no field 'wizardry': its own are config"),
        ({"temperature": "hot"}, "Invalid MoAChatModel argument: temperature:"),
    ],
)
def test_an_argument_it_has_no_field_for_is_refused_naming_the_fix(fake, kwargs, message):
    from langgraph_moa import MoAConfigError

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    with pytest.raises(MoAConfigError) as refused:
        MoAChatModel(config=config, **kwargs)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": 3}, "layers=3 is no call argument: set it in the config, config=MoAConfig("),
        ({"samples": 2}, "samples=2 is no call argument: set it in the config"),
        ({"temprature": 0.1}, "temprature=0.1 is no call argument: did you mean 'temperature'?"),
        ({"max_token": 5}, "did you mean 'max_tokens'?"),
        ({"api_key": "sk-x"}, "each inner model reads its own provider's key"),
        # A near miss of a MoA setting: passed on, every inner call would drop it unsaid.
        (
            {"layer": 3},
            "layer=3 is no call argument: it looks like the MoA setting 'layers': set it in "
            "the config, config=MoAConfig(layers=3, ...)",
        ),
        ({"proposer": "x"}, "it looks like the MoA setting 'proposers': set it in the config"),
        ({"variants": "x"}, "it looks like the MoA setting 'variant': set it in the config"),
        ({"presets": "moa-lite"}, "'preset': to choose the preset for one call, pass model="),
        # The ones a call can choose: the fix is the per-call way, not a rebuilt model.
        (
            {"preset": "moa-lite"},
            "preset='moa-lite' is no call argument: to choose the preset for one call, pass model='moa-lite'.",
        ),
        ({"aggregator": "openai:gpt-4o-mini"}, "for one call, pass model='openai:gpt-4o-mini'."),
    ],
)
@pytest.mark.parametrize("how", ["invoke", "bind", "stream"])
def test_a_call_argument_that_is_a_moa_setting_or_a_typo_is_refused_before_any_call(
    fake, log, kwargs, message, how
):
    """Sent on to every inner call, it would be ignored (llama.cpp drops unknown fields):
    a different MoA than the one asked for, at full price, with nothing said."""
    from langgraph_moa import MoAConfigError

    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))
    with pytest.raises(MoAConfigError) as refused:
        if how == "invoke":
            llm.invoke("hi", **kwargs)
        elif how == "bind":
            llm.bind(**kwargs).invoke("hi")
        else:
            list(llm.stream("hi", **kwargs))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert log.calls == []


def test_provider_call_arguments_still_reach_every_answering_call(fake, log):
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))
    # `samplers` is llama.cpp's option, one letter off the MoA setting `samples`.
    provider = {"samplers": ["top_k", "temperature"], "seed": 1, "n_probs": 2, "top_k": 40}
    llm.invoke("hi", top_p=0.5, max_new_tokens=9, presence_penalty=0.1, user="u", **provider)
    assert all(
        {
            "top_p": 0.5,
            "max_new_tokens": 9,
            "presence_penalty": 0.1,
            "user": "u",
            **provider,
        }.items()
        <= c.kwargs.items()
        for c in log.calls
    )


@pytest.mark.parametrize("config", [5, ["local-moa"], 2.5])
def test_a_config_of_the_wrong_type_is_a_moa_config_error_as_for_the_graph(config):
    from langgraph_moa import MoAConfigError, create_moa_graph

    with pytest.raises(MoAConfigError) as refused:
        MoAChatModel(config=config)
    with pytest.raises(MoAConfigError) as graph_refused:
        create_moa_graph(config)
    assert str(refused.value) == str(graph_refused.value)
    assert "\n" not in str(refused.value)


def test_a_config_mapping_is_read_as_the_graph_reads_it(fake):
    llm = MoAChatModel(config={"proposers": [fake("A")], "aggregator": fake("AGG"), "layers": 4})
    assert llm.moa_config.layers == 4


def test_streaming_true_makes_invoke_stream_the_answer_to_callbacks(fake, log):
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self):
            self.tokens = []

        def on_llm_new_token(self, token, *, parent_run_id=None, **kwargs):
            if parent_run_id is None:  # the MoA's own run, not its inner calls
                self.tokens.append(token)

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=LONG), layers=2)
    handler = Tokens()
    llm = MoAChatModel(config=config, streaming=True)
    answer = llm.invoke("hi", config={"callbacks": [handler]})
    assert len(handler.tokens) > 1 and "".join(handler.tokens) == answer.text


@pytest.mark.parametrize("how", ["as built", "rebuilt by configurable_fields"])
def test_langgraph_messages_mode_streams_its_tokens(fake, how):
    from langchain_core.runnables import ConfigurableField
    from langgraph.graph import START, MessagesState, StateGraph

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=LONG), layers=2)
    llm: Any = MoAChatModel(config=config)
    if how != "as built":  # LangChain rebuilds the model with every field given
        configurable = llm.configurable_fields(temperature=ConfigurableField(id="t"))
        llm = configurable.with_config(configurable={"t": 0.3})
    builder = StateGraph(MessagesState)
    builder.add_node("llm", lambda state: {"messages": [llm.invoke(state["messages"])]})
    builder.add_edge(START, "llm")
    pieces = [
        chunk
        for chunk, _ in builder.compile().stream(
            {"messages": [("user", "hi")]}, stream_mode="messages"
        )
    ]
    assert len(pieces) > 2  # the answer's tokens, not one whole message


def _node_app(llm: Any) -> Any:
    """A one-node LangGraph app whose node asks `llm`."""
    builder = StateGraph(MessagesState)
    builder.add_node("llm", lambda state: {"messages": [llm.invoke(state["messages"])]})
    builder.add_edge(START, "llm")
    return builder.compile()


@pytest.mark.parametrize("where", ["chain", "node"])
def test_the_callers_recursion_limit_and_max_concurrency_stay_outside_the_moa(fake, where):
    """They bound the caller's graph or batch, as they do for a direct `invoke`: inherited,
    a one-node app's recursion_limit=2 ended the MoA run with GraphRecursionError, and
    max_concurrency=1 ran the proposers one at a time (toward their layer's deadline)."""
    import threading

    together = threading.Barrier(3)

    def meet(n: int, messages: Any) -> None:  # each proposal waits for the other two
        together.wait(timeout=5)

    config = MoAConfig(
        proposers=[fake(p, fail=meet) for p in "ABC"],
        aggregator=fake("AGG"),
        layers=3,
        retry={"max_attempts": 1},
    )
    llm = MoAChatModel(config=config)
    run = {"recursion_limit": 2, "max_concurrency": 1}
    if where == "chain":
        chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm
        answer = chain.invoke({"q": "hi"}, config=run)
    else:
        answer = _node_app(llm).invoke({"messages": [("user", "hi")]}, config=run)["messages"][-1]
    assert answer.text.startswith("AGG #")
    assert [c["status"] for c in answer.response_metadata["moa"]["calls"]] == ["ok"] * 7


@pytest.mark.parametrize("given", ["dataclass", "dict"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_node_of_an_app_with_its_own_context_can_ask_the_model(fake, given, mode):
    """The app's runtime context is the app's: LangGraph hands it to a graph started
    without one, and the MoA's refused it (MoAConfigError: 'Run context must be a
    MoAContext or a dict'), so no app with a context schema could use the model."""
    from dataclasses import dataclass

    @dataclass
    class App:
        user_id: str = "u"

    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))

    async def ask(state: MessagesState) -> dict:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState, context_schema=App)
    builder.add_node(
        "llm", ask if mode == "async" else lambda s: {"messages": [llm.invoke(s["messages"])]}
    )
    builder.add_edge(START, "llm")
    context = App("bob") if given == "dataclass" else {"user_id": "bob"}
    out = await builder.compile().ainvoke({"messages": [("user", "hi")]}, context=context)
    assert out["messages"][-1].text.startswith("AGG #")


def test_a_node_of_a_checkpointed_app_keeps_the_moa_run_out_of_its_thread(fake):
    """The MoA run is the model's own, not a step of the app's thread: it inherited the
    app's checkpointer, so every inner step was saved into the app's thread, and a call
    argument no checkpoint can hold (``response_format=`` a pydantic class, which the
    aggregator's provider reads) failed the app's turn with msgpack's TypeError."""
    import json

    from langgraph.checkpoint.memory import InMemorySaver
    from pydantic import BaseModel

    class Answer(BaseModel):
        a: int

    def reply(label: str, n: int, messages: Any) -> str:
        return json.dumps({"a": n})

    config = MoAConfig(
        proposers=[fake(p, reply=reply) for p in "AB"], aggregator=fake("AGG", reply=reply)
    )
    llm = MoAChatModel(config=config)
    builder = StateGraph(MessagesState)
    builder.add_node(
        "llm",
        lambda state: {"messages": [llm.invoke(state["messages"], response_format=Answer)]},
    )
    builder.add_edge(START, "llm")
    saver = InMemorySaver()
    app = builder.compile(checkpointer=saver)
    thread = {"configurable": {"thread_id": "t"}}
    for turn in ("hi", "again"):
        app.invoke({"messages": [("user", turn)]}, thread)
    answers = [m.text for m in app.get_state(thread).values["messages"]]
    assert answers == ["hi", '{"a": 1}', "again", '{"a": 2}']
    assert {c.config["configurable"]["checkpoint_ns"] for c in saver.list(None)} == {""}


class _Runs:
    """Records every run's parent, tags and metadata, to check where inner calls nest."""

    def __init__(self):
        from langchain_core.callbacks import BaseCallbackHandler

        runs = self.runs = {}

        class Handler(BaseCallbackHandler):
            def on_chat_model_start(self, serialized, messages, *, run_id, **kw):
                runs[run_id] = ("chat", kw)

            def on_chain_start(self, serialized, inputs, *, run_id, **kw):
                runs[run_id] = ("chain", kw)

        self.handler = Handler()

    def chat_models(self):
        return {rid: kw for rid, (kind, kw) in self.runs.items() if kind == "chat"}

    def root(self, run_id):
        while (parent := self.runs[run_id][1].get("parent_run_id")) in self.runs:
            run_id = parent
        return run_id


async def _consume(llm, how, config):
    if how == "stream":
        return list(llm.stream("hi", config))
    if how == "astream":
        return [c async for c in llm.astream("hi", config)]
    if how == "invoke, streaming=True":
        return llm.invoke("hi", config)
    return await llm.ainvoke("hi", config)


@pytest.mark.parametrize(
    "how", ["stream", "astream", "invoke, streaming=True", "ainvoke, streaming=True"]
)
async def test_streamed_runs_nest_the_inner_calls_under_the_models_run(fake, how):
    """LangChain gives `_stream` no run manager; the caller's callbacks, tags and metadata
    must still reach the proposer and aggregator calls, as children of the MoA's run."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config, streaming=True if "streaming" in how else None)
    runs = _Runs()
    await _consume(llm, how, {"callbacks": [runs.handler], "tags": ["t1"], "metadata": {"k": 1}})
    chats = runs.chat_models()
    assert len(chats) == 3  # the MoA's run, A and AGG: as with a plain invoke
    (moa,) = [rid for rid, kw in chats.items() if kw.get("parent_run_id") is None]
    for rid, kw in chats.items():
        assert runs.root(rid) == moa
        assert "t1" in kw["tags"] and kw["metadata"]["k"] == 1


async def test_astream_events_shows_the_inner_chat_model_events(fake):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=LONG), layers=2)
    events = [e async for e in MoAChatModel(config=config).astream_events("hi", version="v2")]
    started = [e["name"] for e in events if e["event"] == "on_chat_model_start"]
    assert started == ["MoAChatModel", "layer 1 / proposer 1 / A", "layer 2 / aggregator / AGG"]
    inner = [e for e in events if e["event"] == "on_chat_model_stream" and e["parent_ids"][1:]]
    assert "".join(e["data"]["chunk"].text for e in inner) == "AGG says alpha beta gamma STOP delta"


async def test_astream_events_gives_each_answer_token_once_under_the_moas_own_name(fake):
    # The README tells a user printing on_chat_model_stream to keep the events named for the
    # MoA (its own run), since the inner aggregator's events carry the same tokens again.
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=LONG), layers=2)
    model = MoAChatModel(config=config)
    events = [e async for e in model.astream_events("hi", version="v2")]
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    own = "".join(e["data"]["chunk"].text for e in streamed if e["name"] == model.get_name())
    assert own == "AGG says alpha beta gamma STOP delta"
    inner = "".join(e["data"]["chunk"].text for e in streamed if e["name"] != model.get_name())
    assert inner == own  # the same tokens a second time, under the aggregator's name


@pytest.mark.parametrize("streaming", [None, True])
def test_langgraph_messages_mode_gets_each_token_once(fake, streaming):
    from langgraph.graph import START, MessagesState, StateGraph

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=LONG), layers=2)
    llm = MoAChatModel(config=config, streaming=streaming)
    builder = StateGraph(MessagesState)
    builder.add_node("llm", lambda state: {"messages": [llm.invoke(state["messages"])]})
    builder.add_edge(START, "llm")
    pieces = builder.compile().stream({"messages": [("user", "hi")]}, stream_mode="messages")
    assert "".join(chunk.text for chunk, _ in pieces) == "AGG says alpha beta gamma STOP delta"


def test_the_llm_cache_tells_moas_with_other_models_apart_and_reuses_the_same(fake, log):
    from langchain_core.caches import InMemoryCache

    cache = InMemoryCache()

    def moa(agg_label, **role):
        agg = fake(agg_label, reply=lambda label, n, msgs: label)
        config = MoAConfig(proposers=[fake("A")], aggregator={"model": agg, **role}, layers=2)
        return MoAChatModel(cache=cache, config=config)

    assert moa("AGG1").invoke("hi").text == "AGG1"
    assert moa("AGG2").invoke("hi").text == "AGG2"  # another aggregator: not AGG1's answer
    assert moa("AGG3", max_tokens=9).invoke("hi").text == "AGG3"  # another limit
    calls = len(log.calls)
    assert moa("AGG1").invoke("hi").text == "AGG1"  # the same MoA again: from the cache
    assert len(log.calls) == calls


def test_the_cache_key_is_the_same_for_the_same_config_and_differs_with_a_prompt():
    def params(**changes):
        return MoAChatModel(config=MoAConfig.from_preset("moa-lite", **changes))._identifying_params

    assert params() == params()
    assert params()["config"] != params(synthesis_prompt="Answer in French.")["config"]


def test_model_copy_with_changed_fields_runs_with_them(fake, log):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config, max_tokens=10, temperature=0.1)
    llm.invoke("hi")  # resolves and compiles the original's graph first
    llm.model_copy(update={"max_tokens": 99, "temperature": 0.9}).invoke("hi")
    llm.invoke("hi")
    assert [c.max_tokens for c in log.by("AGG")] == [10, 99, 10]
    assert [c.temperature for c in log.by("A")] == [0.1, 0.9, 0.1]


def test_model_copy_refuses_a_field_it_does_not_have(fake):
    from langgraph_moa import MoAConfigError

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    with pytest.raises(MoAConfigError, match="did you mean 'max_tokens'"):
        MoAChatModel(config=config).model_copy(update={"max_token": 5})


def test_a_preset_named_by_model_runs_with_the_models_timeout_and_retries(monkeypatch):
    import langgraph_moa.chat_model as chat_model

    built = []

    def spy(cfg, **kwargs):
        built.append(cfg)
        raise RuntimeError("built; stop before any network call")

    monkeypatch.setattr(chat_model, "create_moa_graph", spy)
    llm = MoAChatModel(config="moa-lite", timeout=5, max_retries=0, temperature=0.3)
    with pytest.raises(RuntimeError, match="built"):
        llm.invoke("hi", model="moa")
    preset = built[-1].name.split(" ")[0]  # "moa (customized)"
    assert (preset, built[-1].call_timeout_s, built[-1].retry.max_attempts) == ("moa", 5, 1)
    assert {p.temperature for p in built[-1].proposers} == {0.3}


@pytest.mark.parametrize("how", ["invoke", "bind"])
def test_call_time_max_tokens_and_temperature_mean_what_the_fields_mean(fake, log, how):
    """max_tokens caps the answer (the aggregator); temperature is the proposers'."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config, max_tokens=10, temperature=0.1)
    if how == "bind":
        llm.bind(max_tokens=77, temperature=0.9).invoke("hi")
    else:
        llm.invoke("hi", max_tokens=77, temperature=0.9)
    (proposal,), (answer,) = log.by("A"), log.by("AGG")
    assert (proposal.temperature, proposal.max_tokens) == (0.9, 512)  # the proposer's own cap
    assert answer.max_tokens == 77 and answer.temperature != 0.9
    assert "max_tokens" not in proposal.kwargs and "temperature" not in answer.kwargs


@pytest.mark.parametrize("how", ["invoke", "bind"])
@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
def test_call_time_max_completion_tokens_is_max_tokens_by_its_newer_name(fake, log, how, name):
    """max_completion_tokens reached every proposer and aggregator call as an extra kwarg."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config, max_tokens=10)
    answer = (llm.bind(**{name: 77}) if how == "bind" else llm).invoke(
        "hi", **({} if how == "bind" else {name: 77})
    )
    (proposal,), (final,) = log.by("A"), log.by("AGG")
    assert (proposal.max_tokens, final.max_tokens) == (512, 77)
    for call in (proposal, final):
        assert "max_completion_tokens" not in call.kwargs and "max_tokens" not in call.kwargs
    assert answer.text == final.output


def test_max_tokens_and_max_completion_tokens_that_disagree_are_refused(fake, log):
    from langgraph_moa import MoAConfigError

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    llm = MoAChatModel(config=config)
    with pytest.raises(MoAConfigError, match=r"max_tokens=50 and max_completion_tokens=77"):
        llm.invoke("hi", max_tokens=50, max_completion_tokens=77)
    assert log.calls == []
    llm.invoke("hi", max_tokens=77, max_completion_tokens=77)  # the same cap twice is one
    assert log.by("AGG")[0].max_tokens == 77


def test_call_time_fields_join_the_context_of_a_model_override(fake):
    from langgraph_moa.chat_model import _with_call_fields
    from langgraph_moa.config.context import MoAContext

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    context = _with_call_fields(
        config, MoAContext(aggregator="m@http://h/v1"), 0.9, {"max_tokens": 77}
    )
    assert context == MoAContext(
        aggregator="m@http://h/v1", temperature=0.9, aggregator_max_tokens=77
    )


def test_a_bad_call_time_temperature_fails_before_any_call(fake, log):
    from langgraph_moa import MoAConfigError

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    with pytest.raises(MoAConfigError, match="temperature"):
        MoAChatModel(config=config).invoke("hi", temperature=9)
    assert log.calls == []


@pytest.mark.parametrize("call", ["invoke", "ainvoke"])
async def test_include_raw_returns_an_answer_that_never_parsed_with_its_error(fake, call):
    """LangChain's promise for include_raw=True: the parsing error is returned, not raised."""
    from langgraph_moa import AggregatorFailedError, StructuredOutputError

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", reply=lambda *a: "not json"),
        aggregator_fallbacks=[fake("AGG2", reply=lambda *a: "still not json")],
        retry={"max_attempts": 1},
    )
    structured = MoAChatModel(config=config).with_structured_output(City, include_raw=True)
    out = structured.invoke("q") if call == "invoke" else await structured.ainvoke("q")
    assert out["parsed"] is None and out["raw"].text == "still not json"  # the last fallback's
    assert isinstance(out["parsing_error"], AggregatorFailedError)
    assert isinstance(out["parsing_error"].__cause__, StructuredOutputError)


def test_include_raw_still_raises_a_failure_that_is_not_about_parsing(fake):
    from langgraph_moa import AggregatorFailedError

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", fail=lambda n, m: RuntimeError("HTTP 500")),
        retry={"max_attempts": 1},
    )
    with pytest.raises(AggregatorFailedError):
        MoAChatModel(config=config).with_structured_output(City, include_raw=True).invoke("q")


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_a_usage_callback_counts_the_inner_calls_and_the_answer_which_is_their_total(fake, how):
    """Pins what README's chat model section says: the answer's usage_metadata is the whole
    run's, and a usage handler also sees every inner call, so its entries add up to twice
    the run's tokens; the answer's total lands on its model's name (here the aggregator's)."""
    from langchain_core.callbacks import UsageMetadataCallbackHandler
    from langchain_core.messages.ai import add_usage

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    handler = UsageMetadataCallbackHandler()
    llm = MoAChatModel(config=config)
    if how == "invoke":
        answer = llm.invoke("hi", {"callbacks": [handler]})
    else:
        chunks = list(llm.stream("hi", {"callbacks": [handler]}))
        answer = sum(chunks[1:], chunks[0])
    calls = {c["model"]: c for c in answer.response_metadata["moa"]["calls"]}
    own = {
        name: {
            "input_tokens": c["prompt_tokens"],
            "output_tokens": c["completion_tokens"],
            "total_tokens": c["prompt_tokens"] + c["completion_tokens"],
        }
        for name, c in calls.items()
    }
    total = answer.usage_metadata
    assert answer.response_metadata["model_name"] == "AGG"
    assert handler.usage_metadata == {"A": own["A"], "AGG": add_usage(own["AGG"], total)}
    assert (
        sum(u["total_tokens"] for u in handler.usage_metadata.values()) == 2 * total["total_tokens"]
    )


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_the_answers_usage_sums_the_token_details_of_every_call(fake, how):
    """Providers report what part of the prompt came from their cache and how many tokens went
    to reasoning (`input_token_details`, `output_token_details`); the answer's usage, the run's
    cost, dropped them. Now each detail is the sum over the run's calls, and the totals still
    add up as LangChain's `UsageMetadata` says."""
    details = lambda n: {  # noqa: E731
        "input_token_details": {"cache_read": 3},
        "output_token_details": {"reasoning": 2},
    }
    config = MoAConfig(
        proposers=[fake("A", usage_details=details), fake("B")],
        aggregator=fake("AGG", usage_details=details),
        layers=2,
    )
    llm = MoAChatModel(config=config)
    if how == "invoke":
        answer = llm.invoke("hi")
    else:
        chunks = list(llm.stream("hi"))
        answer = sum(chunks[1:], chunks[0])
    usage = answer.usage_metadata
    assert usage["input_token_details"] == {"cache_read": 6}  # A's and AGG's, not B's
    assert usage["output_token_details"] == {"reasoning": 4}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    calls = answer.response_metadata["moa"]["calls"]
    assert [c.get("input_token_details") for c in calls] == [
        {"cache_read": 3},
        None,
        {"cache_read": 3},
    ]


def test_an_answer_whose_calls_report_no_token_details_has_none(llm):
    usage = llm.invoke("hi").usage_metadata
    assert "input_token_details" not in usage and "output_token_details" not in usage


# --- nesting inside chains and graphs, call-time caps, copies (review, session 21) ------------


class _Parents(BaseCallbackHandler):
    """Records every run's parent, and which runs are chat-model runs (by name)."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}
        self.llm: dict[Any, str] = {}

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw):
        self.parent[run_id] = parent_run_id

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        self.parent[run_id] = parent_run_id
        self.llm[run_id] = kw.get("name") or "MoAChatModel"

    def chat_model_ancestors(self, run_id) -> list[str]:
        out = []
        while (run_id := self.parent.get(run_id)) is not None:
            if run_id in self.llm:
                out.append(self.llm[run_id])
        return out

    def inner(self) -> list[Any]:
        return [r for r, name in self.llm.items() if name != "MoAChatModel"]


@pytest.mark.parametrize("how", ["invoke", "stream", "astream"])
async def test_inner_calls_nest_under_the_moa_run_inside_a_chain(fake, how):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | MoAChatModel(config=config)
    runs = _Parents()
    options = {"callbacks": [runs]}
    if how == "invoke":
        chain.invoke({"q": "hi"}, options)
    elif how == "stream":
        list(chain.stream({"q": "hi"}, options))
    else:
        [c async for c in chain.astream({"q": "hi"}, options)]
    assert len(runs.inner()) == 2
    assert all(runs.chat_model_ancestors(r) == ["MoAChatModel"] for r in runs.inner())


@pytest.mark.parametrize("streaming", [False, True])
async def test_inner_calls_nest_under_the_moa_run_inside_a_langgraph_node(fake, streaming):
    llm = MoAChatModel(
        config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2),
        streaming=streaming,
    )

    async def answer(state: MessagesState) -> dict:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node(answer).add_edge(START, "answer").compile()
    runs = _Parents()
    tokens = []
    async for message, _ in graph.astream(
        {"messages": [("user", "hi")]}, {"callbacks": [runs]}, stream_mode="messages"
    ):
        tokens.append(message.text)
    assert all(runs.chat_model_ancestors(r) == ["MoAChatModel"] for r in runs.inner())
    assert "".join(tokens).count("AGG #1") == 1  # each token of the answer once


@pytest.mark.parametrize("variant", ["select", "ranker"])
def test_call_time_max_tokens_caps_the_proposal_that_is_the_answer(fake, log, variant):
    roles = {"aggregator": fake("R", reply=lambda *a: "1")} if variant == "ranker" else {}
    config = MoAConfig(variant=variant, proposers=[fake("A"), fake("B")], **roles)
    MoAChatModel(config=config).invoke("hi", max_tokens=7)
    MoAChatModel(config=config, max_tokens=9).invoke("hi")
    caps = [c.max_tokens for c in log.by("A") + log.by("B")]
    assert sorted(caps) == [7, 7, 9, 9]
    assert all(c.max_tokens != 7 for c in log.by("R"))  # the ranker keeps its own cap


def test_model_copy_update_by_the_model_alias_takes_effect(fake):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    copy = MoAChatModel(config=config, model="old").model_copy(update={"model": "new"})
    assert copy.model_name == "new"


def _schema(title: str, field: str) -> dict:
    return {
        "title": title,
        "type": "object",
        "properties": {field: {"type": "string"}},
        "required": [field],
    }


@pytest.fixture
def graphs_built(monkeypatch):
    """Build a stand-in graph that remembers (a copy of) the schema it was built for."""
    import copy
    import types

    import langgraph_moa.chat_model as chat_model

    built = []

    def build(cfg, **kwargs):
        built.append(types.SimpleNamespace(schema=copy.deepcopy(kwargs["response_format"])))
        return built[-1]

    monkeypatch.setattr(chat_model, "create_moa_graph", build)
    return built


def _graph_of(llm, schema, method="json_schema"):
    from langgraph_moa.chat_model import _Structured

    return llm._graph_for(None, _Structured(schema, method))


def test_a_freed_dict_schema_never_lends_its_graph_to_another(fake, graphs_built):
    """Keyed by id(schema), a new dict at a freed one's address got the old schema's graph."""
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    for i in range(40):
        # One flat dict per call, freed after it: the next one is made at its address.
        schema = {"title": "City" if i % 2 else "Count", "type": "object"}
        assert _graph_of(llm, schema).schema == schema
        del schema
    assert len(graphs_built) == 2  # equal schemas, fresh dicts every call: one graph each


def test_a_dict_schema_changed_in_place_gets_a_graph_for_its_new_content(fake, graphs_built):
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    schema = _schema("City", "city")
    first = _graph_of(llm, schema)
    schema["properties"]["country"] = {"type": "string"}
    assert _graph_of(llm, schema).schema == schema
    assert _graph_of(llm, _schema("City", "city")) is first
    assert _graph_of(llm, _schema("City", "city"), "json_mode") is not first


def test_the_readme_says_how_many_graphs_are_kept():
    from pathlib import Path

    from langgraph_moa.chat_model import GRAPH_CACHE_SIZE

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    said = f"the {GRAPH_CACHE_SIZE} most recent graphs are kept, `chat_model.GRAPH_CACHE_SIZE`"
    assert said in " ".join(readme.split()), "the README names another number of graphs kept"


def test_the_structured_graphs_kept_are_bounded(fake, graphs_built):
    from langgraph_moa.chat_model import GRAPH_CACHE_SIZE

    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    for i in range(GRAPH_CACHE_SIZE + 50):
        _graph_of(llm, _schema("S", f"field{i}"))
    assert len(llm._graphs) == GRAPH_CACHE_SIZE
    assert len(graphs_built) == GRAPH_CACHE_SIZE + 50
    recent = _schema("S", f"field{GRAPH_CACHE_SIZE + 49}")
    assert _graph_of(llm, recent) is graphs_built[-1]  # the most recent ones stay
    assert _graph_of(llm, City) is _graph_of(llm, City)  # a class is its own key
    assert len(graphs_built) == GRAPH_CACHE_SIZE + 51


def test_a_deep_copy_starts_with_no_compiled_graphs(fake, graphs_built):
    import copy

    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    _graph_of(llm, City)
    twin = copy.deepcopy(llm._graphs)  # model_copy(deep=True): a lock cannot be copied
    assert len(twin) == 0 and len(llm._graphs) == 1


def test_a_fresh_dict_schema_per_call_runs_one_compiled_graph(fake, monkeypatch):
    import langgraph_moa.chat_model as chat_model

    built = []
    real = chat_model.create_moa_graph

    def counting(*args, **kwargs):
        built.append(kwargs.get("response_format"))
        return real(*args, **kwargs)

    monkeypatch.setattr(chat_model, "create_moa_graph", counting)
    agg = fake("AGG", reply=lambda *a: '{"city": "Paris"}')
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2))
    for _ in range(3):
        assert llm.with_structured_output(_schema("City", "city")).invoke("q") == {"city": "Paris"}
    assert built == [_schema("City", "city")]


def test_strict_structured_output_reaches_the_aggregator_of_a_synthesizing_variant(fake, log):
    """``strict=`` was kept only in the trace: the aggregator answered without it, silently."""
    asked: list = []
    agg = fake("AGG", reply=lambda *a: '{"city": "Paris", "confidence": 0.9}')
    own = agg.with_structured_output

    def recording(schema, **kwargs):
        asked.append(kwargs)
        return own(schema, **kwargs)

    object.__setattr__(agg, "with_structured_output", recording)
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=agg))
    assert llm.with_structured_output(City, strict=True).invoke("q").city == "Paris"
    assert llm.with_structured_output(City).invoke("q").city == "Paris"
    # Each run asks twice: at its start, to refuse a schema the aggregator cannot answer in
    # before any call, and for the answer.
    assert [a.get("strict", "unset") for a in asked] == [True, True, "unset", "unset"]


@pytest.mark.parametrize("variant", ["moa", "select"])
def test_strict_with_json_mode_is_refused_in_one_sentence(fake, variant):
    agg = fake("AGG") if variant == "moa" else None
    config = MoAConfig(variant=variant, proposers=[fake("A"), fake("B")], aggregator=agg)
    with pytest.raises(MoAInputError, match=r"^strict=True .*json_mode.*any JSON object"):
        MoAChatModel(config=config).with_structured_output(City, method="json_mode", strict=True)


@pytest.mark.parametrize("schema", [42, "City", [City]])
@pytest.mark.parametrize("variant", ["moa", "select"])
def test_a_schema_that_is_none_is_refused_before_any_call(fake, log, variant, schema):
    """A synthesizing variant took any schema and failed at the final step, after every
    proposal was paid for, with LangChain's multi-line error (select: at once, the same)."""
    agg = fake("AGG") if variant == "moa" else None
    llm = MoAChatModel(config=MoAConfig(variant=variant, proposers=[fake("A")], aggregator=agg))
    with pytest.raises(
        MoAInputError, match=r"^The structured-output schema .* is no schema: "
    ) as e:
        llm.with_structured_output(schema).invoke("q")
    assert "\n" not in str(e.value) and log.calls == []
    with pytest.raises(MoAInputError, match="is no schema"):
        create_moa_graph(
            MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")), response_format=schema
        )


def test_json_mode_and_openai_response_formats_are_schemas(fake):
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    llm.with_structured_output({"type": "object"}, method="json_mode")  # any JSON object
    llm.with_structured_output({"name": "City", "schema": {"type": "object"}})
    wrapped = {"type": "json_schema", "json_schema": {"name": "City", "schema": {}}}
    llm.with_structured_output(wrapped, method="json_mode")  # any dict: no schema is read


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
@pytest.mark.parametrize("variant", ["moa", "select"])
def test_a_whole_response_format_is_refused_naming_the_schema_inside(fake, log, variant, method):
    """OpenAI's whole ``response_format`` was let through as a schema, and no model reads it as
    one: ChatOpenAI's (and llama.cpp's) aggregator failed on it after the proposals were paid
    for, select failed with LangChain's multi-line error, or called it a tool that is none."""
    agg = fake("AGG") if variant == "moa" else None
    llm = MoAChatModel(config=MoAConfig(variant=variant, proposers=[fake("A")], aggregator=agg))
    wrapped = {"type": "json_schema", "json_schema": {"name": "City", "schema": {}}}
    with pytest.raises(MoAInputError, match=r"^The structured-output schema .* is a whole ") as e:
        llm.with_structured_output(wrapped, method=method).invoke("q")
    assert "\n" not in str(e.value) and "'title'" in str(e.value) and log.calls == []


class _CityV1(__import__("pydantic").v1.BaseModel):
    """A city and how sure the answer is."""

    city: str
    confidence: float


class _CityDict(TypedDict):
    """A city and how sure the answer is."""

    city: Annotated[str, ..., "The city."]
    confidence: Annotated[float, 0.5, "How sure."]


@dataclasses.dataclass
class _CityData:
    """A city and how sure the answer is."""

    city: str
    confidence: float


_CITY_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["city", "confidence"],
}
ACCEPTED_SCHEMAS = {
    "pydantic v2": City,
    "pydantic v1": _CityV1,
    "TypedDict": _CityDict,
    "dataclass": _CityData,
    "function dict": {"name": "City", "description": "A city.", "parameters": _CITY_PARAMS},
    "tool dict": {"type": "function", "function": {"name": "City", "parameters": _CITY_PARAMS}},
    "titled JSON schema": {"title": "City", **_CITY_PARAMS},
    "convert_to_openai_tool": convert_to_openai_tool(City),
    "name and schema": {"name": "City", "schema": _CITY_PARAMS},
}


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("variant", ["moa", "select"])
@pytest.mark.parametrize("form", list(ACCEPTED_SCHEMAS))
def test_every_schema_form_langchain_takes_is_answered(fake, variant, method, form):
    """`check_schema` must let through each form LangChain's own `with_structured_output`
    takes (pydantic v1 and v2, TypedDict, dataclass, OpenAI function and tool dicts, a titled
    JSON schema, ``{"name", "schema"}``), end to end, for every method and kind of variant."""
    answer = {"city": "Paris", "confidence": 0.9}

    def called(label: str, n: int, messages: Any, kwargs: dict[str, Any]) -> list[dict]:
        return [{"name": kwargs["tools"][0]["function"]["name"], "args": answer, "id": "c1"}]

    proposers = [fake(x, reply=lambda *a: json.dumps(answer), tool_calls=called) for x in "AB"]
    agg = fake("AGG", reply=lambda *a: json.dumps(answer)) if variant == "moa" else None
    llm = MoAChatModel(config=MoAConfig(variant=variant, proposers=proposers, aggregator=agg))
    parsed = llm.with_structured_output(ACCEPTED_SCHEMAS[form], method=method).invoke("q")
    if not isinstance(parsed, dict):
        parsed = parsed.model_dump() if hasattr(parsed, "model_dump") else parsed.dict()
    assert parsed == answer


def test_an_aggregator_that_takes_no_strict_is_refused_before_any_call(log):
    """An aggregator whose `with_structured_output` refuses ``strict`` (as some integrations
    do for arguments they do not know) failed the run at the final step, after the proposals
    were paid for; it is now refused at the run's start, in one sentence naming the fix."""
    from tests.fakes import FakeChat

    class NoStrict(FakeChat):
        def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
            kwargs.pop("method", None)
            if set(kwargs) - {"include_raw"}:
                raise ValueError(f"Received unsupported arguments {kwargs}")
            return super().with_structured_output(schema, **kwargs)

    agg = NoStrict(label="AGG", log=log, reply=lambda *a: '{"city": "Paris", "confidence": 1}')
    llm = MoAChatModel(config=MoAConfig(proposers=[FakeChat(label="A", log=log)], aggregator=agg))
    assert llm.with_structured_output(City).invoke("q").city == "Paris"  # strict left out
    made = len(log.calls)
    with pytest.raises(MoAInputError, match=r"^Aggregator AGG cannot .* strict=True") as e:
        llm.with_structured_output(City, strict=True).invoke("q")
    assert str(e.value).endswith("leave strict out, or choose an aggregator that takes it.")
    assert "\n" not in str(e.value) and len(log.calls) == made


TITLELESS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
LOOPBACK = "agg@http://127.0.0.1:9/v1"  # ChatOpenAI; unit tests open no socket, so no call


def test_a_json_schema_without_a_title_is_answered_by_an_aggregator_that_takes_it(fake):
    """bec625a refused a titleless JSON schema for every aggregator, though ChatOllama (here a
    fake that takes any schema) answers in one, as MoA did before."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg)
    assert MoAChatModel(config=config).with_structured_output(TITLELESS).invoke("q") == {
        "city": "Paris"
    }
    graph = create_moa_graph(config, response_format=TITLELESS)
    assert graph.invoke({"messages": [("user", "q")]})["structured_response"] == {"city": "Paris"}


@pytest.mark.parametrize(
    ("schema", "fix"),
    [
        (TITLELESS, "give the JSON schema a top-level 'title'"),
        (convert_to_openai_tool(City), "or use method='function_calling'"),
    ],
)
def test_a_schema_the_aggregator_refuses_is_refused_before_any_proposal(fake, log, schema, fix):
    """ChatOpenAI refuses a titleless JSON schema and (with json_schema) an OpenAI tool: the
    tool was taken, and failed at the last step after every proposal was paid for."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=LOOPBACK)
    llm = MoAChatModel(config=config).with_structured_output(schema)
    with pytest.raises(
        MoAInputError, match=r"^Aggregator agg@\S+ cannot answer in the structured"
    ) as e:
        llm.invoke("q")
    assert fix in str(e.value) and "\n" not in str(e.value) and log.calls == []
    graph = create_moa_graph(config, response_format=schema)
    with pytest.raises(MoAInputError, match=fix.replace("(", r"\(")):
        graph.invoke({"messages": [("user", "q")]})
    assert log.calls == []


class SpacedTitle(City):
    model_config = __import__("pydantic").ConfigDict(title="my answer")


# A class name OpenAI refuses: its first letter is Cyrillic.
NON_ASCII = type("\u0421ity", (City,), {})


@pytest.mark.parametrize(
    ("schema", "method", "name"),
    [
        ({**TITLELESS, "title": "my answer"}, "json_schema", "my answer"),
        ({**TITLELESS, "title": "my answer"}, "function_calling", "my answer"),
        ({"name": "my answer", "schema": TITLELESS}, "json_schema", "my answer"),
        (SpacedTitle, "function_calling", "my answer"),  # a tool's name is the model's title
        (NON_ASCII, "json_schema", "\u0421ity"),  # the json_schema's name is the class's own name
    ],
)
def test_a_schema_whose_name_openai_refuses_is_refused_before_any_proposal(
    fake, log, schema, method, name
):
    """ChatOpenAI sent such a name as the json_schema's (or the tool's) name, and OpenAI
    refused it only at the aggregator, after every proposal was paid for."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=LOOPBACK)
    llm = MoAChatModel(config=config).with_structured_output(schema, method=method)
    with pytest.raises(MoAInputError, match="needs a 'name' of letters, digits") as e:
        llm.invoke("q")
    assert repr(name) in str(e.value) and log.calls == []


def test_a_spaced_title_is_taken_in_json_mode(fake):
    """json_mode sends no name: the schema's title is no refusal there."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A")], aggregator=agg)
    schema = {**TITLELESS, "title": "my answer"}
    llm = MoAChatModel(config=config).with_structured_output(schema, method="json_mode")
    assert llm.invoke("q") == {"city": "Paris"}


@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_schema_a_local_aggregator_refuses_is_refused_before_its_server_starts(
    fake, log, monkeypatch, run
):
    """The local aggregator's model was built (its llama.cpp server spawned: tens of seconds
    and GBs of memory; async runs waited for it to be ready) before it was asked the schema."""
    graph, started = _local_moa(fake, monkeypatch, TITLELESS)
    with pytest.raises(MoAInputError, match="give the JSON schema a top-level 'title'"):
        _run(graph, run, {"messages": [("user", "q")]})
    assert started == [] and log.calls == []


def _local_moa(fake, monkeypatch, schema):
    """A MoA of local models whose servers are not spawned; and the list of those asked for."""
    from langgraph_moa.local.runtime import LocalRuntime

    started: list[str] = []

    class Server:  # the local runtime's server, not spawned
        url = "http://127.0.0.1:9/v1"

    monkeypatch.setattr(LocalRuntime, "server", lambda self, name: started.append(name) or Server())
    config = MoAConfig(proposers=[fake("A"), "local:qwen2.5-0.5b"], aggregator="local:qwen2.5-0.5b")
    return create_moa_graph(config, response_format=schema), started


def _run(graph, run, state):
    """Run `graph` on `state` with `invoke`, or with `ainvoke` on a new event loop."""
    import asyncio

    return graph.invoke(state) if run == "invoke" else asyncio.run(graph.ainvoke(state))


def test_a_run_context_naming_another_aggregator_is_checked_at_the_run_start(fake, log):
    """The schema is judged per run: the context may swap the aggregator the graph was built
    with for one that cannot answer in it."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A")], aggregator=agg), response_format=TITLELESS
    )
    with pytest.raises(MoAInputError, match=r"^Aggregator .* top-level 'title'"):
        graph.invoke({"messages": [("user", "q")]}, context={"aggregator": LOOPBACK})
    assert log.calls == []
    assert graph.invoke({"messages": [("user", "q")]})["structured_response"] == {"city": "Paris"}


def test_a_fallback_aggregator_that_cannot_answer_in_the_schema_refuses_the_run(fake, log):
    """Every aggregator of the chain is asked at the run's start (README, Structured output):
    a fallback the run may never reach still refuses it, naming that fallback, rather than
    failing after the proposals were paid for."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, aggregator_fallbacks=[LOOPBACK])
    graph = create_moa_graph(config, response_format=TITLELESS)
    with pytest.raises(MoAInputError, match=r"^Aggregator agg@http://127\.0\.0\.1:9/v1 cannot"):
        graph.invoke({"messages": [("user", "q")]})
    assert log.calls == []


@pytest.mark.parametrize("variant", ["select", "ranker"])
def test_a_json_schema_without_a_title_is_refused_where_moa_makes_a_tool_of_it(fake, log, variant):
    """Where a proposal is the answer, MoA itself converts the schema to a tool or format."""
    agg = None if variant == "select" else fake("R")
    llm = MoAChatModel(config=MoAConfig(variant=variant, proposers=[fake("A")], aggregator=agg))
    with pytest.raises(MoAInputError, match=r"^The structured-output schema .* is no schema: "):
        llm.with_structured_output(TITLELESS).invoke("q")
    assert log.calls == []


@pytest.mark.parametrize("schema", [TITLELESS, None])
@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_bad_conversation_is_named_before_a_refused_schema_and_starts_nothing(
    fake, log, monkeypatch, run, schema
):
    """A run with both a conversation no model can answer and a schema its aggregator
    refuses named the schema: the user fixed it, ran again, and only then heard of the
    conversation, the part of the request that is theirs at every run. An async run
    started its local servers (seconds, GBs of memory) before refusing the conversation."""
    graph, started = _local_moa(fake, monkeypatch, schema)
    state = {"messages": [("user", "q"), ("assistant", "a")]}
    with pytest.raises(MoAInputError, match=r"^The last message must come from the user"):
        _run(graph, run, state)
    assert started == [] and log.calls == []
