"""Chunk-wise aggregation: the last proposer layer streams into an aggregator writing in parts.

With ``aggregation.start: chunks`` the propose node runs only the layers before the last; the
aggregate node runs the last one itself (`Plan.proposer_node_layers`):

1. every proposer (and sample) of the last layer streams its answer;
2. once each live proposer has written `chunk_tokens` words, or finished, or failed (or
   `first_chunk_s` passed for the first part), the aggregator writes the first part of the
   answer from the proposals as far as they are written, capped at `chunk_tokens`; its tokens
   stream to the caller as the answer's first tokens;
3. each further chunk of the proposals gives one further part, the aggregator continuing its
   answer so far; once every proposal is complete, the last part finishes the answer. An
   answer takes at most `max_parts` parts (each part is a model call, and a run's calls are
   bounded): the last one waits for the complete proposals.

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
import functools
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.messages.ai import UsageMetadata, add_usage

from langgraph_moa._redact import describe_error
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    ContentFilteredError,
    MoAConfigError,
    StragglerCancelledError,
    budget_reached,
)
from langgraph_moa.providers._retry import is_retryable
from langgraph_moa.run import _clock as clock
from langgraph_moa.run._accounting import (
    as_reference,
    counted_tokens,
    empty_answer,
    kept_whole,
    refuse_filtered,
    summarize,
    token_count,
    with_estimated_usage,
    without_thinking,
)
from langgraph_moa.run._answer import (
    NOSTREAM,
    TAG_FINAL,
    TAG_PART,
    TAG_PROPOSER,
    best_available,
    final_message,
    labelled_fallback,
)
from langgraph_moa.run._calls import (
    CALL_CLOCKS,
    CallId,
    acall_model,
    discard_answer,
    emit,
    explained_failure,
    record_answer,
    record_failure,
    submit,
    wait_for,
    without_llm_cache,
)
from langgraph_moa.run._early import early_start_provenance
from langgraph_moa.run._options import bind_options, proposal_options, run_options
from langgraph_moa.run._references import in_reference_order, with_references
from langgraph_moa.run.state import CallRecord, MoAState
from langgraph_moa.text._prompts import IN_PROGRESS, estimate_tokens
from langgraph_moa.text._thinking import ThinkingCut

if TYPE_CHECKING:
    from langgraph_moa.config import MoAConfig
    from langgraph_moa.graph._nodes import MoANodes
    from langgraph_moa.variants import Plan

EVERY_WORD = sys.maxsize
"""A word count no proposal reaches: `_wait` for it waits until every live one is complete."""
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
        """Run it on the package's call loop (the sync models' clients live there).

        A caller interrupted while it waits (or whose run is, `wait_for`) cancels the run there
        too, so no stream is left writing for nobody.
        """
        return wait_for(submit(self.arun()), "the chunk-wise layer")

    async def arun(self) -> dict[str, Any]:
        """Run it on this event loop."""
        return await _Chunkwise(self.nodes, self.plan, self.state).run()


_SPACELESS = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
    "\u0e01-\u0e2e\u0e81-\u0eae\u1000-\u102a\u1780-\u17b3]"
)
"""Han characters and kana, and Thai, Lao, Burmese and Khmer consonants (their vowel and tone
marks no word): these scripts are written without spaces between words."""


def _words(text: str) -> int:
    """Count the words written so far: runs between spaces, and each `_SPACELESS` character.

    By spaces alone a Chinese or Japanese proposal was one word until it ended (a Thai one
    until its clause did), so the first part waited for every proposal whole. A character
    counts as a word (a Chinese word is one or two, a Thai one two or three consonants, a
    count near its tokens); a run of them counts once more. Both counts run in C, and
    neither builds a string a word. A streamed proposal is counted piece by piece
    (`_WordCount`).
    """
    return len(text.split()) + _spaceless(text)


def _spaceless(text: str) -> int:
    """Count the `_SPACELESS` characters of `text` (one string made, not one a character)."""
    return len(text) - len(_SPACELESS.sub("", text))


class _WordCount:
    """A streamed proposal's `_words`, kept as it is written: each piece counted once.

    The wait for a part counted every live proposal's words from its start again whenever
    any of them wrote a chunk: work that grew with the square of their length.
    """

    __slots__ = ("_ends_in_word", "words")

    def __init__(self, text: str = "") -> None:
        self.words = 0
        self._ends_in_word = False
        self.add(text)

    def add(self, piece: str) -> None:
        """Count `piece`, written after the text counted so far."""
        if not piece:
            return
        runs = len(piece.split())
        if runs and self._ends_in_word and not piece[0].isspace():
            runs -= 1  # the piece goes on with the word the text ended in
        self.words += runs + _spaceless(piece)
        self._ends_in_word = not piece[-1].isspace()


def prefills(cfg: MoAConfig) -> bool:
    """Tell whether parts continue the answer as a prefilled assistant message (see above)."""
    mode = cfg.aggregation.continuation
    return cfg.final.is_local if mode == "auto" else mode == "prefill"


def refuse_what_parts_cannot_write(nodes: MoANodes, state: MoAState) -> None:
    """Refuse a run whose answer chunk-wise aggregation cannot write, before any call.

    The parts are free text: a structured answer (the graph's or the run's
    ``response_format``) and tool calls need the aggregator's whole answer at once.

    Raises:
        MoAConfigError: the run asks for either; the message names the fix.
    """
    if nodes.wants_structure(state):
        raise MoAConfigError(
            "chunk-wise aggregation writes free text: a structured answer "
            "(response_format) needs aggregation.start 'all' or 'quorum'"
        )
    if run_options(state).get("tools"):
        raise MoAConfigError(
            "chunk-wise aggregation writes the answer in parts of text, so it cannot "
            "answer with tool calls: a run with tools needs aggregation.start 'all' or "
            "'quorum'"
        )


class _Chunkwise:
    def __init__(self, nodes: MoANodes, plan: Plan, state: MoAState) -> None:
        refuse_what_parts_cannot_write(nodes, state)  # `prepare` did; a resumed run may not
        self.options = run_options(state)
        self.nodes, self.plan, self.cfg, self.state = nodes, plan, plan.cfg, state
        self.prefill = prefills(self.cfg)
        self.layer = self.cfg.proposer_layers
        self.slots = [(i, s) for i, p in enumerate(self.cfg.proposers) for s in range(p.samples)]
        n = len(self.slots)
        self.order = in_reference_order(self.cfg, self.layer, list(range(n)))
        """The slots in the order the aggregator reads them (``reference_order``)."""
        self.texts = [""] * n
        self.counts = [_WordCount() for _ in range(n)]
        """The words of each of `texts` (`_write`, `_rewrite`)."""
        self.done = [False] * n
        self.records: list[CallRecord | None] = [None] * n
        self.errors: list[list[str]] = [[] for _ in range(n)]
        """Each proposal's failed attempts so far (its record's `retried_errors`)."""
        self.live = [True] * n
        """False for a proposal the answer went on without: no part waits for it."""
        self.tasks: list[asyncio.Future[None]] = []
        self.watch: asyncio.Future[None] | None = None
        """The layer deadline's watch (`layer_deadline_s`), if there is one."""
        self.held = clock.Held()
        """The time the layer's proposals were held by the stream's reader, which its
        deadline does not count (`_layer_deadline`): one for them all, since a reader that
        is behind holds every model of the run at once."""
        self.changed = asyncio.Event()
        self.started = time.perf_counter()

    # --- the last proposer layer, streamed -------------------------------------------------

    def _layer_input(self) -> list[BaseMessage]:
        conversation: list[BaseMessage] = list(self.state["messages"])
        if self.layer == 1:
            return conversation
        return with_references(self.cfg, conversation, self.state, self.cfg.proposers)[0]

    async def _stream(self, k: int, messages: list[BaseMessage]) -> None:
        """Stream proposal `k`, retrying an attempt that failed before its first word."""
        i, s = self.slots[k]
        p = self.cfg.proposers[i]
        call = CallId("proposer", self.layer, i, s, p.label)
        chat = self.nodes.models.get(p.model, p.call_params(), self.cfg.call_timeout_s)
        options = proposal_options(self.options, self.cfg.proposers, i, s)
        model = bind_options(chat, options, p.label).with_config(
            run_name=f"layer {self.layer} / proposer {i + 1} / {p.label} (streamed)",
            tags=[TAG_PROPOSER, NOSTREAM],
            metadata=call.trace_metadata(self.cfg),
        )
        if (
            call.draw(self.nodes.draws(self.cfg)) > 0
        ):  # a model that cannot stream is invoked, through the cache
            model = without_llm_cache(model)
        errors = self.errors[k]
        started = time.perf_counter()
        try:
            while True:
                emit("started", **call.fields())
                started = time.perf_counter()
                self._rewrite(k, "")  # a retried attempt wrote at most blanks: start afresh
                try:
                    response = await self._streamed(k, model, messages, p.label)
                    break
                except Exception as exc:
                    errors.append(describe_error(exc))
                    if not self._may_retry(k, len(errors), exc):
                        raise
                    await asyncio.sleep(self.cfg.retry.backoff_s(len(errors)))
            if self.live[k]:  # else dropped: its late text is not used (its record says so)
                latency = time.perf_counter() - started
                self.records[k] = record_answer(call, errors[:], response, latency, prompt=messages)
        except Exception as exc:  # the layer goes on without it, as any failed proposal
            if self.live[k]:
                self._rewrite(k, "")
                latency = time.perf_counter() - started
                self.records[k] = record_failure(call, errors, exc, latency, prompt=messages)
        finally:
            self.done[k] = True
            self.changed.set()

    def _write(self, k: int, piece: str) -> None:
        """Add `piece` to proposal `k`'s text, and its words to its count."""
        self.texts[k] += piece
        self.counts[k].add(piece)

    def _rewrite(self, k: int, text: str) -> None:
        """Make `text` proposal `k`'s text, counted afresh."""
        self.texts[k] = text
        self.counts[k] = _WordCount(text)

    def _may_retry(self, k: int, attempts: int, error: Exception) -> bool:
        """Tell whether proposal `k` gets another attempt after `attempts` failed ones.

        Not once it has written: a new attempt would rewrite text the aggregator read.
        """
        if self.texts[k].strip() or attempts >= self.cfg.retry.max_attempts:
            return False
        return is_retryable(error)

    async def _streamed(
        self, k: int, model: Any, messages: list[BaseMessage], label: str
    ) -> AIMessage:
        """One attempt: stream the proposal into `texts[k]`; return it whole.

        A reasoning model's leading ``<think>`` block never reaches `texts[k]`, which the
        aggregator reads as it grows (`ThinkingCut`); the record keeps it (`without_thinking`).
        """
        timeout = self.cfg.call_timeout_s
        scope = asyncio.timeout(timeout)
        whole: Any = None
        thinking = ThinkingCut()
        try:
            async with scope:
                # the clocks `off_the_clock` stops, as in acall_model
                clocks = CALL_CLOCKS.set((scope, self.held))
                try:
                    async for chunk in model.astream(messages):
                        whole = chunk if whole is None else whole + chunk
                        self._write(k, thinking.take(chunk.text))
                        self.changed.set()
                    # A block the model ended itself is its text, as `without_thinking`'s.
                    self._write(k, thinking.finish(whole is not None and kept_whole(whole)))
                finally:
                    CALL_CLOCKS.reset(clocks)
        except Exception as exc:
            # A provider's Retry-After is waited out only before an attempt that will come.
            retried = self._may_retry(k, len(self.errors[k]) + 1, exc)
            explained = await explained_failure(
                exc, label, timeout, messages, timed_out=scope.expired(), retried=retried
            )
            raise explained from exc
        if whole is not None:
            response = AIMessage(
                content=whole.text,
                additional_kwargs=whole.additional_kwargs,  # a provider's reasoning_content
                usage_metadata=whole.usage_metadata,
                response_metadata=whole.response_metadata,
            )
            # Too late to take back what the aggregator read; its record says it failed,
            # and the later parts read it no more.
            refuse_filtered(response, label)
            # Its text is then `texts[k]` (`ThinkingCut` gives out `split_thinking`'s answer);
            # a block that never closed fails it with the fix, as a whole answer's does.
            response = without_thinking(response, label)
            # But for thinking before a lone </think> (its block opened in the prompt), which
            # the stream passed before its tag came: the later parts read the answer alone.
            self._rewrite(k, response.text)
        if whole is None or not self.texts[k].strip():
            raise empty_answer(whole, label)
        return response

    async def _wait(self, words: int, limit_s: float | None) -> None:
        """Wait until every live proposal has `words` words or is complete (or `limit_s`)."""
        due = None if limit_s is None else time.monotonic() + limit_s
        while not all(
            not live or done or count.words >= words
            for count, done, live in zip(self.counts, self.done, self.live, strict=True)
        ):
            self.changed.clear()
            timeout = None if due is None else due - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                return

    async def _wait_first(self, words: int, limit_s: float | None) -> None:
        """Wait for the first chunks; past `first_chunk_s`, drop the proposals still silent.

        The answer never goes on with fewer proposals begun (or answered) than the layer's
        quorum (`min_proposers`, at least one): until then it keeps waiting, as a layer
        deadline does.
        """
        await self._wait(words, limit_s)
        if limit_s is None:
            return
        needed = max(1, self.cfg.min_proposers)
        await self._until(lambda: self._begun() >= needed or all(self.done))
        why = (
            f"wrote no first chunk within {limit_s:g}s (aggregation.first_chunk_s): "
            "the answer went on without it"
        )
        self._drop_all(why, lambda k: not self.done[k] and not self.texts[k].strip())

    async def _until(self, ready: Callable[[], bool]) -> None:
        """Wait until `ready()` holds, asking again whenever a proposal writes or ends.

        Several waiters share `changed`; each checks the proposals before it clears and
        waits, so one clearing it loses no other's news.
        """
        while not ready():
            self.changed.clear()
            await self.changed.wait()

    def _begun(self) -> int:
        """Count the proposals that wrote something and did not fail (a failure's text is gone)."""
        return sum(1 for k, text in enumerate(self.texts) if text.strip() and self.live[k])

    def _any_answered(self) -> bool:
        """Tell whether a proposal of this layer is complete."""
        return self._answered() > 0

    def _drop_all(self, why: str, which: Callable[[int], bool] | None = None) -> None:
        """Stop proposals still being written (those `which` picks): cancel and record them."""
        latency = time.perf_counter() - self.started
        for k in range(len(self.slots)):
            if self.live[k] and not self.done[k] and (which is None or which(k)):
                self.live[k] = False
                i, s = self.slots[k]
                call = CallId("proposer", self.layer, i, s, self.cfg.proposers[i].label)
                error = StragglerCancelledError(f"{call.configured_model} {why}")
                errors = [*self.errors[k], describe_error(error)]
                self.records[k] = record_failure(call, errors, error, latency)
                if k < len(self.tasks):
                    self.tasks[k].cancel()

    def _room(self, responses: list[AIMessage]) -> int | None:
        """Return the tokens the answer may still take (None: the aggregator has no cap).

        The aggregator's `max_tokens` bounds the whole answer, all parts together, as it
        bounds one call in standard MoA.
        """
        cap = self.cfg.final.max_tokens
        if cap is None:
            return None
        return cap - sum(_output_tokens(r) for r in responses)

    def _tokens_used(self, responses: list[AIMessage]) -> int:
        """Return the run's tokens so far: earlier calls, this layer's ended ones, the parts."""
        ended = sum(r["total_tokens"] for r in self.records if r is not None and not r["cached"])
        parts = sum(_total_tokens(r) for r in responses)
        return self.plan.tokens_used(self.state) + ended + parts

    # --- the aggregator, in parts -----------------------------------------------------------

    def _part_input(self, answer: str) -> tuple[list[BaseMessage], list[dict[str, Any]]]:
        references, saw = [], []
        for k in self.order:
            record = self.records[k]
            if not self.live[k] or (record is not None and record["status"] != "ok"):
                continue  # dropped or failed: its record says so
            i, s = self.slots[k]
            text = self.texts[k].strip()
            saw.append(
                {"proposer": i, "sample": s, "words": _words(text), "complete": self.done[k]}
            )
            if text and not self.done[k]:
                references.append(f"{text}\n{IN_PROGRESS}")
            elif text:  # a finished proposal has its record: one cut by max_tokens says so
                references.append(as_reference(text, record) if record is not None else text)
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
        self,
        call: CallId,
        messages: list[BaseMessage],
        cap: int | None,
        index: int,
        errors: list[str],
        kept: int,
    ) -> AIMessage:
        """Write part `index`, retrying as any call; each failed attempt joins `errors`.

        A retried attempt is announced as discarded (`discard_answer`) keeping the `kept`
        characters of the parts before it: its own tokens may have gone out.
        """
        role = self.cfg.final
        params = role.call_params()
        if cap is not None:
            params = {**params, "max_tokens": cap}
        chat = self.nodes.models.get(role.model, params, self.cfg.call_timeout_s)
        model = bind_options(chat, self.options, call.configured_model, stop=True, final=True)
        model = model.with_config(
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
                    model,
                    messages,
                    call.configured_model,
                    self.cfg.call_timeout_s,
                    retried=attempt < self.cfg.retry.max_attempts,
                )
                assert isinstance(response, AIMessage)
                refuse_filtered(response, call.configured_model)
                return without_thinking(response, call.configured_model)
            except Exception as exc:
                errors.append(describe_error(exc))
                if not is_retryable(exc) or attempt >= self.cfg.retry.max_attempts:
                    raise
                discard_answer(call, exc, keep=kept)
                await asyncio.sleep(self.cfg.retry.backoff_s(attempt))
                emit("started", **call.fields())

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        messages = self._layer_input()
        self.tasks = [
            asyncio.ensure_future(self._stream(k, messages)) for k in range(len(self.slots))
        ]
        if cfg.layer_deadline_s is not None:
            self.watch = asyncio.ensure_future(self._layer_deadline(cfg.layer_deadline_s))
        call = CallId("aggregator", self.layer + 1, -1, 0, cfg.final.label)
        written = _Written()
        parts = written.parts
        every_one_failed = False
        try:
            words = cfg.aggregation.chunk_tokens
            while True:
                if parts:
                    await self._wait(words, None)
                else:
                    await self._wait_first(words, cfg.aggregation.first_chunk_s)
                last = all(d or not live for d, live in zip(self.done, self.live, strict=True))
                if not last and len(parts) + 1 >= cfg.aggregation.max_parts:
                    await self._wait(EVERY_WORD, None)  # the last part reads them complete
                    last = True
                if not any(t.strip() for t in self.texts) and not last:
                    self.changed.clear()  # nothing written yet: wait for a word or an end
                    await self.changed.wait()
                    continue
                if last and not self._any_answered():
                    every_one_failed = True
                    break  # handled below, once the streams are closed
                if self._budget_spent(written.responses):
                    return self._budget_ended(call, written)
                await self._write_part(call, written, last)
                if last:
                    break
                room = self._room(written.responses)
                if room is not None and room <= 0:  # as long as it may be: no further chunk
                    self._drop_all(
                        "was still writing when the answer reached the aggregator's "
                        f"max_tokens ({cfg.final.max_tokens}): the answer ended without the "
                        "rest of it"
                    )
                    break
                if self._budget_spent(written.responses):  # not one more chunk paid for
                    return self._budget_ended(call, written)
                words += cfg.aggregation.chunk_tokens
        except BudgetExhaustedError:
            raise  # the budget ended the answer, not a failed part
        except Exception as exc:
            return await self._gave_up(call, exc, written)
        finally:
            for task in [*self.tasks, self.watch]:
                if task is not None:
                    task.cancel()  # no stream is still running here but on an error
        if every_one_failed or self._every_one_failed():
            # Mid-stream too: no part's text may stand as an answer.
            record = self._aggregator_record(call, written)
            raise AllProposersFailedError(self.layer, self._calls(record), self._why_not_passed())
        return self._answer(call, written, self._aggregator_record(call, written))

    async def _write_part(self, call: CallId, written: _Written, last: bool) -> None:
        """Write the answer's next part from the proposals as far as they are written.

        The aggregator's call starts (its `started` event) with the first part, so a run
        that ends before any part has no aggregator call to close.
        """
        if not written.parts:
            emit("started", **call.fields())
        cap = _part_cap(self.cfg.aggregation.chunk_tokens, self._room(written.responses), last)
        part_input, saw = self._part_input(written.answer)
        at, started = clock.now(), time.perf_counter()
        index = len(written.parts) + 1
        try:
            response = await self._part(
                call, part_input, cap, index, written.errors, len(written.answer)
            )
        except ContentFilteredError as exc:
            written.paid(exc.response, part_input)  # paid for: its tokens are counted
            raise
        finally:
            written.seconds += time.perf_counter() - started
        response = written.paid(response, part_input)
        written.answer += response.text
        written.parts.append({"part": index, "started_at": at, "saw": saw})

    async def _layer_deadline(self, seconds: float) -> None:
        """Past `layer_deadline_s`, once `min_proposers` answered, go on without the rest.

        As in any layer: the proposals still being written are cancelled and recorded, and
        the next part reads those that answered. The time a reader held them (`held`) is not
        counted, as in a layer of proposer nodes (`_nodes._LayerWatch`).
        """
        due = clock.now() + seconds
        while (left := due + self.held.seconds() - clock.now()) > 0:
            await asyncio.sleep(min(left, 1.0))  # `clock.now` may be a test's: a second
        quorum = self.cfg.min_proposers
        await self._until(lambda: all(self.done) or self._answered() >= quorum)
        self._drop_all(
            f"was still writing when the layer deadline ({seconds:g}s) passed and "
            f"{self._answered()} proposals (quorum {quorum}) had answered: the answer went "
            "on without it"
        )
        self.changed.set()

    def _answered(self) -> int:
        return sum(1 for r in self.records if r is not None and r["status"] == "ok")

    def _every_one_failed(self) -> bool:
        """Tell whether every proposal of the layer failed (none answered or was cut off)."""
        return all(r is not None and r["status"] == "failed" for r in self.records)

    # --- how the answer ends ---------------------------------------------------------------

    def _why_not_passed(self) -> str:
        """Say why a failed last layer ends the run, where the layered path passes it over.

        Nothing to say for a first layer, or under ``on_aggregator_failure: raise``, where
        the layered path raises too.
        """
        if self.layer == 1 or self.cfg.on_aggregator_failure == "raise":
            return ""
        return (
            f"Chunk-wise aggregation (aggregation.start: chunks) streams layer {self.layer} "
            "into the answer, so it cannot be passed over as an earlier layer would be; the "
            "proposals of the layers before it are in the error's calls, and with "
            "aggregation.start: all the aggregator would read them.\n"
        )

    def _proposals(self) -> list[CallRecord]:
        return [r for r in self.records if r is not None]

    def _calls(self, record: CallRecord | None = None) -> list[CallRecord]:
        """Return every call record of the run so far, this node's `record` last."""
        return [*self.state.get("calls", []), *self._proposals(), *([record] if record else [])]

    def _aggregator_record(self, call: CallId, written: _Written) -> CallRecord | None:
        """Record the parts as one aggregator call (None before the first part)."""
        if not written.responses:
            return None
        response = _summed(written.answer, written.responses)
        return record_answer(
            call, written.errors, response, written.seconds, estimated=written.estimated
        )

    def _answer(
        self,
        call: CallId,
        written: _Written,
        record: CallRecord | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the node's update: the answer the parts wrote, with its provenance."""
        assert record is not None
        calls = self._calls(record)
        continuation = "prefill" if self.prefill else "instruction"
        extra = {
            "chunkwise": {"parts": written.parts, "continuation": continuation},
            **early_start_provenance(self.cfg, calls),
            **(extra or {}),
        }
        last = written.responses[-1]
        message = final_message(self.cfg, last, written.answer, calls, record, extra)
        return {
            "calls": [*self._proposals(), record],
            "messages": [message],
            "usage": summarize(calls),
        }

    def _budget_spent(self, responses: list[AIMessage]) -> bool:
        limit = self.cfg.budget.max_tokens
        return limit is not None and self._tokens_used(responses) >= limit

    def _budget_ended(self, call: CallId, written: _Written) -> dict[str, Any]:
        """End the answer where the run's token budget ran out: no further part starts.

        The proposals still being written are cancelled. The answer is the parts written so
        far, or before the first part the best available proposal, labelled either way (or
        `BudgetExhaustedError`, as standard MoA does).
        """
        used, limit = self._tokens_used(written.responses), self.cfg.budget.max_tokens or 0
        self._drop_all(f"was still writing when the run reached its budget.max_tokens ({limit})")
        record = self._aggregator_record(call, written)
        calls = self._calls(record)
        best = best_available(calls) if record is None else record
        if self.cfg.on_aggregator_failure == "raise" or best is None:
            raise BudgetExhaustedError(used, limit, calls)
        emit("budget_spent", used=used, limit=limit)
        reason = f"the run {budget_reached(used, limit, calls)}: "
        if record is None:
            reason += "no aggregator part was started"
            update = labelled_fallback(self.cfg, calls, best, "budget", reason)
            return {"calls": self._proposals(), **update}
        reason += f"the answer ends after its part {len(written.parts)}"
        return self._answer(
            call, written, record, {"fallback": "budget", "fallback_reason": reason}
        )

    async def _gave_up(self, call: CallId, error: Exception, written: _Written) -> dict[str, Any]:
        """Raise, or answer with the best proposal, labelled: a part failed for good.

        With ``on_aggregator_failure: raise`` nothing is waited for. The fallback waits for
        the first of the last layer's proposals to complete (it is the answer of last
        resort), then stops the rest. The parts streamed so far are announced as discarded
        (`discard_answer`): no answer follows them.
        """
        discard_answer(call, error)
        if self.cfg.on_aggregator_failure != "raise":
            await self._until(lambda: all(self.done) or self._any_answered())
        self._drop_all("was still writing when the aggregator failed: the run ended without it")
        if self.watch is not None:
            self.watch.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        errors = written.errors
        if not errors or errors[-1] != describe_error(error):
            errors.append(describe_error(error))  # a failure outside a part's call
        paid = _summed(written.answer, written.responses) if written.responses else None
        record = record_failure(call, errors, error, written.seconds, paid, written.estimated)
        calls = self._calls(record)
        best = best_available(calls)
        if self.cfg.on_aggregator_failure == "raise" or best is None:
            raise AggregatorFailedError(call.configured_model, error, calls)
        done = len(written.parts)
        reason = f"the chunk-wise aggregator failed after {done} parts: {record['error']}"
        update = labelled_fallback(self.cfg, calls, best, "best_proposal", reason)
        return {"calls": [*self._proposals(), record], **update}


@dataclass
class _Written:
    """The aggregator's answer so far, part by part.

    Its text, each part's provenance and response, and the errors of the attempts that were
    retried (the call record's).
    """

    answer: str = ""
    seconds: float = 0.0
    """The parts' calls' time together: the call record's latency."""
    parts: list[dict[str, Any]] = field(default_factory=list)
    responses: list[AIMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    estimated: bool = False
    """Some part's provider reported no usage: its tokens (prompt too) are estimated."""

    def paid(self, response: AIMessage, prompt: list[BaseMessage]) -> AIMessage:
        """Keep a part's `response`, and return it as kept.

        Its tokens are estimated from `prompt` and its text where its provider reported none
        (`with_estimated_usage`).
        """
        response, estimated = with_estimated_usage(response, prompt)
        self.estimated = self.estimated or estimated
        self.responses.append(response)
        return response


def _part_cap(chunk_tokens: int, room: int | None, last: bool) -> int | None:
    """Return a part's max_tokens: a chunk (the last part: the rest), within the room left."""
    if last:
        return room  # None: the aggregator's own max_tokens, which is then None too
    return chunk_tokens if room is None else min(chunk_tokens, room)


def _output_tokens(response: AIMessage) -> int:
    """Return the tokens a part wrote: as its usage says, else estimated from its text."""
    usage = response.usage_metadata
    return token_count(usage["output_tokens"]) if usage else estimate_tokens(response.text)


def _total_tokens(response: AIMessage) -> int:
    """Return the tokens a part cost, read and written, as its record counts them.

    Estimated (what it wrote) where it reported none. Its usage is the server's word: a
    negative or short total summed as given kept the run under ``budget.max_tokens``.
    """
    counted = counted_tokens(response)
    return estimate_tokens(response.text) if counted is None else counted[2]


def _summed(answer: str, responses: list[AIMessage]) -> AIMessage:
    """One message for the parts: the whole answer, their tokens summed, their thinking joined.

    A reasoning aggregator thinks again in each part (`without_thinking` took it out of each
    part's text): the record keeps each part's thought, in order. Each part's counts are
    read as a record reads them before they are summed: a part's negative count cancelled
    what the other parts had read.
    """
    usage: list[UsageMetadata] = []
    for r in responses:
        if r.usage_metadata and (counted := counted_tokens(r)) is not None:
            prompt, completion, total = counted
            usage.append(
                {
                    **r.usage_metadata,
                    "input_tokens": prompt,
                    "output_tokens": completion,
                    "total_tokens": total,
                }
            )
    thoughts = [r.additional_kwargs.get("reasoning_content") for r in responses]
    thinking = "\n\n".join(t for t in thoughts if isinstance(t, str) and t)  # an empty block
    return AIMessage(
        content=answer,
        additional_kwargs={"reasoning_content": thinking} if thinking else {},
        usage_metadata=functools.reduce(add_usage, usage) if usage else None,  # details too
        response_metadata=responses[-1].response_metadata,
    )
