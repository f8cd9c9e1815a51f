"""A run's call options: tools, tool choice, stop sequences and extra request fields.

They come with the run's input (see `MoAInput`), travel to each proposer in its `Send`
payload, and are bound onto a model right before its call. Which call gets what:

- tools, ``tool_choice`` and ``parallel_tool_calls``: every proposer and every aggregation
  (the answer may be tool calls), never the ranker (it answers with a number);
- ``stop``: every call whose text can become the answer: the final aggregator, and the
  proposers of a variant that returns a proposal verbatim (``select``, ``ranker``);
- ``call_kwargs`` (e.g. ``seed``): the same calls as the tools;
- ``final_kwargs`` (e.g. ``response_format``, ``logprobs``): the final call only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from langgraph_moa.errors import MoAInputError
from langgraph_moa.run.state import RUN_OPTIONS

Options = dict[str, Any]


def run_options(state: Mapping[str, Any]) -> Options:
    """Return the call options a run's state holds (only those that are set)."""
    return {key: state[key] for key in RUN_OPTIONS if state.get(key) is not None}


def bind_options(
    model: BaseChatModel,
    options: Options,
    label: str,
    *,
    tools: bool = True,
    stop: bool = False,
    final: bool = False,
) -> Runnable[Any, Any]:
    """Return `model` with the options this call takes bound (the model itself if none).

    Raises:
        MoAInputError: tools are to be bound but the model cannot take them.
    """
    bound: Runnable[Any, Any] = model
    kwargs: dict[str, Any] = {}
    if tools and options.get("tools"):
        extra = {}
        if options.get("parallel_tool_calls") is not None:
            extra["parallel_tool_calls"] = options["parallel_tool_calls"]
        try:
            bound = model.bind_tools(
                options["tools"], tool_choice=options.get("tool_choice"), **extra
            )
        except NotImplementedError:
            raise MoAInputError(
                f"{label} cannot call tools (its chat model has no bind_tools): give every "
                "proposer and the aggregator a model that supports tool calling, or run "
                "without tools."
            ) from None
    if tools:
        kwargs.update(options.get("call_kwargs") or {})
    if stop and options.get("stop"):
        kwargs["stop"] = list(options["stop"])
    if final:
        kwargs.update(options.get("final_kwargs") or {})
    return bound.bind(**kwargs) if kwargs else bound


def params_with(params: dict[str, Any], options: Options, **which: bool) -> dict[str, Any]:
    """Return a call's cache-key parameters with the options it is sent (see `bind_options`)."""
    sent = {}
    if which.get("tools", True):
        for key in ("tools", "tool_choice", "parallel_tool_calls", "call_kwargs"):
            if options.get(key) is not None:
                sent[key] = options[key]
    if which.get("stop") and options.get("stop"):
        sent["stop"] = options["stop"]
    if which.get("final") and options.get("final_kwargs"):
        sent["final_kwargs"] = options["final_kwargs"]
    return {**params, **sent} if sent else params


FINAL_ONLY = frozenset({"response_format", "logprobs", "top_logprobs"})
"""Request fields that shape the answer itself: sent to the final call only, unless the
variant returns a proposal verbatim (then every proposer answers in that shape)."""


def split_call_kwargs(
    kwargs: dict[str, Any], *, picks_proposal: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split extra call arguments into those for every answering call and the final call's."""
    if picks_proposal:
        return dict(kwargs), {}
    every = {k: v for k, v in kwargs.items() if k not in FINAL_ONLY}
    final = {k: v for k, v in kwargs.items() if k in FINAL_ONLY}
    return every, final
