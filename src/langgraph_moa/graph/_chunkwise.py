"""Chunk-wise aggregation: the last proposer layer streams into an aggregator writing in parts.

With ``aggregation.start: chunks`` the propose node runs only the layers before the last; the
aggregate node runs the last one itself (`Plan.proposer_node_layers`):

1. every proposer (and sample) of the last layer streams its answer;
2. once each live proposer has written `chunk_tokens` words, or finished, or failed (or
   `first_chunk_s` passed for the first part), the aggregator writes the first part of the
   answer from the proposals as far as they are written, capped at `chunk_tokens`; its tokens
   stream to the caller as the answer's first tokens;
3. each further chunk of the proposals gives one further part, the aggregator continuing its
   answer so far; once every proposal is complete, the last part finishes the answer.

A part continues the answer so far in one of two ways (``aggregation.continuation``). With
``prefill`` the answer so far is the start of the aggregator's own message (a trailing
assistant message, which llama.cpp's server continues token by token): the seams are the
model's own token boundaries. With ``instruction`` it is shown in the prompt between markers
with an instruction to continue it, which any chat model takes; on long answers a small model
then drops spaces, repeats or skips words at the seams and may echo the closing marker (seen
with the 1.5B on GSM8K worked solutions), hence prefill for local aggregators by default. A
prefilled part is always streamed: llama.cpp returns the prefill with a whole answer but
streams only the continuation.

Every proposal gets its call record as usual; the aggregator's parts make one record (tokens
and latency summed), and the answer's provenance (``response_metadata["moa"]["chunkwise"]``)
says what each part saw: how many words of which proposal, and whether it was complete.
Chunk-wise uses one aggregator: `aggregator_fallbacks` do not apply (a failed part after its
retries ends in the labelled best-proposal fallback, or `AggregatorFailedError`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    MoAConfigError,
    StragglerCancelledError,
)
from langgraph_moa.providers._models import has_own_timeout
from langgraph_moa.providers._retry import is_retryable
from langgraph_moa.run import _clock as clock
from langgraph_moa.run._accounting import failed_record, ok_record, summarize
from langgraph_moa.run._answer import (
    NOSTREAM,
    TAG_FINAL,
    TAG_PART,
    TAG_PROPOSER,
    best_available,
    final_message,
    labelled_fallback,
)
from langgraph_moa.run._calls import CallId, acall_model, emit
from langgraph_moa.run._early import early_start_provenance
from langgraph_moa.run._references import with_references
from langgraph_moa.run.state import CallRecord, MoAState
from langgraph_moa.text._prompts import estimate_tokens
from langgraph_moa.transport._call_loop import call_loop

if TYPE_CHECKING:
    from langgraph_moa.config import MoAConfig
    from langgraph_moa.graph._nodes import MoANodes
    from langgraph_moa.variants import Plan

IN_PROGRESS = "[this response is still being written; it continues later]"
CONTINUE = (
    "You are writing your answer in parts while the responses above are still being "
    "written. Your answer so far is between the markers below. Continue it exactly where it "
    "stops: write only what comes next, without repeating it.\n<answer_so_far>\n{answer}\n"
    "</answer_so_far>"
)


class ChunkwiseRequest:
    """A node's request to run the chunk-wise layer and aggregator (see `run_async`)."""

    def __init__(self, nodes: MoANodes, plan: Plan, state: MoAState) -> None:
        self.nodes, self.plan, self.state = nodes, plan, state

    def run(self) -> dict[str, Any]:
        """Run it on the package's call loop (the sync models' clients live there)."""
        return asyncio.run_coroutine_threadsafe(self.arun(), call_loop()).result()

    async def arun(self) -> dict[str, Any]:
        """Run it on this event loop."""
        return await _Chunkwise(self.nodes, self.plan, self.state).run()


def _words(text: str) -> int:
    return len(text.split())


def prefills(cfg: MoAConfig) -> bool:
    """Tell whether parts continue the answer as a prefilled assistant message (see above)."""
    mode = cfg.aggregation.continuation
    return cfg.final.is_local if mode == "auto" else mode == "prefill"


class _Chunkwise:
    def __init__(self, nodes: MoANodes, plan: Plan, state: MoAState) -> None:
        if nodes.response_format is not None:
            raise MoAConfigError(
                "chunk-wise aggregation writes free text: a structured answer "
                "(response_format) needs aggregation.start 'all' or 'quorum'"
            )
        self.nodes, self.cfg, self.state = nodes, plan.cfg, state
        self.prefill = prefills(self.cfg)
        self.layer = self.cfg.proposer_layers
        self.slots = [(i, s) for i, p in enumerate(self.cfg.proposers) for s in range(p.samples)]
        n = len(self.slots)
        self.texts = [""] * n
        self.done = [False] * n
        self.records: list[CallRecord | None] = [None] * n
        self.live = [True] * n
        """False for a proposal that wrote nothing by `first_chunk_s`: no part waits for it."""
        self.changed = asyncio.Event()

    def _with_timeout(self, spec: Any, params: dict[str, Any]) -> dict[str, Any]:
        """Give a model this package builds the call timeout as its HTTP timeout."""
        if self.cfg.call_timeout_s is None or not has_own_timeout(spec):
            return params
        return {**params, "timeout": self.cfg.call_timeout_s}

    # --- the last proposer layer, streamed -------------------------------------------------

    def _layer_input(self) -> list[BaseMessage]:
        conversation: list[BaseMessage] = list(self.state["messages"])
        if self.layer == 1:
            return conversation
        return with_references(self.cfg, conversation, self.state, self.cfg.proposers)[0]

    async def _stream(self, k: int, messages: list[BaseMessage]) -> None:
        i, s = self.slots[k]
        p = self.cfg.proposers[i]
        call = CallId("proposer", self.layer, i, s, p.label)
        params = self._with_timeout(p.model, p.call_params())
        model = self.nodes.models.get(p.model, params).with_config(
            run_name=f"layer {self.layer} / proposer {i + 1} / {p.label} (streamed)",
            tags=[TAG_PROPOSER, NOSTREAM],
            metadata=call.trace_metadata(self.cfg),
        )
        emit("started", **call.fields())
        started = time.perf_counter()
        whole: Any = None
        try:
            async with asyncio.timeout(self.cfg.call_timeout_s):
                async for chunk in model.astream(messages):
                    whole = chunk if whole is None else whole + chunk
                    self.texts[k] += chunk.text
                    self.changed.set()
            if whole is None or not self.texts[k].strip():
                raise ValueError(f"{p.label} returned an empty answer")
            if not self.live[k]:
                return  # dropped at the first-chunk deadline; its late text is not used
            response = AIMessage(
                content=self.texts[k],
                usage_metadata=whole.usage_metadata,
                response_metadata=whole.response_metadata,
            )
            latency = time.perf_counter() - started
            self.records[k] = ok_record(response=response, latency_s=latency, **call.fields())
            emit("finished", **call.fields(), model=p.label, latency_s=round(latency, 4))
        except Exception as exc:  # the layer goes on without it, as any failed proposal
            if not self.live[k]:
                return  # already recorded as dropped
            self.texts[k] = ""
            self.records[k] = failed_record(
                error=exc, latency_s=time.perf_counter() - started, **call.fields()
            )
            emit("failed", **call.fields(), error=str(exc))
        finally:
            self.done[k] = True
            self.changed.set()

    async def _wait(self, words: int, limit_s: float | None) -> None:
        """Wait until every live proposal has `words` words or is complete (or `limit_s`)."""
        due = None if limit_s is None else time.monotonic() + limit_s
        while not all(
            not live or done or _words(text) >= words
            for text, done, live in zip(self.texts, self.done, self.live, strict=True)
        ):
            self.changed.clear()
            timeout = None if due is None else due - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                return

    def _drop(self, k: int, why: str, latency_s: float) -> None:
        """Stop waiting for proposal `k` and record it as cancelled, saying `why`."""
        self.live[k] = False
        i, s = self.slots[k]
        call = CallId("proposer", self.layer, i, s, self.cfg.proposers[i].label)
        error = StragglerCancelledError(f"{call.configured_model} {why}")
        self.records[k] = failed_record(error=error, latency_s=latency_s, **call.fields())

    def _drop_silent(self, limit_s: float) -> None:
        """After `first_chunk_s`, stop waiting for the proposals that wrote nothing yet."""
        for k, text in enumerate(self.texts):
            if not self.done[k] and not text.strip():
                why = (
                    f"wrote no first chunk within {limit_s:g}s (aggregation.first_chunk_s): "
                    "the answer went on without it"
                )
                self._drop(k, why, limit_s)

    def _drop_unfinished(self, latency_s: float) -> None:
        """Stop waiting for the proposals still being written: the answer is at its cap."""
        for k, done in enumerate(self.done):
            if self.live[k] and not done:
                why = (
                    "was still writing when the answer reached the aggregator's max_tokens "
                    f"({self.cfg.final.max_tokens}): the answer ended without the rest of it"
                )
                self._drop(k, why, latency_s)

    def _room(self, responses: list[AIMessage]) -> int | None:
        """Return the tokens the answer may still take (None: the aggregator has no cap).

        The aggregator's `max_tokens` bounds the whole answer, all parts together, as it
        bounds one call in standard MoA.
        """
        cap = self.cfg.final.max_tokens
        if cap is None:
            return None
        return cap - sum(_output_tokens(r) for r in responses)

    def _cancel_dropped(self, tasks: Sequence[asyncio.Future[None]]) -> None:
        for k, task in enumerate(tasks):
            if not self.live[k]:
                task.cancel()

    # --- the aggregator, in parts -----------------------------------------------------------

    def _part_input(self, answer: str) -> tuple[list[BaseMessage], list[dict[str, Any]]]:
        references, saw = [], []
        for k, (i, s) in enumerate(self.slots):
            if not self.live[k]:
                continue  # dropped at the first-chunk deadline (its record says so)
            text = self.texts[k].strip()
            saw.append(
                {"proposer": i, "sample": s, "words": _words(text), "complete": self.done[k]}
            )
            if text:
                references.append(text if self.done[k] else f"{text}\n{IN_PROGRESS}")
        failed = sum(1 for r in self.records if r is not None and r["status"] != "ok")
        view: Any = {**self.state, "references": references, "missing": failed}
        messages, _ = with_references(
            self.cfg, list(self.state["messages"]), view, [self.cfg.final]
        )
        if answer and self.prefill:
            messages = [*messages, AIMessage(answer)]
        elif answer:
            messages = [*messages, SystemMessage(CONTINUE.format(answer=answer))]
        return messages, saw

    async def _part(
        self, call: CallId, messages: list[BaseMessage], cap: int | None, index: int
    ) -> AIMessage:
        role = self.cfg.final
        params = role.call_params()
        if cap is not None:
            params = {**params, "max_tokens": cap}
        base = self.nodes.models.get(role.model, self._with_timeout(role.model, params))
        model = base.with_config(
            run_name=f"layer {call.layer} / aggregator / {call.configured_model}",
            tags=[TAG_FINAL, f"{TAG_PART}{index}"],  # parts join in a stream; retries do not
            metadata=call.trace_metadata(self.cfg),
        )
        if self.prefill and index > 1:
            model = model.bind(stream=True)  # the continuation alone, never the prefill again
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await acall_model(
                    model, messages, call.configured_model, self.cfg.call_timeout_s
                )
                assert isinstance(response, AIMessage)
                return response
            except Exception as exc:
                if not is_retryable(exc) or attempt >= self.cfg.retry.max_attempts:
                    raise
                await asyncio.sleep(self.cfg.retry.initial_interval * attempt)

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        messages = self._layer_input()
        tasks = [asyncio.ensure_future(self._stream(k, messages)) for k in range(len(self.slots))]
        call = CallId("aggregator", self.layer + 1, -1, 0, cfg.final.label)
        started, answer = time.perf_counter(), ""
        parts: list[dict[str, Any]] = []
        responses: list[AIMessage] = []
        try:
            emit("started", **call.fields())
            words = cfg.aggregation.chunk_tokens
            first_limit = cfg.aggregation.first_chunk_s
            room = self._room(responses)
            while True:
                await self._wait(words, first_limit if not parts else None)
                if not parts and first_limit is not None:
                    self._drop_silent(first_limit)
                last = all(d or not live for d, live in zip(self.done, self.live, strict=True))
                if not any(t.strip() for t in self.texts) and not last:
                    self.changed.clear()  # nothing written yet: wait for a word or an end
                    await self.changed.wait()
                    continue
                if last and not any(r and r["status"] == "ok" for r in self.records):
                    break  # every proposal failed: handled below
                cap = _part_cap(cfg.aggregation.chunk_tokens, room, last)
                part_input, saw = self._part_input(answer)
                at = clock.now()
                response = await self._part(call, part_input, cap, len(parts) + 1)
                responses.append(response)
                answer += response.text
                parts.append({"part": len(parts) + 1, "started_at": at, "saw": saw})
                room = self._room(responses)
                if last:
                    break
                if room is not None and room <= 0:  # as long as it may be: no further chunk
                    self._drop_unfinished(time.perf_counter() - started)
                    break
                words += cfg.aggregation.chunk_tokens
        except Exception as exc:
            self._cancel_dropped(tasks)  # the others finish: the fallback may need them
            await asyncio.gather(*tasks, return_exceptions=True)
            return self._gave_up(call, exc, time.perf_counter() - started, parts)
        finally:
            for task in tasks:
                task.cancel()  # only dropped ones are still running here
        proposals = [r for r in self.records if r is not None]
        if not responses:
            raise AllProposersFailedError(self.layer, proposals)
        record = ok_record(
            response=_summed(answer, responses),
            latency_s=time.perf_counter() - started,
            **call.fields(),
        )
        emit("finished", **call.fields(), model=record["model"], latency_s=record["latency_s"])
        calls = [*self.state.get("calls", []), *proposals, record]
        continuation = "prefill" if self.prefill else "instruction"
        extra = {
            "chunkwise": {"parts": parts, "continuation": continuation},
            **early_start_provenance(cfg, calls),
        }
        message = final_message(cfg, responses[-1], answer, calls, record, extra)
        return {"calls": [*proposals, record], "messages": [message], "usage": summarize(calls)}

    def _gave_up(
        self, call: CallId, error: Exception, latency: float, parts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        record = failed_record(error=error, latency_s=latency, **call.fields())
        emit("failed", **call.fields(), error=record["error"])
        proposals = [r for r in self.records if r is not None]
        calls = [*self.state.get("calls", []), *proposals, record]
        best = best_available(calls)
        if self.cfg.on_aggregator_failure == "raise" or best is None:
            raise AggregatorFailedError(call.configured_model, error, calls)
        reason = f"the chunk-wise aggregator failed after {len(parts)} parts: {record['error']}"
        update = labelled_fallback(self.cfg, calls, best, "best_proposal", reason)
        return {"calls": [*proposals, record], **update}


def _part_cap(chunk_tokens: int, room: int | None, last: bool) -> int | None:
    """Return a part's max_tokens: a chunk (the last part: the rest), within the room left."""
    if last:
        return room  # None: the aggregator's own max_tokens, which is then None too
    return chunk_tokens if room is None else min(chunk_tokens, room)


def _output_tokens(response: AIMessage) -> int:
    """Return the tokens a part wrote: as its usage says, else estimated from its text."""
    usage = response.usage_metadata
    return int(usage["output_tokens"]) if usage else estimate_tokens(response.text)


def _summed(answer: str, responses: list[AIMessage]) -> AIMessage:
    """One message for the parts: the whole answer, their tokens summed."""
    usage = [r.usage_metadata for r in responses if r.usage_metadata]
    total = {
        key: sum(int(u[key]) for u in usage)
        for key in ("input_tokens", "output_tokens", "total_tokens")
    }
    return AIMessage(
        content=answer,
        usage_metadata=total if usage else None,
        response_metadata=responses[-1].response_metadata,
    )
