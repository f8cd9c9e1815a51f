"""The run event stream: server-sent events that show every model of a run at work.

``POST /v1/moa/runs`` (see `_ui`) answers with these events; docs/event-stream.md documents
them for any client. Each event is ``event: <name>`` plus ``data: <json>`` whose ``event``
field repeats the name; a comment line (``: keep-alive``) goes out whenever nothing else was
sent for `KEEPALIVE_S`, so that proxies and browsers keep a quiet connection (a long proposer
layer) open. The same pump carries the OpenAI-compatible stream, whose clients ignore
comments, and its opt-in progress events (``moa_progress: true``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler

from langgraph_moa._json import dumps
from langgraph_moa.config._prices import Prices, run_cost
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.graph.streaming import CALL_FIELDS, PART_END_FIELDS, OneAttempt, ToolCallHold
from langgraph_moa.run._calls import off_the_clock
from langgraph_moa.run._references import answered_proposals
from langgraph_moa.serving._agreement import call_key, selection_groups, synthesis_agreement

KEEPALIVE_S = 10.0
"""Seconds of silence after which the stream sends a keep-alive comment."""

KEEPALIVE = ": keep-alive\n\n"

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Sent with every event stream: no cache may keep it, and no proxy (nginx) may buffer it,
or a client sees the tokens only when the run ends."""

_END = object()
_WAKE = object()
"""Put on `pump`'s queue when tokens start to be held, so the reader waits no longer."""

PENDING_CHARS = 1_000_000
"""Characters a stream may hold unsent for a client that reads slower than its run writes;
past them the run waits for the client (`pump`) rather than queueing its whole output."""


class ReaderPace(AsyncCallbackHandler):
    """Hold a run's model token streams while its reader is behind (`pump`'s `room`).

    `pump` stops taking its source's events past `PENDING_CHARS` unsent, but LangGraph's
    stream queue, between the models and that source, has no bound: the models went on
    writing their whole answers into it for a client that read nothing (a 60,000-word answer
    to a stalled socket: server RSS +170 MB). One of these goes in a run's config (its
    callbacks, which every model call inherits, whatever task or context LangGraph runs it
    in) and its `room` to the run's `pump`: a streaming model awaits it at each token, so it
    waits there, its HTTP stream unread, until the reader has caught up. A run that no pump
    relays (a plain request) keeps its room open and never waits. The wait is the reader's:
    the call's ``call_timeout_s`` stops meanwhile (`off_the_clock`), or a reader's pause cut
    the call, which was retried and paid for again; so does its layer's deadline, or a held
    proposer was dropped as a straggler and the reader's pace chose the answer's proposals.
    """

    run_inline = True  # awaited in the model's own task: no task per token

    def __init__(self) -> None:
        super().__init__()
        self.room = asyncio.Event()
        self.room.set()

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        """Wait while the reader is behind; return at once otherwise."""
        if not self.room.is_set():
            await off_the_clock(self.room.wait())


def sse(event: dict[str, Any]) -> str:
    """Format one event as a server-sent event named after its ``event`` field."""
    return f"event: {event['event']}\ndata: {dumps(event)}\n\n"


JOIN_S = 0.1
"""Seconds a call's first held token may wait for more before it is sent (`TokenJoiner`)."""

JOIN_CHARS = 4096
"""Characters of one call's text held at most before they are sent as one event."""


class TokenJoiner:
    """Join each call's ``token`` events into one event per `JOIN_S` or `JOIN_CHARS`.

    One event per token put ~300 bytes of JSON around each few characters of text: a
    200 kB answer made 15 MB of events for the page and every API client to parse. A token
    is held per call (its four fields, ``final`` and ``part``: a chunk-wise answer's parts
    stay apart, each opening its own thinking) and sent joined with the next ones of
    the same call: when its call holds `JOIN_CHARS`, when the first held token is `JOIN_S`
    old (`pump` sends them even while the run is silent), and always before any other event
    (so a call's ``finished`` never precedes its text, and every order the stream promised
    between events holds) and at the stream's end. Each call's text arrives whole and in
    order; tokens of different calls held together go out call by call, in the order their
    first held tokens came.
    """

    def __init__(self, seconds: float | None = None, chars: int | None = None) -> None:
        self.seconds = JOIN_S if seconds is None else seconds
        self.chars = JOIN_CHARS if chars is None else chars
        self.held: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.since: float | None = None  # when the oldest held token arrived

    def add(self, event: dict[str, Any]) -> list[str]:
        """Hold one ``token`` event; return what must go out now (its call grew too long)."""
        call = (*(event.get(f) for f in CALL_FIELDS), event.get("final"), event.get("part"))
        if (held := self.held.get(call)) is None:
            self.held[call] = dict(event)
            if self.since is None:
                self.since = asyncio.get_running_loop().time()
        else:
            held["text"] += event["text"]
            # The part's end, which a reader's cut needs.
            held.update({f: event[f] for f in PART_END_FIELDS if f in event})
        if len(self.held[call]["text"]) >= self.chars:
            out = [sse(self.held.pop(call))]
            if not self.held:  # the next token waits its own interval, not the sent one's
                self.since = None
            return out
        return []

    def due_in(self) -> float | None:
        """Return seconds until the held tokens must go out; None if none is held."""
        if not self.held or self.since is None:
            return None
        return max(0.0, self.since + self.seconds - asyncio.get_running_loop().time())

    def flush(self) -> list[str]:
        """Return every held call's text as one event each, and hold nothing."""
        out = [sse(event) for event in self.held.values()]
        self.held.clear()
        self.since = None
        return out


async def pump(
    source: AsyncIterator[Any],
    disconnected: Callable[[], Awaitable[None]],
    keepalive_s: float | None = KEEPALIVE_S,
    joiner: TokenJoiner | None = None,
    room: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """Relay `source`, with keep-alive comments in its silences; stop it if the client leaves.

    With a `joiner`, `source` may yield ``token`` events as dicts rather than text: they
    are held and joined (`TokenJoiner`), sent before the next text item, when one call's
    text grows long, or once the oldest has waited `JOIN_S`, even while `source` is silent.

    `source` runs in its own task feeding a queue; a second task waits for the client's
    disconnect and puts a marker on the same queue, and the run is then cancelled, whatever
    it was doing (a proposer layer sends nothing for a long time). A client that reads
    slower than the run writes holds the run back once `PENDING_CHARS` wait unsent
    (`_held_back`), its models' token streams included where `room` is its run's
    `ReaderPace.room`, so its stream's memory is bounded, not the run's whole output.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    gone = object()
    pending = 0  # characters queued, not yet taken by the reader
    room = room or asyncio.Event()
    room.set()
    closing = False

    async def run() -> None:
        nonlocal pending
        try:
            async for item in source:
                if joiner and not joiner.held and not isinstance(item, str):
                    queue.put_nowait(_WAKE)  # the reader's wait now ends at the join's
                for text in _joined(item, joiner):
                    queue.put_nowait(text)
                    pending += len(text)
                if pending > PENDING_CHARS:
                    room.clear()
                    await _held_back(room, source, lambda: closing)
            for text in joiner.flush() if joiner else ():
                queue.put_nowait(text)
            queue.put_nowait(_END)
        except Exception as exc:  # raised again by the reader, in the response's task
            for text in joiner.flush() if joiner else ():  # the text so far goes out first
                queue.put_nowait(text)
            queue.put_nowait(exc)

    async def watch() -> None:
        nonlocal closing
        await disconnected()
        queue.put_nowait(gone)
        # The run stops here, not only where the reader takes `gone`: a response whose send
        # failed (the server cut its client off) leaves this generator suspended, never
        # resumed nor closed but by the garbage collector, whenever that came, while its run
        # went on calling models outside `--max-runs`.
        closing = True
        producer.cancel()

    producer, watcher = asyncio.ensure_future(run()), asyncio.ensure_future(watch())
    try:
        while True:
            due = joiner.due_in() if joiner else None
            wait = min((s for s in (keepalive_s, due) if s is not None), default=None)
            if queue.empty() and wait is not None:
                try:
                    async with asyncio.timeout(wait):  # no extra task per event
                        item = await queue.get()
                except TimeoutError:
                    held = joiner.flush() if joiner and due is not None else []
                    yield "".join(held) if held else KEEPALIVE
                    continue
            else:
                item = await queue.get()
            # What queued up meanwhile goes out in one write: one send per burst of
            # tokens, not one per token, when many runs share the event loop.
            batch: list[str] = []
            while isinstance(item, str):
                batch.append(item)
                if queue.empty():
                    item = None
                    break
                item = queue.get_nowait()
            if batch:
                pending -= sum(map(len, batch))
                if pending <= PENDING_CHARS:
                    room.set()
                yield "".join(batch)
            if item is _END or item is gone:
                return
            if item is _WAKE:
                continue
            if isinstance(item, Exception):
                raise item
    finally:
        closing = True
        watcher.cancel()
        producer.cancel()


def _joined(item: Any, joiner: TokenJoiner | None) -> list[str]:
    """Return what goes out for one item of a pumped source (`pump`): held tokens first."""
    if isinstance(item, str):
        return [*joiner.flush(), item] if joiner else [item]
    if joiner is None:
        return [sse(item)]
    return joiner.add(item)


async def _held_back(room: asyncio.Event, source: Any, closing: Callable[[], bool]) -> None:
    """Wait until the reader has taken enough of the queue (`pump`); a deadline still ends it.

    The source's deadline (`_requests._timed`, an ``asyncio.timeout``) cancels the producing
    task, which is waiting here, outside the source's frames, when it comes. Thrown into the
    source, it would land at the source's own ``yield``: outside the deadline's frame when the
    source relays `_timed` from a generator of its own (the page's `_ui._run`), which then
    took it for its client leaving. The cancellation is delivered again instead, at the
    source's next wait, inside the deadline's frame, so the deadline ends the run as it ends a
    slow one (``RequestTimeoutError``, which `pump` relays). The pump's own cancellation, as
    it closes (its client left), is thrown into the source where it waits, as it would have
    met a source not held back: left at its ``yield``, the source was closed only by the
    garbage collector, later, in another context, and never heard that its client had left.
    """
    try:
        await room.wait()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if closing():
            if hasattr(source, "athrow"):
                await source.athrow(asyncio.CancelledError())
            raise  # the source swallowed it and went on: cancelled all the same
        if task is None:
            raise
        task.uncancel()  # the same one cancellation, met again where the source waits
        task.cancel()


def run_event(run_id: str, model: str, question: str, config: MoAConfig) -> dict[str, Any]:
    """Return the first event of a run: what will run, so a viewer can lay it out."""
    return {
        "event": "run",
        "run_id": run_id,
        "model": model,
        "question": question,
        "variant": config.variant,
        "layers": config.layers,
        "final_role": config.final_role,
        "proposers": [{"model": p.label, "samples": p.samples} for p in config.proposers],
        "final_chain": [role.label for role in config.final_chain],
    }


def stopped_calls(events: list[dict[str, Any]], why: str) -> list[dict[str, Any]]:
    """Return a ``failed`` (status ``cancelled``) event for each call that started and never ended.

    A run stopped from outside (its deadline passed, its client left) cancels the calls in
    flight without their own ``failed`` events; these say so, so that a viewer, live or
    replaying the history, shows no call still running in a run that is over.
    """
    running: dict[tuple[Any, ...], dict[str, Any]] = {}
    for event in events:
        key = tuple(event.get(f) for f in CALL_FIELDS)
        if event.get("event") == "started":
            running[key] = event
        elif event.get("event") in ("finished", "failed"):
            running.pop(key, None)
    return [
        {
            "event": "failed",
            **{f: started.get(f) for f in (*CALL_FIELDS, "configured_model")},
            "error": why,
            "status": "cancelled",
            "retries": 0,
        }
        for started in running.values()
    ]


def finish_reason(answer: Any) -> str:
    """Return the final call's finish reason (``length``, ``tool_calls``, ...), as OpenAI's.

    The answer spells it so already, whichever provider's key and word said it (`final_message`).
    """
    if answer.tool_calls:
        return "tool_calls"
    reason = answer.response_metadata.get("finish_reason")
    return reason if isinstance(reason, str) and reason else "stop"


def wire_tool_calls(answer: Any) -> list[dict[str, Any]]:
    """Return the answer's tool calls in OpenAI's wire format."""
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": dumps(call["args"])},
        }
        for call in answer.tool_calls
    ]


def final_logprobs(answer: Any, asked: bool) -> Any:
    """Return the final call's logprobs, when the request asked for them."""
    return answer.response_metadata.get("logprobs") if asked else None


def answer_event(
    state: dict[str, Any], prices: Prices | None = None, *, logprobs: bool = False
) -> dict[str, Any]:
    """Return the last event of a run: the answer, its provenance, and the agreement shown.

    As the chat route's answer: ``finish_reason``, the answer's ``tool_calls`` (OpenAI's
    wire format) when it has some, and the final call's ``logprobs`` when asked for.

    ``usage.critical_path_s`` is the sum of each layer's slowest call: the time the run
    would take with every layer's calls in parallel and nothing else. ``cost`` prices the
    run's calls by the operator's table (`moa serve --prices`); local calls cost nothing and
    a call of a model with no price is counted in ``unpriced_calls``, never as free.
    """
    answer = state["messages"][-1]
    moa = answer.response_metadata.get("moa", {})
    usage = moa.get("usage") or state.get("usage") or {"layers": [], "total": {}}
    text = str(answer.text)
    answered = answered_proposals(state)  # type: ignore[arg-type]
    event: dict[str, Any] = {
        "event": "answer",
        "text": text,
        "answered_by": moa.get("answered_by"),
        "fallback": moa.get("fallback"),
        "fallback_reason": moa.get("fallback_reason"),
        **({"incomplete_call": moa["incomplete_call"]} if "incomplete_call" in moa else {}),
        "usage": {
            **usage.get("total", {}),
            "critical_path_s": round(sum(la["latency_s"] for la in usage.get("layers", [])), 3),
            "layers": usage.get("layers", []),
        },
        "cost": run_cost(moa.get("calls") or [], prices),
        "finish_reason": finish_reason(answer),
    }
    if "failed_layers" in moa:  # a layer passed over: said, as a fallback is
        event["failed_layers"] = moa["failed_layers"]
    if answer.tool_calls:
        event["tool_calls"] = wire_tool_calls(answer)
    if logprobs:
        event["logprobs"] = final_logprobs(answer, True)
    if selection := moa.get("selection"):
        event["selection"] = {**selection, "groups": selection_groups(selection, answered)}
    elif "ranker_reply" in moa:  # the ranker returned one proposal verbatim
        pick = moa.get("ranker_call")
        event["ranker"] = {
            "choice": moa.get("ranker_choice"),
            "reply": moa["ranker_reply"],
            "call": call_key({"role": "proposer", **pick}) if pick else None,
        }
    else:
        event["agreement"] = synthesis_agreement(text, answered)
    return event


class ProgressChunks:
    """The OpenAI stream's opt-in extension: progress events between the answer's chunks.

    A client that sends ``moa_progress: true`` gets every `RunEvents` event except the
    answer's own tokens as ``event: moa.progress`` lines; those tokens stay the usual
    ``data:`` chunks. OpenAI's own clients skip named events they do not know only when told
    to, hence opt-in. The answer's text is kept as the plain stream's: with tools it passes
    the same `ToolCallHold` (text that may be a tool call, or a forced call's refused text
    answer, is held until the answer is known: `closing`), and the same `OneAttempt`, so a
    retry's or the next aggregator's text never follows text already sent: the stream
    breaks (`StreamBrokenError`) instead.
    """

    def __init__(self, run_input: dict[str, Any]) -> None:
        """Start with nothing streamed, holding text back as `run_input`'s tools ask."""
        self.hold = ToolCallHold.for_run(run_input)
        self.one = OneAttempt()
        self.calls: list[dict[str, Any]] = []
        """The ``started``, ``finished`` and ``failed`` events sent, for `stopped`."""

    def closing(self, answer: Any) -> str:
        """Return the answer text still to send once the run is over.

        Raises:
            StreamBrokenError: text was sent, and the answer is another attempt's.
        """
        # As the plain stream's close: `rest` sends a half `sent` held for its pair.
        held = self.one.sent(self.hold.take(self.one.held_text()))
        return held + self.one.sent(self.hold.finish(answer)) + self.one.rest(answer)

    def take(
        self, event: dict[str, Any], source: tuple[str | None, int]
    ) -> tuple[str | None, str | None]:
        """Return (answer text, progress line) for one event; either may be None.

        `source` is the message id and chunk-wise part of a ``final`` token (`RunEvents`).

        Raises:
            StreamBrokenError: the token is another attempt's, after text was sent.
        """
        if event["event"] == "token" and event.get("final"):
            text = ""
            if event["text"]:  # one that only says the part's end is no other attempt's text
                self.one.check(*source)
                text = self.one.sent(self.hold.take(self.one.answer_text(event["text"])))
            self.one.ended(*source, event.get("finish_reason"), bool(event.get("tool_calls")))
            return text, None
        if event["event"] in _CALL_BOUNDS:
            self.calls.append(event)
        return None, _progress_line(event)

    def stopped(self, why: str) -> str:
        """Return a ``failed`` (cancelled) line for each call that started and never ended."""
        return "".join(map(_progress_line, stopped_calls(self.calls, why)))


_CALL_BOUNDS = ("started", "finished", "failed")
"""The events `ProgressChunks` keeps to tell which calls a stopped run left running."""


def _progress_line(event: dict[str, Any]) -> str:
    return f"event: moa.progress\ndata: {dumps(event)}\n\n"
