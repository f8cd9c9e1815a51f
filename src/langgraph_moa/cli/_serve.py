"""`moa serve`: the served presets or config files behind an OpenAI-compatible API.

Nothing is announced before it can work: the presets are loaded, their keys and local models
checked and the port probed first (`serving._server.serve`), so "Serving" is only printed by a
server that will answer; then one line per request and per failure goes to stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from langgraph_moa.cli._config import (
    SERVED_BY_DEFAULT,
    ContextSizeOpt,
    HistoryRunsOpt,
    local_models,
)
from langgraph_moa.cli._langsmith import warn_if_tracing
from langgraph_moa.cli._local import local_starts_shown, prepare
from langgraph_moa.cli._output import out
from langgraph_moa.cli._ranges import number_option, port_option, schema_bounds
from langgraph_moa.cli._run import set_context_size
from langgraph_moa.config._limits import MAX_WAIT_S, RequestLimits
from langgraph_moa.config._loader import load_config
from langgraph_moa.config._prices import load_prices
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.errors import MissingExtraError, MoAConfigError
from langgraph_moa.serving._errors import MAX_BODY_BYTES
from langgraph_moa.serving._history import HISTORY_RUNS
from langgraph_moa.serving._requests import DRAIN_TIMEOUT_S


def _limit_option(field: str, flag: str, help_text: str) -> Any:
    """Make a ``moa serve`` limit flag with the default and lower bound of `RequestLimits`."""
    info = RequestLimits.model_fields[field]
    low, high, above = schema_bounds(RequestLimits, field)
    kind = float if info.annotation is float else int
    return number_option(
        flag,
        kind=kind,
        low=low,
        high=high,
        above=above,
        metavar="SECONDS" if kind is float else "N",
        help=f"{help_text} (default {info.default}).",
    )


KEY_VARIABLE = "MOA_API_KEY"
EMPTY_KEY = (
    "The API key is empty, which would let any client in: set --api-key (or MOA_API_KEY) to "
    "a secret, or leave it out on loopback."
)
EMPTY_KEY_VARIABLE = (
    f"{KEY_VARIABLE} is set but empty, which would let any client in: set it to a secret, or "
    "unset it to serve on loopback without a key."
)


def nonempty_key(value: str) -> str:
    """Refuse an API key of only spaces as the option is read: a usage error, exit code 2.

    Refused after the presets were loaded, it exited 1, as a failed run does, and only once
    the served models had been checked. (click reads an empty MOA_API_KEY as no key at all,
    so `serve` refuses that one itself.)
    """
    if not value.strip():
        raise typer.BadParameter(EMPTY_KEY)
    return value


def no_empty_key_variable(value: str | None) -> str | None:
    """Refuse a MOA_API_KEY that is set but empty, which click reads as no key at all.

    A secret that a deployment failed to fill in let every client in on loopback, without a
    word. Checked as the command line is read: `serve` called in-process reads no variable.
    """
    if value is None and os.environ.get(KEY_VARIABLE) is not None:
        raise typer.BadParameter(EMPTY_KEY_VARIABLE)
    return value


PROXIES_VARIABLE = "FORWARDED_ALLOW_IPS"


def proxy_addresses(value: str | None) -> str | None:
    """Refuse a --forwarded-allow-ips entry that is not an address, a network or ``*``.

    Checked as the command line is read (a usage error, exit code 2): uvicorn would have
    taken a mistyped entry, or a network with host bits set, for a host name that never
    matches, and trusted no proxy (`proxies_problem`).
    """
    if value is None:
        return None
    from langgraph_moa.serving._addresses import proxies_problem

    if problem := proxies_problem([part.strip() for part in value.split(",")]):
        raise typer.BadParameter(f"{problem}.")
    return value


def path_prefix(value: str) -> str:
    """Refuse a --root-path that is not a URL path (``/moa``): a usage error, exit code 2."""
    from langgraph_moa.serving._addresses import path_prefix as served_prefix

    try:
        return served_prefix(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


LOG_FORMATS = ("text", "json")


def log_format_name(value: str) -> str:
    """Refuse a --log-format other than text or json: a usage error, exit code 2."""
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_FORMATS)}.")
    return value


def serve(
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset",
            "-p",
            help="Preset to serve as a model (repeatable; without --preset or --config: "
            f"{', '.join(SERVED_BY_DEFAULT)}).",
        ),
    ] = None,
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="YAML or JSON config file to serve, as the model named by its `name:` "
            "(else the file's stem) (repeatable).",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback by default.")
    ] = "127.0.0.1",
    port: Annotated[int, port_option("Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=KEY_VARIABLE,
            parser=nonempty_key,
            callback=no_empty_key_variable,
            metavar="KEY",
            help="Require 'Authorization: Bearer <key>'.",
        ),
    ] = None,
    allow_model: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-model",
            metavar="SPEC",
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
        _limit_option(
            "max_chars",
            "--max-chars",
            "Characters per request (messages, tools, response format, stop sequences)",
        ),
    ] = None,
    max_parts: Annotated[
        int | None,
        _limit_option(
            "max_parts",
            "--max-parts",
            "Content parts (text, images), tool definitions and tool calls per request",
        ),
    ] = None,
    max_answer_tokens: Annotated[
        int | None,
        _limit_option(
            "max_answer_tokens",
            "--max-answer-tokens",
            "Largest max_tokens / max_completion_tokens a client may ask for",
        ),
    ] = None,
    max_run_tokens: Annotated[
        int | None,
        _limit_option(
            "max_run_tokens",
            "--max-run-tokens",
            "Token budget of one request, prompt and completion over every call",
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        _limit_option("request_timeout_s", "--request-timeout", "Seconds one request may run"),
    ] = None,
    max_body_bytes: Annotated[
        int, number_option("--max-body-bytes", low=1, help="Largest request body read, in bytes.")
    ] = MAX_BODY_BYTES,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="HOST",
            help="A host name clients may reach the server by, besides the loopback names "
            "and the bound address (repeatable; '*' for any). Others get 421, which stops "
            "DNS-rebinding pages.",
        ),
    ] = None,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origin",
            metavar="ORIGIN",
            help="A web origin (https://app.example) whose pages may call the API "
            "(repeatable). Other cross-origin browser requests get 403.",
        ),
    ] = None,
    docs: Annotated[
        bool, typer.Option("--docs", help="Serve the interactive /docs and /openapi.json.")
    ] = False,
    header_timeout: Annotated[
        float,
        number_option(
            "--header-timeout",
            kind=float,
            low=0.1,
            metavar="SECONDS",
            help="Seconds a connection may take to send a request head.",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        number_option(
            "--body-timeout",
            kind=float,
            low=0.1,
            metavar="SECONDS",
            help="Seconds a request body may take to arrive, and a run's client may leave "
            "a piece (64 KB) of its answer unread.",
        ),
    ] = 30.0,
    max_connections_per_client: Annotated[
        int,
        number_option(
            "--max-connections-per-client",
            low=1,
            help="Open connections one client address may hold (raise it behind a proxy, "
            "where every client has the proxy's address).",
        ),
    ] = 64,
    max_runs: Annotated[
        int,
        number_option(
            "--max-runs",
            low=1,
            envvar="MOA_MAX_RUNS",
            help="Runs in flight across all clients; more get 503 with Retry-After, none is "
            "queued.",
        ),
    ] = 256,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            envvar=PROXIES_VARIABLE,
            callback=proxy_addresses,
            metavar="IPS",
            help="Comma-separated addresses or networks ('*' for any) of the reverse proxies "
            "whose X-Forwarded-For names the client: the access log and the per-client "
            "connection cap then use that address. None by default, loopback included, so "
            "no client can claim another address.",
        ),
    ] = None,
    root_path: Annotated[
        str,
        typer.Option(
            callback=path_prefix,
            metavar="PREFIX",
            help="Also serve the page and the API under this path (/moa), for a reverse "
            "proxy that passes its prefix on (proxy_pass http://host:port/moa/); one that "
            "takes it off needs nothing.",
        ),
    ] = "",
    drain_timeout: Annotated[
        float,
        number_option(
            "--drain-timeout",
            kind=float,
            low=0,
            high=MAX_WAIT_S,
            metavar="SECONDS",
            help="Seconds a stop (SIGTERM, Ctrl-C) waits for the requests in flight; then "
            "each still open is ended with a last event saying the server is stopping. The "
            f"default ({DRAIN_TIMEOUT_S:g}) ends them within `docker stop`'s 10 s grace; "
            "set it a little under your orchestrator's (Kubernetes: 30 s).",
        ),
    ] = DRAIN_TIMEOUT_S,
    shutdown_delay: Annotated[
        float,
        number_option(
            "--shutdown-delay",
            kind=float,
            low=0,
            high=MAX_WAIT_S,
            metavar="SECONDS",
            help="Seconds a SIGTERM waits before the stop begins, serving every request while "
            "/ready answers 503 (draining), for an orchestrator that takes the server out of "
            "its load balancer only after its SIGTERM (Kubernetes: a few seconds, instead of "
            "a preStop sleep). Default 0: the stop begins at once.",
        ),
    ] = 0.0,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="YAML/JSON price table (model -> {prompt, completion} $ per 1M tokens): the "
            "web page shows each run's cost by it; local models cost nothing.",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            callback=log_format_name,
            metavar="text|json",
            help="The access log on stderr: one text line per request (the default), or "
            "one JSON object per line for a log pipeline.",
        ),
    ] = "text",
    preload: Annotated[
        bool,
        typer.Option(
            "--preload",
            help="Load the served presets' local models before listening (once the checks "
            "pass), so the first request does not wait for them and a readiness probe "
            "passes only once they are up; by default each loads on its first request.",
        ),
    ] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Serve Prometheus metrics at GET /metrics (request counts by route and "
            "status, latency, model calls, retries and tokens by model, degraded answers, "
            "runs in flight), to clients with --api-key's key and the Host rules.",
        ),
    ] = False,
    context_size: ContextSizeOpt = None,
    history_runs: HistoryRunsOpt = HISTORY_RUNS,
) -> None:
    """Serve presets as models behind an OpenAI-compatible API (/v1/chat/completions).

    A served preset always runs as configured; the --max-* limits bound what a client's
    overrides may ask for on top of it.
    """
    # Imported here: the rest of the CLI works without the serve extra (FastAPI, uvicorn).
    try:
        from langgraph_moa.serving._guard import LOOPBACK_NAMES, ServeSecurity
    except ImportError as exc:
        raise MissingExtraError("moa serve", "serve", exc.name or "uvicorn") from None
    from langgraph_moa.serving._server import load_system
    from langgraph_moa.serving._server import serve as run_server

    given: dict[str, Any] = {
        "max_proposers": max_proposers,
        "max_samples": max_samples,
        "max_layers": max_layers,
        "max_calls": max_calls,
        "max_messages": max_messages,
        "max_chars": max_chars,
        "max_parts": max_parts,
        "max_answer_tokens": max_answer_tokens,
        "max_run_tokens": max_run_tokens,
        "request_timeout_s": request_timeout,
    }
    limits = RequestLimits(**{k: v for k, v in given.items() if v is not None})
    set_context_size(context_size)
    price_table = load_prices(prices) if prices is not None else None  # a bad table fails first
    systems: dict[str, MoAConfig] = {}
    for name in preset or ([] if config else list(SERVED_BY_DEFAULT)):
        served, loaded = load_system(name)  # a config file is served under its name or stem
        systems[served] = loaded
    for path in config or []:
        loaded = load_config(path)
        name = loaded.name or path.stem
        if name in systems:
            raise MoAConfigError(
                f"Two served configs are named {name!r}: give each file its own `name:`."
            )
        systems[name] = loaded
    if api_key is not None and not api_key.strip():
        raise MoAConfigError(EMPTY_KEY)  # serve() called in-process, not parsed
    security = ServeSecurity(
        allowed_hosts=(*LOOPBACK_NAMES, *(allowed_host or ())),
        allowed_origins=tuple(allowed_origin or ()),
        docs=docs,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections_per_client=max_connections_per_client,
        max_runs=max_runs,
        forwarded_allow_ips=tuple(
            part.strip() for part in (forwarded_allow_ips or "").split(",") if part.strip()
        ),
    )
    unfenced = [name for name, cfg in systems.items() if cfg.reference_format == "paper"]
    with _json_stderr() if log_format == "json" else contextlib.nullcontext():
        # Warn about what the options leave open, then serve (`serving._server.serve`).
        if host in ("0.0.0.0", "::") and not allowed_host:
            out.warn(
                f"bound to {host}, but only loopback names are answered; name the host clients "
                "use with --allowed-host (or '*' for any)."
            )
        if api_key is None and not _is_loopback(host):
            out.warn(
                f"serving on {host} without an API key: anyone who can reach this port can run "
                "models at your expense; set --api-key or MOA_API_KEY."
            )

        def announce(line: str) -> None:
            # Warnings about a server that will run come once its checks have passed, and so
            # does the load of its local models (minutes, and then a key was found missing).
            if preload:
                prepare(
                    list(dict.fromkeys(n for cfg in systems.values() for n in local_models(cfg)))
                )
            warn_if_tracing()
            if unfenced:
                out.warn(
                    f"{', '.join(unfenced)} {'uses' if len(unfenced) == 1 else 'use'} "
                    "reference_format 'paper', which does not fence proposals: a proposal can "
                    "imitate another or pose as instructions to the aggregator (docs/security.md)."
                )
            out.say(f"[cyan]{escape(line)}[/]")

        with local_starts_shown():
            run_server(
                systems,
                host=host,
                port=port,
                api_key=api_key,
                allow_models=allow_model or (),
                allow_client_endpoints=allow_client_endpoints,
                limits=limits,
                max_body_bytes=max_body_bytes,
                security=security,
                announce=announce,
                prices=price_table,
                history_runs=history_runs,
                drain_timeout_s=drain_timeout,
                shutdown_delay_s=shutdown_delay,
                root_path=root_path,
                log_format=log_format,
                metrics=metrics,
            )


@contextlib.contextmanager
def _json_stderr() -> Iterator[None]:
    """Write the command's own stderr lines as JSON while it serves (`Output.json_lines`).

    A failure (a taken port, a preset that cannot serve) is said here, in JSON, and ends the
    command with its exit code: said by the command's handler, once this had put stderr
    back, it was the one text line.
    """
    from rich.console import Console

    from langgraph_moa.errors import LocalModelError, MoAError

    kept = out.err
    out.err = Console(file=io.StringIO(), highlight=False, emoji=False)  # draws nowhere
    out.json_lines = True
    try:
        yield
    except (MoAError, LocalModelError) as exc:
        raise typer.Exit(out.failed(exc)) from None
    finally:
        out.json_lines = False
        out.err = kept


def _is_loopback(host: str) -> bool:
    """Tell whether `host` is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
