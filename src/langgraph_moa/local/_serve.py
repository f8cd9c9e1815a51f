"""Child process: llama.cpp's own OpenAI-compatible server for one model, dying with its parent.

The server is llama.cpp's C++ server (through the `xllamacpp` wheel, so nothing is compiled
at install time), running inside this process: continuous batching over parallel slots,
prompt cache, token logprobs and JSON-schema constrained output. A watchdog thread exits the
process as soon as the parent is gone (killed, crashed, Ctrl-C), so no server is ever
orphaned, even when the parent could not run its clean-up; it deletes the server's log first
(`runtime.LocalServer` says which logs are kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time


def _watch_parent(parent_pid: int, log_path: str | None = None) -> None:
    """Exit once the parent is gone, deleting this server's log: nobody is left to read it."""
    while True:
        if os.getppid() != parent_pid:
            _exit_orphaned(log_path)
        time.sleep(0.5)


def _exit_orphaned(log_path: str | None) -> None:
    """Delete this server's log and exit: the parent that would read it is gone."""
    if log_path:
        with contextlib.suppress(OSError):
            os.unlink(log_path)
    os._exit(0)


PR_SET_PDEATHSIG = 1


def _killed_with_parent(killed: bool) -> None:
    """Ask Linux to SIGKILL this process the moment its parent ends (or no longer ask).

    For the model's load: llama.cpp holds the GIL then, and the watchdog thread cannot see
    the parent go. The parent starts every server from a thread that lives as long as it
    does (`_spawner`). Elsewhere (not Linux, no ``ctypes``, no ``prctl`` in the C library)
    the watchdog alone is there.
    """
    if not sys.platform.startswith("linux"):
        return  # Windows' ctypes.CDLL(None) raises TypeError
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import ctypes  # not in every Python build

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL if killed else 0, 0, 0, 0)


def main() -> None:
    """Start the server described by the JSON settings in argv[1], then wait to be stopped.

    No SIGTERM handler is installed: the default action ends the process at once, even
    while the model is still loading in C++ code, and the server needs no clean-up.
    """
    settings = json.loads(sys.argv[1])
    watch = (settings["parent_pid"], settings.get("log_path"))
    _killed_with_parent(True)
    if os.getppid() != watch[0]:  # gone before the kernel was asked
        _exit_orphaned(watch[1])
    threading.Thread(target=_watch_parent, args=watch, daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = settings["model_path"]
    params.model_alias = {settings["alias"]}
    params.n_parallel = settings["slots"]
    params.n_ctx = settings["ctx_per_slot"] * settings["slots"]
    params.cpuparams.n_threads = settings["threads"]
    params.cpuparams_batch.n_threads = settings["threads"]
    # No busy-waiting between batches: two model servers share the cores without the
    # spinning threads of one starving the other.
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.port = settings["port"]
    params.hostnames = ["127.0.0.1"]
    params.warmup = False
    if settings.get("chat_template"):
        params.chat_template = settings["chat_template"]
    try:
        server = xllamacpp.Server(params)  # listens in the background while it is referenced
    except RuntimeError as exc:
        # llama.cpp logged its reason (out of memory for the KV cache, a bad file) above;
        # a traceback here would push it out of the lines the parent's error shows.
        sys.stdout.write(
            f"llama.cpp could not start the server ({exc}): its reason is in the lines above.\n"
        )
        sys.stdout.flush()
        sys.exit(1)
    _killed_with_parent(False)  # the watchdog runs again: it deletes the log as it exits
    sys.stdout.flush()
    while server is not None:
        time.sleep(3600)


if __name__ == "__main__":
    main()
