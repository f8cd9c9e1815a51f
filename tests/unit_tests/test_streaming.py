"""Streaming: the final answer token by token, tagged; progress as custom events."""

import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from langgraph_moa import (
    MoAConfig,
    RetrySettings,
    StreamBrokenError,
    create_moa_graph,
    final_answer_only,
)
from tests.fakes import FakeChat, WordStreamer
from tests.helpers import QUESTION

LONG = lambda label, n, msgs: f"{label} says one two three four five"  # noqa: E731


def graph_for(fake, **kw):
    return create_moa_graph(
        MoAConfig(
            proposers=[fake("A", reply=LONG), fake("B", reply=LONG)],
            aggregator=fake("AGG", reply=LONG),
            **kw,
        )
    )


def test_messages_stream_yields_only_the_aggregators_tokens_one_by_one(fake):
    chunks = list(graph_for(fake).stream(QUESTION, stream_mode="messages"))
    final = [(m, meta) for m, meta in chunks if final_answer_only(meta)]
    assert len(final) >= 6  # real token streaming, not one chunk at the end
    assert "".join(m.text for m, _ in final) == "AGG says one two three four five"
    assert all(meta["langgraph_node"] == "aggregate" for _, meta in final)
    # Proposer tokens are not mixed into the stream.
    assert not any("A says" in m.text or "B says" in m.text for m, _ in chunks)
    # And the answer is not emitted a second time as a whole message.
    assert sum(m.text == "AGG says one two three four five" for m, _ in chunks) == 0


async def test_async_messages_stream_and_progress_events(fake):
    graph = graph_for(fake, layers=3)
    events, tokens = [], []
    async for mode, chunk in graph.astream(QUESTION, stream_mode=["messages", "custom"]):
        if mode == "custom":
            events.append(chunk)
        elif final_answer_only(chunk[1]):
            tokens.append(chunk[0].text)
    assert "".join(tokens) == "AGG says one two three four five"
    started = [(e["role"], e["layer"], e["proposer"]) for e in events if e["event"] == "started"]
    finished = [e for e in events if e["event"] == "finished"]
    assert sorted(started) == [
        ("aggregator", 3, -1),
        ("proposer", 1, 0),
        ("proposer", 1, 1),
        ("proposer", 2, 0),
        ("proposer", 2, 1),
    ]
    assert len(finished) == 5 and all(e["latency_s"] >= 0 for e in finished)


def test_failed_proposer_is_reported_as_a_progress_event(fake):
    bad = fake("BAD", fail=lambda n, m: ValueError("boom"))
    config = MoAConfig(
        proposers=[fake("A"), bad], aggregator=fake("AGG"), retry={"max_attempts": 1}
    )
    events = [c for c in create_moa_graph(config).stream(QUESTION, stream_mode="custom")]
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 2  # one per proposer layer
    assert all("boom" in e["error"] and e["configured_model"] == "BAD" for e in failed)


def _answer_by_the_readme(chunks):
    """Read a stream as README's recipe does: the answer's tokens, dropped when discarded."""
    text, discarded, state = "", [], {}
    for mode, chunk in chunks:
        if mode == "messages" and final_answer_only(chunk[1]):
            text += chunk[0].text
        elif mode == "custom" and chunk["event"] == "discarded":
            text = text[: chunk["keep"]]  # abandoned: a retry, the next aggregator, a fallback
            discarded.append(chunk)
        elif mode == "values":
            state = chunk
    return text, discarded, state


@pytest.mark.parametrize("how", ["retry", "fallback"])
async def test_an_answer_attempt_abandoned_after_its_first_tokens_is_marked_discarded(fake, how):
    # The aggregator streamed two words and failed. Its tokens had gone out tagged moa:final,
    # and nothing told a stream reader to drop them: the retry's text was appended to them
    # ("AGG0 AGG1AGG0 AGG1 AGG2 AGG3"), or a fallback answered with them still shown.
    attempts = 2 if how == "retry" else 1
    agg = WordStreamer(label="AGG", words=4, fail_at=2, fail_at_calls=1)
    retry = RetrySettings(max_attempts=attempts, initial_interval=0.0, jitter=False)
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=agg, retry=retry))
    modes = ["messages", "custom", "values"]
    chunks = [c async for c in graph.astream({"messages": [("user", "q")]}, stream_mode=modes)]
    text, discarded, state = _answer_by_the_readme(chunks)
    answer = state["messages"][-1]
    assert [(d["role"], d["layer"], d["sample"]) for d in discarded] == [("aggregator", 3, 0)]
    assert "stream reset" in discarded[0]["error"]
    if how == "retry":
        assert text == answer.text == "AGG0 AGG1 AGG2 AGG3"
    else:  # the fallback streams nothing: it is the state's answer, labelled
        assert text == "" and answer.response_metadata["moa"]["fallback"] == "best_proposal"


def test_a_refused_answer_is_marked_discarded_before_the_next_aggregators_tokens(fake):
    # tool_choice forced a call; the aggregator streamed text and was refused, and the
    # fallback aggregator answered with a call. The refused text stayed in the stream.
    def call(label, n, msgs, kw):
        return [{"name": "lookup", "args": {"q": "x"}, "id": "c1"}] if label == "AGG2" else []

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", reply=LONG),
        aggregator_fallbacks=[fake("AGG2", tool_calls=call)],
        retry={"max_attempts": 1},
    )
    question = {"messages": [("user", "q")], "tools": tools, "tool_choice": "required"}
    modes = ["messages", "custom", "values"]
    text, discarded, state = _answer_by_the_readme(
        create_moa_graph(config).stream(question, stream_mode=modes)
    )
    assert [d["configured_model"] for d in discarded] == ["AGG"]
    assert text == "" and state["messages"][-1].tool_calls[0]["name"] == "lookup"


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.mark.parametrize("then", ["next aggregator", "fallback"])
def test_an_incomplete_answer_passed_over_is_marked_discarded(fake, then):
    # The aggregator wrote text and a call without `b`; a whole call answered instead (the
    # next aggregator, or the best whole proposal as a fallback), but nothing told a stream
    # reader to drop the passed-over answer's text, which stayed before the answer.
    half = lambda *a: [{"name": "add", "args": {"a": 1}, "id": "h1"}]  # noqa: E731
    whole = lambda *a: [{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]  # noqa: E731
    chain = {"aggregator_fallbacks": [fake("AGG2", tool_calls=whole)]} if then != "fallback" else {}
    config = MoAConfig(
        proposers=[fake("A", tool_calls=whole)],
        aggregator=fake("AGG", reply=LONG, tool_calls=half),
        **chain,
    )
    question = {"messages": [("user", "q")], "tools": [ADD_TOOL]}
    modes = ["messages", "custom", "values"]
    text, discarded, state = _answer_by_the_readme(
        create_moa_graph(config).stream(question, stream_mode=modes)
    )
    answer = state["messages"][-1]
    assert answer.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert [d["configured_model"] for d in discarded] == ["AGG"]
    assert "'b'" in discarded[0]["error"]
    assert "AGG says" not in text


async def test_the_packages_own_readers_keep_discarded_to_themselves(fake):
    # AnswerStream (moa run, the chat model) and RunEvents (moa serve's event stream) keep
    # the answer to one attempt themselves; the CLI would draw `discarded` as a failed call.
    from langgraph_moa import AnswerStream
    from langgraph_moa.graph.streaming import RunEvents

    def graph():
        agg = WordStreamer(label="AGG", words=4, fail_at=2, fail_at_calls=1)
        retry = RetrySettings(max_attempts=2, initial_interval=0.0, jitter=False)
        return create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=agg, retry=retry))

    seen: list[dict] = []
    stream = AnswerStream(graph(), {"messages": [("user", "q")]}, on_progress=seen.append)
    pieces: list[str] = []
    stream.on_restart = pieces.clear  # the live view's redraw: the text so far is forgotten
    async for piece in stream:
        pieces.append(piece)
    text = "".join(pieces)
    events = [e async for e in RunEvents(graph(), {"messages": [("user", "q")]})]
    assert text == "AGG0 AGG1 AGG2 AGG3"
    assert [e for e in [*seen, *events] if e["event"] == "discarded"] == []
    assert sum(e["event"] == "started" and e["role"] == "aggregator" for e in events) == 2


def _retried_once():
    agg = WordStreamer(label="AGG", words=4, fail_at=2, fail_at_calls=1)
    retry = RetrySettings(max_attempts=2, initial_interval=0.0, jitter=False)
    return MoAConfig(proposers=[FakeChat(label="A")], aggregator=agg, retry=retry)


async def test_astream_events_marks_the_abandoned_attempt_with_a_custom_event():
    # astream_events has no "custom" stream mode: the abandoned attempt's tokens came with
    # nothing but a missing on_chat_model_end to tell them from the answer's.
    text, names = "", []
    graph = create_moa_graph(_retried_once())
    async for event in graph.astream_events({"messages": [("user", "q")]}, version="v2"):
        if event["event"] == "on_chat_model_stream" and "moa:final" in event["tags"]:
            text += event["data"]["chunk"].text
        elif event["event"] == "on_custom_event":
            names.append(event["name"])
            if event["name"] == "moa_discarded":
                text = text[: event["data"]["keep"]]
    assert names == ["moa_discarded"] and text == "AGG0 AGG1 AGG2 AGG3"


async def test_as_a_subgraph_its_tokens_and_the_marker_stream_with_subgraphs_true():
    # examples/subgraph.py: the parent's stream carries the MoA's tokens and events only
    # with subgraphs=True; without it the answer comes whole, as the moa node's message.
    from langgraph.graph import END, START, MessagesState, StateGraph

    moa = create_moa_graph(_retried_once())
    app = StateGraph(MessagesState).add_node("moa", moa)
    app = app.add_edge(START, "moa").add_edge("moa", END).compile()
    question = {"messages": [("user", "q")]}
    modes = ["messages", "custom"]
    items = [item async for item in app.astream(question, stream_mode=modes, subgraphs=True)]
    text, discarded, _ = _answer_by_the_readme((mode, chunk) for _, mode, chunk in items)
    assert text == "AGG0 AGG1 AGG2 AGG3" and len(discarded) == 1
    assert all(ns[0].startswith("moa:") for ns, _, _ in items)
    whole = [c async for c in app.astream(question, stream_mode="messages")]
    assert [(m.text, final_answer_only(meta)) for m, meta in whole] == [
        ("AGG0 AGG1 AGG2 AGG3", False)
    ]


class _SameIdEveryCall(WordStreamer):
    """An aggregator whose provider gives every response one id, and whose first call breaks."""

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        n = self.state["calls"] = self.state.get("calls", 0) + 1
        for i in range(4):
            if n == 1 and i == 2:
                raise ConnectionError("stream reset")
            usage = {"input_tokens": 1, "output_tokens": 4, "total_tokens": 5} if i == 3 else None
            chunk = AIMessageChunk(
                content=("" if i == 0 else " ") + f"W{n}{i}",
                id="chatcmpl-same",
                usage_metadata=usage,
            )
            yield ChatGenerationChunk(message=chunk)


def _same_id_graph():
    retry = RetrySettings(max_attempts=2, initial_interval=0.0, jitter=False)
    config = MoAConfig(
        proposers=[FakeChat(label="A")], aggregator=_SameIdEveryCall(label="AGG"), retry=retry
    )
    return create_moa_graph(config)


async def test_a_retry_under_the_same_message_id_breaks_the_stream_before_its_first_piece():
    # The stream told attempts apart by message id alone: a provider that reuses one id had
    # the retry's text spliced onto the broken attempt's ("W10 W11W20 W21 W22 W23"), all of
    # it sent, and the break raised only at the end.
    from langgraph_moa import AnswerStream, StreamBrokenError

    pieces: list[str] = []
    with pytest.raises(StreamBrokenError):
        async for piece in AnswerStream(_same_id_graph(), {"messages": [("user", "q")]}):
            pieces.append(piece)
    assert pieces == ["W10", " W11"]
    restarted: list[str] = []
    stream = AnswerStream(_same_id_graph(), {"messages": [("user", "q")]})
    stream.on_restart = restarted.clear  # the live view redraws from the retry's start
    async for piece in stream:
        restarted.append(piece)
    assert "".join(restarted) == stream.answer.text == "W20 W21 W22 W23"


async def test_moa_serves_progress_stream_tells_a_same_id_retry_apart():
    from langgraph_moa.graph.streaming import RunEvents
    from langgraph_moa.serving._events import ProgressChunks

    run_input = {"messages": [("user", "q")]}
    chunks, sent = ProgressChunks(run_input), []
    events = RunEvents(_same_id_graph(), run_input)
    with pytest.raises(StreamBrokenError):
        async for event in events:
            text, _ = chunks.take(event, events.source)
            sent.append(text or "")
    assert "".join(sent) == "W10 W11"


class _AbandonedSyncStreamer(FakeChat):
    """A sync model without a timeout of its own: its first call writes two words, hangs
    past the call's timeout (the node abandons its thread), then writes two more once the
    test saw the attempt discarded. The retry writes only after those late words."""

    go: Any = Field(default_factory=threading.Event)
    late_done: Any = Field(default_factory=threading.Event)

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        n = next(self.counter)
        words = ["A1w0", " A1w1", "|", " A1w2", " A1w3"] if n == 1 else ["A2w0", " A2w1"]
        if n > 1:
            self.late_done.wait(5)
        for word in words:
            if word == "|":
                self.go.wait(5)
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        if n == 1:
            self.late_done.set()


def test_an_abandoned_sync_attempts_late_tokens_do_not_follow_its_discarded_marker():
    # A sync run gives up on a model without a timeout of its own by leaving its thread
    # running. That thread went on streaming moa:final tokens after the `discarded` event,
    # between the retry's ("A2w0 A1w2 A2w1 A1w3"): README's recipe showed them as the answer.
    agg = _AbandonedSyncStreamer(label="AGG")
    retry = RetrySettings(max_attempts=2, initial_interval=0.0, jitter=False)
    config = MoAConfig(
        proposers=[FakeChat(label="A")], aggregator=agg, retry=retry, call_timeout_s=0.3
    )
    after: list[str] = []
    discarded = 0
    try:
        modes = ["messages", "custom"]
        for mode, chunk in create_moa_graph(config).stream(QUESTION, stream_mode=modes):
            if mode == "custom" and chunk["event"] == "discarded":
                discarded += 1
                agg.go.set()  # the abandoned thread writes its late words now
            elif mode == "messages" and final_answer_only(chunk[1]) and discarded:
                after.append(chunk[0].text)
    finally:
        agg.go.set()
        agg.late_done.set()
    assert discarded == 1
    assert "".join(after) == "A2w0 A2w1"


class _CustomSpy:
    """A graph whose runs keep what they wrote to ``stream_mode="custom"``."""

    def __init__(self, graph):
        self.graph, self.custom = graph, []

    def stream(self, *args, **kwargs):
        for mode, part in self.graph.stream(*args, **kwargs):
            self.custom += [part] if mode == "custom" else []
            yield mode, part

    async def astream(self, *args, **kwargs):
        async for mode, part in self.graph.astream(*args, **kwargs):
            self.custom += [part] if mode == "custom" else []
            yield mode, part


async def test_an_answer_stream_without_progress_reads_only_discarded_events():
    # AnswerStream reads the custom stream for `discarded` alone when nobody takes progress
    # (the chat model, moa run without a view), yet every call's started and finished went
    # through it too: work on every model call that nothing read.
    from langgraph_moa import AnswerStream

    spy = _CustomSpy(create_moa_graph(_retried_once()))
    pieces: list[str] = []
    stream = AnswerStream(spy, {"messages": [("user", "q")]}, on_restart=pieces.clear)
    async for piece in stream:
        pieces.append(piece)
    assert "".join(pieces) == "AGG0 AGG1 AGG2 AGG3"
    assert [e["event"] for e in spy.custom] == ["discarded"]
    plain = _CustomSpy(
        create_moa_graph(
            MoAConfig(proposers=[FakeChat(label="A")], aggregator=FakeChat(label="AGG"))
        )
    )
    assert "".join(AnswerStream(plain, QUESTION)) == "AGG #1" and plain.custom == []
    progress: list[dict] = []
    graph = create_moa_graph(_retried_once())
    watched = AnswerStream(graph, {"messages": [("user", "q")]}, on_progress=progress.append)
    with pytest.raises(StreamBrokenError):  # the break still comes: `discarded` was read
        async for _ in watched:
            pass
    assert [e["event"] for e in progress][:2] == ["started", "finished"]  # a listener gets all


def test_a_surrogate_pair_split_between_streamed_pieces_is_sent_joined():
    # A server that cuts an emoji's UTF-16 pair between two chunks sends a lone half in each:
    # the halves went out as they came (no UTF-8 encoder takes one), unlike the recorded
    # answer, so a stream that had sent them was called broken.
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph.streaming import OneAttempt

    one = OneAttempt()
    pieces = [one.sent("smile \ud83d"), one.sent("\ude00!"), one.sent(" end \ud800")]
    pieces.append(one.rest(AIMessage(content="smile \U0001f600! end \ufffd")))
    assert pieces == ["smile ", "\U0001f600!", " end ", "\ufffd"]


def test_a_high_surrogate_held_from_a_broken_attempt_is_not_spliced_onto_the_retry():
    # The first attempt's only piece was the high half of a pair, held for its low half,
    # then the call failed and its retry answered: the held half went out in front of the
    # retry's text ("\ufffdHello"), and the stream then broke at its end.
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph.streaming import OneAttempt

    one = OneAttempt()
    one.check("first/0", 0)
    assert one.sent("\ud83d") == ""
    one.check("retry/1", 0)
    pieces = [one.sent("Hello"), one.rest(AIMessage(content="Hello"))]
    assert "".join(pieces) == "Hello"


def test_a_fallback_answers_whole_when_only_a_held_surrogate_came_before():
    # Nothing went out (the one piece was a held high surrogate), so a fallback's answer is
    # no splice: it is sent whole, as when the call failed before its first piece.
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph.streaming import OneAttempt

    one = OneAttempt()
    one.check("first/0", 0)
    assert one.sent("\ud83d") == ""
    assert one.rest(AIMessage(content="Fallback answer")) == "Fallback answer"


def test_a_stream_that_broke_counts_only_the_text_it_sent():
    # The held high surrogate was counted as sent (as its U+FFFD) though it never went out.
    from langchain_core.messages import AIMessage

    from langgraph_moa.errors import StreamBrokenError
    from langgraph_moa.graph.streaming import OneAttempt

    one = OneAttempt()
    assert one.sent("abc\ud83d") == "abc"
    with pytest.raises(StreamBrokenError) as broken:
        one.rest(AIMessage(content="Fallback answer"))
    assert broken.value.sent_chars == 3  # the held half never went out


def test_the_progress_stream_sends_a_held_surrogate_after_held_back_text():
    # With tools, text that may be a tool call is held until the answer is known, then sent
    # in one closing piece; a lone high surrogate ending it was held for a pair, and the
    # closing never sent it: the stream's text fell one character short of the answer.
    from langchain_core.messages import AIMessage

    from langgraph_moa.serving._events import ProgressChunks

    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    chunks = ProgressChunks({"messages": [("user", "q")], "tools": tools})
    token = {"event": "token", "final": True, "text": "{not a call \ud83d"}
    sent, _ = chunks.take(token, ("m", 0))
    answer = AIMessage(content=[{"type": "text", "text": "{not a call \ud83d"}])
    assert (sent or "") + chunks.closing(answer) == "{not a call \ufffd"


def test_text_a_part_held_goes_out_before_the_next_parts():
    """The thinking cut held the whitespace (or a "<th") one part ended with, and the next
    part's new cut dropped it: part 1 "\\n\\n" and part 2 "Hi" sent "Hi", and the end of
    the stream raised StreamBrokenError against the answer "\\n\\nHi"."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph.streaming import OneAttempt

    for first in ("\n\n", "<th"):
        one, sent = OneAttempt(), ""
        for source, part, text in [("m1", 1, first), ("m2", 2, "Hi")]:
            one.check(source, part)
            sent += one.sent(one.answer_text(text))
        sent += one.sent(one.held_text()) + one.rest(AIMessage(content=first + "Hi"))
        assert sent == first + "Hi"
    # What a broken attempt's cut held is not its retry's (same part, nothing sent).
    one = OneAttempt()
    one.check("m1", 1)
    assert one.answer_text("\n") == ""
    one.check("m2", 1)
    assert one.answer_text("Hi") + one.held_text() == "Hi"
