"""`moa run`: answer one question, the answer alone on stdout, its story on stderr.

The header states the config in full (models, variant, limits) so nothing is hidden; a
degraded answer (an aggregator fallback, a layer passed over, failed calls) is said on stderr
in words. A fallback, whose text is no synthesis but a proposal, and an answer with a layer
passed over (fewer layers than configured) also end with exit code 3, so a script cannot take
them for a clean answer; `--strict` adds failed calls to that.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
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
from langgraph_moa.cli._live import picked, run_live
from langgraph_moa.cli._local import prepare
from langgraph_moa.cli._output import out
from langgraph_moa.cli._usage import OptionConflictError
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.errors import MoAInputError
from langgraph_moa.run._accounting import is_cut_off_reason
from langgraph_moa.run._answer import is_degraded as degraded

DEGRADED_EXIT = 3
"""Exit code of a fallback answer, and with `--strict` of any degraded one (failed calls)."""

QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Only the answer (and warnings, errors) on stderr."),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help=f"Exit with code {DEGRADED_EXIT} when any call failed, as a fallback answer "
        "always does.",
    ),
]


READING_THE_TERMINAL = "type the question, then Ctrl-D at the start of a line to send it"
"""Said (even with --quiet) when ``moa run -`` reads its question from a terminal."""


def read_question(question: str | None, file: Path | None) -> str:
    """Return the question from the argument, stdin (``-``) or a file, as text."""
    if question is not None and file is not None:
        raise OptionConflictError(
            "Give the question either as an argument or with --file, not both."
        )
    if file is not None:
        if file.is_dir():
            raise MoAInputError(
                f"Question file {str(file)!r} is a directory: give the path of a text file."
            )
        if not file.is_file():
            raise MoAInputError(f"Question file {str(file)!r} does not exist: check the path.")
        data, where = file.read_bytes(), f"question file {str(file)!r}"
    elif question == "-":
        if sys.stdin.isatty():  # a user at the terminal, who sees nothing happen otherwise
            out.err.print(READING_THE_TERMINAL, style="dim", markup=False, highlight=False)
        data, where = sys.stdin.buffer.read(), "standard input"
    elif question is None:
        raise MoAInputError(
            'Give the question: moa run "Why is the sky blue?", moa run - (read from '
            "standard input) or moa run --file question.txt."
        )
    else:
        data, where = question.encode("utf-8", "surrogateescape"), "the question"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MoAInputError(
            f"The input from {where} is not UTF-8 text (byte {exc.start}): convert it, e.g. "
            "with iconv -t UTF-8."
        ) from None
    # Saved on Windows: its lines reach the models as others', without Notepad's byte order mark.
    text = text.replace("\r\n", "\n").removeprefix("\ufeff")
    if not text.strip():
        raise MoAInputError(
            'The question is empty: pass the text to answer, e.g. moa run "Why is the sky blue?".'
        )
    return text


def set_context_size(tokens: int | None) -> None:
    """Apply --context-size to the local servers this process starts."""
    if tokens is not None:
        os.environ["LANGGRAPH_MOA_CONTEXT"] = str(tokens)


def run(
    question: Annotated[
        str | None,
        typer.Argument(help="The question to answer; '-' reads it from standard input."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the question from this file.")
    ] = None,
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
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Live view of every call on stderr.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
    quiet: QuietOpt = False,
    strict: StrictOpt = False,
) -> None:
    """Answer one question with a Mixture-of-Agents (local models by default)."""
    out.quiet = quiet
    text = read_question(question, file)
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

    graph: Any = create_moa_graph(cfg)
    prepare(local_models(cfg))
    messages = conversation(system, [HumanMessage(text)])
    started = time.perf_counter()
    if stream and not as_json:
        state = run_live(graph, {"messages": messages}, timeout_s=cfg.call_timeout_s)
    else:
        state = graph.invoke({"messages": messages})
    seconds = time.perf_counter() - started
    answer: AIMessage = state["messages"][-1]
    if as_json:
        out.data(json.dumps(record(cfg, state, seconds), indent=2, default=str))
    else:
        out.answer(answer.text)
        if not stream and (line := selection_line(answer)):
            out.info(f"[dim]{escape(line)}[/]")
    degraded = report_degraded(answer)
    out.info(f"[dim]{summary_line(state)}; wall {seconds:.1f}s[/]")
    if is_degraded(answer) or (strict and degraded):
        sys.exit(DEGRADED_EXIT)


def conversation(system: str | None, messages: list[BaseMessage]) -> list[BaseMessage]:
    """Put the --system prompt, if any, before the messages."""
    return [SystemMessage(system), *messages] if system else list(messages)


def is_degraded(answer: AIMessage) -> bool:
    """Tell whether the configured mixture did not write this answer (exit code 3).

    A fallback answered instead of the configured final step, or a layer whose every
    proposal failed was passed over (``failed_layers``): either way the answer is not the one
    the configuration describes, with or without `--strict`.
    """
    return degraded(answer.response_metadata.get("moa", {}))


def report_degraded(answer: AIMessage) -> bool:
    """Warn on stderr about a fallback answer, a layer passed over and failed calls.

    Tells whether there were any.

    An answer its max_tokens cut off is said too (it may stop mid-sentence), but is not
    counted as degraded: `--strict` is about failures, and the limit is the user's own.
    """
    meta = answer.response_metadata.get("moa", {})
    failed = [c for c in meta.get("calls", []) if c.get("status") == "failed"]
    if meta.get("fallback"):
        out.warn(
            f"this answer is a fallback ({meta['fallback']}), not the configured final step: "
            f"{meta.get('fallback_reason', 'no reason recorded')}; it is the text of "
            f"{meta.get('answered_by')}."
        )
    reason = str(answer.response_metadata.get("finish_reason") or "").lower()
    if is_cut_off_reason(reason):  # said, not degraded: the limit was the user's to set
        out.warn(
            f"the answer was cut off at its max_tokens (finish_reason {reason}) and may end "
            "mid-sentence: give it more room with --max-tokens (or the aggregator's max_tokens "
            "in the config)."
        )
    for skipped in meta.get("failed_layers", []):
        out.warn(passed_over_words(meta, skipped))
    if meta.get("incomplete_call"):
        out.warn(
            f"the answer's tool call is incomplete: it {meta['incomplete_call']}, and no "
            "answer with a whole call was there to take its place."
        )
    if failed:
        calls = len(meta.get("calls", []))
        first = failed[0]
        out.warn(
            f"{len(failed)} of {calls} calls failed; the first, {first['configured_model']} "
            f"(layer {first['layer']}, {first['role']}): {first.get('error')}"
        )
    return is_degraded(answer) or bool(failed)


def passed_over_words(meta: dict[str, Any], skipped: dict[str, int]) -> str:
    """Say what a layer passed over meant for the answer, in the variant's own terms.

    Self-MoA-Seq's steps are windows of samples, whose next step reads the running synthesis
    and its own samples, not an earlier window's: said as the layers' words, it was untrue.
    """
    if meta.get("variant") == "self-moa-seq":
        return (
            f"every sample of window {skipped['layer']} failed; the running synthesis went on "
            "without them, so this answer aggregated fewer samples than configured."
        )
    return (
        f"every proposal of layer {skipped['layer']} failed; what came after it read the "
        f"proposals of layer {skipped['references_from']} instead, so this answer had "
        "fewer layers than configured."
    )


def selection_line(answer: AIMessage) -> str | None:
    """Why a selection run answered as it did: the vote in words, for the reader to judge."""
    chosen = answer.response_metadata.get("moa", {}).get("selection")
    return picked(chosen) if chosen else None


def summary_line(state: dict[str, Any]) -> str:
    """Sum up the calls, failures, tokens and the critical path of a run, in one line.

    Tokens of calls whose providers reported no usage are estimates, and the line says how
    many: read as exact, a budget or bill set by them runs over.
    """
    total = state["usage"]["total"]
    wall = sum(layer["latency_s"] for layer in state["usage"]["layers"])
    estimated = total.get("estimated_calls")
    return (
        f"{total['calls']} calls ({total['failed']} failed), {total['prompt_tokens']} prompt + "
        f"{total['completion_tokens']} completion tokens"
        + (f" ({estimated} calls estimated: no usage reported)" if estimated else "")
        + f", critical path {wall:.1f}s"
    )


def record(config: MoAConfig, state: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Build the full JSON record of a run."""
    answer: AIMessage = state["messages"][-1]
    meta = answer.response_metadata["moa"]
    return {
        "answer": answer.text,
        "system": {"name": config.name, "variant": config.variant, "layers": config.layers},
        "answered_by": meta["answered_by"],
        **{
            k: meta[k]
            for k in ("selection", "fallback", "fallback_reason", "failed_layers")
            if k in meta
        },
        "proposals": [c for c in state["calls"] if c["role"] == "proposer"],
        "calls": state["calls"],
        "usage": state["usage"],
        "wall_time_s": round(seconds, 3),
    }
