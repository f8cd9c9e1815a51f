"""What the next call reads of a finished layer: its references, trimmed to fit, and its votes."""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.messages import BaseMessage
from langgraph._internal._constants import CONFIG_KEY_READ
from langgraph.config import get_config
from langgraph.constants import CONF

from langgraph_moa.errors import ContextLengthError
from langgraph_moa.run._accounting import as_reference, was_cut_off
from langgraph_moa.run.state import CallRecord, MoAState
from langgraph_moa.text._prompts import (
    estimate_prompt_tokens,
    estimate_tokens,
    fit_references,
    inject_references,
    render_proposal,
)
from langgraph_moa.text._selection import Candidate, tally_note, tool_calls_key

TOOL_NOTE = (
    "Some responses ask to call a tool (the lines starting with 'Tool call:'). If the user's "
    "request needs a tool's result that the conversation does not hold yet, reply with only "
    "that tool call, with the arguments you judge right, in the tool-call format you were "
    "given, and no other text; answer in text only when no tool is needed."
)
"""Told to an aggregator with tools bound when a reference wanted a tool call."""


T = TypeVar("T")


def proposal_text(record: CallRecord) -> str:
    """Return a call's answer as a reference: its text and any tool calls it asked for."""
    return as_reference(render_proposal(record["output"] or "", record.get("tool_calls")), record)


if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig, RoleConfig


def with_references(
    cfg: MoAConfig,
    conversation: list[BaseMessage],
    state: MoAState,
    readers: Sequence[RoleConfig],
    extra_note: str = "",
    schemas: Sequence[Any] | None = None,
) -> tuple[list[BaseMessage], int]:
    """Build a layer's input for `readers`, trimming references to fit their context.

    Returns the messages and how many references were cut. The budget is the smallest
    known window among the readers, minus their answer's room and the rest of the prompt
    (`estimate_prompt_tokens`: the conversation's text and media parts, and the schemas the
    call is sent: `schemas` (`run._options.schemas_sent`), else the run's tools in `state`).
    A final call's structured-output schema left out, the references filled the room it
    took, and the call overflowed the window they were trimmed to fit.

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
        # What the call is sent besides the references: its messages, images and tools
        fixed = estimate_prompt_tokens(
            conversation, state.get("tools") if schemas is None else schemas
        )
        fixed += estimate_tokens(cfg.synthesis_prompt)
        overhead = fixed + 40 * len(references) + 120  # markers and notes
        if room - overhead <= 0:
            raise ContextLengthError(
                f"The conversation (about {fixed} tokens) leaves no room "
                f"for references in {role.label}'s context of "
                f"{role.known_context_window()} tokens with {role.max_tokens} reserved for "
                "its answer. Shorten the conversation or lower that model's max_tokens."
            )
        references, trimmed = fit_references(references, room - overhead)
    note = ""
    if cfg.selection is not None and cfg.selection.show_tally and not trimmed:
        note = tally_note(candidates(state), cfg.selection)
    note = "\n\n".join(n for n in (note, extra_note) if n)
    messages = inject_references(
        conversation,
        references,
        cfg.synthesis_prompt,
        reference_format=cfg.reference_format,
        missing=state.get("missing", 0),
        note=note,
    )
    return messages, trimmed


def reference_inputs(state: MoAState) -> MoAState:
    """Return the part of `state` that `with_references` reads, to build a layer later.

    A task routed by `update_state` before `ProposerTask.reads_references` carries them,
    and the proposer node builds its input from them with the run's config.
    """
    return {
        "references": state["references"],
        "missing": state.get("missing", 0),
        "layer": state.get("layer", 0),
        "calls": answered_proposals(state),
        "tools": state.get("tools"),
    }


REFERENCE_INPUTS = ["references", "missing", "layer", "calls", "tools"]
"""The state keys `reference_inputs` reads."""


class LayerInput:
    """Builds a proposer task's input from the graph's state, once per layer.

    A proposer task of a layer after the first carries the bare conversation
    (`ProposerTask.reads_references`) and reads the finished layer's references from the
    state: LangGraph gives each task the function that reads the state its step started
    from, whichever proposer reads it and whenever (resumed). The tasks of one step read
    the very same values, so the input built for the first is every task's: built per
    task, n proposers fenced n x n references a layer. A step of another run, config or
    conversation builds its own.
    """

    def __init__(self) -> None:
        """Hold no input yet."""
        self._last: tuple[tuple[Any, ...], list[BaseMessage], list[BaseMessage]] | None = None

    def build(self, cfg: MoAConfig, conversation: list[BaseMessage]) -> list[BaseMessage]:
        """Return the conversation with the state's references, fitted to `cfg`'s proposers."""
        state: MoAState = get_config()[CONF][CONFIG_KEY_READ](REFERENCE_INPUTS, False)
        key = (cfg, state["references"], *map(state.get, ("calls", "missing", "tools")))
        last = self._last
        if last is not None and all(map(operator.is_, last[0], key)) and last[1] == conversation:
            return list(last[2])
        messages = with_references(cfg, conversation, reference_inputs(state), cfg.proposers)[0]
        self._last = (key, conversation, messages)
        return list(messages)


def in_reference_order(cfg: MoAConfig, layer: int, items: list[T]) -> list[T]:
    """Return a layer's outputs (or their slots) in the order the next input shows them.

    ``reference_order: shuffled`` permutes them with a seed of its own per layer, so a
    position in the prompt does not always favour the same model; the same count gets the
    same permutation, whichever way the layer was run (standard or chunk-wise).
    """
    if cfg.reference_order != "shuffled":
        return items
    shuffled = list(items)
    random.Random(f"{cfg.shuffle_seed}:{layer}").shuffle(shuffled)
    return shuffled


def answered_proposals(state: MoAState) -> list[CallRecord]:
    """Return the last layer's successful proposal records, in reference order."""
    layer = state.get("layer", 1)
    return [
        c
        for c in state.get("calls", [])
        if c["role"] == "proposer" and c["layer"] == layer and c["status"] == "ok"
    ]


def candidates(state: MoAState) -> list[Candidate]:
    """Return the last layer's successful proposals as selection sees them, in order.

    A candidate's index is its position in `answered_proposals`, so the winner's record is
    ``answered_proposals(state)[decision.winner]``.
    """
    answered = answered_proposals(state)
    return [
        Candidate(
            index=k,
            model=c["configured_model"],
            text=c["output"] or "",
            mean_logprob=c.get("mean_logprob"),
            cut_off=was_cut_off(c),
            tool_key=tool_calls_key(c.get("tool_calls")),
            incomplete=bool(c.get("incomplete_call")),
        )
        for k, c in enumerate(answered)
    ]


def priority(cfg: MoAConfig) -> list[str]:
    """Tie-breaking order of models: the proposers, as configured."""
    return list(dict.fromkeys(p.label for p in cfg.proposers))
