"""Build the Mixture-of-Agents `StateGraph`.

Topology (one for every variant, so the variant can change per run)::

    prepare ──Sendxn──▶ propose ──▶ join_layer ──┬─Sendxn─▶ propose      (next layer)
                                                 ├────────▶ aggregate ──▶ END
                                                 ├────────▶ rank ──────▶ END
                                                 └────────▶ select ────▶ END
                        aggregate ──Sendxk──▶ propose                    (next Self-MoA-Seq window)
    prepare ──────────▶ aggregate     (chunk-wise: the aggregator runs the last layer itself)

``propose`` is one node, fanned out with `Send`: each (layer, proposer, sample) is its own
branch with its own input. ``join_layer`` closes a layer (its successful outputs become the
next input's references); ``aggregate`` synthesizes. Which edge a router takes is the
variant's `Plan` (`langgraph_moa.variants`); the node bodies are in `_nodes`, one model call's
machinery in `run._calls`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, RetryPolicy

from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._loader import ConfigSource, load_config
from langgraph_moa.config._schema import MAX_ATTEMPTS
from langgraph_moa.config.context import MoAContext
from langgraph_moa.graph._nodes import MoANodes
from langgraph_moa.graph.durable import allowing_answers, reading_answers
from langgraph_moa.providers._retry import is_retryable
from langgraph_moa.run._answer import TAG_FINAL, final_answer_only, parse_choice
from langgraph_moa.run._direct import check_call_switches
from langgraph_moa.run._inputs import (
    check_nesting,
    check_schema,
    guard_input,
    validate_conversation,
)
from langgraph_moa.run.cache import CallCache
from langgraph_moa.run.state import MoAInput, MoAOutput, MoAState
from langgraph_moa.variants import (
    AGGREGATE,
    JOIN_LAYER,
    PREPARE,
    PROPOSE,
    RANK,
    SELECT,
    Route,
)

__all__ = [
    "TAG_FINAL",
    "create_moa_graph",
    "final_answer_only",
    "parse_choice",
    "validate_conversation",
]


def create_moa_graph(
    config: ConfigSource,
    *,
    checkpointer: Checkpointer = None,
    name: str | None = None,
    response_format: Any = None,
    response_method: str = "json_schema",
    response_strict: bool | None = None,
    call_cache: CallCache | None = None,
    limits: RequestLimits | None = None,
) -> CompiledStateGraph[MoAState, MoAContext, MoAInput, MoAOutput]:
    """Compile a Mixture-of-Agents graph. Needs no network and no API key.

    Args:
        config: A `MoAConfig`, a preset name, a YAML/JSON file path or a mapping of
            settings (`load_config`); None means the default preset.
        checkpointer: Optional LangGraph checkpointer for durable, resumable runs; a
            pydantic `response_format` is added to its strict msgpack allowlist
            (`allowing_answers`).
        name: Graph name shown in traces; defaults to the preset name or ``"moa"``.
        response_format: A pydantic model, TypedDict or JSON schema: the final aggregator
            answers through its `with_structured_output`, and the parsed answer is returned
            in ``structured_response``. The aggregator must support structured output.
        response_method: Passed to `with_structured_output` (``json_schema``,
            ``function_calling`` or ``json_mode``; llama.cpp's server constrains decoding to
            the schema with ``json_schema``).
        response_strict: Passed to `with_structured_output` as ``strict`` when not None
            (OpenAI's strict schema adherence); None leaves the aggregator's own default.
        call_cache: A `CallCache` (e.g. `SQLiteCallCache`): calls already made with the same
            model, parameters, messages, role and sample are answered from it (two
            proposers of one model count on as its samples: ``[m, m]`` is m's 0 and 1).
        limits: Hold every run to `moa serve`'s per-request limits (`RequestLimits`): its
            token budget, and a run context past a limit, naming an endpoint URL the
            config does not, or a variant neither shipped nor the config's, is refused
            before the first call.
            For graphs that callers configure per run (the LangGraph server entry points).

    Returns:
        A compiled graph that takes ``{"messages": [...]}`` and appends the answer as an
        `AIMessage`. Per-run settings go in ``context=MoAContext(...)`` (or a dict).

    Raises:
        MoAConfigError: the config is invalid (`load_config`), or ``MOA_DIRECT_CALLS`` or
            ``MOA_SDK_TRANSFORM`` holds anything but 0 or 1 (`check_call_switches`).
        MoAInputError: `response_format` nests dicts and lists more than 100 levels deep,
            or is no schema (`check_schema`); a run raises it before any call when its
            aggregator cannot answer in the schema (`check_aggregator_schema`).
    """
    config = load_config(config)
    check_call_switches()  # read on each call: refused here, before any run
    # Refused now, not after the proposers were paid: the final step's repr of a schema
    # nested thousands deep raised a RecursionError (`MoAChatModel` checks the same).
    check_nesting(response_format, "The structured-output schema is")
    # Not at the last step, once paid for; the aggregator judges a dict at each run's start.
    check_schema(response_format, response_method, as_tool=False)
    nodes = MoANodes(
        config, response_format, response_method, call_cache, limits, strict=response_strict
    )
    # The node bodies decide whether an attempt is retried (`_failed_attempt`, from the run's
    # effective config, counting attempts made before a resume); the policy only waits
    # between attempts, so its own bound is the largest the config allows.
    retry = RetryPolicy(
        max_attempts=MAX_ATTEMPTS,
        initial_interval=config.retry.initial_interval,
        backoff_factor=config.retry.backoff_factor,
        max_interval=config.retry.max_interval,
        jitter=config.retry.jitter,
        retry_on=is_retryable,
    )

    def first_layer(state: MoAState) -> Route:
        return nodes.route_plan(state, first=True).first(state)

    def after_layer(state: MoAState) -> Route:
        return nodes.route_plan(state).after_layer(state)

    def after_aggregate(state: MoAState) -> Route:
        route = nodes.route_plan(state).after_final(state)
        if route == END:
            nodes.ledger.end(state.get("run_token", ""))
        return route

    builder = StateGraph(
        MoAState, context_schema=MoAContext, input_schema=MoAInput, output_schema=MoAOutput
    )
    # Dual too: under `ainvoke` a sync `prepare` would run in a worker thread and build every
    # model a second time, in the cache kept for sync runs.
    builder.add_node(PREPARE, _dual(nodes.prepare, nodes.aprepare, PREPARE))
    builder.add_node(PROPOSE, _dual(nodes.propose, nodes.apropose, PROPOSE), retry_policy=retry)
    builder.add_node(JOIN_LAYER, nodes.join_layer)
    builder.add_node(
        AGGREGATE, _dual(nodes.aggregate, nodes.aaggregate, AGGREGATE), retry_policy=retry
    )
    builder.add_node(RANK, _dual(nodes.rank, nodes.arank, RANK), retry_policy=retry)
    builder.add_node(SELECT, nodes.select)
    builder.add_edge(START, PREPARE)
    builder.add_conditional_edges(PREPARE, first_layer, [PROPOSE, AGGREGATE])
    builder.add_edge(PROPOSE, JOIN_LAYER)
    builder.add_conditional_edges(JOIN_LAYER, after_layer, [PROPOSE, AGGREGATE, RANK, SELECT])
    builder.add_conditional_edges(AGGREGATE, after_aggregate, [PROPOSE, AGGREGATE, END])
    builder.add_edge(RANK, END)
    builder.add_edge(SELECT, END)
    graph = builder.compile(
        checkpointer=allowing_answers(checkpointer, response_format),
        name=name or config.name or "moa",
    )
    reading_answers(graph, response_format)
    return guard_input(graph)


def _dual(
    sync: Callable[[Any], Any], asynchronous: Callable[[Any], Any], name: str
) -> Runnable[Any, Any]:
    """One node with a sync body for `invoke` and an async body for `ainvoke`.

    It is what `StateGraph.add_node` makes of a plain function (LangGraph's `RunnableCallable`,
    untraced: the node's own run is the trace), given both bodies. A `RunnableLambda` would
    add a second run of the same name under the node's and inspect both bodies' signatures
    on every call: about 2% of the client CPU of a model call (orchestration_overhead.py's
    profile). `RunnableCallable` is internal to LangGraph (checked in 1.2.22; pinned by
    tests/unit_tests/test_graph_nodes_runnable.py); without it the node is a `RunnableLambda`.
    """
    try:
        from langgraph._internal._runnable import RunnableCallable
    except ImportError:  # pragma: no cover - another LangGraph version
        return RunnableLambda(sync, afunc=asynchronous, name=name)
    return RunnableCallable(sync, asynchronous, name=name, trace=False)
