"""Build the Mixture-of-Agents `StateGraph`.

Topology (one for every variant, so the variant can change per run)::

    prepare ──Sendxn──▶ propose ──▶ synthesize ──┬─Sendxn─▶ propose      (next layer)
                                                 ├────────▶ aggregate ──▶ END
                                                 └────────▶ rank ──────▶ END
                        aggregate ──Sendxk──▶ propose                    (next Self-MoA-Seq window)

- ``propose`` is one node, fanned out with `Send`: each (layer, proposer, sample) is its own
  branch with its own input, retried by a `RetryPolicy`; when retries are spent, the node
  records the failure itself so one bad proposer never ends the run.
- ``synthesize`` joins a layer: it keeps only that layer's successful outputs, in the
  configured order, as the references of the next input.
- ``aggregate`` writes the final answer (or, in Self-MoA-Seq, the running synthesis);
  ``rank`` is the LLM-Ranker baseline.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Checkpointer, Command, RetryPolicy, Send

from langgraph_moa.accounting import failed_record, ok_record, summarize
from langgraph_moa.cache import CallCache, call_key
from langgraph_moa.config import MoAConfig, ProposerConfig, RoleConfig
from langgraph_moa.context import ContextConfigCache, MoAContext
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    MoAInputError,
)
from langgraph_moa.inputs import guard_input
from langgraph_moa.models import ModelCache
from langgraph_moa.prompts import (
    estimate_tokens,
    fit_references,
    inject_references,
    ranker_messages,
)
from langgraph_moa.reliability import (
    CallTimeoutError,
    ContextLengthError,
    EmptyResponseError,
    StragglerCancelledError,
    StructuredOutputError,
    explain_failure,
    is_retryable,
    retry_after_s,
)
from langgraph_moa.selection import Candidate, select, tally_note
from langgraph_moa.state import (
    CallRecord,
    MoAInput,
    MoAOutput,
    MoAState,
    ProposerTask,
)

PREPARE = "prepare"
PROPOSE = "propose"
SYNTHESIZE = "synthesize"
AGGREGATE = "aggregate"
RANK = "rank"
SELECT = "select"

TAG_FINAL = "moa:final"
"""Tag on the call that writes the final answer: keep only these tokens when streaming."""
TAG_PROPOSER = "moa:proposer"
TAG_INTERMEDIATE = "moa:intermediate"
NOSTREAM = "nostream"
"""LangGraph's tag that keeps a model's tokens out of ``stream_mode="messages"``."""


def create_moa_graph(
    config: MoAConfig | str,
    *,
    checkpointer: Checkpointer = None,
    name: str | None = None,
    response_format: Any = None,
    response_method: str = "json_schema",
    call_cache: CallCache | None = None,
) -> CompiledStateGraph[MoAState, MoAContext, MoAInput, MoAOutput]:
    """Compile a Mixture-of-Agents graph. Needs no network and no API key.

    Args:
        config: A `MoAConfig`, or the name of a preset.
        checkpointer: Optional LangGraph checkpointer for durable, resumable runs.
        name: Graph name shown in traces; defaults to the preset name or ``"moa"``.
        response_format: A pydantic model, TypedDict or JSON schema: the final aggregator
            answers through its `with_structured_output`, and the parsed answer is returned
            in ``structured_response``. The aggregator must support structured output.
        response_method: Passed to `with_structured_output` (``json_schema``,
            ``function_calling`` or ``json_mode``; llama.cpp's server constrains decoding to
            the schema with ``json_schema``).
        call_cache: A `CallCache` (e.g. `SQLiteCallCache`): calls already made with the same
            model, parameters, messages, role and sample are answered from it.

    Returns:
        A compiled graph that takes ``{"messages": [...]}`` and appends the answer as an
        `AIMessage`. Per-run settings go in ``context=MoAContext(...)`` (or a dict).
    """
    if isinstance(config, str):
        config = MoAConfig.from_preset(config)
    nodes = _MoANodes(config, response_format, response_method, call_cache)
    retry = RetryPolicy(
        max_attempts=config.retry.max_attempts,
        initial_interval=config.retry.initial_interval,
        backoff_factor=config.retry.backoff_factor,
        max_interval=config.retry.max_interval,
        jitter=config.retry.jitter,
        retry_on=is_retryable,
    )
    builder = StateGraph(
        MoAState,
        context_schema=MoAContext,
        input_schema=MoAInput,
        output_schema=MoAOutput,
    )
    builder.add_node(PREPARE, nodes.prepare)
    builder.add_node(
        PROPOSE,
        _dual(nodes.propose, nodes.apropose, PROPOSE),
        retry_policy=retry,
    )
    builder.add_node(SYNTHESIZE, nodes.synthesize)
    builder.add_node(
        AGGREGATE,
        _dual(nodes.aggregate, nodes.aaggregate, AGGREGATE),
        retry_policy=retry,
    )
    builder.add_node(
        RANK,
        _dual(nodes.rank, nodes.arank, RANK),
        retry_policy=retry,
    )
    builder.add_node(SELECT, nodes.select)
    builder.add_edge(START, PREPARE)
    builder.add_conditional_edges(PREPARE, nodes.first_layer, [PROPOSE])
    builder.add_edge(PROPOSE, SYNTHESIZE)
    builder.add_conditional_edges(SYNTHESIZE, nodes.after_layer, [PROPOSE, AGGREGATE, RANK, SELECT])
    builder.add_conditional_edges(AGGREGATE, nodes.after_aggregate, [PROPOSE, END])
    builder.add_edge(RANK, END)
    builder.add_edge(SELECT, END)
    graph = builder.compile(checkpointer=checkpointer, name=name or config.name or "moa")
    return guard_input(graph)


def _dual(
    sync: Callable[[Any], Any], asynchronous: Callable[[Any], Any], name: str
) -> Runnable[Any, Any]:
    """One node with a sync body for `invoke` and an async body for `ainvoke`."""
    return RunnableLambda(sync, afunc=asynchronous, name=name)


_POLL_S = 0.05
"""How often a running call checks its timeout and its layer's deadline: the stated margin."""

StopCheck = Callable[[], str | None]
"""Returns why a running call should be abandoned (its layer went on), or None."""


def _call(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
) -> BaseMessage:
    """Invoke a model, giving up on a timeout or when the layer went on without this call.

    The call runs in a daemon thread so that the node can return when it gives up: a
    blocking HTTP call cannot be interrupted, only abandoned (it ends at its client's own
    timeout). Errors that cannot succeed on retry are translated (see reliability).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = model.invoke(messages)
        except BaseException as exc:  # handed to the node's thread below
            outcome["error"] = exc
        finally:
            done.set()

    # The thread runs in a copy of this context: LangChain's callbacks (tracing, LangGraph's
    # token stream) travel in context variables, which a bare thread would not see.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), daemon=True, name=f"moa {label}").start()
    started = time.monotonic()
    while not done.wait(_POLL_S):
        _check_limits(label, started, timeout, stop)
    if "error" in outcome:
        error = outcome["error"]
        if wait := retry_after_s(error):
            time.sleep(wait)  # the provider said when to come back; backoff adds to it
        explained = explain_failure(error, label) if isinstance(error, Exception) else error
        raise explained from (error if explained is not error else None)
    result: BaseMessage = outcome["result"]
    return result


async def _acall(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
) -> BaseMessage:
    """Async twin of `_call`: the call is a task, cancelled when the node gives up."""
    task = asyncio.ensure_future(model.ainvoke(messages))
    started = time.monotonic()
    try:
        while True:
            finished, _ = await asyncio.wait({task}, timeout=_POLL_S)
            if finished:
                break
            _check_limits(label, started, timeout, stop)
    except BaseException:
        task.cancel()
        raise
    try:
        result: BaseMessage = task.result()
    except Exception as exc:
        if wait := retry_after_s(exc):
            await asyncio.sleep(wait)  # the provider said when to come back
        explained = explain_failure(exc, label)
        if explained is exc:
            raise
        raise explained from exc
    return result


def _check_limits(
    label: str, started: float, timeout: float | None, stop: StopCheck | None
) -> None:
    if timeout is not None and time.monotonic() - started > timeout:
        raise CallTimeoutError(f"{label} did not answer within {timeout:g}s")
    reason = stop() if stop is not None else None
    if reason:
        raise StragglerCancelledError(f"{label} was still running: {reason}")


class ModelRequest(NamedTuple):
    """A model call a node body asks its runner to make (the arguments of `_call`)."""

    model: Runnable[Any, Any]
    messages: list[BaseMessage]
    label: str
    timeout: float | None
    stop: StopCheck | None


NodeSteps = Generator[ModelRequest, Any, Any]
"""A node body written once: it yields the model call it needs and receives the answer.

Each node has a sync body (for `invoke`) and an async one (for `ainvoke`) that differ only in
how the model is called; `_run_sync` and `_run_async` supply that difference, so the logic
around the call (cache, accounting, retries, fallbacks) exists once. A failed call is thrown
into the body at its `yield`, where the body's own `except` sees it as before.
"""


def _run_sync(steps: NodeSteps) -> Any:
    """Run a node body, making its model calls in this thread (`_call`)."""
    try:
        request = next(steps)
        while True:
            try:
                response = _call(*request)
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(response)
    except StopIteration as done:
        return done.value


async def _run_async(steps: NodeSteps) -> Any:
    """Run a node body, awaiting its model calls (`_acall`)."""
    try:
        request = next(steps)
        while True:
            try:
                response = await _acall(*request)
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(response)
    except StopIteration as done:
        return done.value


class _LayerClock:
    """Per run and layer: when the deadline falls and how many proposals arrived."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, int], list[float | int | None]] = {}
        self._lock = threading.Lock()

    def start(self, token: str, layer: int, deadline_s: float | None) -> None:
        with self._lock:
            if (token, layer) not in self._state:
                due = time.monotonic() + deadline_s if deadline_s else None
                self._state[(token, layer)] = [due, 0]

    def answered(self, token: str, layer: int) -> None:
        with self._lock:
            entry = self._state.setdefault((token, layer), [None, 0])
            entry[1] = int(entry[1] or 0) + 1

    def stop_reason(self, token: str, layer: int, quorum: int) -> str | None:
        with self._lock:
            due, count = self._state.get((token, layer), [None, 0])
        if due is not None and time.monotonic() >= float(due) and int(count or 0) >= quorum:
            return f"the layer deadline passed and {count} proposals (quorum {quorum}) had answered"
        return None

    def close(self, token: str, layer: int) -> None:
        with self._lock:
            self._state.pop((token, layer), None)


def _emit(event: str, **fields: Any) -> None:
    """Send a progress event to ``stream_mode="custom"`` (a no-op when nobody listens)."""
    get_stream_writer()({"type": "moa", "event": event, **fields})


def _conversation(state: MoAState) -> list[BaseMessage]:
    return list(state["messages"])


class _AttemptLog:
    """The errors of each call's failed attempts, so provenance shows every retry.

    `RetryPolicy` re-runs a node without telling the node's body; this log, keyed by the run
    and the call, is how a record learns how many attempts it took and what went wrong.
    """

    def __init__(self) -> None:
        self._errors: dict[tuple[Any, ...], list[str]] = {}
        self._lock = threading.Lock()

    def failed(self, key: tuple[Any, ...], exc: BaseException) -> None:
        with self._lock:
            self._errors.setdefault(key, []).append(f"{type(exc).__name__}: {exc}")

    def pop(self, key: tuple[Any, ...]) -> list[str]:
        with self._lock:
            return self._errors.pop(key, [])


class _MoANodes:
    """The node bodies, sharing the base config and the model cache of one compiled graph."""

    def __init__(
        self,
        config: MoAConfig,
        response_format: Any = None,
        response_method: str = "json_schema",
        call_cache: CallCache | None = None,
    ) -> None:
        self.configs = ContextConfigCache(config)
        self.call_cache = call_cache
        self.response_format = response_format
        self.response_method = response_method
        self.models = ModelCache()
        self.attempts = _AttemptLog()
        self.clock = _LayerClock()

    def config(self) -> MoAConfig:
        """Return the effective config of this run (base config plus run context)."""
        try:
            context = get_runtime().context
        except RuntimeError:
            context = None
        return self.configs.get(context)

    # --- start ---------------------------------------------------------------------------

    def prepare(self, state: MoAState) -> dict[str, Any]:
        """Check the input and the models before any call is paid for; reset run data."""
        cfg = self.config()
        validate_conversation(state.get("messages", []))
        for p in cfg.proposers:
            self._proposer_model(p)
        for index in range(len(cfg.final_chain)):
            self._final_model(cfg, index, streamed=cfg.final_role == "aggregator")
        return {
            "calls": None,
            "layer": 0,
            "references": [],
            "missing": 0,
            "synthesis": None,
            "final_index": 0,
            "run_token": uuid.uuid4().hex,
            "drawn": [],
        }

    def _proposer_model(self, p: ProposerConfig) -> BaseChatModel:
        """Return the proposer's model, never streaming.

        Proposers are never shown token by token, and a non-streamed reply is the one that
        carries token usage on every OpenAI-compatible server (llama.cpp included).
        """
        return self.models.get(p.model, {**p.call_params(), "disable_streaming": True})

    def _final_model(self, cfg: MoAConfig, index: int, *, streamed: bool) -> BaseChatModel:
        """Return the model at `index` of the aggregator chain; only the answer streams."""
        role = cfg.final_chain[index]
        params = role.call_params()
        return self.models.get(
            role.model, params if streamed else {**params, "disable_streaming": True}
        )

    def first_layer(self, state: MoAState) -> list[Send]:
        """Fan out layer 1 (or the first Self-MoA-Seq window, or the first sampling round)."""
        cfg = self.config()
        return self._sends(cfg, state, layer=1, rounds=[range(n) for n in cfg.first_round()])

    def _sends(
        self,
        cfg: MoAConfig,
        state: MoAState,
        *,
        layer: int,
        rounds: list[range] | None = None,
    ) -> list[Send]:
        """Fan out one layer; `rounds` limits which samples each proposer draws now."""
        conversation = _conversation(state)
        token = state["run_token"]
        if cfg.variant == "self-moa-seq":
            # Each window draws fresh, independent samples of the bare conversation.
            batch = cfg.seq.batches(cfg.proposers[0].samples)[layer - 1]
            return [
                Send(
                    PROPOSE,
                    ProposerTask(
                        layer=layer, proposer=0, sample=s, messages=conversation, run_token=token
                    ),
                )
                for s in batch
            ]
        layer_input = (
            self._with_references(cfg, conversation, state, cfg.proposers)[0]
            if layer > 1
            else conversation
        )
        return [
            Send(
                PROPOSE,
                ProposerTask(
                    layer=layer,
                    proposer=i,
                    sample=s,
                    messages=list(layer_input),
                    run_token=token,
                ),
            )
            for i, proposer in enumerate(cfg.proposers)
            for s in (rounds[i] if rounds is not None else range(proposer.samples))
        ]

    @staticmethod
    def _with_references(
        cfg: MoAConfig,
        conversation: list[BaseMessage],
        state: MoAState,
        readers: Sequence[RoleConfig],
    ) -> tuple[list[BaseMessage], int]:
        """Build a layer's input for `readers`, trimming references to fit their context.

        Returns the messages and how many references were cut. The budget is the smallest
        known window among the readers, minus their answer's room and the rest of the prompt.

        Raises:
            ContextLengthError: the conversation alone leaves no room in that window.
        """
        references: list[str] = state["references"]
        trimmed = 0
        budgets = [
            (role, window - (role.max_tokens or 0))
            for role in readers
            if (window := role.known_context_window()) is not None
        ]
        if budgets and references:
            role, room = min(budgets, key=lambda pair: pair[1])
            fixed = "".join(m.text for m in conversation) + cfg.synthesis_prompt
            overhead = estimate_tokens(fixed) + 40 * len(references) + 120  # markers and notes
            if room - overhead <= 0:
                raise ContextLengthError(
                    f"The conversation (about {estimate_tokens(fixed)} tokens) leaves no room "
                    f"for references in {role.label}'s context of "
                    f"{role.known_context_window()} tokens with {role.max_tokens} reserved for "
                    "its answer. Shorten the conversation or lower that model's max_tokens."
                )
            references, trimmed = fit_references(references, room - overhead)
        note = ""
        if cfg.selection is not None and cfg.selection.show_tally and not trimmed:
            note = tally_note(_candidates(cfg, state), cfg.selection)
        messages = inject_references(
            conversation,
            references,
            cfg.synthesis_prompt,
            reference_format=cfg.reference_format,
            missing=state.get("missing", 0),
            note=note,
        )
        return messages, trimmed

    # --- proposers -----------------------------------------------------------------------

    def _proposer_call(
        self, task: ProposerTask
    ) -> tuple[Runnable[Any, Any], dict[str, Any], tuple[Any, ...]]:
        cfg = self.config()
        p = cfg.proposers[task["proposer"]]
        where = _proposer_where(cfg, task)
        parts = [f"layer {task['layer']}", f"proposer {task['proposer'] + 1}"]
        if p.samples > 1:
            parts.append(f"sample {task['sample'] + 1}")
        traced = self._proposer_model(p).with_config(
            run_name=" / ".join([*parts, p.label]),
            tags=[TAG_PROPOSER, NOSTREAM],
            metadata=_trace_metadata(cfg, where),
        )
        return traced, where, _attempt_key(task["run_token"], where)

    def _straggler_check(self, task: ProposerTask) -> StopCheck:
        cfg = self.config()
        token, layer = task["run_token"], task["layer"]
        self.clock.start(token, layer, cfg.layer_deadline_s)
        reason = self.clock.stop_reason(token, layer, cfg.min_proposers)
        if reason:  # e.g. a retry that comes back after its layer went on
            raise StragglerCancelledError(
                f"{_proposer_where(cfg, task)['configured_model']}: {reason}"
            )
        return lambda: self.clock.stop_reason(token, layer, cfg.min_proposers)

    def _propose_steps(self, task: ProposerTask) -> NodeSteps:
        """Ask one proposer for one sample: the body of `propose` and `apropose`."""
        model, where, key = self._proposer_call(task)
        _emit("started", **where)
        started = time.perf_counter()
        try:
            stop = self._straggler_check(task)
            cfg = self.config()
            response, cached = yield from self._model_call(
                model,
                task["messages"],
                where,
                cfg.proposers[task["proposer"]].call_params(),
                cfg.call_timeout_s,
                stop,
            )
            return self._proposal(response, where, key, time.perf_counter() - started, cached)
        except Exception as exc:
            self.attempts.failed(key, exc)
            if self._retrying(exc):
                raise
            return self._proposer_gave_up(where, key, exc)

    def propose(self, task: ProposerTask) -> dict[str, Any]:
        """Ask one proposer for one sample (sync)."""
        return _run_sync(self._propose_steps(task))

    async def apropose(self, task: ProposerTask) -> dict[str, Any]:
        """Ask one proposer for one sample (async)."""
        return await _run_async(self._propose_steps(task))

    def _proposal(
        self,
        response: BaseMessage,
        where: dict[str, Any],
        key: tuple[Any, ...],
        latency: float,
        cached: bool = False,
    ) -> dict[str, Any]:
        if not response.text.strip():
            raise EmptyResponseError(f"{where['configured_model']} returned an empty answer")
        record = ok_record(
            response=response,
            latency_s=latency,
            retried_errors=self.attempts.pop(key),
            cached=cached,
            **where,
        )
        self.clock.answered(key[0], where["layer"])
        _emit("finished", **where, model=record["model"], latency_s=record["latency_s"])
        return {"calls": [record]}

    def _cache_key(
        self, where: dict[str, Any], params: dict[str, Any], messages: Any
    ) -> str | None:
        if self.call_cache is None:
            return None
        return call_key(
            model=where["configured_model"],
            params=params,
            messages=messages,
            role=where["role"],
            sample=where["sample"],
        )

    def _model_call(
        self,
        model: Runnable[Any, Any],
        messages: list[BaseMessage],
        where: dict[str, Any],
        params: dict[str, Any],
        timeout: float | None,
        stop: StopCheck | None = None,
    ) -> Generator[ModelRequest, Any, tuple[Any, bool]]:
        """Answer from the call cache, or have the node's runner call the model; tell which."""
        key = self._cache_key(where, params, messages)
        if key is not None and (hit := self.call_cache.get(key)) is not None:  # type: ignore[union-attr]
            return hit, True
        response = yield ModelRequest(model, messages, where["configured_model"], timeout, stop)
        if key is not None and isinstance(response, BaseMessage):
            self.call_cache.put(key, response)  # type: ignore[union-attr]
        return response, False

    def _retrying(self, exc: Exception) -> bool:
        """Tell whether the node's RetryPolicy will run this call again.

        Nodes record their own final failure instead of leaving it to an `error_handler`:
        a handler's `Command(goto=...)` was seen to be lost now and then when the failed
        task was the only one of its step, which ended a run with neither answer nor error.
        """
        try:
            info = get_runtime().execution_info
            attempt = info.node_attempt if info is not None else 1
        except RuntimeError:
            attempt = 1
        return is_retryable(exc) and attempt < self.config().retry.max_attempts

    def _proposer_gave_up(
        self, where: dict[str, Any], key: tuple[Any, ...], exc: Exception
    ) -> dict[str, Any]:
        """Record the failure for good; the layer goes on without this proposal."""
        errors = self.attempts.pop(key)
        record = failed_record(error=exc, retried_errors=errors[:-1], **where)
        _emit("failed", **where, error=record["error"])
        return {"calls": [record]}

    # --- join ----------------------------------------------------------------------------

    def synthesize(self, state: MoAState) -> dict[str, Any]:
        """Close a layer: its successful outputs become the next input's references."""
        cfg = self.config()
        # A sampling round of variant 'select' adds samples to layer 1; it is no new layer.
        layer = 1 if cfg.variant == "select" else state.get("layer", 0) + 1
        calls = state.get("calls", [])
        mine = [c for c in calls if c["role"] == "proposer" and c["layer"] == layer]
        answered = [c for c in mine if c["status"] == "ok"]
        synthesis = state.get("synthesis")
        if not answered and not (cfg.variant == "self-moa-seq" and synthesis):
            raise AllProposersFailedError(layer, calls)
        outputs = [c["output"] or "" for c in answered]
        if cfg.reference_order == "shuffled":
            random.Random(f"{cfg.shuffle_seed}:{layer}").shuffle(outputs)
        if cfg.variant == "self-moa-seq" and synthesis:
            outputs = [synthesis, *outputs]
        self.clock.close(state["run_token"], layer)
        drawn = [
            1 + max((c["sample"] for c in mine if c["proposer"] == i), default=-1)
            for i in range(len(cfg.proposers))
        ]
        return {
            "layer": layer,
            "references": outputs,
            "missing": len(mine) - len(answered),
            "drawn": drawn,
        }

    def after_layer(self, state: MoAState) -> list[Send] | str:
        """Next proposer layer or sampling round, or the final step."""
        cfg = self.config()
        if cfg.variant == "select":
            return self._next_round(cfg, state) or SELECT
        if cfg.variant == "self-moa-seq" or state["layer"] >= cfg.proposer_layers:
            return RANK if cfg.final_role == "ranker" else AGGREGATE
        return self._sends(cfg, state, layer=state["layer"] + 1)

    def _next_round(self, cfg: MoAConfig, state: MoAState) -> list[Send]:
        """Adaptive sampling: another round unless the answers agree or samples ran out."""
        if not cfg.adaptive:
            return []
        assert cfg.selection is not None and cfg.selection.stop_agreement is not None
        drawn = state.get("drawn") or [0] * len(cfg.proposers)
        left = [p.samples - n for p, n in zip(cfg.proposers, drawn, strict=True)]
        candidates = _candidates(cfg, state)
        if not any(left) or (
            len(candidates) >= 2
            and select(candidates, cfg.selection, _priority(cfg)).agreement
            >= cfg.selection.stop_agreement
        ):
            return []
        step = cfg.selection.round_size
        rounds = [range(n, n + min(step, room)) for n, room in zip(drawn, left, strict=True)]
        return self._sends(cfg, state, layer=1, rounds=rounds)

    # --- selection -----------------------------------------------------------------------

    def select(self, state: MoAState) -> dict[str, Any]:
        """Pick the answer among the proposals: no model call (see `selection`)."""
        cfg = self.config()
        assert cfg.selection is not None
        calls = list(state.get("calls", []))
        answered = [c for c in calls if c["role"] == "proposer" and c["status"] == "ok"]
        candidates = _candidates(cfg, state)
        decision = select(candidates, cfg.selection, _priority(cfg))
        record = answered[decision.winner]
        planned = sum(p.samples for p in cfg.proposers)
        made = sum(1 for c in calls if c["role"] == "proposer")
        provenance = {
            **decision.as_dict(),
            "winner_call": {k: record[k] for k in ("layer", "proposer", "sample", "model")},
            "calls_saved": planned - made,
        }
        _emit("selected", method=decision.method, reason=decision.reason)
        message = _final_message(
            cfg, None, record["output"], calls, record, extra={"selection": provenance}
        )
        return {"messages": [message], "usage": summarize(calls)}

    # --- aggregator (and ranker) -----------------------------------------------------------

    def _final_where(self, cfg: MoAConfig, state: MoAState) -> tuple[dict[str, Any], bool]:
        """Identify the current final-step call; tell whether it writes the answer."""
        index = state.get("final_index", 0)
        if cfg.variant == "self-moa-seq":
            layer = state["layer"]
            is_final = layer >= len(cfg.seq.batches(cfg.proposers[0].samples))
        else:
            layer, is_final = cfg.proposer_layers + 1, True
        where = {
            "role": cfg.final_role,
            "layer": layer,
            "proposer": -1,
            "sample": index,  # position in the aggregator chain: fallbacks are their own calls
            "configured_model": cfg.final_chain[index].label,
        }
        return where, is_final

    def _final_params(self, cfg: MoAConfig, where: dict[str, Any]) -> dict[str, Any]:
        params = cfg.final_chain[where["sample"]].call_params()
        if self.response_format is not None:  # a structured answer is a different call
            params = {**params, "response_format": repr(self.response_format)}
        return params

    def _aggregator_input(
        self, cfg: MoAConfig, state: MoAState, where: dict[str, Any], is_final: bool
    ) -> tuple[Runnable[Any, Any], list[BaseMessage], int]:
        """Return the aggregator's model, its messages, and how many references were cut."""
        step = "window" if cfg.variant == "self-moa-seq" else "layer"
        tags = [TAG_FINAL] if is_final else [TAG_INTERMEDIATE, NOSTREAM]
        base: Runnable[Any, Any] = self._final_model(cfg, where["sample"], streamed=is_final)
        if is_final and self.response_format is not None:
            base = base.with_structured_output(  # type: ignore[attr-defined]
                self.response_format, method=self.response_method, include_raw=True
            )
        model = base.with_config(
            run_name=f"{step} {where['layer']} / aggregator / {where['configured_model']}",
            tags=tags,
            metadata=_trace_metadata(cfg, where),
        )
        messages, trimmed = self._with_references(
            cfg, _conversation(state), state, [cfg.final_chain[where["sample"]]]
        )
        return model, messages, trimmed

    def _skip_window(self, cfg: MoAConfig, state: MoAState) -> bool:
        """Self-MoA-Seq: a window whose samples all failed leaves the synthesis as it was."""
        return cfg.variant == "self-moa-seq" and state["references"] == [state.get("synthesis")]

    def _aggregate_steps(self, state: MoAState) -> NodeSteps:
        """Synthesize the references: the body of `aggregate` and `aaggregate`."""
        cfg = self.config()
        where, is_final = self._final_where(cfg, state)
        if self._skip_window(cfg, state) and not is_final:
            return {}
        key = _attempt_key(state["run_token"], where)
        try:
            # Building the input is inside: a conversation too long for the budget is a
            # failure of this aggregator, and the next one in the chain may have room.
            model, messages, trimmed = self._aggregator_input(cfg, state, where, is_final)
            _emit("started", **where)
            started = time.perf_counter()
            response, cached = yield from self._model_call(
                model, messages, where, self._final_params(cfg, where), cfg.call_timeout_s
            )
            return self._aggregated(
                cfg,
                state,
                response,
                where,
                time.perf_counter() - started,
                is_final,
                trimmed,
                cached,
            )
        except Exception as exc:
            self.attempts.failed(key, exc)
            if self._retrying(exc):
                raise
            return self._final_gave_up(cfg, state, where, key, exc)

    def aggregate(self, state: MoAState) -> dict[str, Any]:
        """Synthesize the references into the answer (sync)."""
        return _run_sync(self._aggregate_steps(state))

    async def aaggregate(self, state: MoAState) -> dict[str, Any]:
        """Synthesize the references into the answer (async)."""
        return await _run_async(self._aggregate_steps(state))

    def _aggregated(
        self,
        cfg: MoAConfig,
        state: MoAState,
        response: BaseMessage,
        where: dict[str, Any],
        latency: float,
        is_final: bool,
        trimmed: int,
        cached: bool = False,
    ) -> dict[str, Any]:
        parsed: Any = None
        if isinstance(response, dict):  # structured output: {"raw", "parsed", "parsing_error"}
            if response.get("parsing_error") is not None or response.get("parsed") is None:
                raise StructuredOutputError(
                    f"{where['configured_model']} did not return the requested structure: "
                    f"{response.get('parsing_error') or 'nothing could be parsed'}"
                )
            parsed = response["parsed"]
            response = response["raw"]
            if not response.text.strip():  # function calling: the structure is in tool calls
                response = response.model_copy(update={"content": _as_json(parsed)})
        if not response.text.strip():
            raise EmptyResponseError(f"{where['configured_model']} returned an empty answer")
        errors = self.attempts.pop(_attempt_key(state["run_token"], where))
        record = ok_record(
            response=response, latency_s=latency, retried_errors=errors, cached=cached, **where
        )
        _emit("finished", **where, model=record["model"], latency_s=record["latency_s"])
        if not is_final:
            return {"calls": [record], "synthesis": response.text}
        calls = [*state.get("calls", []), record]
        structured = {"structured_response": parsed} if parsed is not None else {}
        return {
            **structured,
            "calls": [record],
            "messages": [
                _final_message(
                    cfg, response, response.content, calls, record, {"trimmed_references": trimmed}
                )
            ],
            "usage": summarize(calls),
        }

    def after_aggregate(self, state: MoAState) -> list[Send] | str:
        """Self-MoA-Seq: draw the next window's samples; otherwise the run is done."""
        cfg = self.config()
        if cfg.variant != "self-moa-seq":
            return END
        mine = [
            c for c in state["calls"] if c["role"] == "aggregator" and c["layer"] == state["layer"]
        ]
        if mine and mine[-1]["status"] != "ok":
            return END  # a fallback aggregator is on its way (Command), or the run ended
        if state["layer"] >= len(cfg.seq.batches(cfg.proposers[0].samples)):
            return END
        return self._sends(cfg, state, layer=state["layer"] + 1)

    def _ranker_call(
        self, state: MoAState
    ) -> tuple[MoAConfig, Runnable[Any, Any], dict[str, Any], list[BaseMessage]]:
        cfg = self.config()
        where, _ = self._final_where(cfg, state)
        model = self._final_model(cfg, where["sample"], streamed=False).with_config(
            run_name=f"layer {where['layer']} / ranker / {where['configured_model']}",
            tags=[TAG_INTERMEDIATE, NOSTREAM],
            metadata=_trace_metadata(cfg, where),
        )
        messages = ranker_messages(
            _conversation(state), state["references"], reference_format=cfg.reference_format
        )
        return cfg, model, where, messages

    def _rank_steps(self, state: MoAState) -> NodeSteps:
        """Let an LLM pick the best proposal: the body of `rank` and `arank`."""
        cfg, model, where, messages = self._ranker_call(state)
        key = _attempt_key(state["run_token"], where)
        _emit("started", **where)
        started = time.perf_counter()
        params = cfg.final_chain[where["sample"]].call_params()
        try:
            response, cached = yield from self._model_call(
                model, messages, where, params, cfg.call_timeout_s
            )
        except Exception as exc:
            self.attempts.failed(key, exc)
            if self._retrying(exc):
                raise
            return self._final_gave_up(cfg, state, where, key, exc)
        return self._ranked(cfg, state, response, where, time.perf_counter() - started, cached)

    def rank(self, state: MoAState) -> dict[str, Any]:
        """Let an LLM pick the best proposal and return it verbatim (sync)."""
        return _run_sync(self._rank_steps(state))

    async def arank(self, state: MoAState) -> dict[str, Any]:
        """Let an LLM pick the best proposal and return it verbatim (async)."""
        return await _run_async(self._rank_steps(state))

    def _ranked(
        self,
        cfg: MoAConfig,
        state: MoAState,
        response: BaseMessage,
        where: dict[str, Any],
        latency: float,
        cached: bool = False,
    ) -> dict[str, Any]:
        candidates = state["references"]
        choice = parse_choice(response.text, len(candidates))
        errors = self.attempts.pop(_attempt_key(state["run_token"], where))
        record = ok_record(
            response=response, latency_s=latency, retried_errors=errors, cached=cached, **where
        )
        _emit("finished", **where, model=record["model"], latency_s=record["latency_s"])
        calls = [*state.get("calls", []), record]
        picked = candidates[(choice or 1) - 1]
        message = _final_message(
            cfg,
            None,
            picked,
            calls,
            record,
            extra={"ranker_choice": choice, "ranker_reply": response.text},
        )
        return {"calls": [record], "messages": [message], "usage": summarize(calls)}

    def _final_gave_up(
        self,
        cfg: MoAConfig,
        state: MoAState,
        where: dict[str, Any],
        key: tuple[Any, ...],
        error: Exception,
    ) -> Any:
        """After its retries the final step failed: try the next aggregator, else fall back.

        The next model of the chain runs in the same node (a `Command` back to it). When the
        chain is spent, the run answers with the best available proposal, labelled as such,
        or raises `AggregatorFailedError` if so configured.
        """
        errors = self.attempts.pop(key)
        record = failed_record(error=error, retried_errors=errors[:-1], **where)
        _emit("failed", **where, error=record["error"])
        calls = [*state.get("calls", []), record]
        node = RANK if cfg.final_role == "ranker" else AGGREGATE
        if where["sample"] + 1 < len(cfg.final_chain):
            return Command(
                update={"calls": [record], "final_index": where["sample"] + 1}, goto=node
            )
        best = _best_available(state, calls)
        # A caller asking for a structure gets one or an error, never free text.
        if cfg.on_aggregator_failure == "raise" or best is None or self.response_format:
            raise AggregatorFailedError(where["configured_model"], error, calls)
        message = _final_message(
            cfg,
            None,
            best["output"],
            calls,
            best,
            extra={
                "fallback": "best_proposal",
                "fallback_reason": "every aggregator failed: "
                + "; ".join(c["error"] or "" for c in calls if c["role"] == cfg.final_role),
            },
        )
        return {"calls": [record], "messages": [message], "usage": summarize(calls)}


def _candidates(cfg: MoAConfig, state: MoAState) -> list[Candidate]:
    """Return the last layer's successful proposals as selection sees them, in order."""
    layer = state.get("layer", 1)
    answered = [
        c
        for c in state.get("calls", [])
        if c["role"] == "proposer" and c["layer"] == layer and c["status"] == "ok"
    ]
    return [
        Candidate(
            index=k,
            model=c["configured_model"],
            text=c["output"] or "",
            mean_logprob=c.get("mean_logprob"),
        )
        for k, c in enumerate(answered)
    ]


def _priority(cfg: MoAConfig) -> list[str]:
    """Tie-breaking order of models: the proposers, as configured."""
    return list(dict.fromkeys(p.label for p in cfg.proposers))


def _best_available(state: MoAState, calls: list[CallRecord]) -> CallRecord | None:
    """Pick the answer of last resort: the newest layer's first successful proposal.

    In Self-MoA-Seq the running synthesis is better than any single sample, so it wins when
    there is one.
    """
    synthesis = [c for c in calls if c["role"] == "aggregator" and c["status"] == "ok"]
    if synthesis:
        return synthesis[-1]
    proposals = [c for c in calls if c["role"] == "proposer" and c["status"] == "ok"]
    if not proposals:
        return None
    last_layer = max(c["layer"] for c in proposals)
    return next(c for c in proposals if c["layer"] == last_layer)


def _as_json(value: Any) -> str:
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=str)


def _attempt_key(run_token: str, where: dict[str, Any]) -> tuple[Any, ...]:
    return (run_token, where["role"], where["layer"], where["proposer"], where["sample"])


def validate_conversation(messages: Sequence[Any]) -> None:
    """Refuse input no model can answer, with one sentence naming the problem and the fix."""
    if not messages:
        raise MoAInputError(
            "The conversation is empty: pass at least one user message, for example "
            "{'messages': [('user', 'Explain X')]}."
        )
    for position, message in enumerate(messages, start=1):
        content = getattr(message, "content", "")
        blocks = content if isinstance(content, list) else []
        for block in blocks:
            kind = block.get("type", "?") if isinstance(block, dict) else type(block).__name__
            if kind != "text" and not isinstance(block, str):
                raise MoAInputError(
                    f"Message {position} contains {kind!r} content, but MoA passes only text "
                    "between models (references are text): send text only, for example a "
                    "description or transcript of that content."
                )
    last = messages[-1]
    if not isinstance(last, HumanMessage):
        kind = getattr(last, "type", type(last).__name__)
        raise MoAInputError(
            f"The last message must come from the user, but it is a {kind!r} message: "
            "append the user's next turn before running MoA."
        )


def parse_choice(reply: str, n: int) -> int | None:
    """Return the first number in the ranker's reply naming a candidate (1..n), or None."""
    for match in re.finditer(r"\d+", reply):
        value = int(match.group())
        if 1 <= value <= n:
            return value
    return None


def _proposer_where(cfg: MoAConfig, task: ProposerTask) -> dict[str, Any]:
    """Identify a proposer call the same way in its record, its events and its trace."""
    return {
        "role": "proposer",
        "layer": task["layer"],
        "proposer": task["proposer"],
        "sample": task["sample"],
        "configured_model": cfg.proposers[task["proposer"]].label,
    }


def _trace_metadata(cfg: MoAConfig, where: dict[str, Any]) -> dict[str, Any]:
    return {
        "moa_role": where["role"],
        "moa_layer": where["layer"],
        "moa_proposer": where["proposer"],
        "moa_sample": where["sample"],
        "moa_variant": cfg.variant,
        "moa_preset": cfg.name,
    }


def _final_message(
    cfg: MoAConfig,
    response: BaseMessage | None,
    content: Any,
    calls: list[CallRecord],
    record: CallRecord,
    extra: dict[str, Any] | None = None,
) -> AIMessage:
    """Build the answer, carrying provenance in ``response_metadata["moa"]``.

    It keeps the aggregator's message id, so LangGraph's message stream does not emit the
    answer twice; its `usage_metadata` is the sum over every call of the run, which is the
    honest cost of the answer.
    """
    summary = summarize(calls)
    total = summary["total"]
    meta = dict(response.response_metadata) if response is not None else {}
    meta["moa"] = {
        "variant": cfg.variant,
        "name": cfg.name,
        "layers": cfg.layers,
        "answered_by": record["model"],
        "calls": calls,
        "usage": summary,
        **(extra or {}),
    }
    return AIMessage(
        content=content,
        id=response.id if response is not None else None,
        response_metadata=meta,
        usage_metadata={
            "input_tokens": total["prompt_tokens"],
            "output_tokens": total["completion_tokens"],
            "total_tokens": total["total_tokens"],
        },
    )


def final_answer_only(metadata: dict[str, Any]) -> bool:
    """Filter for ``stream_mode="messages"``: True for chunks of the final answer."""
    return TAG_FINAL in (metadata.get("tags") or [])
