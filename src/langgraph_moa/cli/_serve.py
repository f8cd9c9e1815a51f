"""`moa serve`: the served presets or config files behind an OpenAI-compatible API.

Nothing is announced before it can work: the presets are loaded, their keys and local models
checked and the port probed first (`serving._app.serve`), so "Serving" is only printed by a
server that will answer; then one line per request and per failure goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from langgraph_moa.cli._config import DEFAULT_PRESET, ContextSizeOpt
from langgraph_moa.cli._output import out
from langgraph_moa.cli._run import set_context_size
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.serving._app import MAX_BODY_BYTES


def _limit_option(field: str, flag: str, help_text: str) -> Any:
    """Make a ``moa serve`` limit flag with the default and lower bound of `RequestLimits`."""
    info = RequestLimits.model_fields[field]
    lowest = next(m.ge for m in info.metadata if hasattr(m, "ge"))
    return typer.Option(flag, min=lowest, help=f"{help_text} (default {info.default}).")


def serve(
    preset: Annotated[
        list[str] | None,
        typer.Option("--preset", "-p", help="Preset to serve as a model (repeatable)."),
    ] = None,
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML or JSON config file to serve, as the model named by its `name:` "
            "(else the file's stem) (repeatable).",
        ),
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
    context_size: ContextSizeOpt = None,
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
    set_context_size(context_size)
    systems: dict[str, MoAConfig] = {}
    for name in preset or ([] if config else [DEFAULT_PRESET, "local-moa", "local-self-moa"]):
        systems[name] = MoAConfig.from_preset(name)
    for path in config or []:
        loaded = MoAConfig.from_file(path)
        name = loaded.name or path.stem
        if name in systems:
            raise MoAConfigError(
                f"Two served configs are named {name!r}: give each file its own `name:`."
            )
        systems[name] = loaded
    if api_key is None and not _is_loopback(host):
        out.warn(
            f"serving on {host} without an API key: anyone who can reach this port can run "
            "models at your expense; set --api-key or MOA_API_KEY."
        )
    run_server(
        systems,
        host=host,
        port=port,
        api_key=api_key,
        allow_models=allow_model or (),
        allow_client_endpoints=allow_client_endpoints,
        limits=limits,
        max_body_bytes=max_body_bytes,
        announce=lambda line: out.err.print(f"[cyan]{escape(line)}[/]"),
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
