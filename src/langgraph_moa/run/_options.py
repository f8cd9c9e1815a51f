"""A run's call options: tools, tool choice, stop sequences and extra request fields.

They come with the run's input (see `MoAInput`), travel to each proposer in its `Send`
payload, and are bound onto a model right before its call. Which call gets what:

- tools, ``tool_choice`` and ``parallel_tool_calls``: every proposer and every aggregation
  (the answer may be tool calls), never the ranker (it answers with a number);
- ``stop``: every call whose text can become the answer: the final aggregator, and the
  proposers of a variant that returns a proposal verbatim (``select``, ``ranker``);
- ``call_kwargs`` (e.g. ``seed``): the same calls as the tools, each proposal with its own
  ``seed`` (`proposal_options`); the ranker gets the run's ``seed`` alone (`ranker_options`);
- ``final_kwargs`` (e.g. ``response_format``, ``logprobs``): the final call only.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolCall
from langchain_core.runnables import Runnable

from langgraph_moa._unicode import beginning
from langgraph_moa.errors import MoAInputError, ToolCallError
from langgraph_moa.run._accounting import INCOMPLETE_CALL, REFERENCE_ONLY, TOOL_CALLS_FROM_TEXT
from langgraph_moa.run._inputs import (
    MAX_NESTING,
    SEED_MAX,
    SEED_MIN,
    forces_call,
    is_seed,
    named_tool,
    nests_too_deep,
    shown_choice,
    tool_names,
)
from langgraph_moa.run._tool_args import argument_problem
from langgraph_moa.run.state import RUN_OPTIONS
from langgraph_moa.text._prompts import SLOT_CLOSE, SLOT_OPEN

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
        MoAInputError: tools are to be bound but the model cannot take them (it has no
            ``bind_tools``, or its ``bind_tools`` refuses these tools or this choice).
    """
    bound: Runnable[Any, Any] = model
    kwargs: dict[str, Any] = {}
    if tools and options.get("tools"):
        extra = {}
        if options.get("parallel_tool_calls") is not None:
            extra["parallel_tool_calls"] = options["parallel_tool_calls"]
        try:
            bound = model.bind_tools(
                options["tools"], tool_choice=_langchain_choice(options.get("tool_choice")), **extra
            )
        except NotImplementedError:
            raise MoAInputError(
                f"{label} cannot call tools (its chat model has no bind_tools): give every "
                "proposer and the aggregator a model that supports tool calling, or run "
                "without tools."
            ) from None
        except (ValueError, TypeError) as exc:  # an integration refusing these tools or choice
            raise MoAInputError(
                f"{label} cannot take these tools: {str(exc).rstrip('.')}; change the tools "
                "or tool_choice, or give that role a model that takes them."
            ) from exc
    if tools:
        kwargs.update(options.get("call_kwargs") or {})
    if stop and options.get("stop"):
        kwargs["stop"] = list(options["stop"])
    if final:
        kwargs.update(options.get("final_kwargs") or {})
    return bound.bind(**kwargs) if kwargs else bound


def _langchain_choice(choice: Any) -> Any:
    """Return `choice` in LangChain's words for a model's `bind_tools`.

    OpenAI's ``"required"`` (what `moa serve` receives) is ``"any"`` to LangChain: each
    integration maps ``"any"`` to its own API (ChatOpenAI back to ``"required"``), while
    ChatAnthropic would take ``"required"`` for the name of a tool to force.
    """
    return "any" if choice == "required" else choice


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


def schemas_sent(params: dict[str, Any], structure: Any = None) -> list[Any] | None:
    """Return the JSON schemas a call sends besides its messages, for its token estimate.

    Its tools' (``tools``) and the structure its answer is asked for: a ``json_schema``
    ``response_format`` in its request fields (`params_with`), or `structure`, the schema the
    graph's `with_structured_output` sends (the graph's ``response_format``). The provider
    bills them as prompt tokens; a call that reported no usage was estimated as if it was sent
    its tools alone.
    """
    # `in`, not `get`: most calls bind no tools, and `in` costs no function call.
    tools = params["tools"] if "tools" in params else None
    schemas = list(tools) if tools else []
    for key in ("call_kwargs", "final_kwargs"):
        if key in params and isinstance(kwargs := params[key], dict):
            wanted = kwargs.get("response_format")
            if isinstance(wanted, dict) and wanted.get("type") == "json_schema":
                schemas.append(wanted.get("json_schema"))
    if structure is not None:
        schemas.append(structure)
    return schemas or None


FINAL_ONLY = frozenset({"response_format", "logprobs", "top_logprobs"})
"""Request fields that shape the answer itself: sent to the final call only, unless the
variant returns a proposal verbatim (then every proposer answers in that shape)."""


def proposal_options(
    options: Options, proposers: Sequence[Any], proposer: int, sample: int
) -> Options:
    """Return the options of one proposal (`sample` of `proposer`): its own seed, if any.

    A run's ``seed`` sent as it is to every proposal made the samples of one model (same
    prompt, same seed) one answer repeated, defeating Self-MoA and the single-proposer
    variant. Each proposal gets ``seed + slot``, its slot being its position among the
    layer's proposals (`proposers`: the layer's `ProposerConfig`s, each with its number of
    samples): distinct, and the same on every
    run with that seed. The aggregator keeps the run's seed. -1 asks llama.cpp for a random
    seed and is kept; any other seed is a fixed one (a negative one too: OpenAI takes any
    64-bit integer, llama.cpp reads -5 as 2**32 - 5), so it moves, never out of the range.
    """
    kwargs = options.get("call_kwargs") or {}
    seed = kwargs.get("seed")
    if not is_seed(seed) or seed == _RANDOM_SEED:
        return options
    slot = sum(p.samples for p in proposers[:proposer]) + sample
    if not slot:
        return options
    return {**options, "call_kwargs": {**kwargs, "seed": _moved(seed, slot)}}


def ranker_options(options: Options) -> Options:
    """Return the options of the ranker's call: the run's seed, if any, and nothing else.

    The ranker answers with a number, so it takes no tools, stop sequences or schema; but a
    ranker that samples picks anew on every run unless seeded, and a run's seed is meant to
    make its draws repeatable (`moa eval --seed`), so it gets the seed the aggregator would.
    """
    seed = (options.get("call_kwargs") or {}).get("seed")
    return {} if seed is None else {"call_kwargs": {"seed": seed}}


def _moved(seed: int, slot: int) -> int:
    """Return `seed` moved by `slot`, inside a signed 64-bit integer and away from -1.

    A non-negative seed goes up, a negative one down (up would reach -1, a random seed);
    either turns back at the end of the range, where the other side is still free.
    """
    if seed >= 0:
        return seed + slot if seed + slot <= SEED_MAX else seed - slot
    return seed - slot if seed - slot >= SEED_MIN else seed + slot


_RANDOM_SEED = -1
"""The seed llama.cpp reads as "draw a random one": each call's own, kept as it is."""


def split_call_kwargs(
    kwargs: dict[str, Any], *, picks_proposal: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split extra call arguments into those for every answering call and the final call's."""
    if picks_proposal:
        return dict(kwargs), {}
    every = {k: v for k, v in kwargs.items() if k not in FINAL_ONLY}
    final = {k: v for k, v in kwargs.items() if k in FINAL_ONLY}
    return every, final


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_TAGS = re.compile(r"^<tool_call>\s*(.*?)\s*</tool_call>$", re.DOTALL)
_LEADING_BLOCK = re.compile(
    r"^(?:```(?:json)?\s*(.*?)\s*```|<tool_call>\s*(.*?)\s*</tool_call>)", re.DOTALL
)
_RENDERED = re.compile(r"^(?:Tool call:\s*)?([A-Za-z_][\w.-]*)\((\{.*\})\)\s*$")
"""A call as `render_proposal` writes it into the references (``Tool call: add({...})``),
which an aggregator may copy."""


def read_text_tool_calls(response: Any, options: Options) -> Any:
    """Read tool calls a model wrote as text, when its answer begins with them.

    Small models often answer a tool-calling turn with the call's JSON as plain text
    (``{"name": "calculator", "arguments": {...}}``, maybe fenced or in ``<tool_call>``
    tags) instead of in the format their server parses (llama.cpp reads Qwen2.5's calls only
    between ``<tool_call>`` tokens, which the 0.5B and 1.5B Coder models leave out), and an
    aggregator may copy the references' ``Tool call: name({...})`` lines, even inside the
    reference's own fence markers (dropped here; a call written twice is one call). When tools are
    bound, tool choice is not ``"none"`` and the response has no tool calls, an answer that
    is such a call, or whose first lines are such calls to bound tools, gets them as real
    tool calls (with ids); the text after them stays its content, as with a model that
    writes text beside its calls. ``response_metadata["moa_tool_calls_from_text"]`` is set,
    so the call record says where they came from. Anything else is returned unchanged.
    """
    tools = options.get("tools")
    if not tools or _is_none(options.get("tool_choice")) or not isinstance(response, AIMessage):
        return response
    if response.tool_calls or not isinstance(response.content, str):
        return response
    names = {t["function"]["name"] for t in tools}
    text = _unwrap_copied_slot(response.content.strip())
    for pattern in (_FENCE, _TAGS):
        if match := pattern.match(text):
            text = match.group(1).strip()
    calls = _json_calls(text, names)
    rest = ""
    if calls is None and (block := _LEADING_BLOCK.match(text)):
        # A fenced or tagged call, then text: the call, and the text as content.
        calls = _json_calls((block.group(1) or block.group(2) or "").strip(), names)
        rest = text[block.end() :].strip() if calls else ""
    if calls is None:
        calls, lines = [], text.splitlines()
        while lines and (found := _line_call(lines[0].strip(), names)) is not None:
            if not any(_same_call(found, c) for c in calls):  # the same call written twice
                calls.append(found)
            lines.pop(0)
        rest = "\n".join(lines).strip()
    if not calls:
        return response
    meta = {**response.response_metadata, TOOL_CALLS_FROM_TEXT: True}
    if meta.get("finish_reason") == "stop":
        meta["finish_reason"] = "tool_calls"
    return response.model_copy(
        update={"content": rest, "tool_calls": calls, "response_metadata": meta}
    )


MAX_TOOL_CALLS = 128
"""The most tool calls one answer may make (OpenAI's most tools a request may bind). The
32 MiB bound on a body let an answer of 10^5 calls through, each one recorded, voted on and
passed to the agent: a model that loops, not a plan an agent can run."""


def check_call_bounds(response: Any, label: str) -> None:
    """Refuse an answer of too many calls or too deeply nested arguments, whatever it was sent.

    More than `MAX_TOOL_CALLS` calls, or a call whose arguments nest deeper than
    `MAX_NESTING`. Apart from `check_tool_calls` since a function-calling structured
    answer, which that check does not read, carries its calls in its raw message and hands
    them to its caller.
    Arguments nested thousands deep (Python 3.13's JSON reader takes 5,000 levels, 3.11's
    stops near 1,000) ran the references' rendering out of stack: the run crashed with a
    RecursionError. Past the bound such a call is one no tool can be given.

    Raises:
        ToolCallError: how many calls it made, or which was nested too deep, naming the
            model; the answer rides along.
    """
    if not isinstance(response, AIMessage):
        return
    if (made := len(response.tool_calls) + len(response.invalid_tool_calls)) > MAX_TOOL_CALLS:
        raise ToolCallError(
            f"{label} made {made} tool calls in one answer, more than the {MAX_TOOL_CALLS} an "
            "answer may make, so it was refused.",
            response,
        )
    for call in response.tool_calls:
        if nests_too_deep(call["args"]):
            raise ToolCallError(
                f"{label} called {call['name']!r} with arguments nested more than "
                f"{MAX_NESTING} levels deep (dicts and lists within each other), so it was "
                "refused.",
                response,
            )


def check_tool_calls(response: Any, options: Options, label: str, *, answer: bool = True) -> Any:
    """Refuse an answer whose tool calls break the tools and tool choice it was sent.

    A provider enforces them on its own models (OpenAI never calls a tool it was not
    given), but not every model keeps to them: a small local model may name a tool it only
    saw in the conversation, cut its arguments short, or answer in text where a call was
    forced, and an aggregator may copy several proposals' calls where one was allowed.
    Passed on, the answer would reach an agent as a call its tools cannot run, or as text
    where it asked for a call; LangChain keeps arguments that are not JSON apart, as
    ``invalid_tool_calls``, which the answer would silently drop.

    A call whose output is only a reference (`answer` false: a proposal the aggregator
    reads) is held to less. A call no one may run (a tool not bound, arguments that are not
    JSON, a call under ``tool_choice="none"``) is refused: shown to the next layer as a
    ``Tool call:`` line it invites a copy. But text where a call was forced, another bound
    tool than the named one, or several calls where one was allowed are still a usable
    reference, and refusing them left small models' runs with no proposal at all; such a
    response is returned marked ``response_metadata["moa_reference_only"]`` (why it could
    not be the answer), so that it is never returned as one (`best_available`).

    A call whose arguments break its tool's schema (one it requires left out, a value of a
    wrong type: `argument_problem`) is marked
    ``response_metadata["moa_incomplete_call"]``, not refused: it loses to a whole call
    (the vote, the ranker, the aggregator chain and `best_available` prefer one), but where
    there is none it is passed on, and the agent's ToolNode answers it with the validation
    error the model's next turn reads; refused, such a run ended in an error.

    Returns:
        The response, marked where it may only be a reference.

    Raises:
        ToolCallError: what broke the tools, naming the model; the answer rides along. So
            does an answer of more than `MAX_TOOL_CALLS` calls, whatever it was sent
            (`check_call_bounds`), and one whose arguments nest deeper than `MAX_NESTING`.
    """
    if not isinstance(response, AIMessage):
        return response
    if response.tool_calls or response.invalid_tool_calls:  # most answers make none
        check_call_bounds(response, label)
    tools = options.get("tools")
    if not tools:
        return response
    names = tool_names(tools)
    if problem := _unrunnable_call(response, options, names):
        raise ToolCallError(f"{label} {problem}", response)
    marks: dict[str, str] = {}
    if problem := _answer_problem(response, options):
        if answer:
            raise ToolCallError(f"{label} {problem}", response)
        marks[REFERENCE_ONLY] = problem
    if refused := _argument_problem(response.tool_calls, tools):
        marks[INCOMPLETE_CALL] = refused
    if not marks:
        return response
    meta = {**response.response_metadata, **marks}
    return response.model_copy(update={"response_metadata": meta})


def _unrunnable_call(response: AIMessage, options: Options, names: list[str]) -> str | None:
    """Return how `response` asks for a call no one may run, or None."""
    calls, choice = response.tool_calls, options.get("tool_choice")
    if bad := response.invalid_tool_calls:
        return (
            f"called {bad[0].get('name')!r} with arguments that are not a JSON object: "
            f"{beginning(str(bad[0].get('args')), 80)!r}"
        )
    if unbound := [c["name"] for c in calls if c["name"] not in names]:
        return f"called {unbound[0]!r}, which is not bound (the tools are {', '.join(names)})"
    if calls and _is_none(choice):
        return f"called {calls[0]['name']!r} though tool_choice was 'none'"
    return None


def _argument_problem(calls: list[ToolCall], tools: Sequence[dict[str, Any]]) -> str | None:
    """Return how a call's arguments break its tool's schema, or None (`argument_problem`).

    The agent's ToolNode cannot run such a call (it answers with a validation error and
    the agent pays for another turn), so a call that keeps to the schema is preferred to
    it: in the vote of ``select`` two calls leaving out an argument, or giving a word for an
    integer, outvoted one whole call.
    """
    schemas = {t["function"].get("name"): t["function"].get("parameters") for t in tools}
    for call in calls:
        if problem := argument_problem(call["args"], schemas.get(call["name"])):
            return f"called {call['name']!r} {problem}"
    return None


def _answer_problem(response: AIMessage, options: Options) -> str | None:
    """Return how `response`, runnable, still breaks what the answer must keep to, or None."""
    calls, choice = response.tool_calls, options.get("tool_choice")
    if len(calls) > 1 and options.get("parallel_tool_calls") is False:
        return f"made {len(calls)} tool calls though parallel_tool_calls was false"
    if forces_call(choice):
        named = named_tool(choice)
        if not calls or (named and any(c["name"] != named for c in calls)):
            wanted = f"a call to {named!r}" if named else "a tool call"
            return (
                f"answered without {wanted}, though tool_choice {shown_choice(choice)!r} "
                "asks for a tool call"
            )
    return None


def _is_none(choice: Any) -> bool:
    """Tell whether a `tool_choice` forbids calls: ``"none"``, or Anthropic's dict of it."""
    return choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none")


def _unwrap_copied_slot(text: str) -> str:
    """Drop a reference's fence markers an aggregator copied around its answer."""
    opening = SLOT_OPEN.match(text)
    if opening is None:
        return text
    inner = text[opening.end() :]
    if closing := SLOT_CLOSE.search(inner):
        inner = f"{inner[: closing.start()]}\n{inner[closing.end() :]}"
    return inner.strip()


def _same_call(a: ToolCall, b: ToolCall) -> bool:
    return a["name"] == b["name"] and a["args"] == b["args"]


def _tool_call(name: Any, args: Any, names: set[str]) -> ToolCall | None:
    """Return the call `name(args)` written as text, or None where it is no call to take.

    Arguments nested deeper than `MAX_NESTING` are none: Python 3.11's JSON reader refuses
    them past ~1,000 levels where 3.13's reads 5,000, and the bound treats both alike.
    """
    if name not in names:
        return None
    if isinstance(args, str):
        args = _json_value(args)
    if not isinstance(args, dict) or nests_too_deep(args):
        return None
    return ToolCall(name=name, args=args, id=f"call_{uuid.uuid4().hex[:24]}")


def _json_calls(text: str, names: set[str]) -> list[ToolCall] | None:
    """Read text that is wholly one call object or a list of them; None otherwise."""
    value = _json_value(text)
    if value is None:
        return None
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            return None
        args = item.get("arguments", item.get("parameters", {}))
        call = _tool_call(item.get("name"), args, names)
        if call is None:
            return None
        calls.append(call)
    return calls or None


def _json_value(text: str) -> Any:
    """Return the JSON value `text` holds; None where it holds none or too deep a one.

    Python 3.11's reader raises a RecursionError past ~1,000 levels (3.13's reads 5,000).
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _line_call(line: str, names: set[str]) -> ToolCall | None:
    """Read one line that is a call: rendered (``Tool call: add({...})``) or a JSON object."""
    if match := _RENDERED.match(line):
        return _tool_call(match.group(1), match.group(2), names)
    found = _json_calls(line, names) if line.startswith("{") else None
    return found[0] if found and len(found) == 1 else None
