"""Graph state: a messages-compatible conversation plus one record per model call.

The input and output are `MessagesState`-compatible, so the compiled graph drops into any
LangGraph app as a subgraph node. Call records are merged by a reducer keyed by
(role, layer, proposer, sample): n samples of one model are n records, never merged by
model name, and their order never depends on which call finished first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, Required, TypeAlias

from langchain_core.messages import AnyMessage, BaseMessage, MessageLikeRepresentation
from langgraph.graph.message import add_messages

# pydantic builds the graph's JSON schemas from these, and on Python < 3.12 it only reads
# typing_extensions' TypedDict (typing's lacks what it needs).
from typing_extensions import TypedDict

if TYPE_CHECKING:
    InputMessages: TypeAlias = Sequence[MessageLikeRepresentation] | MessageLikeRepresentation
    """What `add_messages` turns into messages: the README's ``[("user", "Explain X")]``,
    a string, role dicts, or a ``list[BaseMessage]`` a caller holds (a Sequence, so a list of
    any message class fits, where ``list[AnyMessage]`` is invariant and refused it; the
    graph reads a tuple of messages as a list, `as_message_list`)."""
else:  # the schema LangGraph publishes (the server's input form) stays a list of messages
    InputMessages = list[AnyMessage]

Role = Literal["proposer", "aggregator", "ranker"]
_ROLE_ORDER = {"proposer": 0, "aggregator": 1, "ranker": 1}


class ToolCallRecord(TypedDict):
    """One tool call a model asked for: LangChain's `ToolCall` without its type tag."""

    name: str
    args: dict[str, Any]
    id: str | None


class CallRecord(TypedDict):
    """What one model call did: who was asked, who answered, what it cost."""

    role: Role
    layer: int
    """MoA layer, 1-based. In Self-MoA-Seq, the window step."""
    proposer: int
    """Index of the proposer in the config (0-based); -1 for the aggregator or ranker."""
    sample: int
    """For a proposer, its sample index (0-based; global over all steps in Self-MoA-Seq).
    For the aggregator or ranker, its position in the chain `aggregator, *aggregator_fallbacks`
    (0: the aggregator itself; 1: its first fallback): each fallback is its own call."""
    configured_model: str
    """The model the config asked for."""
    model: str
    """The model that actually answered, as the provider reported it."""
    status: Literal["ok", "failed", "cancelled"]
    """cancelled: a straggler stopped at its layer's deadline (the quorum had answered)."""
    output: str | None
    error: str | None
    """The provider's own message for a failed call."""
    attempts: int
    """Attempts made, retries included."""
    retried_errors: list[str]
    """Errors of the attempts before the last one (the retries' reasons)."""
    cached: bool
    """Answered from the call cache or LangChain's LLM cache: the tokens were paid for by an
    earlier run (a token budget does not count them)."""
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    mean_logprob: float | None
    """Mean token logprob of the answer (the model's confidence), where the provider
    returned logprobs (llama.cpp, OpenAI, vLLM); None otherwise."""
    logprob_tokens: int
    """How many tokens `mean_logprob` averages over (0 without logprobs)."""
    finish_reason: str | None
    """Why the provider stopped generating ("stop", "length" when `max_tokens` cut the answer
    off, ...), where it said; None otherwise. Selection does not count cut-off answers."""
    input_token_details: NotRequired[dict[str, int]]
    """What the provider said of the prompt's tokens (``cache_read``, ``audio``, ...), as
    LangChain's `UsageMetadata` has it; only where it said anything."""
    output_token_details: NotRequired[dict[str, int]]
    """The same for the completion's tokens (``reasoning``, ``audio``)."""
    usage_estimated: NotRequired[bool]
    """True where the provider reported no usage (a server that ignores ``stream_options``,
    a proxy that drops it): the token counts are the package's estimate (3 characters a
    token for ASCII, half a token a UTF-8 byte for others), not the provider's, and not a
    zero. Absent where it reported usage."""
    tool_calls: NotRequired[list[ToolCallRecord]]
    """The tool calls the model asked for, when it asked for any (a run with tools bound)."""
    tool_calls_from_text: NotRequired[bool]
    """True when those calls were read from the answer's text (see `read_text_tool_calls`)."""
    reference_only: NotRequired[str]
    """Why this proposal is a reference for the next layer but never the answer: it keeps
    to the tools, not to what the answer must (text where ``tool_choice`` forced a call,
    another tool than the one it named, several calls with ``parallel_tool_calls`` false);
    see `check_tool_calls`. A labelled fallback never returns it."""
    incomplete_call: NotRequired[str]
    """How one of its tool calls leaves out an argument the tool requires: the call is
    passed on only where no whole call could answer instead (see `check_tool_calls`)."""
    thinking: NotRequired[str]
    """A reasoning model's thinking, where its text opened with a ``<think>`` block (moved
    out of `output`: see `without_thinking`) or its provider's LangChain class kept it
    apart; only where there was any. Never a reference, never the answer."""


def call_key(record: CallRecord) -> tuple[int, int, int, int]:
    """Sort key: layer, then proposers before the layer's aggregator, then indices."""
    return (record["layer"], _ROLE_ORDER[record["role"]], record["proposer"], record["sample"])


def merge_calls(left: list[CallRecord] | None, right: list[CallRecord] | None) -> list[CallRecord]:
    """Reducer: upsert by (role, layer, proposer, sample), keep a stable order.

    `None` on the right clears the list, which is how each new run on a thread starts fresh.
    LangGraph applies a layer's writes one task at a time, each a call or two that sort
    after every record so far: those are appended, keyed alone. Re-keying and re-sorting
    the whole list on each write made the records of a run the square of its calls
    (a Self-MoA-Seq run over 200 samples keyed them ~68,000 times).
    """
    if right is None:
        return []
    if _all_after(left[-1] if left else None, right):  # into none: a step's first records
        return [*(left or []), *right]
    merged = {(r["role"], *call_key(r)): r for r in (left or [])}
    merged.update({(r["role"], *call_key(r)): r for r in right})
    return sorted(merged.values(), key=call_key)


def merge_call_writes(
    left: list[CallRecord] | None, writes: Sequence[list[CallRecord] | None]
) -> list[CallRecord]:
    """`merge_calls` over a batch of writes in order: the reducer of a `DeltaChannel`.

    A step's writes are merged as one: each write upserts by key and the list stays sorted,
    so merging their records together, later ones winning, makes the same list. A layer's
    six proposers were six merges (each keyed, checked and copied the list), two function
    calls per model call more than one (`benchmarks/graph_call_work.py`). A `None` clears
    what came before it: the writes after the last one are merged into none.
    """
    if None in writes:
        cleared = len(writes) - writes[::-1].index(None)
        left, writes = None, writes[cleared:]
    return merge_calls(left, [r for right in writes for r in right])  # type: ignore[union-attr]


def _calls_channel() -> Any:
    """Return what merges a run's call records in the graph's state, and how it is saved.

    A channel that merges its writes (`merge_calls` alone) is saved whole at every step
    that writes it: a Self-MoA-Seq run, whose every window adds its samples, checkpointed
    all its records again at each window, the square of its samples in all (~160 kB of
    records for 48 samples). LangGraph's `DeltaChannel` (beta; 1.2.13 is the first that
    reads a subgraph's back whole) saves a step's writes alone, and now and then the whole
    list (`snapshot_frequency`), and reads the list back by merging them again; a thread
    saved before reads back as it was.
    """
    try:
        from langgraph.channels.delta import DeltaChannel
    except ImportError:  # pragma: no cover - LangGraph before DeltaChannel
        return merge_calls
    return DeltaChannel(merge_call_writes)


def _all_after(last: CallRecord | None, right: list[CallRecord]) -> bool:
    """Tell whether `right` is strictly increasing in `call_key`, all past `last`'s, if any."""
    before = None if last is None else call_key(last)
    for r in right:
        key = call_key(r)
        if before is not None and key <= before:
            return False
        before = key
    return True


class TokenTotals(TypedDict):
    """Token and call counts over a set of calls."""

    calls: int
    failed: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_calls: NotRequired[int]
    """How many of the calls reported no usage, their tokens estimated (``usage_estimated``);
    only where any did."""


class LayerTotals(TokenTotals):
    """Totals of one layer; `latency_s` is its slowest call (the layer's critical path)."""

    layer: int
    latency_s: float


class UsageSummary(TypedDict):
    """Totals per layer and for the whole run."""

    layers: list[LayerTotals]
    total: TokenTotals


class MoAInput(TypedDict, total=False):
    """What the graph takes: a conversation, and what every call of the run may use.

    ``tools`` (OpenAI-format tool schemas, as `convert_to_openai_tool` writes them),
    ``tool_choice`` and ``parallel_tool_calls`` are bound onto each proposer and onto the
    final aggregator, so the answer may be tool calls (see `MoAChatModel.bind_tools`).
    ``stop`` goes to every call whose text can become the answer. ``call_kwargs`` (e.g.
    ``seed``) is bound onto the same calls, ``final_kwargs`` (e.g. ``response_format``,
    ``logprobs``) onto the final call only.
    """

    messages: Required[Annotated[InputMessages, add_messages]]
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | bool | None
    parallel_tool_calls: bool | None
    stop: list[str] | None
    call_kwargs: dict[str, Any] | None
    final_kwargs: dict[str, Any] | None


class MoAOutput(TypedDict, total=False):
    """What the graph returns: the conversation with the answer appended, and accounting."""

    messages: Annotated[list[AnyMessage], add_messages]
    calls: Annotated[list[CallRecord], _calls_channel()]
    usage: UsageSummary
    """The run's totals, written by its last step; absent or None before it (a thread's
    next run starts by writing None over them, so it never shows the turn before's)."""
    structured_response: Any
    """The parsed answer, when the graph was built with a `response_format` (absent
    otherwise); absent or None until the run answers (reset like `usage`)."""


RUN_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "stop", "call_kwargs", "final_kwargs")
"""The input keys that hold per-run call options (see `MoAInput`); a run that does not give
one starts with it unset, so options never leak from one run of a thread into the next."""

SHAPE_MARK = "/"
"""Separates a run token's fields: its id, the run's token budget, and its digests."""


def make_token(budget: int | None, route: str, shape: str) -> str:
    """Return a new run's token: a fresh id, then the fields `token_fields` reads back."""
    return SHAPE_MARK.join((uuid.uuid4().hex, str(budget or ""), route, shape))


def token_fields(run_token: str) -> tuple[str | None, str, str]:
    """Return a run token's recorded token budget, route digest and shape digest.

    The budget is None where the token has none (written before it was recorded), empty
    where the run had no budget; a digest is empty where the token has none (`run_token`).
    """
    fields = run_token.split(SHAPE_MARK)[1:]  # [[[budget,] route,] shape]
    budget = fields[-3] if len(fields) > 2 else None
    route = fields[-2] if len(fields) > 1 else ""
    return budget, route, fields[-1] if fields else ""


class MoAState(MoAOutput, total=False):
    """Internal state. Fields past `usage` are working data of the current run."""

    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | bool | None
    parallel_tool_calls: bool | None
    stop: list[str] | None
    call_kwargs: dict[str, Any] | None
    final_kwargs: dict[str, Any] | None

    layer: int
    """The last proposer layer (or Self-MoA-Seq step) that finished."""
    references: list[str]
    """Successful outputs of that layer, in reference order: the next input's references."""
    missing: int
    """Proposals of that layer that failed or came too late; the next prompt states it."""
    running_synthesis: str | None
    """Self-MoA-Seq: the running synthesis carried into the next window."""
    final_index: int
    """Position in the aggregator chain (aggregator, then its fallbacks) now in use."""
    run_token: str
    """Identifies this run, so retries of its calls are counted apart from other runs': a
    random hex id, `SHAPE_MARK`, the run's `budget.max_tokens` (empty for none), which an
    edit by `update_state` routes with, `SHAPE_MARK`, how the run routes
    (`config._digest.route_digest`, which such an edit checks), `SHAPE_MARK`, then who the
    run asks and how
    (`config._digest.shape_digest`), so that a resume by a graph of another MoA is refused.
    The digests ride in the token that every node and proposer task carries: a state key of
    its own cost LangGraph about six function calls per model call. A token without them
    (or without the budget, or the route digest) was written before they were."""
    drawn: list[int]
    """Variant 'select' with adaptive sampling: samples each proposer has drawn so far."""


class ProposerTask(TypedDict):
    """The payload of one `Send` to the proposer node: one call, with its own input."""

    layer: int
    proposer: int
    sample: int
    messages: list[BaseMessage]
    run_token: str
    layer_started_at: float
    """When the layer fanned out (Unix time): its deadline counts from here, resumed or not."""
    options: NotRequired[dict[str, Any]]
    """The run's call options (tools, stop, ...; see `MoAInput`), when it has any."""
    reads_references: NotRequired[bool]
    """`messages` is the bare conversation, and the proposer node adds the finished layer's
    references, read from the graph's state (`LayerInput`) and fitted with the
    run's config. Every task of a layer once carried the whole prompt, and a checkpointer
    stores each task: n proposers wrote n x n answers per layer."""
    references_of: NotRequired[MoAState]
    """The finished layer's references, which a task routed by `update_state` carried
    before `reads_references`: a task a checkpoint still holds is run as it was routed."""
