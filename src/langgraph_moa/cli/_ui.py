"""`moa ui`: the web page that shows every model of a run at work, on the local default.

The same server as `moa serve`, on loopback only, with its run history; the page is at /ui.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from langgraph_moa.cli._config import SERVED_BY_DEFAULT, HistoryRunsOpt
from langgraph_moa.cli._langsmith import warn_if_tracing
from langgraph_moa.cli._local import local_starts_shown
from langgraph_moa.cli._output import out
from langgraph_moa.cli._ranges import port_option
from langgraph_moa.errors import MissingExtraError, MoAError
from langgraph_moa.serving._history import HISTORY_RUNS


def ui(
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset",
            "-p",
            help="Preset or config file to offer on the page (repeatable; default "
            f"{', '.join(SERVED_BY_DEFAULT)}).",
        ),
    ] = None,
    port: Annotated[int, port_option("Port on 127.0.0.1.")] = 8000,
    history: Annotated[
        Path | None,
        typer.Option(envvar="MOA_HISTORY", help="SQLite file of past runs (default: cache)."),
    ] = None,
    history_runs: HistoryRunsOpt = HISTORY_RUNS,
    open_page: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default browser.")
    ] = True,
) -> None:
    """Open the web page that shows every model of a run at work (local models by default)."""
    # Imported here, as `moa serve` does: the rest of the CLI works without the serve extra.
    try:
        from langgraph_moa.serving._server import serve as run_server
    except ImportError as exc:
        raise MissingExtraError("moa ui", "serve", exc.name or "uvicorn") from None

    presets = preset or list(SERVED_BY_DEFAULT)
    _check_port_free(port)
    url = f"http://127.0.0.1:{port}/ui"

    def announce(line: str) -> None:
        warn_if_tracing()
        out.err.print(f"[cyan]The page is at {url}[/] (Ctrl-C stops)")
        if open_page:
            _open_when_up(url, port)

    with local_starts_shown():
        run_server(
            presets,
            host="127.0.0.1",
            port=port,
            history_path=history,
            history_runs=history_runs,
            announce=announce,
        )


def _check_port_free(port: int) -> None:
    """Refuse a port already taken, in one sentence, before any model server starts."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise MoAError(
                f"Port {port} on 127.0.0.1 is already in use (another moa serve or moa ui?); "
                "pick another with --port."
            ) from None


def _open_when_up(url: str, port: int) -> None:
    """Open `url` in the user's browser once the port accepts connections (in a thread)."""
    import socket
    import threading
    import webbrowser

    def wait_and_open() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.2)
                continue
            webbrowser.open(url)
            return

    threading.Thread(target=wait_and_open, daemon=True, name="moa ui opener").start()
