"""Starting `moa serve`: everything checked before "Serving", then uvicorn."""

import gc
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from langgraph_moa._env import switch_from_env
from langgraph_moa.config._limits import MAX_WAIT_S, RequestLimits
from langgraph_moa.config._loader import load_config, names_a_file
from langgraph_moa.config._prices import Prices
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.errors import (
    MoAConfigError,
)
from langgraph_moa.serving._access import CrashWithoutInput, json_line
from langgraph_moa.serving._errors import MAX_BODY_BYTES
from langgraph_moa.serving._guard import (
    CorsEverywhere,
    ServeSecurity,
    cors_options,
    forwarded_clients,
    send_crash,
    served_under,
    uvicorn_options,
)
from langgraph_moa.serving._history import (
    HISTORY_RUNS,
    History,
    HistoryError,
    default_history_path,
)
from langgraph_moa.serving._request_id import RequestID
from langgraph_moa.serving._requests import DRAIN_TIMEOUT_S, Drain
from langgraph_moa.transport._call_loop import loop_of_this_thread, run_apart

logger = logging.getLogger(__name__)
"""Says a history it could not open, and an uncaught exception (`_uncaught_as_records`)."""
logger.addFilter(CrashWithoutInput())  # a thread's crash quotes no request


def stacked(
    app: Any,
    systems: list[str],
    security: ServeSecurity,
    log: Callable[[str], None],
    root_path: str,
    *,
    json_lines: bool = False,
    metrics: bool = False,
) -> Any:
    """Wrap `app` as `moa serve` serves it: the prefix, the request ID, the log, the proxy.

    The request ID goes around everything, not only inside the app: a 429 the forwarded-client
    cap answers and the line the log writes for it name their request too. Around it, the
    allowed origins' CORS headers (`CorsEverywhere`): /health, that 429 and a crash's 500 are
    answered outside the app's CORS layer.
    """
    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._metrics import Metrics

    counted = Metrics.for_app(app) if metrics else None
    proxied = forwarded_clients(app, security)
    logged = AccessLog(proxied, systems, log, json_lines=json_lines, metrics=counted)
    named = RequestID(served_under(logged, root_path), on_crash=send_crash)
    if not security.allowed_origins:
        return named
    # The app keeps its own CorsEverywhere too: an embedder who serves create_app alone needs it.
    return CorsEverywhere(named, **cors_options(security))


def serve(
    presets: "list[str] | Mapping[str, MoAConfig]",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    allow_models: Iterable[str] = (),
    allow_client_endpoints: bool = False,
    limits: RequestLimits | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    security: ServeSecurity | None = None,
    announce: "Callable[[str], None] | None" = None,
    log: "Callable[[str], None] | None" = None,
    history_path: str | Path | None = None,
    history_runs: int = HISTORY_RUNS,
    prices: Prices | None = None,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    shutdown_delay_s: float = 0.0,
    root_path: str = "",
    log_format: str = "text",
    metrics: bool = False,
) -> None:
    """Serve the presets (or named configs) until interrupted (what `moa serve` runs).

    Everything that would make every request fail is checked before the server starts and
    before `announce` says "Serving": the waits (`drain_timeout_s`, `shutdown_delay_s`) are
    finite seconds, 0 or more, the serve extra is installed, every preset exists and
    validates, every model's API key is set and every local model is installed (the
    presets' and `allow_models`' alike), the HTTP clients' variables (``MOA_HTTP_TRANSPORT``,
    ``MOA_MAX_RESPONSE_BYTES``) read, and the port is free. Each failure raises `MoAError`
    in one sentence that names the fix. Then each request and each failure is written as one
    line through `log` (stderr by default).

    A preset may also be a config file (``.yaml``, ``.yml`` or ``.json``), served under its
    `name:` or its file name. The web page's runs are kept in `history_path`
    (`default_history_path()` if None), its newest `history_runs` runs (0: none, no file).
    `prices` (model -> dollars per million prompt and completion tokens) prices the page's runs.
    On a stop (SIGTERM, Ctrl-C) the requests in flight have `drain_timeout_s` to end (`Drain`);
    a SIGTERM first waits `shutdown_delay_s`, still serving, /ready 503 (`_leaves_later`). A
    `root_path` (``/moa``) serves the paths under it too, for a proxy that keeps its prefix
    (`served_under`). A `log_format` of ``"json"`` writes each line as one JSON object
    (`_access.json_line`). With `metrics`, ``GET /metrics`` answers Prometheus' text to a client
    that sends the key (`_metrics`; prometheus_client, of the serve extra). Called where an
    event loop runs (a notebook cell), it serves from a thread (`_serve_apart`).
    """
    _check_seconds(drain_timeout_s=drain_timeout_s, shutdown_delay_s=shutdown_delay_s)
    systems = (
        dict(load_system(name) for name in presets)
        if not isinstance(presets, Mapping)
        else dict(presets)
    )
    try:
        import fastapi  # noqa: F401
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG
    except ImportError as exc:
        from langgraph_moa.errors import MissingExtraError

        raise MissingExtraError("moa serve", "serve", exc.name or "fastapi") from None
    if metrics:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            from langgraph_moa.errors import MissingExtraError

            raise MissingExtraError("moa serve --metrics", "serve", "prometheus_client") from None
    from langgraph_moa.serving._app import check_settings, create_app
    from langgraph_moa.serving._policy import check_allowed_models

    for name, config in systems.items():
        _check_served(name, config)
    check_allowed_models(allow_models)
    check_settings()  # read on a request: a bad one failed every request (`create_app` too)
    switch_from_env(GC_FREEZE_ENV)  # read after "Serving"
    _check_port(host, port)
    security = (security or ServeSecurity()).with_bind_host(host)

    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # noqa: T201

    write = log or to_stderr
    json_lines = log_format == "json"
    json_loggers = (*PACKAGE_LOGGERS, *PYTHON_LOGGERS) if json_lines else ()
    restore_loggers = _keep_loggers((*UVICORN_LOGGERS, *json_loggers))
    restore_collector: Callable[[], None] = lambda: None  # noqa: E731
    restore_hooks: Callable[[], None] = lambda: None  # noqa: E731
    history: History | None = None
    try:
        if json_lines:  # from here on: a history that cannot be opened warns in JSON too
            _log_as_json(write)
            restore_hooks = _uncaught_as_records()
        history = _open_history(history_path, history_runs)
        app = create_app(
            systems,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            allow_models=allow_models,
            allow_client_endpoints=allow_client_endpoints,
            limits=limits,
            security=security,
            history=history,
            prices=prices,
        )
        logged = stacked(
            app, list(systems), security, write, root_path, json_lines=json_lines, metrics=metrics
        )
        if announce is not None:
            announce(f"Serving {', '.join(systems)} on http://{host}:{port}/v1")
        # uvloop when installed; the HTTP protocol is httptools' (or h11's) with the guard's
        # head deadline and per-client connection limit (`_guard`), which keep slow clients out.
        options = {**server_options(), **uvicorn_options(security)}
        restore_collector = tune_collector()
        settings = uvicorn.Config(
            logged,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=math.ceil(drain_timeout_s) + DRAIN_FLUSH_S,  # whole seconds
            **options,
            log_config=None if json_lines else LOGGING_CONFIG,  # `_log_as_json`'s handlers
        )
        _say_the_drain(logging.getLogger("uvicorn.error"))
        # Restored after: uvicorn's logger is the process's. The package's own crash logger
        # has its filter from its import (`_errors.logger`): an app of `create_app` that an
        # embedder serves logs no request either.
        logging.getLogger("uvicorn.error").addFilter(CrashWithoutInput())
        server_class = _stops_on_a_second_signal(uvicorn.Server)
        if shutdown_delay_s > 0:
            server_class = _leaves_later(server_class, app.state.drain, shutdown_delay_s)
        drained = _drains_within(server_class, app.state.drain, drain_timeout_s)
        server = drained(settings)
        if loop_of_this_thread() is None:
            server.run()
        else:
            _serve_apart(server)
    finally:  # serving is over: the collector and uvicorn's loggers are as the caller had them
        restore_collector()
        restore_hooks()
        restore_loggers()
        if history is not None:  # not left to garbage collection, whenever that comes
            history.close()


def _serve_apart(server: Any) -> None:
    """Run uvicorn's `server` in a thread of its own, for a caller whose thread runs a loop.

    uvicorn serves on a loop it starts with `asyncio.run`, which a thread whose event loop
    runs (a notebook cell's) refuses. It runs in a copy of the caller's context
    (`run_apart`: ``with tracing_context(enabled=False)`` around `serve` holds for the served
    runs). Signals reach only the caller's thread: a KeyboardInterrupt there (the kernel's
    interrupt, in a cell with a top-level ``await`` too) stops the server as Ctrl-C does (a
    second one stops its drain), and is raised again once it has stopped.
    """
    run_apart(
        server.run,
        lambda: server.handle_exit(signal.SIGINT, None),
        keep_waiting=True,
        name="moa serve",
    )


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
"""The loggers uvicorn's `Config` configures (levels, handlers) and `_say_the_drain` lowers."""

PACKAGE_LOGGERS = ("langgraph_moa", "langgraph_moa.local")
"""The package's loggers that `_log_as_json` sets up while it serves under json."""

PYTHON_LOGGERS = ("asyncio", "py.warnings")
"""Python's own loggers that `_log_as_json` sets up too: asyncio's records ("Task exception
was never retrieved"), and the warnings (`_uncaught_as_records`); else they reached stderr
as text, through logging's last-resort handler."""


class _JsonRecords(logging.Handler):
    """Writes each of the package's log records as one JSON object (``--log-format json``).

    ``{"time", "level", "logger", "message"}``, and ``traceback`` where the record has one:
    a crash's traceback, a local model's failure and a history's were text lines among the
    JSON ones, which a pipeline parsing each line as JSON could not read.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__()
        self.write = write
        self.tracebacks = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Write `record` as one line of JSON."""
        try:
            entry = {
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:  # `CrashWithoutInput`'s text where it set one
                entry["traceback"] = record.exc_text or self.tracebacks.formatException(
                    record.exc_info
                )
            self.write(json_line(entry))
        except Exception:
            self.handleError(record)


def _log_as_json(write: Callable[[str], None]) -> None:
    """Write the package's and uvicorn's log records through `write` as JSON, only there.

    Not on to a host's handlers, nor through the command's own text lines for the local
    runtime, nor uvicorn's text handlers (`PACKAGE_LOGGERS`, `UVICORN_LOGGERS`, which the
    caller restores once serving ends).
    """
    package = logging.getLogger("langgraph_moa")
    package.addHandler(_JsonRecords(write))
    package.propagate = False
    logging.getLogger("langgraph_moa.local").handlers.clear()
    for name in UVICORN_LOGGERS:  # uvicorn's warnings and crash tracebacks (no log config)
        logging.getLogger(name).handlers.clear()
    for name in ("uvicorn", *PYTHON_LOGGERS):
        routed = logging.getLogger(name)
        routed.addHandler(_JsonRecords(write))
        routed.propagate = False
    # A task's crash may quote a request, as the app's own crashes may.
    logging.getLogger("asyncio").addFilter(CrashWithoutInput())


def _uncaught_as_records() -> Callable[[], None]:
    """Log uncaught exceptions and Python's warnings as records; return what undoes it.

    Under ``--log-format json`` a thread's uncaught exception (`threading.excepthook`), what
    the model-release thread reports through `sys.excepthook` and a warning were written to
    stderr as text among the JSON lines. They are records of this module's logger and of
    ``py.warnings`` now (`_log_as_json`), each one JSON object, until serving ends.
    An embedder's own hooks are set aside, not called after the record: Sentry's reports,
    then calls the hook it replaced, Python's, which prints the traceback as text.
    """
    hooks = (sys.excepthook, threading.excepthook)
    captured = getattr(logging, "_warnings_showwarning", None) is not None  # by the host

    def uncaught(kind: Any, value: Any, traceback: Any) -> None:
        logger.error("Uncaught exception.", exc_info=(kind, value, traceback))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # ends its thread quietly, as threading's own hook
            return
        name = args.thread.name if args.thread is not None else "unknown"
        why = (args.exc_type, args.exc_value, args.exc_traceback)
        logger.error("Uncaught exception in thread %r.", name, exc_info=why)  # type: ignore[arg-type]

    sys.excepthook, threading.excepthook = uncaught, uncaught_in_thread
    logging.captureWarnings(True)

    def restore() -> None:
        sys.excepthook, threading.excepthook = hooks
        if not captured:
            logging.captureWarnings(False)

    return restore


def _keep_loggers(names: Iterable[str]) -> Callable[[], None]:
    """Note these loggers' level, filters, handlers and propagation; return what restores them.

    uvicorn's `Config` sets up its loggers for the process, and `_say_the_drain` lowers
    "uvicorn.error" to info: after `serve` returned, a program that served in-process (an
    embedding, a test) kept uvicorn's info lines and handlers for good.
    """
    kept = []
    for name in names:
        logger = logging.getLogger(name)
        kept.append(
            (logger, logger.level, list(logger.filters), list(logger.handlers), logger.propagate)
        )

    def restore() -> None:
        for logger, level, filters, handlers, propagate in kept:
            logger.setLevel(level)
            logger.filters[:] = filters
            logger.handlers[:] = handlers
            logger.propagate = propagate

    return restore


DRAIN_LINE = (
    "Stopping: waiting for the requests in flight to finish (Ctrl-C again, or a second "
    "SIGTERM, stops them now)."
)


def _stops_on_a_second_signal(server_class: type) -> type:
    """Return a uvicorn `Server` class whose drain a second SIGTERM ends too, not only Ctrl-C.

    uvicorn forces its exit only on a repeated SIGINT: a second SIGTERM did nothing, so
    `docker stop` waited for its SIGKILL. Once stopped, uvicorn raises the signals it caught
    again, and the command's handler says "Terminated." (143) or "Interrupted." (130).
    """

    class Server(server_class):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self._captured_signals.append(sig)
                self.force_exit = True
                return
            super().handle_exit(sig, frame)

    return Server


def _leaves_later(server_class: type, drain: Drain, seconds: float) -> type:
    """Return a uvicorn `Server` class that goes on serving `seconds` after a SIGTERM.

    uvicorn closes its listening socket on SIGTERM, before it drains: Kubernetes takes a pod
    out of its Service only some time after sending SIGTERM, and meanwhile its clients and
    its readiness probe met a refused connection. Here /ready answers 503 ``draining``
    (`Drain.leaving`) for `seconds` while every request is still served, then the stop goes
    on as before (``--shutdown-delay``). A second signal (SIGTERM or Ctrl-C) ends the wait and
    begins that stop, drain included, at once; a third ends the drain.
    """

    class Server(server_class):
        should_exit: bool  # uvicorn's, set by the tick once `leave_at` has come
        leave_at: float | None = None  # when the stop begins, from the SIGTERM
        said_leaving = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGTERM or self.leave_at is not None or self.should_exit:
                super().handle_exit(sig, frame)
                return
            self._captured_signals.append(sig)  # raised again once stopped: "Terminated."
            self.leave_at = time.monotonic() + seconds
            drain.leaving = True  # a signal handler: the loop's next tick says so

        async def on_tick(self, counter: int) -> bool:
            if self.leave_at is not None and not self.should_exit:
                if not self.said_leaving:
                    self.said_leaving = True
                    logging.getLogger("uvicorn.error").warning(
                        "Leaving in %g s (--shutdown-delay): /ready answers 503 meanwhile, "
                        "and every request is still served.",
                        seconds,
                    )
                if time.monotonic() >= self.leave_at:  # set, never cleared: a second
                    self.should_exit = True  # signal's handler may set it during this tick
            return bool(await super().on_tick(counter))

    return Server


DRAIN_FLUSH_S = 2
"""Seconds after the drain's end for the stopped runs' last events to go out, before uvicorn
cancels whatever is still open (a request that runs no model: a slow reader's download)."""


def _drains_within(server_class: type, drain: Drain, seconds: float) -> type:
    """Return a uvicorn `Server` class whose drain ends the runs still open after `seconds`.

    Each such run's client is told the server is stopping (`Drain`), and uvicorn's log says
    how many there were (a warning: under ``--log-format json`` a record as its others are).
    """

    class Server(server_class):
        async def shutdown(self, sockets: Any = None) -> None:
            drain.end_in(seconds)
            await super().shutdown(sockets)
            if drain.stopped:
                runs = f"{drain.stopped} run{'s' * (drain.stopped != 1)}"
                logging.getLogger("uvicorn.error").warning(
                    "Stopped %s still open at the end of the drain (--drain-timeout %g s); "
                    "each client was told that the server is stopping.",
                    runs,
                    seconds,
                )

    return Server


class _DrainOnly(logging.Filter):
    """Let through uvicorn's warnings and errors, and its info that it waits on open requests.

    uvicorn runs at level warning, so that its start-up info stays out of the access log;
    but its "Waiting for connections to close" is info too, and Ctrl-C with a run in flight
    was silent until the run ended. That one line is kept, in words, once, through
    uvicorn's handler (``--log-format json``: `_JsonRecords`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep warnings and errors; turn the first wait notice into `DRAIN_LINE`."""
        if record.levelno >= logging.WARNING:
            return True
        if not str(record.msg).startswith("Waiting for connections") or self.said:
            return False
        self.said = True
        record.msg, record.args = DRAIN_LINE, ()
        return True


def _say_the_drain(logger: logging.Logger) -> None:
    """Lower `logger` to info behind a fresh `_DrainOnly` (serve may run again in-process)."""
    for old in [f for f in logger.filters if isinstance(f, _DrainOnly)]:
        logger.removeFilter(old)
    logger.addFilter(_DrainOnly())
    logger.setLevel(logging.INFO)


GC_FREEZE_ENV = "MOA_GC_FREEZE"

SERVING_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation while serving (Python: 700).

MoA runs in flight hold many young objects (tasks, messages, responses), and each young
collection walks all of them: at 700, 64 concurrent runs of the graph spent 0.48-0.61 s per
measurement in the collector, at 10,000 0.18-0.19 s, and their wall time fell by 9-11% in
interleaved runs of one process (benchmarks/orchestration_overhead.py, docs/performance.md).
Raising it further gained nothing measurable; the young objects that are garbage in a cycle wait
at most this many allocations longer."""


def tune_collector() -> Callable[[], None]:
    """Set the garbage collector up for serving; return the function that puts it back.

    LangChain, LangGraph, pydantic and the SDKs leave about 190,000 objects that the collector
    tracks, and each full collection walks them all again: 64 concurrent MoA runs spent
    0.90-1.00 s of their 2.5 s of CPU in the collector (benchmarks/orchestration_overhead.py).
    Frozen once the server is built (`gc.freeze`), those objects are never walked again
    (0.33 s); a frozen object that dies is still freed by its reference count. Then the
    youngest generation is collected every `SERVING_YOUNG_THRESHOLD` allocations instead of
    every 700 (a higher threshold of the host is kept, and 0, automatic collection off, stays
    off). What requests allocate is collected as before.

    The returned function puts the thresholds back, and unfreezes unless the host had objects
    frozen already (it cannot tell its own from ours, so it leaves them all frozen).
    ``MOA_GC_FREEZE=0`` leaves the collector as it is (and the returned function does
    nothing). A library must not change its host's collector, so only `moa serve` calls this.
    """
    if switch_from_env(GC_FREEZE_ENV) is False:
        return lambda: None
    thresholds = gc.get_threshold()
    host_froze = gc.get_freeze_count() > 0
    gc.collect()  # the startup's cyclic garbage goes now, or it would be frozen for good
    gc.freeze()
    if thresholds[0]:  # 0: the host turned automatic collection off
        gc.set_threshold(max(thresholds[0], SERVING_YOUNG_THRESHOLD), *thresholds[1:])

    def restore() -> None:
        if not host_froze:
            gc.unfreeze()
        gc.set_threshold(*thresholds)

    return restore


def server_options() -> dict[str, str]:
    """Choose uvicorn's event loop and HTTP parser: uvloop and httptools when installed.

    Both come with the ``serve`` extra; without them uvicorn's pure-Python defaults (asyncio,
    h11) serve the same requests more slowly (benchmarks/serve_load.py).
    """
    import importlib.util

    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "http": "httptools" if installed("httptools") else "h11",
    }


def _check_served(name: str, config: MoAConfig) -> None:
    """Refuse a served config whose every request would fail: a key or a local model missing."""
    from langgraph_moa.serving._policy import unready_model

    missing: list[str] = []
    for role in [*config.proposers, *config.final_chain]:
        unready = unready_model(role.model)
        if unready is None:
            continue
        if unready.key_env is None:
            raise MoAConfigError(
                f"Preset {name!r} {unready.problem}: {unready.fix}, or serve another preset."
            )
        if unready.key_env not in missing:
            missing.append(unready.key_env)
    if missing:
        raise MoAConfigError(
            f"Preset {name!r} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not set: export "
            f"{'it' if len(missing) == 1 else 'them'} or serve another preset (e.g. local-moa)."
        )


def _check_seconds(**seconds: float) -> None:
    """Refuse a wait that is no number of seconds from 0 to `MAX_WAIT_S`, as `moa serve` does.

    A NaN or negative ``shutdown_delay_s`` meant no delay, an infinite one (or 1e300) a wait
    for a second signal, and a NaN or infinite ``drain_timeout_s`` failed in uvicorn's
    settings.
    """
    for name, value in seconds.items():
        if not 0 <= value <= MAX_WAIT_S:  # NaN is neither
            raise MoAConfigError(
                f"{name} must be a number of seconds from 0 to {MAX_WAIT_S:g} (got {value!r})."
            )


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process holds, before saying "Serving"."""
    import socket

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise MoAConfigError(
                f"Cannot listen on {host}:{port} ({exc.strerror}): another process may hold "
                "the port; choose another with --port."
            ) from None


def _open_history(path: str | Path | None, keep: int = HISTORY_RUNS) -> History | None:
    """Open the page's history; if it cannot be opened, serve without one and say so.

    A `keep` of 0 is the operator's choice to keep none: no file is opened or written.
    """
    if keep == 0:
        return None
    try:
        return History(path or default_history_path(), keep=keep)
    except HistoryError as exc:
        logger.warning("%s Serving without a history.", exc)
        return None


def load_system(name: str) -> tuple[str, MoAConfig]:
    """Return (served name, config) for a preset name or a config file's path."""
    config = load_config(name)
    if names_a_file(name):
        return config.name or Path(name).stem, config
    return name, config
