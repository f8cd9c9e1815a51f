r"""`moa chat`: a conversation that survives its failures, on a real line editor.

Input goes through the standard library's `readline` (arrow keys edit the line and walk the
history instead of arriving as escape codes). A turn that fails is reported in one line and
taken back, so the conversation so far is kept and the user can try again. An empty line is
a paragraph break, not the end: a line ending in ``\`` continues on the next, and a block
between two lines of three double quotes is one message. Commands: ``/exit``, ``/reset``,
``/save FILE`` and ``/help``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from rich.markup import escape

from langgraph_moa.cli._config import (
    AggregatorOpt,
    ConfigOpt,
    ContextSizeOpt,
    LayersOpt,
    MaxTokensOpt,
    MethodOpt,
    PresetOpt,
    ProposersOpt,
    SamplesOpt,
    SystemOpt,
    TemperatureOpt,
    TimeoutOpt,
    VariantOpt,
    build_config,
    describe,
    local_models,
)
from langgraph_moa.cli._live import run_live
from langgraph_moa.cli._local import prepare
from langgraph_moa.cli._output import message_of, out
from langgraph_moa.cli._run import QuietOpt, conversation, report_degraded, set_context_size
from langgraph_moa.errors import MoAError

HELP = (
    "commands: /exit (or Ctrl-D), /reset (forget the conversation), /save FILE (write it as "
    'JSON), /help. End a line with \\ to continue it; put """ alone on a line to start and '
    "end a multi-line message."
)
BLOCK = '"""'


class LineReader:
    """Read messages from a terminal through readline, or from piped input without prompts."""

    def __init__(self) -> None:
        """Turn on readline's editing and history when stdin is a terminal."""
        self.interactive = sys.stdin.isatty()
        if self.interactive:
            try:
                import readline  # noqa: F401  (imported for its effect on input())
            except ImportError:  # some platforms lack it; input() still works
                pass

    def _line(self, prompt: str) -> str:
        if self.interactive:
            return input(prompt)
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def message(self) -> str:
        """Read one message: a line, continued lines, or a triple-quoted block."""
        first = self._line("you> ")
        if first.strip() == BLOCK:
            lines: list[str] = []
            while (line := self._line("...> ")).strip() != BLOCK:
                lines.append(line)
            return "\n".join(lines)
        lines = [first]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(self._line("...> "))
        return "\n".join(lines)


def chat(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    layers: LayersOpt = None,
    proposers: ProposersOpt = None,
    aggregator: AggregatorOpt = None,
    variant: VariantOpt = None,
    samples: SamplesOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    method: MethodOpt = None,
    system: SystemOpt = None,
    timeout: TimeoutOpt = None,
    context_size: ContextSizeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Hold a multi-turn conversation; every turn is a full MoA run. /exit or Ctrl-D ends."""
    out.quiet = quiet
    set_context_size(context_size)
    cfg = build_config(
        preset,
        config,
        layers,
        proposers,
        aggregator,
        variant,
        samples,
        max_tokens=max_tokens,
        temperature=temperature,
        timeout=timeout,
        method=method,
    )
    out.info(f"[cyan]{escape(describe(cfg))}[/]")
    from langgraph_moa.graph._builder import create_moa_graph

    graph = create_moa_graph(cfg)
    prepare(local_models(cfg))
    out.info(f"[dim]{escape(HELP)}[/]")
    reader = LineReader()
    history: list[BaseMessage] = []
    while True:
        try:
            text = reader.message()
        except EOFError:
            break
        except UnicodeDecodeError:
            out.error("that message is not UTF-8 text: set the terminal to UTF-8 and retype it")
            continue
        if not text.strip():
            continue
        command, _, argument = text.strip().partition(" ")
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            history = []
            out.info("[dim]conversation reset[/]")
            continue
        if command == "/help":
            out.plain(HELP)
            continue
        if command == "/save":
            save(history, argument.strip())
            continue
        history = turn(graph, history, text, system, cfg.call_timeout_s)


def turn(
    graph: Any, history: list[BaseMessage], text: str, system: str | None, timeout_s: float | None
) -> list[BaseMessage]:
    """Run one turn; on failure say why and return the history as it was."""
    messages = [*history, HumanMessage(text)]
    try:
        state = run_live(graph, {"messages": conversation(system, messages)}, timeout_s=timeout_s)
    except MoAError as exc:
        text = message_of(exc)
        where = "\n" if "\n" in text else " "  # a list of failures: the note after it
        out.error(f"{text}{where}(this turn was not added; the conversation goes on)")
        return history
    except Exception as exc:  # an unforeseen failure must not end the session either
        out.error(
            f"{type(exc).__name__}: {exc} (this turn was not added; the conversation goes on)"
        )
        return history
    answer = state["messages"][-1]
    out.answer(answer.text)
    report_degraded(answer)
    return [*messages, answer]


def save(history: list[BaseMessage], path: str) -> None:
    """Write the conversation as JSON (a list of {role, content})."""
    if not path:
        out.error("/save needs a file name, e.g. /save chat.json")
        return
    turns = [{"role": m.type, "content": m.text} for m in history]
    try:
        Path(path).write_text(json.dumps(turns, indent=2, ensure_ascii=False), encoding="utf-8")
    except OSError as exc:
        out.error(f"cannot write {path!r}: {exc.strerror}")
        return
    out.info(f"[dim]saved {len(turns)} messages to {escape(path)}[/]")
