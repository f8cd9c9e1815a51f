"""The run's answer: its message with provenance, and the fallbacks that may stand in for it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, ToolCall

from langgraph_moa._digits import at_most
from langgraph_moa._unicode import well_formed_content
from langgraph_moa.run._accounting import (
    CALL_MARKS,
    finish_reason,
    openai_finish_reason,
    summarize,
    token_details,
    was_cut_off,
)
from langgraph_moa.run.state import CallRecord

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig

TAG_FINAL = "moa:final"
"""Tag on the call that writes the final answer: keep only these tokens when streaming."""
TAG_PROPOSER = "moa:proposer"
TAG_INTERMEDIATE = "moa:intermediate"
NOSTREAM = "nostream"
"""LangGraph's tag that keeps a model's tokens out of ``stream_mode="messages"``."""


def parse_choice(reply: str, n: int) -> int | None:
    """Return the first number in the ranker's reply naming a candidate (1..n), or None.

    The reply is a model's, untrusted: a run of more digits than `n` has (leading zeros
    aside) names no candidate and is passed over unread (`at_most`), since int() refuses a
    string of over 4,300 digits (ValueError) and the run failed for it.
    """
    for match in re.finditer(r"\d+", reply):
        if choice := at_most(match.group(), n):  # 0 names none
            return choice
    return None


def answer_tool_calls(tool_calls: Sequence[Any] | None) -> list[ToolCall]:
    """Return tool calls for the answer, each with an id of its own.

    A proposal's call may have no id, and a model may give two calls one id: an agent
    answers each call with a result under its id, so a repeated one gets a fresh id, or
    the two results could not be told apart (and OpenAI refuses the next turn).
    """
    answer: list[ToolCall] = []
    for call in tool_calls or []:
        taken = {c["id"] for c in answer}
        given = call.get("id")
        answer.append(
            ToolCall(
                name=call["name"],
                args=dict(call.get("args") or {}),
                id=given if given and given not in taken else f"call_{uuid.uuid4().hex[:24]}",
                type="tool_call",
            )
        )
    return answer


def final_message(
    cfg: MoAConfig,
    response: BaseMessage | None,
    content: Any,
    calls: list[CallRecord],
    record: CallRecord,
    extra: dict[str, Any] | None = None,
    source: CallRecord | None = None,
) -> AIMessage:
    """Build the answer, carrying provenance in ``response_metadata["moa"]``.

    It keeps the aggregator's message id, so LangGraph's message stream does not emit the
    answer twice; its `usage_metadata` is the sum over every call of the run, which is the
    honest cost of the answer, its token details (cache reads, reasoning) included.

    The answer's ``model_name`` and ``finish_reason`` are those of the call whose output it
    is: the aggregator's response, or `source` (the proposal a selector, a ranker or a
    fallback returns; `record` when not given). Its tool calls are the response's or the
    source's, each with an id; where those calls break their tool's schema (an argument
    left out, of a wrong type, outside its enum or unknown: the output's record says
    ``incomplete_call``, and no whole call was there to answer instead),
    the answer's ``moa`` says so too, and the answer is degraded (`is_degraded`). The
    ``finish_reason`` is OpenAI's spelling of a cut (``length``), read under any provider's
    key: Anthropic's ``stop_reason: max_tokens`` read as no reason at all, so `moa serve`
    answered ``stop`` and `moa run` warned of nothing.
    """
    summary = summarize(calls)
    total = summary["total"]
    source = source or record
    content = well_formed_content(content)  # the aggregator's own text is not recorded first
    meta = dict(response.response_metadata) if response is not None else {}
    for mark in CALL_MARKS:  # the package's own, on the call: its record says them
        meta.pop(mark, None)
    written = record if response is not None else source  # the call whose output it is
    if response is not None and isinstance(response, AIMessage):
        tool_calls = answer_tool_calls(response.tool_calls)
    else:
        tool_calls = answer_tool_calls(source.get("tool_calls"))
    reason: str | None
    if response is None:
        meta["model_name"] = source["model"]
        reason = source["finish_reason"] or ("tool_calls" if tool_calls else "stop")
    else:
        reason = finish_reason(response)
    if reason is not None:
        meta["finish_reason"] = openai_finish_reason(reason)
    meta["moa"] = {
        "variant": cfg.variant,
        "name": cfg.name,
        "layers": cfg.layers,
        "answered_by": record["model"],
        "calls": calls,
        "usage": summary,
        **({"failed_layers": failed} if (failed := failed_layers(calls)) else {}),
        **({"incomplete_call": missing} if (missing := written.get("incomplete_call")) else {}),
        **(extra or {}),
    }
    return AIMessage(
        content=content,
        tool_calls=tool_calls,
        id=response.id if response is not None else None,
        response_metadata=meta,
        usage_metadata={
            "input_tokens": total["prompt_tokens"],
            "output_tokens": total["completion_tokens"],
            "total_tokens": total["total_tokens"],
            **token_details(calls),
        },
    )


def is_degraded(moa: dict[str, Any]) -> bool:
    """Tell whether the configured mixture did not write an answer, from its ``moa`` facts.

    A fallback answered instead of the configured final step, a layer whose every
    proposal failed was passed over (`failed_layers`), or the answer is a tool call that
    breaks its tool's schema, an argument left out, of a wrong type, outside its enum or
    unknown (``incomplete_call``: the agent's tools cannot run it,
    and no whole call was there instead): either way the answer is not the one the
    configuration describes (`moa run` exits 3; the page marks the run degraded).
    """
    return bool(moa.get("fallback") or moa.get("failed_layers") or moa.get("incomplete_call"))


def failed_layers(calls: list[CallRecord]) -> list[dict[str, int]]:
    """Return the layers whose every proposal failed, after one that answered.

    Each with ``references_from``: the last layer before it that answered, whose proposals
    the next layer (or the aggregator) read instead. A run with such a layer answered with
    fewer layers than configured, and says so.
    """
    layers: dict[int, bool] = {}
    for c in calls:
        if c["role"] == "proposer":
            layers[c["layer"]] = layers.get(c["layer"], False) or c["status"] == "ok"
    failed: list[dict[str, int]] = []
    last_answered = 0
    for layer in sorted(layers):
        if layers[layer]:
            last_answered = layer
        elif last_answered:
            failed.append({"layer": layer, "references_from": last_answered})
    return failed


TAG_PART = "moa:part:"
"""Tag prefix of a chunk-wise answer's parts (``moa:part:1``, ...): one answer written by
consecutive calls, which a stream may join, unlike a retry's second attempt."""


def answer_part(metadata: dict[str, Any]) -> int:
    """Return the chunk-wise part a streamed piece belongs to (0 for a one-call answer)."""
    for tag in metadata.get("tags") or []:
        if isinstance(tag, str) and tag.startswith(TAG_PART):
            return int(tag.removeprefix(TAG_PART))
    return 0


def final_answer_only(metadata: dict[str, Any]) -> bool:
    """Filter for ``stream_mode="messages"``: True for chunks of the final answer."""
    return TAG_FINAL in (metadata.get("tags") or [])


def labelled_fallback(
    cfg: MoAConfig, calls: list[CallRecord], best: CallRecord, kind: str, reason: str
) -> dict[str, Any]:
    """Answer with the best available output, labelled as a fallback and why."""
    extra = {"fallback": kind, "fallback_reason": reason}
    message = final_message(cfg, None, best["output"], calls, best, extra=extra)
    return {"messages": [message], "usage": summarize(calls)}


def best_available(calls: list[CallRecord]) -> CallRecord | None:
    """Pick the answer of last resort: the newest layer's first successful proposal.

    In Self-MoA-Seq the running synthesis is better than any single sample, so it wins when
    there is one. A proposal that may only be a reference (``reference_only``: text where
    ``tool_choice`` forced a call, ...) is never returned as the answer, and one that
    `max_tokens` cut answers only where no finished one did: the first answered proposal
    was taken, so a run fell back to "Step one: 6 times" beside a finished answer. An
    output whose tool call breaks its schema (``incomplete_call``) answers
    only where no whole one could: the agent's ToolNode cannot run it.
    """
    answered = [c for c in calls if c["status"] == "ok" and not c.get("reference_only")]
    whole = [c for c in answered if not c.get("incomplete_call")]
    return _newest_best(whole) or _newest_best(answered)


def _newest_best(answered: list[CallRecord]) -> CallRecord | None:
    """Return the newest finished synthesis, else the newest layer's first finished proposal.

    A synthesis that `max_tokens` cut ends mid-sentence as a cut proposal does: it answers
    only where the newest layer's proposals were cut too (before a cut proposal, which it
    carries forward), so a cut window-2 synthesis no longer outranked window 1's whole one.
    """
    synthesis = [c for c in answered if c["role"] == "aggregator"]
    if finished := [c for c in synthesis if not was_cut_off(c)]:
        return finished[-1]
    proposals = [c for c in answered if c["role"] == "proposer"]
    last_layer = max((c["layer"] for c in proposals), default=None)
    latest = [c for c in proposals if c["layer"] == last_layer]
    if proposal := next((c for c in latest if not was_cut_off(c)), None):
        return proposal
    if synthesis:
        return synthesis[-1]
    return latest[0] if latest else None


def as_json(value: Any) -> str:
    """Return a parsed structure as JSON text (the answer of a function-calling model)."""
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=str)
