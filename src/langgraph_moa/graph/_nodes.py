"""The node bodies: prepare, propose, synthesize, aggregate, rank and select.

Each body resolves the run's plan (the effective config and its variant's rules) once, and
identifies each model call by one `CallId`. A body that calls a model is written once as a
generator (see `calls`) and run by a sync and an async node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.runtime import get_runtime
from langgraph.types import Command

from langgraph_moa._lru import BoundedLRU
from langgraph_moa._redact import describe_error
from langgraph_moa.config._digest import route_digest, shape_digest
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._schema import MoAConfig, ProposerConfig
from langgraph_moa.config.context import ContextConfigCache
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    MoAConfigError,
    StragglerCancelledError,
    StructuredOutputError,
    ToolCallError,
    budget_reached,
)
from langgraph_moa.graph._chunkwise import ChunkwiseRequest, refuse_what_parts_cannot_write
from langgraph_moa.providers._models import ModelCache
from langgraph_moa.providers._retry import is_retryable
from langgraph_moa.providers._table import LOCAL_PREFIX
from langgraph_moa.run import _clock as clock
from langgraph_moa.run._accounting import (
    STRUCTURED_MARK,
    empty_answer,
    refuse_filtered,
    summarize,
    without_thinking,
)
from langgraph_moa.run._answer import (
    NOSTREAM,
    TAG_FINAL,
    TAG_INTERMEDIATE,
    TAG_PROPOSER,
    as_json,
    best_available,
    final_message,
    labelled_fallback,
    parse_choice,
)
from langgraph_moa.run._calls import (
    QUORUM_POLL_S,
    CallId,
    NodeSteps,
    StopCheck,
    cached_call,
    discard_answer,
    draw_offsets,
    emit,
    record_answer,
    record_failure,
    run_async,
    run_sync,
    watching,
)
from langgraph_moa.run._early import early_start_provenance, early_watch
from langgraph_moa.run._inputs import check_aggregator_schema, validate_conversation
from langgraph_moa.run._ledger import (
    AttemptKey,
    AwaitRead,
    Here,
    Ledger,
    ReadStep,
    SaveAttempt,
    Step,
    here,
)
from langgraph_moa.run._options import (
    Options,
    bind_options,
    check_call_bounds,
    check_tool_calls,
    params_with,
    proposal_options,
    ranker_options,
    read_text_tool_calls,
    run_options,
    schemas_sent,
)
from langgraph_moa.run._references import (
    TOOL_NOTE,
    LayerInput,
    answered_proposals,
    candidates,
    priority,
    proposal_text,
    with_references,
)
from langgraph_moa.run.cache import CallCache
from langgraph_moa.run.state import (
    SHAPE_MARK,
    CallRecord,
    MoAState,
    ProposerTask,
    make_token,
    token_fields,
)
from langgraph_moa.text._prompts import ranker_messages
from langgraph_moa.text._selection import select
from langgraph_moa.variants import Plan, plan_for

START_EDIT = (
    "with as_node='__start__' (update_state(config, {'messages': [...]}, as_node='__start__'))"
)
"""The checkpoint edit that starts a run, named where an edit after `prepare` is refused."""
_NO_RUN = (
    f"This thread has no run yet (no run prepared it): give its input {START_EDIT}, "
    "and the run starts when the thread resumes."
)
"""Said of an edit of a thread no run prepared, as a node after `prepare`: at the edit where
its router has no run to route, or where it resumes (`propose`'s edge routes nothing)."""


class Derived:
    """What the runs of one config need of it, worked out once per config (`MoANodes.derived`)."""

    __slots__ = ("_earlier", "cfg", "draws", "route", "shape")

    def __init__(self, cfg: MoAConfig | None, shape: str = "", route: str = "") -> None:
        self.cfg = cfg
        self.shape = shape
        """Its `shape_digest`."""
        self.route = route
        """Its `route_digest`."""
        self.draws: tuple[int, ...] | None = None
        """Its `draw_offsets`, once a call asked for them (`MoANodes.draws`)."""
        self._earlier: tuple[str, str] | None = None

    def earlier(self) -> tuple[str, str]:
        """Return its shape and route digests as versions up to 69bfb89 took them.

        Their tokens took in every field of each model (`shape_digest`'s `every_field`):
        a run they checkpointed mid-run resumes where its libraries are those it started
        with. Worked out only where a token does not hold the current digest.
        """
        if self._earlier is None:
            assert self.cfg is not None  # only a config's own digests are compared
            self._earlier = (
                shape_digest(self.cfg, every_field=True),
                route_digest(self.cfg, every_field=True),
            )
        return self._earlier


_NOTHING_DERIVED = Derived(None)


def _routes_as(known: Derived, route: str, shape: str) -> bool:
    """Return whether a run token's digests are `known`'s, in this form or 69bfb89's.

    Its route digest, or where the token has none (written before it was recorded) its
    shape digest. The form of 69bfb89 is worked out only where this one does not match.
    """
    recorded = route or shape
    if recorded == (known.route if route else known.shape):
        return True
    earlier_shape, earlier_route = known.earlier()
    return recorded == (earlier_route if route else earlier_shape)


class MoANodes:
    """The node bodies, sharing the base config and the model cache of one compiled graph."""

    def __init__(
        self,
        config: MoAConfig,
        response_format: Any = None,
        response_method: str = "json_schema",
        call_cache: CallCache | None = None,
        limits: RequestLimits | None = None,
        *,
        strict: bool | None = None,
    ) -> None:
        self.configs = ContextConfigCache(config, limits=limits)
        self.call_cache = call_cache
        self.response_format = response_format
        self.response_method = response_method
        # Only a given `strict` is passed on: not every model's `with_structured_output`
        # takes the argument, and None would override a provider's own default.
        self.response_options = {} if strict is None else {"strict": strict}
        self.models = ModelCache()
        self.ledger = Ledger()
        self.layer_input = LayerInput()
        self._derived: BoundedLRU[int, Derived] = BoundedLRU(128)
        self._last_derived = _NOTHING_DERIVED

    def plan(self) -> Plan:
        """Return this run's plan: its effective config (base config plus run context)."""
        runtime = _runtime()
        return plan_for(self.configs.get(None if runtime is None else runtime.context))

    def route_plan(self, state: MoAState, *, first: bool = False) -> Plan:
        """Return the plan a router follows: the run's, even where LangGraph gives no run.

        `update_state` (an edit of a checkpoint, human-in-the-loop or time travel) runs the
        edge of the node it writes as with no runtime, so with no run context: the base
        config routes then, unless the run's context changed who is asked, how often or how
        many layers there are (`route_digest`: its temperature or max_tokens route nothing),
        which would route the run as another MoA (skip its next layer, say). That is refused,
        naming the edit that routes with the run's context. Its max_tokens does not route,
        but fits a layer's references to its proposers' context window: the proposer node
        does that, with the run's context (`ProposerTask.reads_references`). Its token budget (a
        preset it names has its own) does route, so `prepare` records it in the run's token
        and the edit routes with it: the base config's would pay for a layer past the run's
        budget, or end the run a layer early. An edit as a node after
        `prepare` of a thread no run prepared (a new one) has no run to route (its fan-out
        needs the run's token): it is refused, naming the edit that starts the run. So is
        an edit as `prepare` (`first`: its router) of a run past `prepare`, a finished one
        say: `prepare` did not run, so its token, layer count, proposals and call records
        stay, and the next run would ask layer 1 only, then aggregate that run's proposals.
        """
        if _runtime() is not None:
            return self.plan()
        if not state.get("run_token"):
            raise MoAConfigError(_NO_RUN)
        if first and (state.get("layer") or state.get("calls")):
            raise MoAConfigError(
                "An edit as 'prepare' keeps this thread's last run (its layers, proposals and "
                f"call records), which the next run would mix with its own: give the new input "
                f"{START_EDIT}, and a fresh run starts when the thread resumes."
            )
        cfg = self.configs.get(None)
        budget, route, shape = token_fields(state["run_token"])
        known = self.derived(cfg)
        if shape and not _routes_as(known, route, shape):
            raise MoAConfigError(
                "This run's context changed its proposers, aggregators or layers (or another "
                "version of langgraph-moa or of its libraries started the run), and "
                "update_state routes without it: edit the checkpoint taken before the layer "
                "closed (its next node is 'join_layer') with as_node='propose', so the run "
                "routes with its context when it resumes."
            )
        limit = int(budget) if budget else None
        if budget is not None and limit != cfg.budget.max_tokens:  # a preset's own budget
            cfg = cfg.with_overrides(budget=cfg.budget.model_copy(update={"max_tokens": limit}))
        return plan_for(cfg)

    def checked_plan(self, run_token: str) -> Plan:
        """Return this run's plan, refusing to go on with a run another MoA started.

        `run_token` ends in the digest of the MoA that started the run (`prepare`,
        `MoAState.run_token`): a run resumed by a graph with other proposers, aggregators or
        layers would mix the two MoAs' proposals, or index a proposer that is not there. A
        token without one was written by an earlier version, before the digest was recorded
        (`prepare` always writes it now): nothing tells its MoA from another, so the run is
        refused rather than resumed unchecked. No token at all: no run prepared the thread
        (an edit as `propose` of a new one, which no router refuses), and `_NO_RUN` says
        so. Every node runs this, so it is one comparison (issue 23).
        """
        plan = self.plan()
        if not run_token:  # an edit as `propose` of a new thread: its edge routes nothing
            raise MoAConfigError(_NO_RUN)
        # `token_fields`' layout read without splitting (every node runs this): a token
        # without a mark has no shape, and the shape is its last field.
        if SHAPE_MARK not in run_token:
            raise MoAConfigError(
                "This thread's run was checkpointed mid-run by an earlier version of "
                "langgraph-moa, which did not record its MoA, so resuming it could mix two "
                "MoAs' proposals: finish it with that version and the config it started with, "
                "or give the thread new input (or use a new thread_id) to start over."
            )
        last = self._last_derived  # `derived`'s own first step, without the call
        known = last if last.cfg is plan.cfg else self.derived(plan.cfg)
        if not run_token.endswith(known.shape) and not run_token.endswith(known.earlier()[0]):
            # Which it is no digest tells: a config's, or an upgrade's where the token was
            # written in the form of 69bfb89 (which took in langchain-core's version).
            raise MoAConfigError(
                "This thread's run was started by another MoA, or by another version of "
                "langgraph-moa or of its libraries, than this graph's: resume it with the "
                "config it started with, under the versions it started with, or give it new "
                "input (or use a new thread_id) to start over."
            )
        return plan

    def derived(self, cfg: MoAConfig) -> Derived:
        """Return what the runs of `cfg` need of it, computed once per config object.

        The last one asked for is at hand without a lookup (most graphs run one config).
        """
        last = self._last_derived
        if last.cfg is cfg:
            return last
        known = self._derived.get(id(cfg))
        if known is None or known.cfg is not cfg:
            known = Derived(cfg, shape_digest(cfg), route_digest(cfg))
            self._derived.put(id(cfg), known)
        self._last_derived = known
        return known

    def draws(self, cfg: MoAConfig) -> tuple[int, ...]:
        """Return `cfg`'s `draw_offsets`, worked out at its first call.

        Not with its digests: a run resumed by another MoA is refused by them
        (`checked_plan`), before anything of its proposers is read.
        """
        known = self.derived(cfg)
        if known.draws is None:
            known.draws = draw_offsets(cfg)
        return known.draws

    # --- start ---------------------------------------------------------------------------

    def prepare(self, state: MoAState) -> dict[str, Any]:
        """Check the input and the models before any call is paid for; reset run data."""
        return self._prepare(self._checked(state), state)

    def _checked(self, state: MoAState) -> MoAConfig:
        """Refuse the run's conversation, then its schema, if need be; return its config.

        The conversation first: it is the caller's own, new at each run, and checking it
        builds nothing; the schema check may build models, and an async run then starts
        its local servers (`aprepare`), neither worth doing for a run refused anyway.
        """
        validate_conversation(state.get("messages", []))
        cfg = self.plan().cfg
        self._check_structures(cfg)
        return cfg

    def _prepare(self, cfg: MoAConfig, state: MoAState) -> dict[str, Any]:
        """`prepare` once the conversation and the schema were taken (`_check_structures`)."""
        known = self.derived(cfg)
        shape, route = known.shape, known.route
        if cfg.aggregation.chunked:
            refuse_what_parts_cannot_write(self, state)
        options = run_options(state)
        for p in cfg.proposers:
            bind_options(self._proposer_model(cfg, p), options, p.label)
        for index in range(len(cfg.final_chain)):
            model = self._final_model(cfg, index, streamed=cfg.final_role == "aggregator")
            if cfg.final_role == "aggregator":
                label = cfg.final_chain[index].label
                bind_options(model, options, label)
        # Written by the run's last step: until then, unset, not the thread's last turn's (a
        # follow-up stopped or failed mid-run showed the turn before's totals and answer).
        # Only a value is reset: a None written to every run gave each run of a graph without
        # a `response_format` a `structured_response` key.
        unset = {
            key: None for key in ("usage", "structured_response") if state.get(key) is not None
        }
        return {
            **unset,
            "calls": None,
            "layer": 0,
            "references": [],
            "missing": 0,
            "running_synthesis": None,
            "final_index": 0,
            "run_token": make_token(cfg.budget.max_tokens, route, shape),
            "drawn": [],
        }

    def _check_structures(self, cfg: MoAConfig) -> None:
        """Refuse the graph's schema now if an aggregator of `cfg` cannot answer in it.

        Asked per run, since the run's context may name another aggregator than the one
        the graph was built with (`check_aggregator_schema`), and before any model is built:
        building a local model starts its server (tens of seconds, GBs of memory) only for
        the run to be refused. A local aggregator is asked through a model with no server
        (`schema_probe`): answering in a schema or not is its client's to say.
        """
        if self.response_format is None or cfg.final_role != "aggregator":
            return  # no work at all on the common path
        for index, role in enumerate(cfg.final_chain):
            spec = role.model
            if isinstance(spec, str) and spec.startswith(f"{LOCAL_PREFIX}:"):
                from langgraph_moa.local.runtime import schema_probe

                model = schema_probe(spec.removeprefix(f"{LOCAL_PREFIX}:"), role.call_params())
            else:
                model = self._final_model(cfg, index, streamed=True)
            check_aggregator_schema(
                model,
                role.label,
                self.response_format,
                self.response_method,
                self.response_options,
            )

    async def aprepare(self, state: MoAState) -> dict[str, Any]:
        """`prepare` on the run's event loop, so its models are the ones the run's calls use.

        The blocking part of a local model (assembling and verifying its file, starting its
        server) runs in a worker thread first: an ASGI server's loop must never wait on it
        (LangGraph server refuses such a call outright), after the run's checks.
        """
        cfg = self._checked(state)
        local = cfg.local_model_names()
        if local:
            from langgraph_moa.local.runtime import start_local_servers

            await asyncio.to_thread(start_local_servers, local)
        return self._prepare(cfg, state)

    def _proposer_model(
        self, cfg: MoAConfig, p: ProposerConfig, *, streamed: bool = False
    ) -> BaseChatModel:
        """Return the proposer's model, streaming only in a watched run (`watching`).

        A plain run never shows proposers token by token, and a non-streamed reply is the
        one that carries token usage on every OpenAI-compatible server (llama.cpp included).
        """
        params = p.call_params()
        if not streamed:
            params = {**params, "disable_streaming": True}
        return self.models.get(p.model, params, cfg.call_timeout_s)

    def _final_model(self, cfg: MoAConfig, index: int, *, streamed: bool) -> BaseChatModel:
        """Return the model at `index` of the aggregator chain; only the answer streams."""
        role = cfg.final_chain[index]
        params = role.call_params()
        if not streamed:
            params = {**params, "disable_streaming": True}
        return self.models.get(role.model, params, cfg.call_timeout_s)

    # --- proposers -----------------------------------------------------------------------

    def _propose_steps(self, task: ProposerTask) -> NodeSteps:
        """Ask one proposer for one sample: the body of `propose` and `apropose`."""
        cfg = self.checked_plan(task["run_token"]).cfg
        p = cfg.proposers[task["proposer"]]
        call = CallId("proposer", task["layer"], task["proposer"], task["sample"], p.label)
        parts = [f"layer {call.layer}", f"proposer {call.proposer + 1}"]
        if p.samples > 1:
            parts.append(f"sample {call.sample + 1}")
        watched = watching()
        options = proposal_options(
            task.get("options") or {}, cfg.proposers, call.proposer, call.sample
        )
        picks = cfg.rules.returns_proposal()  # then proposals get `stop`
        messages = task["messages"]
        if "reads_references" in task:  # a layer after the first (`in`: no function call)
            messages = self.layer_input.build(cfg, messages)
        elif "references_of" in task:  # routed by an edit, before `reads_references`
            messages = with_references(cfg, list(messages), task["references_of"], cfg.proposers)[0]

        def request() -> _Request:
            chat = self._proposer_model(cfg, p, streamed=watched)
            model = bind_options(chat, options, p.label, stop=picks)
            trace = call.trace(
                cfg,
                " / ".join([*parts, p.label]),
                [TAG_PROPOSER] if watched else [TAG_PROPOSER, NOSTREAM],
            )
            params = params_with(p.call_params(), options, stop=picks)
            return _Request(model, messages, params, p.model, trace, options=options)

        outcome = yield from self._attempt(
            cfg,
            task["run_token"],
            call,
            request,
            watch=lambda step: _straggler_check(cfg, task, call, step),
            counts_for_quorum=True,
        )
        # A failure is recorded for good; the layer goes on without this proposal.
        return {"calls": [outcome.record]}

    def _attempt(
        self,
        cfg: MoAConfig,
        token: str,
        call: CallId,
        request: Callable[[], _Request],
        *,
        watch: Callable[[Step], StopCheck | None] | None = None,
        counts_for_quorum: bool = False,
        writes_answer: bool = False,
    ) -> Generator[Any, Any, _Outcome]:
        """Make one attempt of one model call, with all of its bookkeeping, in one place.

        The started, finished and failed events, the ledger step (attempts made before a
        resume count), the call cache, the timeout and layer deadline, the retry decision
        and the call record all happen here, so a node body only builds the input
        (`request`, called inside the attempt: an input that cannot be built is a failure of
        this call) and reads the answer. A retryable failure with attempts left is raised for
        the node's `RetryPolicy`; once they are spent the outcome holds the failed record.

        A failed attempt that `writes_answer` (its tokens stream tagged ``moa:final``) is
        also announced as ``discarded`` (`discard_answer`): its tokens may have gone out
        already, and a stream reader must drop them before a retry's, the next
        aggregator's or a fallback's answer follows.
        """
        key, task_at, step = yield from self._step(token, call)
        started = time.perf_counter()
        sent: _Request | None = None  # once built: its prompt counts where usage is unknown
        try:
            req = sent = request()
            emit("started", **call.fields())
            stop = watch(step) if watch is not None else None
            last = self._last_derived  # `draws`'s own first steps, without the call
            draws = last.draws if last.cfg is cfg and last.draws is not None else self.draws(cfg)
            may_answer = _may_answer(cfg, call)
            (message, parsed), cached = yield from cached_call(
                self.call_cache,
                req.model,
                req.messages,
                call,
                req.params,
                cfg.call_timeout_s,
                stop,
                req.trace,
                spec=req.spec,
                accept=lambda response: _answer_of(call, response, req.options, may_answer),
                # Only an attempt with another after it waits out a provider's Retry-After.
                retried=step.next_attempt(key) < cfg.retry.max_attempts,
                draw=call.draw(draws),
            )
            latency = time.perf_counter() - started
            record = record_answer(
                call,
                step.errors(key),
                message,
                latency,
                cached,
                req.messages,
                tools=req.schemas,
            )
        except Exception as exc:
            if writes_answer:
                discard_answer(call, exc)
            yield from _failed_attempt(cfg, task_at, step, key, exc)
            latency = time.perf_counter() - started
            prompt, tools = (sent.messages, sent.schemas()) if sent else ((), None)
            errors = step.errors(key)
            record = record_failure(call, errors, exc, latency, prompt=prompt, tools=tools)
            return _Outcome(record, error=exc)
        if counts_for_quorum:
            step.answered(task_at.task_id)
        return _Outcome(record, message, parsed, req.notes)

    def _step(self, token: str, call: CallId) -> Generator[Any, Any, tuple[AttemptKey, Here, Step]]:
        """Return the call's attempt key, the running task, and its step's bookkeeping.

        With a checkpointer, the step's writes are read back once per process (one database
        read per step): after a resume they hold the attempts and answers made before it.
        """
        task_at = here()
        step = self.ledger.step(token, task_at)
        if task_at.durable is not None:
            if step.claim_read():  # the step's first task reads; the others wait for it
                try:
                    step.merge((yield ReadStep(task_at.durable)), call.layer)
                finally:
                    step.ready.set()
            elif not step.ready.is_set():
                yield AwaitRead(step)
        return call.attempt_key(token), task_at, step

    def propose(self, task: ProposerTask) -> dict[str, Any]:
        """Ask one proposer for one sample (sync)."""
        try:
            return run_sync(self._propose_steps(task))
        except BaseException as exc:
            self._drop_if_ended(task["run_token"], exc)
            raise

    async def apropose(self, task: ProposerTask) -> dict[str, Any]:
        """Ask one proposer for one sample (async)."""
        try:
            return await run_async(self._propose_steps(task))
        except BaseException as exc:
            self._drop_if_ended(task["run_token"], exc)
            raise

    def _drop_if_ended(self, token: str, exc: BaseException) -> None:
        """Forget the run's ledger step when `exc` ends the run here and it cannot be resumed.

        A run with no checkpointer is never resumed, so the step it stopped at is never read
        again: a cut (its client left: `moa serve` cancels the run) or a failure for good
        (`AggregatorFailedError`); it was kept until the ledger's bound, 4096 runs per graph.
        A failure the node's `RetryPolicy` retries (`is_retryable`) is no end: the retry
        runs on the same step, whose attempts it counts.

        Called from each node's ``except`` (not a context manager around it): a node that
        answers pays nothing for it, where entering and leaving a `contextmanager` cost every
        model call nine function calls.
        """
        retried = isinstance(exc, Exception) and is_retryable(exc)
        if not retried and here().durable is None:
            self.ledger.end(token)

    # --- join ----------------------------------------------------------------------------

    def join_layer(self, state: MoAState) -> dict[str, Any]:
        """Close a layer: its successful outputs become the next input's references."""
        plan = self.checked_plan(state.get("run_token", ""))
        cfg = plan.cfg
        layer = plan.joined_layer(state)
        calls = state.get("calls", [])
        mine = [c for c in calls if c["role"] == "proposer" and c["layer"] == layer]
        answered = [c for c in mine if c["status"] == "ok"]
        drawn = [
            1 + max((c["sample"] for c in mine if c["proposer"] == i), default=-1)
            for i in range(len(cfg.proposers))
        ]
        if not answered and not plan.can_go_on_without_proposals(state):
            if not plan.can_skip_failed_layer(state, layer):
                if here().durable is None:  # never resumed: its step is never read again
                    self.ledger.end(state.get("run_token", ""))
                raise AllProposersFailedError(layer, calls)
            # The references and their missing count stay those of the last layer that
            # answered; the answer's provenance names this layer (`failed_layers`).
            return {"layer": layer, "drawn": drawn}
        return {
            "layer": layer,
            "references": plan.references(state, layer, [proposal_text(c) for c in answered]),
            "missing": len(mine) - len(answered),
            "drawn": drawn,
        }

    # --- selection -----------------------------------------------------------------------

    def select(self, state: MoAState) -> dict[str, Any]:
        """Pick the answer among the proposals: no model call (see `selection`)."""
        cfg = self.checked_plan(state.get("run_token", "")).cfg
        assert cfg.selection is not None
        calls = list(state.get("calls", []))
        decision = select(candidates(state), cfg.selection, priority(cfg))
        record = answered_proposals(state)[decision.winner]
        planned = sum(p.samples for p in cfg.proposers)
        made = sum(1 for c in calls if c["role"] == "proposer")
        provenance = {
            **decision.as_dict(),
            "winner_call": {k: record[k] for k in ("layer", "proposer", "sample", "model")},
            "calls_saved": planned - made,
        }
        emit("selected", **decision.as_dict())
        extra = {"selection": provenance, **early_start_provenance(cfg, calls)}
        message = final_message(cfg, None, record["output"], calls, record, extra=extra)
        self.ledger.end(state.get("run_token", ""))
        return {"messages": [message], "usage": summarize(calls)}

    # --- aggregator (and ranker) -----------------------------------------------------------

    def _final_call(self, plan: Plan, state: MoAState) -> tuple[CallId, bool]:
        """Identify the current final-step call; tell whether it writes the answer."""
        cfg = plan.cfg
        index = state.get("final_index", 0)
        layer, is_final = plan.final_position(state)
        # `sample` is the position in the aggregator chain: fallbacks are their own calls.
        call = CallId(cfg.final_role, layer, -1, index, cfg.final_chain[index].label)  # type: ignore[arg-type]
        return call, is_final

    def _final_params(
        self, cfg: MoAConfig, call: CallId, options: Options, is_final: bool
    ) -> dict[str, Any]:
        params = cfg.final_chain[call.sample].call_params()
        if self.response_format is not None:  # a structured answer is a different call
            params = {**params, "response_format": repr(self.response_format)}
        tools = self.response_format is None or not is_final
        return params_with(params, options, tools=tools, stop=is_final, final=is_final)

    def _structure_sent(self, is_final: bool) -> Any:
        """Return the schema the final call sends for its structured answer, if it sends one.

        ``json_mode`` sends ``{"type": "json_object"}`` alone and reads the answer by the
        schema: counted, the schema made the call's estimate larger than what was billed.
        """
        if not is_final or self.response_method == "json_mode":
            return None
        return self.response_format

    def _aggregator_input(
        self,
        cfg: MoAConfig,
        state: MoAState,
        call: CallId,
        is_final: bool,
        options: Options,
        params: dict[str, Any],
        structure: Any = None,
    ) -> tuple[Runnable[Any, Any], RunnableConfig, list[BaseMessage], int, list[Any] | None]:
        """Return the aggregator's model, trace and messages, the references cut, the schemas.

        `params` (`_final_params`) and `structure` (`_structure_sent`): what the call sends
        besides its messages, for which the references leave room.
        """
        step = cfg.rules.step_name
        watched = watching()
        tags = [TAG_FINAL] if is_final else [TAG_INTERMEDIATE, *([] if watched else [NOSTREAM])]
        chat = self._final_model(cfg, call.sample, streamed=is_final or watched)
        base: Runnable[Any, Any]
        if is_final and self.response_format is not None:
            base = chat.with_structured_output(
                self.response_format,
                method=self.response_method,
                include_raw=True,
                **self.response_options,
            )
        else:
            base = bind_options(chat, options, call.configured_model, stop=is_final, final=is_final)
        trace = call.trace(cfg, f"{step} {call.layer} / aggregator / {call.configured_model}", tags)
        wanted = options.get("tools") and any(
            c.get("tool_calls") for c in answered_proposals(state)
        )
        sent = schemas_sent(params, structure)
        messages, trimmed = with_references(
            cfg,
            list(state["messages"]),
            state,
            [cfg.final_chain[call.sample]],
            extra_note=TOOL_NOTE if wanted and self.response_format is None else "",
            schemas=sent or [],
        )
        return base, trace, messages, trimmed, sent

    def _aggregate_steps(self, state: MoAState) -> NodeSteps:
        """Synthesize the references: the body of `aggregate` and `aaggregate`."""
        plan = self.checked_plan(state.get("run_token", ""))
        cfg = plan.cfg
        call, is_final = self._final_call(plan, state)
        if plan.budget_spent(state):
            return self._budget_answer(plan, state)
        if plan.skip_final(state) and not is_final:
            return {}
        if cfg.aggregation.chunked:  # the last proposer layer streams into this node
            return (yield ChunkwiseRequest(self, plan, state))

        options = run_options(state)

        def request() -> _Request:
            # Built inside the attempt: a conversation too long for the budget is a failure
            # of this aggregator, and the next one in the chain may have room.
            structure = self._structure_sent(is_final)
            params = self._final_params(cfg, call, options, is_final)
            model, trace, messages, trimmed, sent = self._aggregator_input(
                cfg, state, call, is_final, options, params, structure
            )
            spec = cfg.final_chain[call.sample].model
            notes = {"trimmed_references": trimmed}
            return _Request(
                model,
                messages,
                params,
                spec,
                trace,
                notes,
                options=options,
                structure=structure,
                sent=sent,
            )

        outcome = yield from self._attempt(
            cfg, state["run_token"], call, request, writes_answer=is_final
        )
        if outcome.error is not None:
            return self._final_gave_up(plan, state, outcome.record, outcome.error)
        if is_final and outcome.record.get("incomplete_call"):
            return self._incomplete_answer(plan, state, call, outcome)
        return self._aggregated(cfg, state, outcome, is_final)

    def aggregate(self, state: MoAState) -> dict[str, Any]:
        """Synthesize the references into the answer (sync)."""
        try:
            return run_sync(self._aggregate_steps(state))
        except BaseException as exc:
            self._drop_if_ended(state.get("run_token", ""), exc)
            raise

    async def aaggregate(self, state: MoAState) -> dict[str, Any]:
        """Synthesize the references into the answer (async)."""
        try:
            return await run_async(self._aggregate_steps(state))
        except BaseException as exc:
            self._drop_if_ended(state.get("run_token", ""), exc)
            raise

    def _aggregated(
        self, cfg: MoAConfig, state: MoAState, outcome: _Outcome, is_final: bool
    ) -> dict[str, Any]:
        """Write an aggregation: the running synthesis, or the run's answer."""
        record, response = outcome.record, outcome.message
        assert response is not None
        if not is_final:
            return {"calls": [record], "running_synthesis": proposal_text(record)}
        calls = [*state.get("calls", []), record]
        structured = {"structured_response": outcome.parsed} if outcome.parsed is not None else {}
        return {
            **structured,
            "calls": [record],
            "messages": [
                final_message(
                    cfg,
                    response,
                    response.content,
                    calls,
                    record,
                    {**outcome.notes, **early_start_provenance(cfg, calls)},
                )
            ],
            "usage": summarize(calls),
        }

    def _rank_steps(self, state: MoAState) -> NodeSteps:
        """Let an LLM pick the best proposal: the body of `rank` and `arank`."""
        plan = self.checked_plan(state.get("run_token", ""))
        cfg = plan.cfg
        call, _ = self._final_call(plan, state)
        if plan.budget_spent(state):
            return self._budget_answer(plan, state)

        options = ranker_options(run_options(state))
        references = _whole_references(state)

        def request() -> _Request:
            label = f"layer {call.layer} / ranker / {call.configured_model}"
            model = bind_options(
                self._final_model(cfg, call.sample, streamed=False), options, label
            )
            trace = call.trace(cfg, label, [TAG_INTERMEDIATE, NOSTREAM])
            messages = ranker_messages(
                list(state["messages"]), references, reference_format=cfg.reference_format
            )
            role = cfg.final_chain[call.sample]
            params = params_with(role.call_params(), options)
            return _Request(model, messages, params, role.model, trace)

        outcome = yield from self._attempt(cfg, state["run_token"], call, request)
        if outcome.error is not None:
            return self._final_gave_up(plan, state, outcome.record, outcome.error)
        assert outcome.message is not None
        reply = outcome.message.text
        choice = parse_choice(reply, len(references))
        picked = references[(choice or 1) - 1]
        # References may be shuffled: find the proposal by what the ranker was shown.
        chosen = next((c for c in answered_proposals(state) if proposal_text(c) == picked), None)
        calls = [*state.get("calls", []), outcome.record]
        # The choice numbers the proposals shown (whole ones, shuffled): the pick is named
        # by its call, or a reader counting every proposal named another one.
        pick = {k: chosen[k] for k in ("layer", "proposer", "sample", "model")} if chosen else None
        message = final_message(
            cfg,
            None,
            chosen["output"] if chosen is not None else picked,
            calls,
            outcome.record,
            extra={"ranker_choice": choice, "ranker_reply": reply, "ranker_call": pick},
            source=chosen,
        )
        return {"calls": [outcome.record], "messages": [message], "usage": summarize(calls)}

    def rank(self, state: MoAState) -> dict[str, Any]:
        """Let an LLM pick the best proposal and return it verbatim (sync)."""
        try:
            return self._ended(state, run_sync(self._rank_steps(state)))
        except BaseException as exc:
            self._drop_if_ended(state.get("run_token", ""), exc)
            raise

    async def arank(self, state: MoAState) -> dict[str, Any]:
        """Let an LLM pick the best proposal and return it verbatim (async)."""
        try:
            return self._ended(state, await run_async(self._rank_steps(state)))
        except BaseException as exc:
            self._drop_if_ended(state.get("run_token", ""), exc)
            raise

    def _ended(self, state: MoAState, update: Any) -> Any:
        """Forget the run's ledger step once a node that ends the run answered.

        A `Command` goes on to the next model of the chain: the run is not over.
        """
        if not isinstance(update, Command):
            self.ledger.end(state.get("run_token", ""))
        return update

    def _final_gave_up(
        self, plan: Plan, state: MoAState, record: CallRecord, error: Exception
    ) -> Any:
        """After its retries the final step failed: try the next aggregator, else fall back.

        When the chain is spent and no labelled fallback may answer, the run raises
        `AggregatorFailedError` (`_next_or_fallback`).
        """
        if (update := self._next_or_fallback(plan, state, record)) is None:
            calls = [*state.get("calls", []), record]
            raise AggregatorFailedError(record["configured_model"], error, calls)
        return update

    def _incomplete_answer(
        self, plan: Plan, state: MoAState, call: CallId, outcome: _Outcome
    ) -> Any:
        """Let a whole call answer where the answer's tool call leaves out an argument.

        The next aggregator of the chain tries first, then the best whole output (a labelled
        fallback, where one may answer: `_next_or_fallback`). Where there is none, the call
        is the answer, as recorded (``incomplete_call``): the agent's ToolNode answers it
        with the validation error that the model's next turn reads, where refusing it ended
        the run in an error.
        """
        record = outcome.record
        passed_over = ToolCallError(
            f"{record['configured_model']} {record.get('incomplete_call')}", outcome.message
        )
        if (update := self._next_or_fallback(plan, state, record, (call, passed_over))) is None:
            return self._aggregated(plan.cfg, state, outcome, is_final=True)
        return update

    def _next_or_fallback(
        self,
        plan: Plan,
        state: MoAState,
        record: CallRecord,
        passed_over: tuple[CallId, ToolCallError] | None = None,
    ) -> Any:
        """Return what follows a final step that gave no answer: None where nothing may.

        The next model of the chain runs in the same node (a `Command` back to it); when the
        chain is spent, the best available output answers, labelled as such, unless the
        config says to raise or a structure was asked for (a caller asking for one gets one
        or an error, never free text). `passed_over`: the call and the refusal of an answer
        whose tool call leaves out an argument. Only a whole call answers instead of it, and
        it is announced as discarded (`discard_answer`), as a refused one is: its text
        streamed as the answer's, and a stream reader must drop it.
        """
        cfg = plan.cfg
        if record["sample"] + 1 < len(cfg.final_chain):
            if passed_over is not None:
                discard_answer(*passed_over)
            update = {"calls": [record], "final_index": record["sample"] + 1}
            return Command(update=update, goto=plan.final_node)
        calls = [*state.get("calls", []), record]
        best = best_available(calls)
        if (
            best is None
            or (passed_over is not None and best.get("incomplete_call"))
            or cfg.on_aggregator_failure == "raise"
            or self.wants_structure(state)
        ):
            return None
        if passed_over is not None:
            discard_answer(*passed_over)
        reason = _chain_reason(cfg, calls, record["layer"])
        return {"calls": [record], **labelled_fallback(cfg, calls, best, "best_proposal", reason)}

    def _budget_answer(self, plan: Plan, state: MoAState) -> dict[str, Any]:
        """Answer without another call once the run spent its token budget.

        The answer is the best available output, labelled as such, where a fallback may
        answer; otherwise the run raises `BudgetExhaustedError` with its calls.
        """
        cfg = plan.cfg
        calls = list(state.get("calls", []))
        used, limit = plan.tokens_used(state), cfg.budget.max_tokens or 0
        best = best_available(calls)
        if cfg.on_aggregator_failure == "raise" or best is None or self.wants_structure(state):
            raise BudgetExhaustedError(used, limit, calls)
        emit("budget_spent", used=used, limit=limit)
        reason = f"the run {budget_reached(used, limit, calls)}: no further call was started"
        return labelled_fallback(cfg, calls, best, "budget", reason)

    def wants_structure(self, state: MoAState) -> bool:
        """Tell whether the caller asked for a structure: the graph's or the run's format.

        `moa serve` sends a client's `response_format` in the run's `final_kwargs`; a
        `{"type": "text"}` format asks for free text and does not count.
        """
        if self.response_format:
            return True
        wanted = (run_options(state).get("final_kwargs") or {}).get("response_format")
        if isinstance(wanted, dict):
            return wanted.get("type") in ("json_schema", "json_object")
        return wanted is not None


def _chain_reason(cfg: MoAConfig, calls: list[CallRecord], layer: int) -> str:
    """Say why the aggregator chain of `layer` gave no answer: each one's error or bad call.

    A chain may hold both (one failed, the next left out an argument): each said as a
    failure's error alone, the other was an empty entry ("every aggregator failed: ; ...").
    Only `layer`'s chain counts: a Self-MoA-Seq window before it has a synthesis of its own.
    """
    spent = [
        c
        for c in calls
        if c["role"] == cfg.final_role
        and c["layer"] == layer
        and (c["error"] or c.get("incomplete_call"))
    ]
    if all(c["error"] for c in spent):
        head = "every aggregator failed"
    elif not any(c["error"] for c in spent):
        head = "every aggregator's tool call had arguments its schema refuses"
    else:
        head = "every aggregator failed or called a tool with arguments its schema refuses"
    return f"{head}: " + "; ".join(c["error"] or c.get("incomplete_call") or "" for c in spent)


def _whole_references(state: MoAState) -> list[str]:
    """Return the references the ranker chooses among: those without an incomplete call.

    A tool call whose arguments break its schema is one the agent cannot run, so the ranker
    is shown it only where every proposal made one (`check_tool_calls`).
    """
    incomplete = {proposal_text(c) for c in answered_proposals(state) if c.get("incomplete_call")}
    return [r for r in state["references"] if r not in incomplete] or state["references"]


def _wants_tools(response: BaseMessage) -> bool:
    """Tell whether a response asked for tool calls (then it may have no text)."""
    return isinstance(response, AIMessage) and bool(response.tool_calls)


def _failed_attempt(
    cfg: MoAConfig, task_at: Here, step: Step, key: AttemptKey, exc: Exception
) -> Generator[Any, Any, None]:
    """Record a failed attempt; raise it again if the node's `RetryPolicy` is to retry it.

    The attempt number counts attempts made before a resume too, so a resumed call never
    gets more attempts than configured. Nodes record their own final failure instead of
    leaving it to an `error_handler`: a handler's `Command(goto=...)` was seen to be lost now
    and then when the failed task was the only one of its step, which ended a run with
    neither answer nor error.
    """
    error = describe_error(exc)
    attempt = step.failed(key, error)
    if is_retryable(exc) and attempt < cfg.retry.max_attempts:
        if task_at.durable is not None:
            yield SaveAttempt(task_at.durable, key, attempt, error)
        raise exc


def _straggler_check(
    cfg: MoAConfig, task: ProposerTask, call: CallId, step: Step
) -> StopCheck | None:
    """Return the check a running proposal makes against its layer's deadline and quorum.

    None without a deadline or an early start: then a call needs no watching beyond its own
    timeout.

    The deadline counts from the layer's fan-out, recorded in the `Send` payload, so a
    resumed layer keeps its deadline; a call that starts after it (a retry, or a resumed
    straggler) is stopped at once.
    """
    watch: StopCheck | None = None
    if cfg.layer_deadline_s is not None:
        watch = _LayerWatch(
            due=task.get("layer_started_at", clock.now()) + cfg.layer_deadline_s,
            quorum=cfg.min_proposers,
            answers=step.answers,
            held=step.held(call.attempt_key(task["run_token"])),
        )
    # Early aggregation: the layer may also go on once its quorum answered (`_early`).
    watch = early_watch(cfg, task["layer"] >= cfg.proposer_layers, step.answers, watch)
    if watch is not None and (reason := watch()):
        raise StragglerCancelledError(f"{call.configured_model}: {reason}")
    return watch


@dataclass(frozen=True)
class _LayerWatch:
    """A proposal's layer deadline (wall time, `clock.now`) and the quorum that ends it."""

    due: float
    quorum: int
    answers: Callable[[], int]
    held: clock.Held = field(default_factory=clock.Held)
    """The call's time held by its reader over all its attempts (`Step.held`)."""

    def __call__(self) -> str | None:
        count = self.answers()
        if self._now() >= self.due and count >= self.quorum:
            return (
                f"the layer deadline passed and {count} proposals "
                f"(quorum {self.quorum}) had answered"
            )
        return None

    def wait_s(self) -> float:
        # At most a second at a time: `clock.now` is a seam, and what replaces it (a test's
        # clock) may move further than the time slept.
        return min(max(self.due - self._now(), QUORUM_POLL_S), 1.0)

    def _now(self) -> float:
        """Return the wall time without what the call's reader held it (`held`).

        A slow client must not change which proposals its answer uses: the deadline's
        clock stops while the reader holds the call, as the call's own timeout does.
        """
        return clock.now() - self.held.seconds()


@dataclass(frozen=True)
class _Request:
    """What one model call sends, built by a node body inside the attempt."""

    model: Runnable[Any, Any]
    messages: list[BaseMessage]
    params: dict[str, Any]
    """The call's parameters, as they enter the call cache's key."""
    spec: Any
    """The model spec: whether the model has a timeout of its own depends on it."""
    trace: RunnableConfig
    """The call's run name, tags and metadata (`CallId.trace`)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the body learnt while building the input, kept for the answer's provenance."""
    options: Options = field(default_factory=dict)
    """The run's call options (tools, stop, ...): tool calls written as text are read."""
    structure: Any = None
    """The schema the call sends for its structured answer (`MoANodes._structure_sent`: the
    graph's ``response_format``, none with ``json_mode``): counted with its prompt where its
    tokens are estimated."""
    sent: list[Any] | None = None
    """The schemas the call sends besides its messages, where the body worked them out
    already (the aggregator's, for its references' room): see `schemas`."""

    def schemas(self) -> list[Any] | None:
        """Return the schemas the call sends besides its messages (`schemas_sent`).

        Read only for a call whose provider reported no usage (its prompt is estimated), so
        worked out then, not for every answer.
        """
        return self.sent if self.sent is not None else schemas_sent(self.params, self.structure)


@dataclass(frozen=True)
class _Outcome:
    """One call's end: its record, and its answer or the error that ended it."""

    record: CallRecord
    message: BaseMessage | None = None
    parsed: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None


def _may_answer(cfg: MoAConfig, call: CallId) -> bool:
    """Tell whether the call's output may itself become the run's answer.

    The aggregator's does; a proposal's only where the variant returns one verbatim
    (select, ranker). Elsewhere a proposal is a reference for the next layer (and may be a
    labelled fallback only if it keeps to what an answer must: `best_available`).
    """
    return call.role != "proposer" or cfg.rules.returns_proposal()


def _answer_of(
    call: CallId, response: Any, options: Options, may_answer: bool = True
) -> tuple[BaseMessage, Any]:
    """Return the answer's message and, for a structured answer, the parsed object.

    A structured answer comes as ``{"raw", "parsed", "parsing_error"}``; one that does not
    parse, an answer with no text (a reasoning model's leading ``<think>`` block is not
    text: `without_thinking`), and tool calls that break the call's tools
    (`check_tool_calls`, which holds a mere reference, not `may_answer`, to less) are
    failures of the call (`is_retryable` does not try them again: the model did answer).
    """
    parsed: Any = None
    if isinstance(response, dict):
        if response.get("parsing_error") is not None or response.get("parsed") is None:
            raise StructuredOutputError(
                f"{call.configured_model} did not return the requested structure: "
                f"{response.get('parsing_error') or 'nothing could be parsed'}",
                response.get("raw"),
            )
        parsed = response["parsed"]
        response = response["raw"]
        check_call_bounds(response, call.configured_model)
        if not response.text.strip():  # function calling: the structure is in tool calls
            meta = {**response.response_metadata, STRUCTURED_MARK: True}
            response = response.model_copy(
                update={"content": as_json(parsed), "response_metadata": meta}
            )
    else:
        response = without_thinking(response, call.configured_model)
        response = read_text_tool_calls(response, options)
        response = check_tool_calls(response, options, call.configured_model, answer=may_answer)
    refuse_filtered(response, call.configured_model)
    if not response.text.strip() and not _wants_tools(response):
        raise empty_answer(response, call.configured_model)
    return response, parsed


def _runtime() -> Any:
    """Return the graph's runtime; None outside a run and in `update_state`'s routers."""
    try:
        return get_runtime()
    except RuntimeError:  # outside any runnable
        return None
