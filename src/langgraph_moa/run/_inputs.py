"""The graph's entrance: input that cannot be read as a conversation fails as `MoAInputError`.

LangGraph reads the input before any node runs, so a wrong shape (``5``, a bare string,
``{"messages": None}``, a message with integer content) would otherwise fail inside LangGraph
or pydantic with their own, multi-line errors. `MoAGraph` checks the input first, at every
entrance that goes through the graph's streams: ``invoke``, ``ainvoke``, ``stream``,
``astream``, ``batch``, LangGraph server and the graph used as a subgraph.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from langgraph_moa.errors import MoAInputError

_EXAMPLE = "{'messages': [('user', 'Explain X')]}"
_G = TypeVar("_G", bound=CompiledStateGraph[Any, Any, Any, Any])


def check_run_input(value: Any) -> None:
    """Refuse graph input that is not a conversation, with one sentence naming the fix.

    None (resume a checkpointed run) and a `Command` pass through untouched; a dict is
    checked only under ``messages``, the one key the graph reads.
    """
    if value is None or isinstance(value, Command):
        return
    if not isinstance(value, dict):
        raise MoAInputError(
            f"The graph input must be a dict holding the conversation, such as {_EXAMPLE}, "
            f"but it is {_kind(value)}."
        )
    if "messages" in value:
        check_messages(value["messages"])


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
    items = messages if isinstance(messages, list) else [messages]
    for position, item in enumerate(items, start=1):
        _check_content(position, _content_of(item))
    try:
        return convert_to_messages(items)
    except (ValueError, TypeError, NotImplementedError, KeyError):
        pass
    for position, item in enumerate(items, start=1):  # find the culprit to name it
        try:
            convert_to_messages([item])
        except (ValueError, TypeError, NotImplementedError, KeyError):
            raise MoAInputError(
                f"Message {position} cannot be read as a chat message ({_kind(item)}): give a "
                "(role, text) pair, a dict with 'role' and 'content', or a LangChain message."
            ) from None
    raise MoAInputError(f"'messages' cannot be read as a conversation; pass one like {_EXAMPLE}.")


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
        return
    raise MoAInputError(
        f"Message {position} has content of type {type(content).__name__}: content must be "
        "text (a string) or a list of text blocks."
    )


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


class MoAGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled MoA graph whose every run checks its input first (see the module)."""

    def stream(self, input: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Check the input, then stream as LangGraph does (`invoke` and `batch` come here)."""
        check_run_input(input)
        return super().stream(input, *args, **kwargs)

    def astream(self, input: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Check the input, then stream as LangGraph does (`ainvoke` comes here)."""
        check_run_input(input)
        return super().astream(input, *args, **kwargs)


def guard_input(graph: _G) -> _G:
    """Make a compiled graph check its input at every entrance (returns the same object).

    The class is swapped rather than the graph rebuilt, so that everything LangGraph set
    up while compiling (channels, nodes, the checkpointer) stays as it is.
    """
    graph.__class__ = MoAGraph  # type: ignore[assignment]
    return graph


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
