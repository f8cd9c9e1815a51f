"""The graph's entrance: input that cannot be read as a conversation fails as `MoAInputError`.

LangGraph reads the input before any node runs, so a wrong shape (``5``, a bare string,
``{"messages": None}``, a message with integer content) would otherwise fail inside LangGraph
or pydantic with their own, multi-line errors. `MoAGraph` checks the input first, at every
entrance that goes through the graph's streams: ``invoke``, ``ainvoke``, ``stream``,
``astream``, ``batch``, LangGraph server and the graph used as a subgraph.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any, TypeGuard, TypeVar

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langgraph.constants import START
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Send, StateUpdate

from langgraph_moa._redact import clip
from langgraph_moa._unicode import beginning
from langgraph_moa.errors import MoAInputError
from langgraph_moa.run._busy import aheld, held, thread_key
from langgraph_moa.run._interrupt import interruptible, interruptibly
from langgraph_moa.run.state import RUN_OPTIONS

_EXAMPLE = "{'messages': [('user', 'Explain X')]}"
_G = TypeVar("_G", bound=CompiledStateGraph[Any, Any, Any, Any])

MAX_NESTING = 100
"""How deep dicts and lists may nest in a schema, a tool, a message's content, or the
arguments of a tool call a model makes (`run._options.check_call_bounds`).

Far past any real one (a provider takes a few levels of schema); each deeper level costs the
JSON encoders and LangChain's schema walks a Python frame, so input nested thousands deep
ran out of stack as a bare RecursionError. `moa serve`'s JSON parser stops at 201 levels;
Python's own reads ~1,000 on 3.11 and 5,000 on 3.13, so only a bound of the package's own
treats a model's call alike on both.
"""


def check_run_input(value: Any, first: Collection[str] = ()) -> None:
    """Refuse graph input that is not a conversation, with one sentence naming the fix.

    None (resume a checkpointed run) passes; a dict is checked only under ``messages``, the
    one key the graph reads, and its call options; a `Command`'s update is checked as a dict
    input is, since it writes the same state (its messages failed in LangChain's coercion),
    and so is the input a `Send` of it gives a node of `first` (the graph's first).
    """
    if value is None:
        return
    if isinstance(value, Command):
        _check_command(value, first)
        return
    if not isinstance(value, dict):
        raise MoAInputError(
            f"The graph input must be a dict holding the conversation, such as {_EXAMPLE}, "
            f"but it is {_kind(value)}."
        )
    # New messages start a run, with only the tools they give (`with_run_options`).
    _check_values(value, tools_known="messages" in value or "tools" in value)


def _check_values(values: dict[Any, Any], tools_known: bool) -> None:
    """Check the messages and call options `values` writes.

    `tools_known`: the run's tools are the ones `values` gives (none if it gives none), so
    a ``tool_choice`` naming another is refused; else the run's own may bind it, and only
    its form is checked.
    """
    if "messages" in values:
        check_messages(values["messages"])
    _check_tools(values.get("tools"))
    if tools_known:
        check_tool_choice(values.get("tool_choice"), tool_names(values.get("tools") or []))
    else:
        named_tool(values.get("tool_choice"))
    check_seed(values.get("call_kwargs"))
    for options in ("call_kwargs", "final_kwargs"):
        check_nesting(values.get(options), "The call options (such as response_format) are")


def _check_command(command: Command[Any], first: Collection[str]) -> None:
    """`check_run_input` for a `Command`: its update, and the input of a `Send` to `first`.

    One that goes on with its run keeps the run's tools, so its ``tool_choice`` is checked
    against them only where it gives tools of its own.
    """
    pairs = _update_pairs(command)
    given = dict(pairs)
    _check_values(given, tools_known=_starts_turn(command, first) or "tools" in given)
    for key, messages in pairs:  # pairs may give a key twice; the dict holds the last
        if key == "messages" and messages is not given["messages"]:
            check_messages(messages)
    for send in _gotos(command):
        if isinstance(send, Send) and send.node in first:  # the node's state is its input
            check_run_input(send.arg)


def check_nesting(value: Any, what: str) -> None:
    """Refuse `value` if its dicts and lists nest deeper than `MAX_NESTING`, naming `what`."""
    if nests_too_deep(value):
        raise MoAInputError(
            f"{what} nested more than {MAX_NESTING} levels deep (dicts and lists within "
            f"each other): nest them {MAX_NESTING} levels deep at most."
        )


def nests_too_deep(value: Any) -> bool:
    """Tell whether `value`'s dicts and lists nest deeper than `MAX_NESTING`.

    The walk keeps its own stack: a recursive one would fail on the very input it checks.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_NESTING:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def openai_tools(tools: Sequence[Any], strict: bool | None) -> list[dict[str, Any]]:
    """Return `tools` as OpenAI tool schemas; what is no tool is refused in one sentence.

    LangChain's conversion error runs over several lines, quoting the object between them.
    A provider's built-in tool (``{"type": "web_search_preview"}``) has no function to hand
    every proposer, and the graph takes function tools only (its ``tools`` check).
    """
    formatted = []
    for i, tool in enumerate(tools, 1):
        which = f"Tool {i} of {len(tools)} ({_kind(tool)})"
        converted = _converted_tool(tool, strict, which)
        if "function" not in converted:
            raise MoAInputError(
                f"{which} is a provider's built-in tool (type {converted.get('type')!r}), "
                "which MoA cannot hand to every model: bind function tools only."
            )
        check_openai_name(converted["function"].get("name"), which)
        formatted.append(converted)
    return formatted


OPENAI_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""OpenAI's rule for a function tool's and a ``json_schema``'s ``name``: a provider refuses
any other."""


def check_openai_name(name: Any, what: str) -> None:
    """Refuse a tool's or a schema's `name` that OpenAI refuses, naming `what` it belongs to.

    Such a name ("get weather") went to every proposer and the aggregator, and the provider
    refused the call only after the others had been paid for. The graph input, `bind_tools`
    and `moa serve`'s request body all ask here, so the rule and its message are one.
    """
    if isinstance(name, str) and OPENAI_NAME.fullmatch(name):
        return
    if name is None or name == "":
        given = "it has none"
    else:
        given = f"it is {clip(name)!r}" if isinstance(name, str) else f"it is {_kind(name)}"
    raise MoAInputError(
        f"{what} needs a 'name' of letters, digits, '_' and '-' (at most 64), as OpenAI "
        f"requires, but {given}."
    )


def _converted_tool(tool: Any, strict: bool | None, which: str) -> dict[str, Any]:
    """Convert one tool; a refusal tells a tool that is none from one that cannot be strict."""
    try:
        return convert_to_openai_tool(tool, strict=strict)
    except _CONVERSION_ERRORS:
        pass
    if strict is not None and _converts(tool):
        raise MoAInputError(
            f"{which} cannot be made strict={strict!r}: its own 'strict' says otherwise or it "
            "has no 'parameters' to keep to; make the two agree, or leave strict out."
        )
    raise MoAInputError(
        f"{which} is no tool: pass a LangChain tool, a function, a pydantic model or an OpenAI "
        "tool schema (a dict with a 'function', or a JSON schema with a top-level 'title')."
    )


_CONVERSION_ERRORS = (ValueError, TypeError, AttributeError, KeyError)
"""What LangChain's `convert_to_openai_tool` raises for what it cannot convert."""


def _converts(schema: Any) -> bool:
    """Tell whether LangChain converts `schema` to a tool (without `strict`)."""
    try:
        convert_to_openai_tool(schema)
    except _CONVERSION_ERRORS:
        return False
    return True


def check_schema(schema: Any, method: str, *, as_tool: bool = True) -> None:
    """Refuse a structured-output schema that is none, before any call is paid for.

    A synthesizing variant's final aggregator reads the schema only when the last step
    starts (its own `with_structured_output`): 42, a class's name as text or a whole
    ``response_format`` failed there, with LangChain's multi-line error, after every
    proposal was paid for. Taken: what LangChain converts to a tool (a pydantic model, a
    TypedDict, a JSON schema with a ``title``, ``{"name", "schema"}``), and for ``json_mode``
    any dict (the object needs no name). OpenAI's whole ``response_format`` is no schema:
    ChatOpenAI's `with_structured_output` fails on it, and `select` cannot make it a tool.

    `as_tool` False (the aggregator answers in the schema, not MoA's own conversion): any
    dict is taken here, since whether a JSON schema needs a ``title`` is the aggregator's
    to say (ChatOllama takes one without, ChatOpenAI does not); `check_aggregator_schema`
    asks it at the start of each run.
    """
    if schema is None or (method == "json_mode" and isinstance(schema, dict)):
        return
    if isinstance(schema, dict) and schema.get("type") == "json_schema":
        raise MoAInputError(
            f"The structured-output schema {_kind(schema)} is a whole response_format: give "
            "the JSON schema inside it, its name as a top-level 'title'."
        )
    if (as_tool or not isinstance(schema, dict)) and not _converts(schema):
        raise MoAInputError(
            f"The structured-output schema {_kind(schema)} is no schema: give a pydantic "
            "model, a TypedDict or a JSON schema with a top-level 'title' (the answer's name)."
        )


def check_aggregator_schema(
    model: Any, label: str, schema: Any, method: str, options: dict[str, Any]
) -> None:
    """Refuse `schema` if aggregator `label` cannot answer in it, before any call is paid for.

    The aggregator's own `with_structured_output` decides (it makes no call): ChatOpenAI
    refuses a JSON schema without a ``title`` and, with ``json_schema``, an OpenAI tool
    schema, which failed only at the last step, after every proposal was paid for, while
    ChatOllama answers in a schema without a title. The run's context may name another
    aggregator, so the graph asks at each run's start (`MoANodes.prepare`).
    """
    try:
        model.with_structured_output(schema, method=method, include_raw=True, **options)
    except Exception as exc:  # any refusal is the model's answer to the schema
        fix = _schema_fix(schema, method)
        if options and _takes(model, schema, method):
            fix = f"leave {', '.join(sorted(options))} out, or choose an aggregator that takes it."
        asked = ", ".join([f"method={method!r}", *(f"{k}={v!r}" for k, v in options.items())])
        raise MoAInputError(
            f"Aggregator {label} cannot answer in the structured-output schema {_kind(schema)} "
            f"with {asked} ({_refusal(exc)}): {fix}"
        ) from exc
    if method != "json_mode" and (name := _schema_name(schema, method)) is not _NO_NAME:
        check_openai_name(name, f"The structured-output schema {_kind(schema)}")


_NO_NAME = object()


def _schema_name(schema: Any, method: str) -> Any:
    """Return the name `schema` is sent under with `method`, as ChatOpenAI sends it.

    A JSON schema's ``title`` or a pydantic model's (its class's name if it has none) names
    the tool or the ``json_schema``, but for ``json_schema`` a pydantic model goes to the
    openai SDK whole, which names it by its class. OpenAI refused a name off its rule
    (``"my answer"``) only at the aggregator, after every proposal was paid for. A schema
    that is no tool (one without a title that the aggregator takes) has none: `_NO_NAME`.
    """
    if method == "json_schema" and isinstance(schema, type) and is_basemodel_subclass(schema):
        return schema.__name__
    try:
        return convert_to_openai_tool(schema)["function"].get("name")
    except _CONVERSION_ERRORS:
        return _NO_NAME


def _takes(model: Any, schema: Any, method: str) -> bool:
    """Tell whether `model` answers in `schema` without options (``strict``)."""
    try:
        model.with_structured_output(schema, method=method, include_raw=True)
    except Exception:  # any refusal is the model's answer to the schema
        return False
    return True


def _refusal(exc: Exception) -> str:
    """Return the first line of a model's refusal, short: LangChain's runs over several lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = (lines[0] if lines else "").rstrip(".:;")
    text = clip(text, 80, mark="...")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _schema_fix(schema: Any, method: str) -> str:
    """Return the fix for a schema an aggregator refused: the end of the refusal's sentence."""
    if isinstance(schema, dict) and schema.get("type") == "function" and "function" in schema:
        return (
            "give the tool's 'parameters' with its name as a top-level 'title', or use "
            "method='function_calling'."
        )
    if isinstance(schema, dict) and "title" not in schema and "name" not in schema:
        return "give the JSON schema a top-level 'title' (the answer's name)."
    if method == "json_mode":
        return "give it a pydantic model or a JSON schema, or choose another aggregator."
    return (
        "give a pydantic model or a JSON schema with a top-level 'title' and 'properties', "
        "or choose an aggregator that takes it."
    )


def with_run_options(value: Any, first: Collection[str] = ()) -> Any:
    """Return a fresh run's input with every call option it leaves out set to None.

    The options are state channels, and a thread's next run would otherwise inherit the
    tools (or stop sequences) of the run before it. A `Command` that goes to a node of
    `first` (the graph's first, which starts a run) with new messages is a new turn as a
    dict input is; any other goes on with its run (past an interrupt, or a jump inside
    it), so its options stay the run's.
    """
    if isinstance(value, dict) and "messages" in value:
        messages = as_message_list(value["messages"])
        return {**{key: None for key in RUN_OPTIONS}, **value, "messages": messages}
    if isinstance(value, Command) and _starts_turn(value, first):
        pairs = _update_pairs(value)
        given = {key for key, _ in pairs}
        if _is_input(value, first, pairs):
            # As one: LangGraph drops a stopped run's next nodes for new input alone, and
            # they ran beside `first` on the new question (its aggregator paid to answer it).
            return with_run_options(dict(pairs))
        unset = [(key, None) for key in RUN_OPTIONS if key not in given]
        read = [(k, as_message_list(v) if k == "messages" else v) for k, v in pairs]
        return dataclasses.replace(value, update=[*unset, *read])
    return value


def _is_input(command: Command[Any], first: Collection[str], pairs: list[Any]) -> bool:
    """Tell whether `command` (a new turn) says no more than a dict input would.

    Once each: it goes to nodes of `first` by name alone and writes input keys, no resume.
    """
    keys = [key for key, _ in pairs]
    return (
        command.graph is None
        and command.resume is None
        and all(isinstance(g, str) and g in first for g in _gotos(command))
        and len(set(keys)) == len(keys)
        and set(keys) <= {"messages", *RUN_OPTIONS}
    )


def _update_pairs(command: Command[Any]) -> list[tuple[str, Any]]:
    """Return a `Command`'s update as (channel, value) pairs, as LangGraph applies them.

    A dict, or pairs; anything else (None, an object) writes no key the graph reads and is
    left to LangGraph.
    """
    update = command.update
    if isinstance(update, dict):
        return list(update.items())
    if isinstance(update, list | tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in update
    ):
        return list(update)
    return []


def _starts_turn(command: Command[Any], first: Collection[str]) -> bool:
    """Tell whether `command` starts a new turn: new messages, to a node of `first` by name.

    A `Send` brings its own input, which is no new state of the thread.
    """
    return any(g in first for g in _gotos(command) if isinstance(g, str)) and any(
        key == "messages" for key, _ in _update_pairs(command)
    )


def _gotos(command: Command[Any]) -> list[Any]:
    """Return where `command` goes: node names and `Send`s."""
    goto = command.goto
    return list(goto) if isinstance(goto, list | tuple) else [goto]


def as_message_list(messages: Any) -> Any:
    """Return a tuple of messages as a list; anything else as it is.

    `MoAInput` takes any sequence of messages (a caller's ``tuple(history)``), but
    `add_messages` reads whatever is not a list as one message, so such a tuple failed the
    run as a (role, text) pair. A pair (two items, the first a role) stays one message.
    """
    if isinstance(messages, tuple) and not (len(messages) == 2 and isinstance(messages[0], str)):
        return list(messages)
    return messages


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
        for t in tools
    ):
        raise MoAInputError(
            "'tools' must be a list of OpenAI-format tool schemas "
            "({'type': 'function', 'function': {...}}); convert LangChain tools with "
            "langchain_core.utils.function_calling.convert_to_openai_tool or use "
            "MoAChatModel.bind_tools."
        )
    check_nesting(tools, "'tools' are")
    for i, tool in enumerate(tools, 1):
        check_openai_name(tool["function"].get("name"), f"Tool {i} of {len(tools)} in 'tools'")


SEED_MAX = 2**63 - 1
"""The largest seed a provider takes (a signed 64-bit integer)."""
SEED_MIN = -(2**63)
"""The smallest one."""


def is_seed(value: Any) -> TypeGuard[int]:
    """Tell whether `value` is a whole number (a bool is not), the kind a seed must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(call_kwargs: Any) -> None:
    """Refuse a ``seed`` that is not a signed 64-bit integer, the one kind providers take.

    Each proposal gets the seed plus its position (`run._options.proposal_options`), which
    only a whole number has: a float or bool went to every proposal as it was (k samples of
    one model were one answer repeated) and on to the provider, which refused every call.
    """
    if not isinstance(call_kwargs, dict) or call_kwargs.get("seed") is None:
        return
    seed = call_kwargs["seed"]
    if not is_seed(seed) or not SEED_MIN <= seed <= SEED_MAX:
        raise MoAInputError(
            f"seed must be an integer within a signed 64-bit range, such as 7, but it is "
            f"{beginning(str(seed), 40)!r}: pass a whole number."
        )


TOOL_CHOICES = ("auto", "none", "any", "required")
"""The tool choices that name no tool (``"any"`` is LangChain's, ``"required"`` OpenAI's)."""


def tool_names(tools: Sequence[dict[str, Any]]) -> list[str]:
    """Return the names of OpenAI-format tool schemas."""
    return [t["function"].get("name") for t in tools]


def check_tool_choice(choice: Any, names: Sequence[str]) -> None:
    """Refuse a `tool_choice` that is not one, or that names a tool not among `names`.

    Sent on, either would reach every proposer and the aggregator, whose providers refuse
    it call by call (OpenAI with a 400): the run would fail only after paying for the
    calls that did not. A dict is OpenAI's ``{"type": "function", "function": {"name"}}``
    or Anthropic's ``{"type": "tool", "name"}``; one naming no tool (``{"type": "any"}``)
    is the provider's own and passes.

    A choice that forces a call with no tools at all would bind nothing, so the call the
    caller forced would silently never be asked for: it is refused too.

    Raises:
        MoAInputError: the choice and the fix, in one sentence.
    """
    named = named_tool(choice)
    if not names and forces_call(choice):
        raise MoAInputError(
            f"tool_choice {shown_choice(choice)!r} forces a tool call, but no tools are bound: "
            "pass the tools with it, or leave tool_choice out."
        )
    if named is not None and named not in names:
        raise MoAInputError(
            f"tool_choice {named!r} names no bound tool: use 'auto', 'none', 'any' or one "
            f"of {', '.join(names) or 'the tools'}."
        )


def forces_call(choice: Any) -> bool:
    """Tell whether a (checked) `tool_choice` forces a tool call: any, or a named one."""
    if choice is True or choice in ("any", "required"):
        return True
    if isinstance(choice, dict) and choice.get("type") in ("any", "required"):
        return True
    return named_tool(choice) is not None


def shown_choice(choice: Any) -> Any:
    """Return a tool choice as a message shows it: a dict by its type or name."""
    if isinstance(choice, dict):
        return named_tool(choice) or choice.get("type")
    return choice


def named_tool(choice: Any) -> str | None:
    """Return the tool a `tool_choice` forces, None where it forces none; refuse a non-choice."""
    if choice is None or isinstance(choice, bool):
        return None
    named: Any = None
    if isinstance(choice, str):
        named = None if choice in TOOL_CHOICES else choice
    elif isinstance(choice, dict):
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else choice.get("name")
    else:
        named = choice
    if named is not None and not isinstance(named, str):
        raise MoAInputError(
            "tool_choice must be 'auto', 'none', 'any', 'required', a bound tool's name or a "
            f"dict naming one, but it is {_kind(choice)}."
        )
    return named


def check_messages(messages: Any) -> list[BaseMessage]:
    """Read `messages` as LangGraph would, but fail with one sentence naming the message.

    A single message (a string, a message, a dict or a (role, text) pair) stands for a
    one-message conversation, as LangGraph's `add_messages` allows.

    Returns:
        The conversation as LangChain messages.

    Raises:
        MoAInputError: `messages` is None or not a conversation, or one message has no
            readable role or content.
    """
    if messages is None or isinstance(messages, (int, float, bool, bytes)):
        raise MoAInputError(
            f"'messages' must be a list of messages, such as {_EXAMPLE}, but it is "
            f"{_kind(messages)}."
        )
    messages = as_message_list(messages)
    items = messages if isinstance(messages, list) else [messages]
    for position, item in enumerate(items, start=1):
        _check_content(position, _content_of(item))
    try:
        converted = convert_to_messages(items)
    except (ValueError, TypeError, NotImplementedError, KeyError, RecursionError):
        pass
    else:
        _check_tool_calls(converted)
        return converted
    for position, item in enumerate(items, start=1):  # find the culprit to name it
        try:
            convert_to_messages([item])
        except (ValueError, TypeError, NotImplementedError, KeyError, RecursionError):
            # RecursionError: LangChain reads an OpenAI-style call's arguments with
            # json.loads, which Python 3.11 stops near 1,000 levels.
            raise MoAInputError(
                f"Message {position} cannot be read as a chat message ({_kind(item)}): give a "
                "(role, text) pair, a dict with 'role' and 'content', or a LangChain message."
            ) from None
    raise MoAInputError(f"'messages' cannot be read as a conversation; pass one like {_EXAMPLE}.")


def _check_tool_calls(messages: list[BaseMessage]) -> None:
    """Refuse an earlier turn's tool call whose arguments nest deeper than `MAX_NESTING`.

    A model's own such call is refused (`run._options.check_call_bounds`); taken from the
    conversation, each call failed on a RecursionError where its request was encoded.
    """
    for position, message in enumerate(messages, start=1):
        for call in message.tool_calls if isinstance(message, AIMessage) else ():
            check_nesting(call["args"], f"Message {position}'s tool call {call['name']!r} is")


def _content_of(item: Any) -> Any:
    """Return the content a message-like item carries, or a string when it has none."""
    if isinstance(item, BaseMessage):
        return item.content
    if isinstance(item, dict):
        return item.get("content", "")
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[1]
    return ""


def _check_content(position: int, content: Any) -> None:
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(isinstance(b, (str, dict)) for b in content):
        check_nesting(content, f"Message {position}'s content is")
        return
    raise MoAInputError(
        f"Message {position} has content of type {type(content).__name__}: content must be "
        "text (a string) or a list of text blocks."
    )


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    shown = repr(value)
    shown = clip(shown, 40, mark="...")
    return f"{type(value).__name__} {shown}"


class MoAGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled MoA graph whose every run checks its input first (see the module)."""

    def stream(self, input: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Check the input, then stream as LangGraph does (`invoke` and `batch` come here).

        A run on a checkpointed thread holds it while it runs (`_busy`). It runs in a thread
        of its own, so that a caller who stops waiting (Ctrl-C) cancels its calls in flight
        (`_interrupt`).
        """
        first = self._first_nodes()
        check_run_input(input, first)
        run = super().stream(with_run_options(input, first), *args, **kwargs)
        key = thread_key(self.checkpointer, _config(args, kwargs))
        return interruptible(run if key is None else held(key, run))  # no thread: no hold

    def _first_nodes(self) -> set[str]:
        """Return the nodes the graph starts at: a `Command` to one starts a new run."""
        return {end for start, end in self.builder.edges if start == START}

    def batch(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Batch as LangChain does; a caller who stops waiting interrupts every run of it.

        Its runs are made on worker threads, which Ctrl-C does not reach (`_interrupt`).
        """
        return interruptibly(functools.partial(super().batch, *args, **kwargs))

    def astream(self, input: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Check the input, then stream as LangGraph does (`ainvoke` comes here)."""
        first = self._first_nodes()
        check_run_input(input, first)
        run = super().astream(with_run_options(input, first), *args, **kwargs)
        key = thread_key(self.checkpointer, _config(args, kwargs))
        return run if key is None else aheld(key, run)

    def bulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        """Apply edits as LangGraph does (`update_state` comes here).

        A new question put in as ``__start__`` starts its run with the call options it
        gives, as `stream`'s input does (`_as_runs`).
        """
        return super().bulk_update_state(config, _as_runs(supersteps))

    async def abulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        """`bulk_update_state` without blocking the event loop (`aupdate_state` comes here)."""
        return await super().abulk_update_state(config, _as_runs(supersteps))


_INPUT_EDITS = (START, "__input__")
"""The `as_node` of an edit that writes a run's input: ``__start__``, and LangGraph's
``__input__`` (a name private to it), which writes the values as the graph's input."""


def _as_runs(supersteps: Sequence[Sequence[StateUpdate]]) -> list[list[StateUpdate]]:
    """Check each input written by an edit, and give it the run options it leaves out as None.

    Such an edit is a thread's next question (the LangGraph server's
    ``threads.update_state``), which otherwise ran with the options of the turn before.
    LangGraph takes each update as a plain ``(values, as_node, task_id)`` tuple too.
    """
    return [[_as_run(StateUpdate(*update)) for update in step] for step in supersteps]


def _as_run(update: StateUpdate) -> StateUpdate:
    """`_as_runs` for one update; a ``__copy__`` holds the updates it applies as its values.

    An input edit is checked as `stream`'s input is: bad messages failed in LangChain's
    coercion, and a malformed tool failed every proposer call as if the provider had.
    """
    if update.as_node in _INPUT_EDITS:
        check_run_input(update.values)
        return update._replace(values=with_run_options(update.values))
    if update.as_node == "__copy__" and isinstance(update.values, list | tuple):
        copied = [
            _as_run(StateUpdate(*i)) if isinstance(i, list | tuple) else i for i in update.values
        ]
        return update._replace(values=copied)
    return update


def _config(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Return the run's config, given as `stream`'s second argument or by name."""
    return args[0] if args else kwargs.get("config")


def guard_input(graph: _G) -> _G:
    """Make a compiled graph check its input at every entrance (returns the same object).

    The class is swapped rather than the graph rebuilt, so that everything LangGraph set
    up while compiling (channels, nodes, the checkpointer) stays as it is.
    """
    graph.__class__ = MoAGraph  # type: ignore[assignment]
    return graph


_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
"""LangChain's message types by the role names of OpenAI's API, which every user knows."""


def validate_conversation(messages: Sequence[Any]) -> None:
    """Refuse input no model can answer, with one sentence naming the problem and the fix.

    Image, audio and file blocks pass: every proposer and the aggregator get the
    conversation as it is (the references between models are text), and a model that cannot
    take such content fails with its provider's error. The last message is the user's turn
    or, in an agent loop, the result of a tool the previous answer called; a user turn with
    no text and nothing else (``""``, spaces) is refused, as ``moa run ""`` is, since every
    model would be paid to answer nothing. This is the one place the rule lives: the graph,
    `MoAChatModel` and `moa serve` all call it. Roles are named as OpenAI's API names them
    (``assistant``, not LangChain's ``ai``), since HTTP clients read these messages too.
    """
    if not messages:
        raise MoAInputError(
            f"The conversation is empty: pass at least one user message, for example {_EXAMPLE}."
        )
    last = messages[-1]
    if not isinstance(last, HumanMessage | ToolMessage):
        kind = getattr(last, "type", type(last).__name__)
        role = _ROLES.get(kind, kind)
        raise MoAInputError(
            f"The last message must come from the user (or be a tool's result), but it is "
            f"{'an' if role[:1] in 'aeiou' else 'a'} {role!r} message: append the user's next "
            "turn before running MoA."
        )
    if isinstance(last, HumanMessage) and _says_nothing(last.content):
        raise MoAInputError(
            "The last user message is empty: give it the question to answer (text, or "
            "another content part such as an image)."
        )


def _says_nothing(content: Any) -> bool:
    """Tell whether message content holds no text and no other part (an image, a file)."""
    if isinstance(content, str):
        return not content.strip()
    if isinstance(content, list):
        for part in content:
            text: Any
            if isinstance(part, str):
                text = part
            elif isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
            else:
                return False  # an image, audio, a file: something to answer about
            if not isinstance(text, str) or text.strip():
                return False
        return True
    return False
