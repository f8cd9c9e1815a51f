r"""`moa chat`: a conversation that survives its failures, on a real line editor.

Input goes through the standard library's `readline` (arrow keys edit the line and walk the
history instead of arriving as escape codes). A turn that fails is reported in one line and
taken back, so the conversation so far is kept and the user can try again. An empty line is
a paragraph break, not the end: a line ending in ``\`` continues on the next, and a block
between two lines of three double quotes is one message. Commands: ``/exit``, ``/reset``,
``/save FILE``, ``/load FILE`` (what /save wrote) and ``/help``; any other line starting
with ``/`` is refused as an unknown command rather than sent, and ``//`` sends a message
that starts with ``/``.

Ctrl-C during a turn cancels that turn only (its question is not kept) and returns to the
prompt; Ctrl-C or Ctrl-D at the prompt ends the chat. So the turns run on an event loop,
where cancelling stops the calls in flight at once.

A chat that ends by /exit or the end of input says how it went in its exit code, as
`moa run` does, so a script piping turns in cannot take a degraded session for a clean one:
1 when a turn failed, else 3 when an answer was a fallback or had a layer passed over,
else 0; a closing line on stderr counts them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from rich.markup import escape

from langgraph_moa._private import write_private
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
from langgraph_moa.cli._live import arun_live
from langgraph_moa.cli._local import interrupted_line, prepare
from langgraph_moa.cli._output import message_of, out
from langgraph_moa.cli._run import (
    DEGRADED_EXIT,
    QuietOpt,
    conversation,
    is_degraded,
    report_degraded,
    set_context_size,
)
from langgraph_moa.errors import (
    OVERFLOW_FIXES,
    MoAError,
    outgrew_context,
    proposals_may_overflow,
)

HELP = (
    "commands: /exit (or Ctrl-D), /reset (forget the conversation), /save FILE (write it as "
    "JSON), /load FILE (go on from a saved one), /help; // sends a message that starts "
    'with /. Ctrl-C cancels a running turn. End a line with \\ to continue it; put """ alone '
    "on a line to start and end a multi-line message."
)
BLOCK = '"""'
T = TypeVar("T")


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
            try:
                return input(prompt)
            except UnicodeDecodeError as exc:  # outside UTF-8 mode: the line is read, kept so
                return exc.object.decode(exc.encoding, "surrogateescape")
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")  # end the prompt's line: what follows starts afresh
                sys.stdout.flush()
                raise
        line = _piped_line()
        if not line:
            raise EOFError
        return line.rstrip("\n").removesuffix("\r")  # a Windows file piped in off Windows

    def message(self) -> str:
        """Read one message: a line, continued lines, or a triple-quoted block.

        Raise UnicodeError when its bytes are not UTF-8, once the whole message is read (a
        block's later lines are not messages of their own). A terminal's input() keeps such
        bytes as lone surrogates, as piped lines do (`_piped_line`), which no provider can
        encode: every proposer failed with UnicodeEncodeError and the turn counted as failed.
        """
        text = self._read()
        text.encode("utf-8")  # raises UnicodeEncodeError on the surrogates of such bytes
        return text

    def _read(self) -> str:
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


def _piped_line() -> str:
    """Read one line of piped stdin, bytes its encoding cannot read kept as lone surrogates.

    The text stream decodes a whole buffer at once: one bad byte made it raise for every
    line in that buffer (up to 8 KB), so the messages around it were never read.
    """
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text-only stream (a test's, an embedding host's)
        return sys.stdin.readline()
    encoding = getattr(sys.stdin, "encoding", None) or "utf-8"
    return binary.readline().decode(encoding, "surrogateescape")


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
    # From here Ctrl-C is the chat's own: at the prompt it raises KeyboardInterrupt, which
    # ends the chat here (typer would turn it into a silent exit 130), during a turn it
    # cancels the turn (see `turn`). Off the main thread no handler can be set: Ctrl-C is
    # then the host's.
    on_main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, signal.default_int_handler) if on_main_thread else None
    try:
        with asyncio.Runner() as runner:
            outcome = converse(runner, graph, system, cfg.call_timeout_s)
    except KeyboardInterrupt:
        out.stop_live()
        out.err.print(interrupted_line())
        raise typer.Exit(130) from None
    finally:
        if on_main_thread:
            signal.signal(signal.SIGINT, handler)
    if code := outcome.exit_code():
        out.warn(outcome.line())
        raise typer.Exit(code)


@dataclass
class ChatOutcome:
    """How the chat's turns ended: what its exit code says (see the module's docstring)."""

    failed: int = 0
    degraded: int = 0
    """Answers the configured mixture did not write: a fallback's, or a layer passed over."""

    def exit_code(self) -> int:
        """Return 1 when a turn failed, else 3 when an answer was degraded, else 0."""
        return 1 if self.failed else DEGRADED_EXIT if self.degraded else 0

    def line(self) -> str:
        """Return the closing line that says why the exit code is not 0."""
        return (
            f"this chat had {self.failed} failed turn(s) and {self.degraded} degraded "
            f"answer(s) (a fallback, or a layer passed over), so it exits with "
            f"{self.exit_code()}."
        )


def converse(
    runner: asyncio.Runner, graph: Any, system: str | None, timeout_s: float | None
) -> ChatOutcome:
    """Read messages and commands until /exit or the end of input, each message a turn."""
    reader = LineReader()
    history: list[BaseMessage] = []
    outcome = ChatOutcome()
    while True:
        try:
            text = reader.message()
        except EOFError:
            break
        except UnicodeError:
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
        if command == "/load":
            history = load(argument.strip(), history)
            continue
        if command.startswith("//"):
            text = text.lstrip()[1:]  # '//' escapes a message that starts with '/'
        elif command.startswith("/"):
            out.error(
                f"unknown command {command}; type /help (start a message with // to send "
                "one that begins with /)"
            )
            continue
        history = turn(runner, graph, history, text, system, timeout_s, outcome)
    return outcome


class TurnCancelled(Exception):
    """Ctrl-C cancelled the running turn."""


def _cancellable(runner: asyncio.Runner, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on the runner's loop; Ctrl-C meanwhile cancels it and raises TurnCancelled.

    Where the loop cannot take the signal (not the main thread, or no signal support), the
    run is not cancellable and Ctrl-C acts as at the prompt.
    """
    interrupted = []

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)

        def cancel() -> None:
            interrupted.append(True)
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, cancel)
        except (NotImplementedError, RuntimeError, ValueError):
            return await work
        try:
            return await work
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)

    try:
        return runner.run(guarded())
    except asyncio.CancelledError:
        if interrupted:
            raise TurnCancelled from None
        raise


def turn(
    runner: asyncio.Runner,
    graph: Any,
    history: list[BaseMessage],
    text: str,
    system: str | None,
    timeout_s: float | None,
    outcome: ChatOutcome,
) -> list[BaseMessage]:
    """Run one turn; on failure or Ctrl-C say so and return the history as it was.

    A failed turn and a fallback answer are counted in `outcome`; a cancelled turn is the
    user's own doing and is not.
    """
    messages = [*history, HumanMessage(text)]
    run_input = {"messages": conversation(system, messages)}
    try:
        state = _cancellable(runner, arun_live(graph, run_input, timeout_s=timeout_s))
    except TurnCancelled:
        out.warn(
            "turn cancelled (Ctrl-C); its question was not added. Ctrl-C again at the "
            "prompt, or /exit, ends the chat."
        )
        return history
    except MoAError as exc:
        outcome.failed += 1
        text = message_of(exc)
        where = "\n" if "\n" in text else " "  # a list of failures: the note after it
        out.error(f"{text}{where}(this turn was not added; {_going_on(exc)})")
        return history
    except Exception as exc:  # an unforeseen failure must not end the session either
        outcome.failed += 1
        out.error(
            f"{type(exc).__name__}: {exc} (this turn was not added; the conversation goes on)"
        )
        return history
    answer = state["messages"][-1]
    out.answer(answer.text)
    report_degraded(answer)
    outcome.degraded += is_degraded(answer)
    return [*messages, answer]


def _going_on(exc: MoAError) -> str:
    """Say how the chat goes on after a failed turn.

    A conversation too long for a model's context fails every later turn the same way:
    the user is told how to keep it and start afresh, rather than to try again; and where
    the proposals may be what did not fit, the config's fixes too.
    """
    if not outgrew_context(exc):
        return "the conversation goes on"
    going_on = (
        "the conversation is now too long for a model's context: /save FILE keeps it, "
        "then /reset starts a new one, or /load the file with its oldest turns removed"
    )
    if proposals_may_overflow(exc):  # as `moa serve` says it (`serving._errors`)
        going_on += f"; or {OVERFLOW_FIXES}"
    return going_on


def save(history: list[BaseMessage], path: str) -> None:
    """Write the conversation as JSON (a list of {role, content})."""
    if not path:
        out.error("/save needs a file name, e.g. /save chat.json")
        return
    turns = [{"role": m.type, "content": m.text} for m in history]
    data = json.dumps(turns, indent=2, ensure_ascii=False).encode("utf-8")
    try:
        write_private(path, data)  # a conversation: its owner's alone
    except OSError as exc:
        out.error(f"cannot write {path!r}: {exc.strerror}")
        return
    out.info(f"[dim]saved {len(turns)} messages to {escape(path)}[/]")
    if len(data) > MAX_LOAD_BYTES:  # kept whole all the same: nothing of it is lost
        out.warn(
            f"{path!r} is over /load's limit of {MAX_LOAD_BYTES} bytes: remove its oldest "
            "turns before /load reads it back"
        )


_ROLES = {"human": HumanMessage, "ai": AIMessage}
"""The roles /save writes, and the messages /load makes of them."""

MAX_LOAD_BYTES = 10_000_000
"""The largest file /load reads (10 MB): ten times the request body `moa serve` takes, and
past any model's context. /load read a file whole, so a multi-gigabyte log (or /dev/zero)
named by mistake filled memory before anything was said."""


def load(path: str, history: list[BaseMessage]) -> list[BaseMessage]:
    """Return the conversation /save wrote to `path`; on any problem say so, keep `history`.

    A conversation too long for a model's context goes on from its file with the oldest
    turns removed, rather than from nothing after /reset.
    """
    if not path:
        out.error("/load needs a file name, e.g. /load chat.json")
        return history
    try:  # a byte order mark: the file edited in Windows Notepad, its oldest turns removed
        with Path(path).open("rb") as file:
            data = file.read(MAX_LOAD_BYTES + 1)
        if len(data) > MAX_LOAD_BYTES:
            out.error(
                f"cannot read {path!r}: it is over /load's limit of {MAX_LOAD_BYTES} bytes; "
                "the conversation is unchanged"
            )
            return history
        turns = json.loads(data.decode("utf-8-sig"))
        # A lone surrogate spelled "\udce9" (no file /save writes) is no text to send.
        json.dumps(turns, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: refused
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
        why = exc.strerror if isinstance(exc, OSError) else "it is not a JSON file /save wrote"
        out.error(f"cannot read {path!r}: {why}; the conversation is unchanged")
        return history
    valid = isinstance(turns, list) and all(
        isinstance(t, dict) and t.get("role") in _ROLES and isinstance(t.get("content"), str)
        for t in turns
    )
    if not valid:
        out.error(
            f"cannot read {path!r}: it is not a list of {{role, content}} with role human "
            "or ai, as /save writes; the conversation is unchanged"
        )
        return history
    out.info(f"[dim]loaded {len(turns)} messages from {escape(path)}[/]")
    return [_ROLES[t["role"]](t["content"]) for t in turns]
