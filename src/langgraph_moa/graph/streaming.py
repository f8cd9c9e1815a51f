"""A MoA run's answer as text pieces: the one adapter of the CLI, the server and the chat model.

```python
stream = AnswerStream(graph, {"messages": messages})
for piece in stream:                 # or: async for piece in stream
    print(piece, end="")
stream.answer                        # the final AIMessage: usage and provenance
```

The graph streams every model's tokens; only the final answer's are tagged (see
`final_answer_only`). A final step that does not write tokens (a ranker's or selector's pick,
a fallback answer) streams nothing, so the answer then arrives whole, as one last piece.

Text once yielded is never taken back, so a stream never splices two attempts: the pieces
all come from one model call (one message id, and no ``discarded`` event between them: a
provider may reuse an id). If the call writing the answer fails after
its first piece and another attempt takes over (the graph's retry, the next aggregator, a
fallback answer), the stream raises `StreamBrokenError` instead of sending the second
attempt's text after the first's. A failure before the first piece costs nothing: the
retry's pieces are the first the consumer sees. A consumer that can take its text back (the
CLI's live view, which redraws it) passes `on_restart` instead: it is told to forget the
text so far, and the next attempt's pieces follow from their start.

`RunEvents` is the other view of a run, for a viewer that shows every model at work (the
web page of `moa serve`, any client of its event stream): each call's start, tokens
(proposers' included), finish or failure, the selection, then the answer. See
docs/event-stream.md for the events' fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from langgraph_moa._unicode import well_formed
from langgraph_moa.errors import StreamBrokenError
from langgraph_moa.run._accounting import finish_reason, keeps_block, openai_finish_reason
from langgraph_moa.run._answer import answer_part, final_answer_only
from langgraph_moa.run._calls import DISCARDED, DISCARDS_ONLY, WATCH
from langgraph_moa.run._inputs import forces_call
from langgraph_moa.text._thinking import ThinkingCut

_T = TypeVar("_T")

ProgressHandler = Callable[[dict[str, Any]], None]
"""Receives each progress event the graph writes (a call started, finished or failed)."""


class OneAttempt:
    """Keeps a streamed answer to one attempt's text: another's may never follow it.

    The answer's pieces must all come from one model call (one message id), or from the
    successive parts of a chunk-wise answer. Once text went out, a piece of another message
    of the same part is a retry or the next aggregator of the chain, and a finished answer
    other than the text sent is a fallback: both raise `StreamBrokenError` rather than send
    a second attempt's text after the first's. The plain stream (`AnswerStream`) and moa
    serve's progress stream each keep one, so neither can splice two answers.

    Each message's pieces pass its `ThinkingCut` (`answer_text`): a reasoning model's
    leading ``<think>`` block is no part of the answer, whose text the graph keeps without
    it (`without_thinking`). A block that never closed is the answer's own text where the
    message's finish reason (`ended`) says the model stopped itself and none of its chunks
    carried a tool call (Gemini says ``STOP`` with its calls; `kept_whole`): its cut
    releases it whole at the message's end, as the graph keeps it.
    """

    def __init__(self) -> None:
        self.source: str | None = None  # the message id of the pieces so far
        self.part = 0  # the chunk-wise part of the pieces so far
        self.pieces: list[str] = []  # what the consumer has received
        self.held = ""  # a high surrogate that ended the last piece: its pair may follow
        self.thinking = ThinkingCut()  # the current message's leading think block
        self.released = ""  # what the last message's cut held: answer text still to go out
        self.stopped = False  # the current message's finish reason: the model stopped itself
        self.called = False  # a chunk of the current message carried a tool call

    def check(self, source: str | None, part: int) -> None:
        """Accept a piece of message `source` (of chunk-wise `part`) as the answer's next.

        Raises:
            StreamBrokenError: text was sent, and this piece is another attempt's.
        """
        # Another call's text may follow only as the next part of a chunk-wise answer;
        # a new message of the same part is a retry, whose text would be spliced on.
        # (`sent` keeps no empty piece: any piece means text went out.)
        if source != self.source and part <= self.part:
            if self.pieces:
                raise StreamBrokenError(sum(map(len, self.pieces)))
            self.held = ""  # the broken attempt's half, never sent: not the retry's text
            self.thinking, self.stopped, self.called = ThinkingCut(), False, False  # nor its cut's
        if (source, part) != (self.source, self.part):
            # What the last cut held (whitespace, a "<th", a block its model ended) is the
            # answer's: the record keeps each part's text, so it goes out before the new part's.
            self.released = self.thinking.finish(self.stopped and not self.called)
            self.thinking, self.stopped, self.called = ThinkingCut(), False, False
        self.source, self.part = source, part

    def ended(self, source: str | None, part: int, reason: str | None, calls: bool = False) -> None:
        """Note what a piece of message `source` (of `part`) says of its end, if anything.

        That is its finish reason, if any, and whether it carries a tool call (`calls`).

        Only the current message's counts: another's, which sent no text, has nothing held.
        """
        if (source, part) != (self.source, self.part):
            return
        self.called = self.called or calls
        if reason is not None:
            self.stopped = keeps_block(reason)

    def answer_text(self, text: str) -> str:
        """Return what of the current message's piece `text` is answer (not thinking).

        Text the last message's cut held at its end (`check`) comes first.
        """
        out, self.released = self.released + self.thinking.take(text), ""
        return out

    def held_text(self) -> str:
        """Return the answer text the thinking cut held when the stream ended."""
        return self.thinking.finish(self.stopped and not self.called)

    def sent(self, text: str) -> str:
        """Record `text` as sent to the consumer, and return it.

        Made well-formed as the recorded answer is (`well_formed`): a high surrogate that
        ends a piece waits for the next one (a pair split between two chunks is joined),
        and a lone one becomes U+FFFD, so that what was sent is the answer's text.
        """
        if not text:  # most parts of a run carry none of the answer: nothing to join
            return ""
        text = self.held + text
        cut = len(text) - 1 if "\ud800" <= text[-1] <= "\udbff" else len(text)
        text, self.held = well_formed(text[:cut]), text[cut:]
        if text:
            self.pieces.append(text)
        return text

    def _flushed(self) -> str:
        """Send a high surrogate still held back (no pair came): as U+FFFD."""
        tail, self.held = well_formed(self.held), ""
        if tail:
            self.pieces.append(tail)
        return tail

    def rest(self, answer: AIMessage | None) -> str:
        """Return the whole answer if nothing was sent (a pick, a fallback), else what is held.

        What is held is a lone high surrogate that ended the last piece, sent as U+FFFD.
        Held text was never sent: where nothing else was, the answer goes out whole (the
        held half was its start, or a failed attempt's), and a break counts only what went
        out.

        Raises:
            StreamBrokenError: pieces were sent, but the answer is another text (the
                streaming call failed after them and a fallback answered).
        """
        sent = "".join(self.pieces)
        if answer is None:
            return self._flushed()
        if not sent:
            self.held = ""
            return self.sent(str(answer.text)) + self._flushed()
        if well_formed(str(answer.text)) != sent + well_formed(self.held):
            raise StreamBrokenError(len(sent))
        return self._flushed()


class AnswerStream:
    """One run of a graph, iterated as the final answer's text pieces (sync or async).

    Iterate it once; afterwards `final` holds the last state and `answer` its last message.
    `streamed` tells whether the answer came token by token (the last piece was not the
    answer sent whole), which is what a consumer cutting at stop sequences needs to know.
    """

    def __init__(
        self,
        graph: Any,
        run_input: Mapping[str, Any],
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        on_progress: ProgressHandler | None = None,
        watch: bool = False,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Prepare a run of `graph` on `run_input`; nothing runs until iteration.

        Args:
            graph: A compiled MoA graph.
            run_input: The graph's input, e.g. ``{"messages": [...]}`` (a `MoAInput`, as the
                graph takes it: a mapping, so a TypedDict type-checks).
            config: The run's config (callbacks, tags), passed to the graph (plus the
                package's own ``configurable`` keys: `WATCH`, `DISCARDS_ONLY`).
            context: The run's context (a `MoAContext`, a dict or None).
            on_progress: Called with each progress event; progress events are only streamed
                when it is given.
            watch: Stream every call's tokens (proposers' too) to `on_progress` as
                ``token`` events (see `RunEvents`); a live view showing each call writing.
            on_restart: For a consumer that can take back the text it was given (the live
                view of `moa run`, which redraws it, and prints the answer once at the end):
                called where another attempt's text would follow the text so far (a retry,
                the next aggregator, a fallback), instead of raising `StreamBrokenError`.
                The pieces yielded after it are the new attempt's, from its start.
        """
        self.graph = graph
        self.run_input = run_input
        self.config: RunnableConfig | None
        if on_progress is None:  # the custom stream is read for `discarded` alone
            self.config = _configured(config, DISCARDS_ONLY)
        else:
            self.config = _configured(config, WATCH) if watch else config
        self.context = context
        self.on_progress = on_progress
        self.final: dict[str, Any] = {}
        self.streamed = False
        self._one = OneAttempt()  # what the consumer has received (held text is not)
        self.on_restart = on_restart
        self._attempts = _Attempts()

    @property
    def answer(self) -> AIMessage:
        """The answer message of the final state (after iteration)."""
        answer: AIMessage = self.final["messages"][-1]
        return answer

    def _modes(self) -> list[str]:
        return ["messages", "values", "custom"]  # custom: `discarded`, even unwatched

    def _take(self, mode: str, part: Any) -> str:
        """Keep state and report progress; return the answer text in this part, if any."""
        if mode == "values":
            self.final = part
        elif mode == "custom":
            if not self._attempts.saw(part) and self.on_progress is not None:
                self.on_progress(part)
        elif final_answer_only(part[1]):
            return self._answer_chunk(*part)
        elif self.on_progress is not None and (event := token_event(*part)) is not None:
            self.on_progress(event)  # another call's tokens, in a watched run
        return ""

    def _answer_chunk(self, chunk: Any, meta: dict[str, Any]) -> str:
        """Return the answer text of one chunk of the answer's call; note its finish reason."""
        source, piece = self._attempts.source(chunk.id), answer_part(meta)
        out = ""
        if text := chunk.text:
            self._or_restart(lambda: self._one.check(source, piece))
            self.streamed = True
            out = self._one.answer_text(str(text))
        self._one.ended(source, piece, _said(chunk), _calls(chunk))
        return out

    def _or_restart(self, step: Callable[[], _T]) -> _T:
        """Take `step` (a check of `OneAttempt`); where it breaks, restart if the consumer can.

        Raises:
            StreamBrokenError: another attempt's text would follow the text sent, and the
                consumer cannot take that text back (no `on_restart`).
        """
        try:
            return step()
        except StreamBrokenError:
            if self.on_restart is None:
                raise
            self._one = OneAttempt()  # the consumer forgets the text so far
            self.on_restart()
            return step()

    def _answer_piece(self, hold: ToolCallHold, mode: str, part: Any) -> str:
        """Return what one streamed part adds to the answer's text (kept as yielded)."""
        return self._one.sent(hold.take(self._take(mode, part)))

    def _closing(self, hold: ToolCallHold) -> Iterator[str]:
        """Yield what the run's end releases: held-back text, then any part never streamed."""
        answer = self.answer if self.final.get("messages") else None
        if rest := self._one.sent(hold.take(self._one.held_text())):
            yield rest
        if rest := self._one.sent(hold.finish(answer)):
            yield rest
        if rest := self._or_restart(lambda: self._one.rest(answer)):
            yield rest

    def __iter__(self) -> Iterator[str]:
        """Run the graph, yielding the answer's text pieces as they come."""
        hold = ToolCallHold.for_run(self.run_input)
        for mode, part in self.graph.stream(
            self.run_input, self.config, context=self.context, stream_mode=self._modes()
        ):
            if text := self._answer_piece(hold, mode, part):
                yield text
        yield from self._closing(hold)

    async def __aiter__(self) -> AsyncIterator[str]:
        """Run the graph asynchronously, yielding the answer's text pieces as they come."""
        hold = ToolCallHold.for_run(self.run_input)
        async for mode, part in self.graph.astream(
            self.run_input, self.config, context=self.context, stream_mode=self._modes()
        ):
            if text := self._answer_piece(hold, mode, part):
                yield text
        for text in self._closing(hold):
            yield text


CALL_FIELDS = ("role", "layer", "proposer", "sample")
"""The fields that name one call in every call event (see `CallId`)."""


def _configured(config: RunnableConfig | None, key: str) -> RunnableConfig:
    """Return `config` with ``configurable[key]`` set.

    `WATCH` asks every call to stream its tokens (see `run._calls.watching`);
    `DISCARDS_ONLY`, the custom stream to carry only ``discarded`` (see `run._calls.emit`).
    """
    base: dict[str, Any] = dict(config or {})
    base["configurable"] = {**(base.get("configurable") or {}), key: True}
    return base  # type: ignore[return-value]


def token_event(chunk: Any, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Return the ``token`` event of one message chunk of a call, or None if it is not one.

    A call's chunks carry its identity in their metadata (`CallId.trace_metadata`); a
    usage-only chunk, or a whole message a node returned, is not a token. ``part`` is the
    chunk-wise part the token is of (0 outside one): a reasoning aggregator opens each part
    with its own ``<think>`` block, which a reader drops as `OneAttempt` does. The chunk
    that says why its call ended carries ``finish_reason`` (its text may be empty): a part
    whose model stopped itself inside a block that never closed has that block as its text,
    unless a chunk of it carried a tool call (``tool_calls``: Gemini says ``STOP`` with them).
    """
    role = meta.get("moa_role")
    text = chunk.text if role is not None else ""
    reason = _said(chunk) if role is not None else None
    calls = role is not None and _calls(chunk)
    if not text and reason is None and not calls:
        return None
    event = {
        "event": "token",
        "role": role,
        "layer": meta.get("moa_layer"),
        "proposer": meta.get("moa_proposer"),
        "sample": meta.get("moa_sample"),
        "text": str(text),
        "final": final_answer_only(meta),
        "part": answer_part(meta),  # a reader's thinking cut starts afresh at each part
    }
    if reason is not None:
        event["finish_reason"] = reason
    if calls:
        event["tool_calls"] = True
    return event


PART_END_FIELDS = ("finish_reason", "tool_calls")
"""The fields of a ``token`` event that tell a reader's thinking cut how its part ended
(`token_event`): joined token events keep them."""


def _calls(chunk: Any) -> bool:
    """Tell whether a streamed chunk carries (a piece of) a tool call."""
    return bool(getattr(chunk, "tool_call_chunks", None) or getattr(chunk, "tool_calls", None))


def _said(chunk: Any) -> str | None:
    """Return the finish reason a streamed chunk carries (its message's last, usually).

    Spelled as the call's ``finished`` event spells it (`openai_finish_reason`): Gemini's
    ``MAX_TOKENS`` is ``length``, which a reader that knows OpenAI's word takes for a cut.
    """
    return openai_finish_reason(finish_reason(chunk)) if isinstance(chunk, BaseMessage) else None


class _Attempts:
    """Tells the answer's attempts apart by the graph's ``discarded`` events (`discard_answer`).

    A message id alone does not: a provider may give every response the same id, and a
    retry's text was then taken for more of the broken attempt's. The events themselves are
    not passed on: the readers keep the answer to one attempt (`OneAttempt`), and a retry
    is already its ``started``.
    """

    def __init__(self) -> None:
        self.discarded = 0

    def saw(self, event: Any) -> bool:
        """Count `event` if it is a ``discarded`` one, and tell whether it was."""
        if isinstance(event, dict) and event.get("event") == DISCARDED:
            self.discarded += 1
            return True
        return False

    def source(self, message_id: str | None) -> str:
        """Return what names the attempt a piece of message `message_id` belongs to."""
        return f"{message_id}/{self.discarded}"


class RunEvents:
    """One run of a graph, iterated as progress events (dicts with an ``event`` field).

    The run is *watched* (``configurable["moa_watch"]``): proposers and intermediate
    aggregators stream their tokens too, which a plain run does not pay for. Events, in the
    order the run makes them:

    - ``started``, ``finished`` and ``failed``: one call (`CALL_FIELDS`, plus the model,
      latency, tokens, retries or the one-line error), as the graph's nodes emit them;
    - ``token``: a piece of one call's text (`CALL_FIELDS` and ``text``); ``final`` is true
      for the answer's own tokens;
    - ``selected`` and ``budget_spent``: run-level decisions;

    then iteration ends; `final` holds the last state, whose last message is the answer.
    """

    def __init__(
        self,
        graph: Any,
        run_input: Mapping[str, Any],
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
    ) -> None:
        """Prepare a watched run of `graph` on `run_input`; nothing runs until iteration."""
        self.graph = graph
        self.run_input = run_input
        self.config = _configured(config, WATCH)
        self.context = context
        self.final: dict[str, Any] = {}
        self.source: tuple[str | None, int] = (None, 0)
        """The attempt (`_Attempts.source`) and chunk-wise part of the last ``final`` token
        event yielded: a consumer sending the answer's tokens on checks them with
        `OneAttempt`."""
        self._attempts = _Attempts()

    @property
    def answer(self) -> AIMessage:
        """The answer message of the final state (after iteration)."""
        answer: AIMessage = self.final["messages"][-1]
        return answer

    def _event(self, mode: str, part: Any) -> dict[str, Any] | None:
        if mode == "values":
            self.final = part
            return None
        if mode == "custom":
            if (
                isinstance(part, dict)
                and part.get("type") == "moa"
                and not self._attempts.saw(part)
            ):
                return {k: v for k, v in part.items() if k != "type"}
            return None
        event = token_event(*part)
        if event is not None and event["final"]:
            self.source = (self._attempts.source(part[0].id), answer_part(part[1]))
        return event

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """Run the graph asynchronously, yielding its events as they come."""
        async for mode, part in self.graph.astream(
            self.run_input,
            self.config,
            context=self.context,
            stream_mode=["messages", "values", "custom"],
        ):
            if (event := self._event(mode, part)) is not None:
                yield event

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Run the graph, yielding its events as they come."""
        for mode, part in self.graph.stream(
            self.run_input,
            self.config,
            context=self.context,
            stream_mode=["messages", "values", "custom"],
        ):
            if (event := self._event(mode, part)) is not None:
                yield event


_CALL_STARTS = ("{", "[", "```", "<tool_call>", "Tool call:", '<response id="')


class ToolCallHold:
    """With tools bound, holds back answer text that may yet turn out to be a tool call.

    A small model may write its tool call as JSON text, which the graph then reads as a
    real call (`read_text_tool_calls`); streamed as it came, the client would get the call
    twice, as text and as a call. Text that starts like a call (``{``, ``[``, a code fence,
    ``<tool_call>``) is held until the answer is known: dropped if it became a tool call,
    sent otherwise. Any other text passes at once, unless `tool_choice` forces a call: then
    text alone is refused (`check_tool_calls`) and a fallback may answer, so all of it is
    held until the answer is known, or the stream would break on the refusal.
    """

    def __init__(self, active: bool, forced: bool = False) -> None:
        self.active = active
        self.forced = active and forced
        self.pending = ""
        self.released = not active

    @classmethod
    def for_run(cls, run_input: Mapping[str, Any]) -> ToolCallHold:
        """Return the hold for a run with `run_input`'s tools and tool choice."""
        tools = bool(run_input.get("tools"))
        return cls(tools, forced=tools and forces_call(run_input.get("tool_choice")))

    def take(self, text: str) -> str:
        """Return what of `text` can go out now."""
        if self.released or not text:
            return text
        self.pending += text
        head = self.pending.lstrip()
        if not head or self.forced:
            return ""
        if any(head.startswith(s) or s.startswith(head) for s in _CALL_STARTS):
            return ""
        self.released = True
        out, self.pending = self.pending, ""
        return out

    def finish(self, answer: AIMessage | None) -> str:
        """Return what the held text releases: the answer's own text, once it is known.

        Held text was never sent, so the answer's text goes out in its place: the text left
        once tool calls were read out of it, or another call's whole answer where the call
        that wrote it was refused (`check_tool_calls`) and the next aggregator or a
        fallback answered.
        """
        out, self.pending = self.pending, ""
        if out and answer is not None:
            return str(answer.text)
        return out
