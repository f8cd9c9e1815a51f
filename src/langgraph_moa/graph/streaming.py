"""A MoA run's answer as text pieces: the one adapter of the CLI, the server and the chat model.

```python
stream = AnswerStream(graph, {"messages": messages})
for piece in stream:                 # or: async for piece in stream
    print(piece, end="")
stream.answer                        # the final AIMessage: usage and provenance
```

The graph streams every model's tokens; only the final answer's are tagged (see
`final_answer_only`). A final step that does not write tokens (a ranker's or selector's pick,
a fallback answer) streams nothing, so the answer then arrives whole, as one last piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig

from langgraph_moa.graph._builder import final_answer_only

ProgressHandler = Callable[[dict[str, Any]], None]
"""Receives each progress event the graph writes (a call started, finished or failed)."""


class AnswerStream:
    """One run of a graph, iterated as the final answer's text pieces (sync or async).

    Iterate it once; afterwards `final` holds the last state and `answer` its last message.
    `streamed` tells whether the answer came token by token (the last piece was not the
    answer sent whole), which is what a consumer cutting at stop sequences needs to know.
    """

    def __init__(
        self,
        graph: Any,
        run_input: dict[str, Any],
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        on_progress: ProgressHandler | None = None,
    ) -> None:
        """Prepare a run of `graph` on `run_input`; nothing runs until iteration.

        Args:
            graph: A compiled MoA graph.
            run_input: The graph's input, e.g. ``{"messages": [...]}``.
            config: The run's config (callbacks, tags), passed to the graph unchanged.
            context: The run's context (a `MoAContext`, a dict or None).
            on_progress: Called with each progress event; progress events are only streamed
                when it is given.
        """
        self.graph = graph
        self.run_input = run_input
        self.config = config
        self.context = context
        self.on_progress = on_progress
        self.final: dict[str, Any] = {}
        self.streamed = False

    @property
    def answer(self) -> AIMessage:
        """The answer message of the final state (after iteration)."""
        answer: AIMessage = self.final["messages"][-1]
        return answer

    def _modes(self) -> list[str]:
        modes = ["messages", "values"]
        return [*modes, "custom"] if self.on_progress is not None else modes

    def _take(self, mode: str, part: Any) -> str:
        """Keep state and report progress; return the answer text in this part, if any."""
        if mode == "values":
            self.final = part
        elif mode == "custom":
            assert self.on_progress is not None
            self.on_progress(part)
        elif final_answer_only(part[1]) and (text := part[0].text):
            self.streamed = True
            return str(text)
        return ""

    def _rest(self) -> str:
        """Return the whole answer if nothing streamed (a pick, a fallback), else nothing."""
        if self.streamed or not self.final.get("messages"):
            return ""
        return str(self.answer.text)

    def __iter__(self) -> Iterator[str]:
        """Run the graph, yielding the answer's text pieces as they come."""
        hold = _ToolCallHold(bool(self.run_input.get("tools")))
        for mode, part in self.graph.stream(
            self.run_input, self.config, context=self.context, stream_mode=self._modes()
        ):
            if text := hold.take(self._take(mode, part)):
                yield text
        if rest := hold.finish(self.answer if self.final.get("messages") else None):
            yield rest
        if rest := self._rest():
            yield rest

    async def __aiter__(self) -> AsyncIterator[str]:
        """Run the graph asynchronously, yielding the answer's text pieces as they come."""
        hold = _ToolCallHold(bool(self.run_input.get("tools")))
        async for mode, part in self.graph.astream(
            self.run_input, self.config, context=self.context, stream_mode=self._modes()
        ):
            if text := hold.take(self._take(mode, part)):
                yield text
        if rest := hold.finish(self.answer if self.final.get("messages") else None):
            yield rest
        if rest := self._rest():
            yield rest


_CALL_STARTS = ("{", "[", "```", "<tool_call>", "Tool call:")


class _ToolCallHold:
    """With tools bound, holds back answer text that may yet turn out to be a tool call.

    A small model may write its tool call as JSON text, which the graph then reads as a
    real call (`read_text_tool_calls`); streamed as it came, the client would get the call
    twice, as text and as a call. Text that starts like a call (``{``, ``[``, a code fence,
    ``<tool_call>``) is held until the answer is known: dropped if it became a tool call,
    sent otherwise. Any other text passes at once.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.pending = ""
        self.released = not active

    def take(self, text: str) -> str:
        """Return what of `text` can go out now."""
        if self.released or not text:
            return text
        self.pending += text
        head = self.pending.lstrip()
        if not head:
            return ""
        if any(head.startswith(s) or s.startswith(head) for s in _CALL_STARTS):
            return ""
        self.released = True
        out, self.pending = self.pending, ""
        return out

    def finish(self, answer: AIMessage | None) -> str:
        """Return the held text; if the answer read tool calls out of it, the text left."""
        out, self.pending = self.pending, ""
        if out and answer is not None and answer.tool_calls:
            return str(answer.text)
        return out
