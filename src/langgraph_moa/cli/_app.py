"""The `moa` command: run, chat and list models, with a live view of every layer.

Errors a user can cause (bad config, missing model, missing key, dead server, Ctrl-C) end
with one clear line and a non-zero exit code, never a stack trace.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._schema import MoAConfig, list_presets
from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._models import PROVIDER_API_KEY_ENV
from langgraph_moa.run.context import MoAContext, apply_context
from langgraph_moa.serving._app import MAX_BODY_BYTES

DEFAULT_PRESET = "local-confidence"
"""Chosen by measurement (README, "What it found on the local models"): the most accurate
local system on the 256 shipped items, above the best packaged model alone with an interval
above zero, at under 3 times its answer time; its weighted vote says how sure the answer is."""
LAYERED_PRESET = "local-moa"
"""The base when --proposers, --aggregator, --layers or --variant are given without a preset."""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mixture-of-Agents on LangGraph: several models answer, an aggregator synthesizes.",
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error stays on one line, however long


# --- configuration ---------------------------------------------------------------------------

PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help=f"Preset name (default {DEFAULT_PRESET}; {LAYERED_PRESET} when --proposers, "
        "--aggregator, --layers or --variant describe a layered MoA).",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or JSON config file.")]
LayersOpt = Annotated[int | None, typer.Option(help="MoA layers (proposer layers + 1).")]
ProposersOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated proposer specs, e.g. 'openai:gpt-4o-mini,local:qwen2.5-coder-1.5b'."
    ),
]
AggregatorOpt = Annotated[str | None, typer.Option(help="Aggregator model spec.")]
VariantOpt = Annotated[
    str | None, typer.Option(help="moa, single-proposer, self-moa, self-moa-seq or ranker.")
]
SamplesOpt = Annotated[int | None, typer.Option(help="Samples per proposer per layer.")]


def build_config(
    preset: str | None,
    config_file: Path | None,
    layers: int | None = None,
    proposers: str | None = None,
    aggregator: str | None = None,
    variant: str | None = None,
    samples: int | None = None,
) -> MoAConfig:
    """Combine a preset or file with the command-line overrides, validated."""
    if preset and config_file:
        raise MoAError("Give either --preset or --config, not both.")
    # Without a preset, overrides that describe a layered MoA (its proposers, aggregator,
    # layers or variant) start from the layered local MoA, not from the selection default.
    shaped = any(v is not None for v in (layers, proposers, aggregator, variant))
    base = (
        MoAConfig.from_file(config_file)
        if config_file
        else MoAConfig.from_preset(preset or (LAYERED_PRESET if shaped else DEFAULT_PRESET))
    )
    context = MoAContext(
        layers=layers,
        proposers=[p.strip() for p in proposers.split(",") if p.strip()] if proposers else None,
        aggregator=aggregator,
        variant=variant,
        samples=samples,
    )
    return apply_context(base, context)


# --- live progress ---------------------------------------------------------------------------


@dataclass
class _Row:
    label: str
    state: str = "running"
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None
    detail: str = ""


class Progress:
    """A table of every call (layer, role, model, state, time) above the streaming answer."""

    _STYLE: ClassVar[dict[str, str]] = {"running": "yellow", "done": "green", "failed": "red"}

    def __init__(self) -> None:
        """Start with no rows and an empty answer."""
        self.rows: dict[tuple[Any, ...], _Row] = {}
        self.answer = ""
        self.notes: list[str] = []

    def event(self, e: dict[str, Any]) -> None:
        """Apply one custom stream event from the graph."""
        if "role" not in e:  # a run-level event, not one call's: the pick, a spent budget
            if e["event"] == "selected":
                self.notes.append(_picked(e))
            elif e["event"] == "budget_spent":
                self.notes.append(f"token budget spent: {e['used']} of {e['limit']}")
            return
        key = (e["role"], e["layer"], e["proposer"], e["sample"])
        if e["event"] == "started":
            who = "aggregator" if e["proposer"] < 0 else f"proposer {e['proposer'] + 1}"
            sample = f" #{e['sample'] + 1}" if e["sample"] else ""
            self.rows[key] = _Row(f"L{e['layer']} {who}{sample} · {e['configured_model']}")
            return
        row = self.rows.setdefault(key, _Row(str(e.get("configured_model"))))
        row.seconds = e.get("latency_s") or (time.perf_counter() - row.started)
        if e["event"] == "finished":
            row.state = "done"
            if e.get("model") and e["model"] not in row.label:
                row.detail = f"answered by {e['model']}"
        else:
            row.state = "failed"
            row.detail = str(e.get("error", ""))[:80]

    def __rich__(self) -> Group:
        """Render the table and the answer so far."""
        table = Table(box=None, show_header=False, pad_edge=False)
        for row in self.rows.values():
            seconds = row.seconds if row.seconds is not None else time.perf_counter() - row.started
            table.add_row(
                Text(row.label),
                Text(row.state, style=self._STYLE[row.state]),
                Text(f"{seconds:5.1f}s", style="dim"),
                Text(row.detail, style="dim"),
            )
        parts: list[Any] = [table, *(Text(note, style="dim") for note in self.notes)]
        if self.answer:
            parts += [Text(""), Text(self.answer)]
        return Group(*parts)


def _run_streaming(graph: Any, messages: list[BaseMessage], show_live: bool) -> dict[str, Any]:
    """Run the graph, updating the live view; return the final state."""
    progress = Progress()
    with Live(
        progress, console=console, refresh_per_second=8, transient=False, auto_refresh=show_live
    ) as live:

        def on_progress(event: dict[str, Any]) -> None:
            progress.event(event)
            if show_live:
                live.update(progress)

        stream = AnswerStream(graph, {"messages": messages}, on_progress=on_progress)
        for text in stream:
            progress.answer += text
            if show_live:
                live.update(progress)
        live.update(progress)
    return stream.final


def _summary_line(state: dict[str, Any]) -> str:
    total = state["usage"]["total"]
    wall = sum(layer["latency_s"] for layer in state["usage"]["layers"])
    return (
        f"{total['calls']} calls ({total['failed']} failed), {total['prompt_tokens']} prompt + "
        f"{total['completion_tokens']} completion tokens, critical path {wall:.1f}s"
    )


def _record(config: MoAConfig, state: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Build the full JSON record of a run."""
    answer: AIMessage = state["messages"][-1]
    return {
        "answer": answer.text,
        "system": {"name": config.name, "variant": config.variant, "layers": config.layers},
        "answered_by": answer.response_metadata["moa"]["answered_by"],
        **(
            {"selection": answer.response_metadata["moa"]["selection"]}
            if "selection" in answer.response_metadata["moa"]
            else {}
        ),
        "proposals": [c for c in state["calls"] if c["role"] == "proposer"],
        "calls": state["calls"],
        "usage": state["usage"],
        "wall_time_s": round(seconds, 3),
    }


# --- commands --------------------------------------------------------------------------------


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    layers: LayersOpt = None,
    proposers: ProposersOpt = None,
    aggregator: AggregatorOpt = None,
    variant: VariantOpt = None,
    samples: SamplesOpt = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Live view and token streaming.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Answer one question with a Mixture-of-Agents (local models by default)."""
    if not question.strip():
        raise MoAError(
            'The question is empty: pass the text to answer, e.g. moa run "Why is the sky blue?".'
        )
    cfg = build_config(preset, config, layers, proposers, aggregator, variant, samples)
    graph: Any = create_moa_graph(cfg)
    started = time.perf_counter()
    messages: list[BaseMessage] = [HumanMessage(question)]
    if as_json:
        state = graph.invoke({"messages": messages})
        print(json.dumps(_record(cfg, state, time.perf_counter() - started), indent=2, default=str))  # noqa: T201
        return
    if not stream:
        state = graph.invoke({"messages": messages})
        console.print(state["messages"][-1].text)
        if picked := _selection_line(state):
            console.print(f"[dim]{picked}[/]")
    else:
        console.print(f"[bold]{cfg.name or cfg.variant}[/] · {_shape(cfg)}", style="cyan")
        state = _run_streaming(graph, messages, show_live=console.is_terminal)
    console.print(f"\n[dim]{_summary_line(state)}; wall {time.perf_counter() - started:.1f}s[/]")


def _shape(cfg: MoAConfig) -> str:
    """Say in a few words what the run will do."""
    if cfg.variant == "select" and cfg.selection is not None:
        answers = sum(p.samples for p in cfg.proposers)
        return f"select: {cfg.selection.method} over {answers} answers"
    return f"{cfg.variant}, {cfg.layers} layers"


def _selection_line(state: dict[str, Any]) -> str | None:
    """Why a selection run answered as it did: the vote in words, for the reader to judge."""
    chosen = state["messages"][-1].response_metadata.get("moa", {}).get("selection")
    return _picked(chosen) if chosen else None


def _picked(selection: dict[str, Any]) -> str:
    """Put a selection's provenance (or its progress event, which carries the same) in words."""
    line = f"picked by {selection['method']}: {selection['reason']}"
    return f"{line} ({selection['note']})" if selection.get("note") else line


@app.command()
def chat(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    layers: LayersOpt = None,
    proposers: ProposersOpt = None,
    aggregator: AggregatorOpt = None,
    variant: VariantOpt = None,
    samples: SamplesOpt = None,
) -> None:
    """Hold a multi-turn conversation; every turn is a full MoA run. Empty line or Ctrl-D ends."""
    cfg = build_config(preset, config, layers, proposers, aggregator, variant, samples)
    graph = create_moa_graph(cfg)
    history: list[BaseMessage] = []
    console.print(
        f"[cyan]{cfg.name or cfg.variant}[/]: type a message; an empty line ends the chat."
    )
    while True:
        try:
            text = console.input("[bold green]you> [/]")
        except EOFError:
            break
        if not text.strip():
            break
        history.append(HumanMessage(text))
        state = _run_streaming(graph, history, show_live=console.is_terminal)
        history = list(state["messages"])
        console.print()


@app.command()
def models() -> None:
    """List the installed local models and which remote providers have an API key set."""
    from langgraph_moa.local.catalog import CATALOG

    table = Table(title="Local models (llama.cpp, offline)")
    for column in ("spec", "model", "family", "size", "installed"):
        table.add_column(column)
    for info in CATALOG.values():
        installed = "[green]yes[/]" if info.installed() else f"[red]no[/] ({info.install_hint})"
        table.add_row(
            f"local:{info.name}", info.title, info.family, f"{info.size / 1e6:.0f} MB", installed
        )
    console.print(table)
    remote = Table(title="Remote providers")
    remote.add_column("prefix")
    remote.add_column("key")
    for provider, env in sorted(PROVIDER_API_KEY_ENV.items()):
        remote.add_row(
            f"{provider}:",
            f"[green]{env} set[/]" if os.environ.get(env) else f"[dim]{env} not set[/]",
        )
    console.print(remote)
    console.print(f"Presets: {', '.join(list_presets())}")


@app.command(name="eval")
def evaluate(
    system: Annotated[
        list[str],
        typer.Option(
            "--system", "-s", help="Preset, config file, or 'single:<model spec>' (repeatable)."
        ),
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="JSONL (GSM8K's published format too), MT-Bench or AlpacaEval file, or a "
            "packaged set: 'verifiable' (the default) or 'gsm8k' (300 GSM8K test items)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder: results, summary, report, call cache.")
    ] = Path("moa-eval"),
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    concurrency: Annotated[int, typer.Option(help="Items answered at the same time.")] = 1,
    judge: Annotated[str | None, typer.Option(help="Judge model for pairwise win rates.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="System the others are compared with: accuracy difference with a 95% "
            "interval, and pairwise win rates with --judge."
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON price table: model -> {prompt, completion} $ per 1M tokens."),
    ] = None,
    langsmith_dataset: Annotated[
        str | None,
        typer.Option(help="Read the items from this LangSmith dataset (needs LANGSMITH_API_KEY)."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw the PNG plots (needs the eval extra).")] = True,
    judge_layers: Annotated[
        bool,
        typer.Option(help="Judge every proposal of unverifiable items (per-layer analysis)."),
    ] = False,
    calibration_out: Annotated[
        Path | None,
        typer.Option(
            help="Write each 'single:' model's accuracy to this JSON file, for SLM-MUX "
            "selection (selection.calibration_file)."
        ),
    ] = None,
) -> None:
    """Compare systems (single models, MoA, Self-MoA...) on a dataset; reruns hit the cache."""
    import asyncio

    from langgraph_moa.eval.datasets import load_dataset, shipped_dataset
    from langgraph_moa.eval.runner import Evaluation

    if langsmith_dataset is not None and dataset is not None:
        raise MoAConfigError("Give either --dataset or --langsmith-dataset, not both.")
    if langsmith_dataset is not None:
        from langgraph_moa.eval.langsmith_eval import load_langsmith_dataset

        items = load_langsmith_dataset(langsmith_dataset, limit=limit)
    else:
        items = load_dataset(dataset or shipped_dataset())[:limit]
    evaluation = Evaluation(
        system,
        items,
        out,
        concurrency=concurrency,
        judge=judge,
        baseline=baseline,
        prices=prices,
        plots=plots,
        judge_layers=judge_layers,
    )
    summary = asyncio.run(evaluation.run(progress=console.is_terminal))
    console.print((out / "report.md").read_text(), markup=False, highlight=False)
    if calibration_out is not None:
        from langgraph_moa.eval.runner import calibration

        calibration_out.write_text(json.dumps(calibration(summary), indent=2), encoding="utf-8")
        console.print(f"[dim]calibration: {calibration_out}[/]")
    console.print(f"[dim]results: {out}/results, {out}/summary.json; call cache: {out}/calls.db[/]")


def _limit_option(field: str, flag: str, help_text: str) -> Any:
    """Make a ``moa serve`` limit flag with the default and lower bound of `RequestLimits`."""
    info = RequestLimits.model_fields[field]
    lowest = next(m.ge for m in info.metadata if hasattr(m, "ge"))
    return typer.Option(flag, min=lowest, help=f"{help_text} (default {info.default}).")


@app.command()
def serve(
    preset: Annotated[
        list[str] | None,
        typer.Option("--preset", "-p", help="Preset to serve as a model (repeatable)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback by default.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MOA_API_KEY", help="Require 'Authorization: Bearer <key>'."),
    ] = None,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-model",
            help="A model spec clients may name in 'proposers' or 'aggregator', besides the "
            "served presets' own models (repeatable).",
        ),
    ] = None,
    allow_client_endpoints: Annotated[
        bool,
        typer.Option(
            "--allow-client-endpoints",
            help="Let clients name OpenAI-compatible endpoints of their own "
            "('model@http://...' or {base_url, model}); the server then calls hosts they "
            "choose, so enable it only for trusted clients.",
        ),
    ] = False,
    max_proposers: Annotated[
        int | None, _limit_option("max_proposers", "--max-proposers", "Proposers per request")
    ] = None,
    max_samples: Annotated[
        int | None,
        _limit_option("max_samples", "--max-samples", "Samples per proposer per request"),
    ] = None,
    max_layers: Annotated[
        int | None, _limit_option("max_layers", "--max-layers", "Layers per request")
    ] = None,
    max_calls: Annotated[
        int | None, _limit_option("max_calls", "--max-calls", "Model calls per request")
    ] = None,
    max_messages: Annotated[
        int | None, _limit_option("max_messages", "--max-messages", "Messages per request")
    ] = None,
    max_chars: Annotated[
        int | None,
        _limit_option("max_chars", "--max-chars", "Characters of text per request"),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body read, in bytes.")
    ] = MAX_BODY_BYTES,
) -> None:
    """Serve presets as models behind an OpenAI-compatible API (/v1/chat/completions).

    A served preset always runs as configured; the --max-* limits bound what a client's
    overrides may ask for on top of it.
    """
    from langgraph_moa.serving._app import serve as run_server

    given = {
        "max_proposers": max_proposers,
        "max_samples": max_samples,
        "max_layers": max_layers,
        "max_calls": max_calls,
        "max_messages": max_messages,
        "max_chars": max_chars,
    }
    limits = RequestLimits(**{k: v for k, v in given.items() if v is not None})
    presets = preset or [DEFAULT_PRESET, "local-moa", "local-self-moa"]
    if api_key is None and not _is_loopback(host):
        errors.print(
            f"[bold yellow]warning:[/] serving on {host} without an API key: anyone who can "
            "reach this port can run models at your expense; set --api-key or MOA_API_KEY."
        )
    console.print(f"[cyan]Serving {', '.join(presets)} on http://{host}:{port}/v1[/]")
    run_server(
        presets,
        host=host,
        port=port,
        api_key=api_key,
        allow_models=allow_model or (),
        allow_client_endpoints=allow_client_endpoints,
        limits=limits,
        max_body_bytes=max_body_bytes,
    )


def _is_loopback(host: str) -> bool:
    """Tell whether `host` is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _on_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: stop at once, servers included, whatever thread is busy.

    A plain KeyboardInterrupt only reaches the main thread, which is waiting on LangGraph's
    worker threads and may not see it until the run is over; the user expects an immediate
    stop, so the handler cleans up and exits itself.
    """
    errors.print("[yellow]Interrupted.[/] Stopping local model servers.")
    from langgraph_moa.local.runtime import LocalRuntime

    if LocalRuntime._default is not None:
        LocalRuntime._default.kill_now()
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    """Entry point: run the app, turning known failures into one clear line."""
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        app(standalone_mode=False)
    except MoAError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        # click turns Ctrl-C into Abort; atexit then stops the local servers.
        errors.print("[yellow]Interrupted.[/] Local model servers are being stopped.")
        sys.exit(130)
    except Exception as exc:  # usage errors and anything unforeseen
        # Usage errors (unknown option, missing argument) know how to show themselves;
        # typer may carry its own copy of click, so recognize them by behaviour.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        errors.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(str(exc))}")
        sys.exit(1)
