"""llama.cpp servers for the packaged models: started on demand, reused, always stopped.

Each local model gets **one server process** running llama.cpp's own C++ server (from the
prebuilt `xllamacpp` wheel) on a free loopback port. The server owns **all the cores** and
several **parallel slots**, so the proposers and samples of one model in a layer, and
concurrent runs (`moa serve`, `moa eval --concurrency`), are decoded together in one
continuous batch instead of queuing. Servers exit by themselves when this process goes away
(see `_serve.py`), and `atexit` stops them on a normal exit. `benchmarks/local_runtime.py`
measures what the slots and thread counts buy on the machine at hand.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import PrivateAttr

from langgraph_moa._env import switch_from_env
from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa._redact import clip, redact
from langgraph_moa.errors import LocalModelError, LocalRuntimeError
from langgraph_moa.local._filelock import file_lock, held, hold_for_life, let_go, own
from langgraph_moa.local._spawner import popen
from langgraph_moa.local.catalog import (
    LocalModelInfo,
    context_size,
    count_from_env,
    lookup,
    model_path,
)
from langgraph_moa.transport._completions import lean_completions
from langgraph_moa.transport._http import own_async_client, own_sync_client
from langgraph_moa.transport._net import free_port

READY_TIMEOUT_S = 120.0

KEEPER_WAIT_S = 10.0
"""How long keeping a failed log waits for another keeper: its rename and trim take
milliseconds, so a holder still there after this is stuck, and trimming is skipped."""

logger = logging.getLogger(__name__)
"""Says what the user should know and no call raises: a dead server replaced (the `moa`
command shows these lines as warnings, see `cli._local.runtime_warnings_shown`)."""

DEFAULT_SLOTS = 4
"""Parallel slots per model server; see `default_slots`."""

MAX_SLOTS = 256
"""The most slots per server (``$LANGGRAPH_MOA_SLOTS``): as many as the samples one proposer
may draw in a layer. Each slot holds a full context, and the server's context is slots times
``catalog.MAX_CONTEXT`` at most, which must fit llama.cpp's 32-bit ``n_ctx`` (100,000 slots of 4096
tokens did not, and far fewer exhaust the memory)."""


MAX_THREADS = 512
"""The most threads per server (``$LANGGRAPH_MOA_THREADS``, and the default on a machine with
more cores): ggml's CPU thread pool is built for at most ``GGML_MAX_N_THREADS`` (512), and
threads past the cores only take turns. Any count was taken (2**40 went to the server)."""


KEPT_LOGS_PER_MODEL = 3
"""How many failed servers' logs of one model stay in the temp folder (the newest).

Each failed start kept its log for its diagnosis, so a model that failed at every start (a
`moa serve` retrying it request after request) filled the temp folder without bound. The
newest few say why as well as all of them would.
"""

ORPHAN_LOG_AGE_S = 3600.0
"""How old an unlocked server log is before it counts as a dead server's (`_drop_orphaned_logs`).

An hour: a live server started by a version that did not lock its log is not swept while it
loads, and an orphan's log is small."""

LOG_LINE_CHARS = 300
"""How much of one log line a warning repeats: a line of llama.cpp's can be a whole prompt."""

SERVER_OVERHEAD_BYTES = 200_000_000
"""Memory a llama.cpp server holds besides its KV cache (and the model file it maps).

Its compute buffers, the Python interpreter that hosts it and the xllamacpp library: the
server of qwen2.5-coder-0.5b held 197 MB of anonymous memory (``RssAnon``) beyond its KV
cache once ready, the same at 1 and at 4 slots of 4096 tokens (xllamacpp 0.2, 2 cores).
Rounded up: the memory check counts it for every server (`_check_memory`).
"""


def default_threads() -> int:
    """Threads per server: ``$LANGGRAPH_MOA_THREADS``, else every core (`MAX_THREADS` at most).

    llama.cpp's server decodes all its slots in one batch, so one server per model can use
    the whole machine. Its threads do not spin between batches (`_serve.py` sets poll 0), so
    two model servers that share the cores take turns instead of starving each other.
    """
    cores = min(max(1, os.cpu_count() or 1), MAX_THREADS)
    return count_from_env("LANGGRAPH_MOA_THREADS", 1, MAX_THREADS) or cores


def default_slots() -> int:
    """Parallel slots per server: ``$LANGGRAPH_MOA_SLOTS``, else `DEFAULT_SLOTS`.

    A request waits for a free slot, so slots bound how many calls to one model run at once
    (the samples of a Self-MoA layer, concurrent `moa serve` requests). Each slot holds a
    full context of its own, so slots cost memory (about 50 MB each for the 0.5B model at
    4096 tokens), not speed: on 2 cores, batched decoding gives about the same total tokens
    per second as one stream, and more cores gain more (README, "How fast").
    """
    return count_from_env("LANGGRAPH_MOA_SLOTS", 1, MAX_SLOTS) or DEFAULT_SLOTS


class LocalServer:
    """One llama.cpp server process serving one model on 127.0.0.1.

    Its output goes to a log file in the temp folder (``moa-<model>-*.log``). The log of a
    server this process stopped, or respawned on another port, is deleted; so is that of a
    server whose parent is gone (`_serve.py` deletes it as it exits): nobody reads them, and
    kept they piled up run after run. The log of a server that failed (it exited by itself,
    or never answered) is kept for its diagnosis, as ``moa-<model>-failed-*.log`` and only the
    newest `KEPT_LOGS_PER_MODEL` of a model, and a warning names its path and says its last
    lines. The error itself (the start's, or that of the call it died during, see
    `died_during`) names only the model: it reaches `moa serve`'s clients, who must not read
    the server's pid, port, temp folder or log.
    """

    _keep_log = False
    """The server failed: its log stays for the user (a warning names its path)."""
    _stopped = False
    """This process asked the server to exit while it ran: its log can go."""
    _mourned = False
    """Its failure was warned about, with its log: each call it broke says it no more."""

    def __init__(
        self,
        info: LocalModelInfo,
        *,
        threads: int,
        slots: int = DEFAULT_SLOTS,
        port: int | None = None,
        starting: int = 0,
        hold: Callable[[LocalServer], object] | None = None,
    ) -> None:
        """Spawn the process; it loads the model in the background (see `wait_ready`).

        `starting` is the memory that servers spawned with it will still take (see
        `LocalRuntime.server`): the memory check counts it as taken. `hold` is given this
        server as soon as its process runs, before this call returns: a Ctrl-C as it
        returns, before the caller stored it, leaves the caller a handle to stop it with.
        A C callable (a dict's ``__setitem__`` in a `functools.partial`), so that no Ctrl-C
        arrives inside it.

        Raises:
            LocalModelError: llama.cpp's server (``xllamacpp``) is not installed: said here,
                before a process dies on the import with a traceback for its error.
        """
        _require_llama_server()
        self.info = info
        self.slots = slots
        ctx_per_slot = context_size(info)
        self.memory = _check_memory(info, slots, ctx_per_slot, starting)
        self._settings = {
            "parent_pid": os.getpid(),
            "model_path": str(model_path(info)),
            "alias": info.name,
            "slots": slots,
            "ctx_per_slot": ctx_per_slot,
            "threads": threads,
            "chat_template": info.chat_template,
        }
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._warn_lock = threading.Lock()
        self._spawn(port or free_port(), hold)

    def _spawn(self, port: int, hold: Callable[[LocalServer], object] | None) -> None:
        self._spawned = time.monotonic()
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"
        self._keep_log = self._stopped = self._mourned = False
        self._log = tempfile.NamedTemporaryFile(
            prefix=self._log_prefix(), suffix=".log", delete=False
        )
        self.log_path = self._log.name
        """Where the server's output is (a kept log moves, see `_keep`)."""
        hold_for_life(self._log)
        _drop_orphaned_logs(Path(self.log_path).parent, keep=self.log_path)
        spawned: list[subprocess.Popen[bytes]] = []  # filled before `popen` returns
        try:
            popen(
                [
                    sys.executable,
                    "-m",
                    "langgraph_moa.local._serve",
                    json.dumps({**self._settings, "port": port, "log_path": self.log_path}),
                ],
                hold=spawned.append,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop the servers ourselves
            )
            self.process = spawned[0]
        except BaseException:  # no server (no file descriptors left, Ctrl-C): no log either
            for process in spawned:  # Ctrl-C as `popen` returned: the server it started
                process.kill()
                process.wait()
            self._discard_log()
            raise
        if hold is not None:  # no Python frame starts before it stores: no Ctrl-C lands
            hold(self)

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.process.pid

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        return self.process.poll() is None

    def _foreign(self) -> bool:
        """Tell whether this process is not the one that spawned the server (a forked child).

        A child inherits the parent's servers with the runtime holding them, and its normal
        exit runs that runtime's `stop_all` (`atexit`). The server is no child of its: `poll`
        reads it as exited with code 0, and stopping it there renamed the parent's live log
        as a failed server's. Stopping, keeping and mourning it are the parent's alone.
        """
        return os.getpid() != self._settings["parent_pid"]

    def memory_to_come(self) -> int:
        """Return the bytes of memory this server has yet to allocate (0 if unknown).

        llama.cpp allocates its KV cache and buffers as it loads the model, a second or more
        after the spawn: until then the memory available does not show them. The process's
        anonymous memory tells how much of it is held already.
        """
        if not self.alive():
            return 0
        held = _kib_field(Path(f"/proc/{self.pid}/status"), "RssAnon:")
        return 0 if held is None else max(0, self.memory - held)

    def last_words(self, lines: int = 12) -> str:
        """Return the tail of the server's log for a warning: redacted, each line clipped."""
        try:
            text = (
                Path(self.log_path)
                .read_text(encoding="utf-8", errors="replace")
                .strip()
                .splitlines()
            )
        except OSError:
            return "(its log could not be read)"
        return "\n".join(clip(redact(line), LOG_LINE_CHARS) for line in text[-lines:]) or (
            "(no output)"
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the server answers, or raise with the reason it did not."""
        if self._ready.is_set():
            if not self.alive():
                raise self._died()
            return
        with self._lock:
            deadline = time.monotonic() + timeout
            respawns = 0
            while not self._ready.is_set():
                if not self.alive():
                    # Another program took the port between our choosing it and the server
                    # binding it: take a new free port rather than fail the run.
                    if _port_was_taken(self.last_words(lines=200)) and respawns < 3:
                        respawns += 1
                        self._discard_log()
                        self._spawn(free_port(), None)  # held since its first spawn
                        continue
                    raise self._died()
                try:
                    # trust_env=False: a proxy from HTTP_PROXY must not be asked for 127.0.0.1.
                    ready = httpx.get(f"{self.url}/models", timeout=1.0, trust_env=False)
                    if ready.status_code == 200:
                        self._ready.set()
                        took = time.monotonic() - self._spawned
                        logger.info("local:%s is ready (loaded in %.1fs)", self.info.name, took)
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self._keep_log = True
                    self.stop()
                    silent = f"did not answer within {timeout:g}s"
                    self._warn_with_log(f"{self._who(silent)}.")
                    raise LocalRuntimeError(self._public(silent))
                time.sleep(0.1)

    def _died(self) -> LocalRuntimeError:
        return LocalRuntimeError(self._obituary())

    def _obituary(self, when: str = "", then: str = "") -> str:
        """Warn how the server exited, with its log; return the error's (see `_public`)."""
        self._warn_with_log(f"{self._who_exited()}{when}.")
        return self._public(f"{self.exit_status()}{when}", then)

    def _public(self, what: str, then: str = "") -> str:
        """Say which model's server failed, how, and that the operator's log says why.

        The pid, the port, the log's path and its lines are the machine's, not a client's:
        `moa serve` passes a call's error to its client (the 502 body, ``moa.calls``, the run
        stream), so they go only to the warning (`_warn_with_log`). Short, so that the 502's
        summary of a call's error (200 characters) keeps the end.
        """
        server = f"The llama.cpp server of local model {self.info.name!r}"
        return f"{server} {what}; the operator's log says why{then}."

    def _warn_with_log(self, what: str) -> None:
        """Warn, once per failure, what happened, where the kept log is and its last lines.

        Every call a dying server broke comes here: the operator reads the log's tail once.
        `moa run`, `moa chat` and `moa serve` show it on stderr (`cli._local`).
        """
        with self._warn_lock:
            if self._mourned:
                return
            self._mourned = True
        self._keep()
        logger.warning("%s %s; it ends:\n%s", what, self._kept_at(), self.last_words())

    def _kept_at(self) -> str:
        """Say where the kept log is, and that older ones of the model do not stay."""
        return (
            f"Its log is kept at {self.log_path} (delete it once read; only the last "
            f"{KEPT_LOGS_PER_MODEL} failed logs of a model are kept)"
        )

    def _keep(self) -> None:
        """Keep the log of this failed server, and drop its model's oldest kept logs.

        A kept log is renamed ``moa-<model>-failed-*.log``: a running server's log (this
        process's or another's) is never taken for an old failure. Where renaming fails,
        the log stays where it is, kept and named all the same, and this process's sweep of
        orphaned logs leaves it (`own`). Its time is set to the
        failure's: "newest" means the latest failures, not the latest writes (a server
        found dead after an hour of quiet last wrote an hour ago), and another process
        trimming the same model's logs now leaves this one, which the warning names.

        The server has exited, so this process's handle on the log is closed first: it
        stayed open until the runtime stopped the server (or until garbage collection, for
        a server nobody asked for again), and Windows does not rename an open file.
        """
        if self._foreign():
            return
        let_go(self._log)
        with self._warn_lock:  # one rename, even when two broken calls get here at once
            log = Path(self.log_path)
            if self._keep_log and log.name.startswith(self._failed_prefix()):
                return
            self._keep_log = True
            kept = log.with_name(self._failed_prefix() + log.name.removeprefix(self._log_prefix()))
            with _one_keeper(log.parent, self._log_prefix()) as held:
                try:
                    os.replace(log, kept)
                    self.log_path = str(kept)
                except OSError:
                    own(log)
                with contextlib.suppress(OSError):
                    os.utime(self.log_path)  # now: the time of the failure
                if held:
                    _drop_old_logs(log.parent, self._failed_prefix(), keep=self.log_path)
                else:
                    logger.debug(
                        "Old failed logs of %r not trimmed: another process held their "
                        "lock for %s s.",
                        self.info.name,
                        KEEPER_WAIT_S,
                    )

    def _log_prefix(self) -> str:
        return f"moa-{self.info.name}-"

    def _failed_prefix(self) -> str:
        return self._log_prefix() + "failed-"

    def _who_exited(self) -> str:
        """Say which server exited and how."""
        return self._who(self.exit_status())

    def _who(self, what: str) -> str:
        """Say, for the operator, which server (pid, port) did `what`."""
        return (
            f"The llama.cpp server for {self.info.name!r} (pid {self.pid}, port {self.port}) {what}"
        )

    def exit_status(self) -> str:
        """Say how the process exited: its code, and the signal's name when one killed it."""
        code = self.process.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"exited with code {code} (killed by {signal.Signals(-code).name})"
        return f"exited with code {code}"

    def replaced(self) -> None:
        """Warn, once, that this server exited by itself and a new one takes its place.

        A server killed between calls (by the user, by the out-of-memory killer) was
        replaced without a word: its log was kept, as a failed server's is, but named
        nowhere, and piled up in the temp folder. The warning names it, unless the warning of
        the call it broke did (`_warn_with_log`).
        """
        if self._foreign():
            return
        if self._mourned:
            logger.warning("%s; a new one was started.", self._who_exited())
            return
        self._warn_with_log(f"{self._who_exited()}; a new one was started.")

    def died_during(self, error: Exception, within_s: float = 1.0) -> ConnectionError | None:
        """Return what a call that failed because this server died raises instead, else None.

        A server that crashes during a call (after it answered readiness) breaks the call's
        connection, and the client says only "Connection error.": its log was kept but
        named nowhere. The error now says how the server exited, and a warning names the log
        (`_obituary`). It stays a
        `ConnectionError`, which the graph retries, and the retry starts a new server. An
        error with an HTTP status came from the server alive: it stays, without a wait. Only
        a broken connection waits (up to `within_s`) for the exit: a timeout or an unreadable
        answer came from a server still running, and its retry must not start a second late.
        """
        if isinstance(getattr(error, "status_code", None), int):
            return None
        try:
            # A crash breaks the connection just before the exit; other errors only look.
            self.process.wait(within_s if _broke_the_connection(error) else 0)
        except subprocess.TimeoutExpired:
            return None
        return ConnectionError(self._obituary(" during the call", ", and a retry starts a new one"))

    def terminate(self) -> None:
        """Ask the process to exit now, without waiting (it exits at once on SIGTERM).

        Its log goes with it, unless the server failed: after Ctrl-C (`LocalRuntime.kill_now`)
        this process exits without stopping anything else.
        """
        if self._foreign():
            return
        if self.alive():
            self._stopped = True
            self.process.terminate()
            if not self._keep_log:
                self._discard_log()

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate the process, then kill it if it lingers (only the process that spawned it)."""
        if self._foreign():
            return
        self.terminate()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._stopped and not self._keep_log:
            self._discard_log()  # again: a system that cannot unlink an open file did not
        else:
            self._keep()  # it exited by itself: its log may tell why

    def _discard_log(self) -> None:
        """Close and delete the log (a missing or still-open file is left alone)."""
        let_go(self._log)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


@contextmanager
def _one_keeper(folder: Path, prefix: str) -> Iterator[bool]:
    """Let one process (or thread) at a time keep a failed log of a model and trim the rest.

    Keeping renames the log, then dates it now: another process trimming between the two
    saw the log just kept with its last write's time (an hour ago, for a server found dead
    after an hour of quiet), took it for the oldest and deleted it, while the warning named
    it. The lock is the OS's, on ``<prefix>logs.lock`` beside the logs (`file_lock`:
    ``flock``, or Windows' ``msvcrt.locking``; it is not a ``.log``, so no trim takes it);
    where the file system refuses locks (``ENOLCK`` on an NFS mount without its lock
    daemon), there is none, as before: the log is kept all the same.

    Yields whether to trim: a holder stuck for `KEEPER_WAIT_S` (a process stopped with
    Ctrl-Z) made every later failure of the model wait for it forever, its warning unsaid;
    now the log is kept and named, and its old ones wait for the next failure's trim.
    """
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(file_lock(folder / f"{prefix}logs.lock", KEEPER_WAIT_S))
        except OSError:
            held = True  # a folder that takes no new file: the logs could not be trimmed either
        yield held


def _drop_old_logs(folder: Path, prefix: str, keep: str) -> None:
    """Delete all but the newest `KEPT_LOGS_PER_MODEL` logs named `prefix`*, never `keep`."""
    logs = sorted(
        (p for p in folder.glob(f"{glob.escape(prefix)}*.log") if str(p) != keep),
        key=_age_key,
        reverse=True,
    )
    for old in logs[KEPT_LOGS_PER_MODEL - 1 :]:
        with contextlib.suppress(OSError):
            old.unlink()


def _drop_orphaned_logs(folder: Path, keep: str) -> None:
    """Delete the logs of servers that died with their parent while they loaded.

    Such a server is killed by the kernel (`_serve`, ``PR_SET_PDEATHSIG``) before its
    watchdog can delete its log, and its parent was killed too. A live server's log is
    locked (`hold_for_life`); a log newer than `ORPHAN_LOG_AGE_S` may be one another process
    has just created and not yet locked. Kept failed logs are trimmed by `_drop_old_logs`.
    """
    now = time.time()
    for log in folder.glob("moa-*.log"):
        if str(log) == keep or "-failed-" in log.name:
            continue
        with contextlib.suppress(OSError):
            if now - log.stat().st_mtime > ORPHAN_LOG_AGE_S and not held(log):
                log.unlink()


def _age_key(path: Path) -> float:
    """Return when the log was kept (`_keep` sets it), newest largest; one gone is oldest."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _require_llama_server() -> None:
    """Say that llama.cpp's server (``xllamacpp``) is missing, rather than let a server die.

    Raises:
        LocalModelError: the package is not installed.
    """
    if find_spec("xllamacpp") is None:
        raise LocalModelError(
            "Local models need llama.cpp's server, the xllamacpp package, which is not "
            "installed: pip install 'langgraph-moa[local]'."
        )


def available_memory(root: Path = Path("/")) -> int | None:
    """Return the bytes of memory a new server can take now, None if unknown (not Linux).

    The machine's MemAvailable, or less where a control group limits this process: in a
    container /proc/meminfo shows the host's memory, and a server that passed on the host's
    figure woke the container's out-of-memory killer. `root` stands for ``/`` in tests.
    """
    known = [m for m in (_meminfo_available(root), _cgroup_available(root)) if m is not None]
    return min(known) if known else None


def _meminfo_available(root: Path) -> int | None:
    """Linux's estimate of the memory available without swapping (page cache included)."""
    return _kib_field(root / "proc/meminfo", "MemAvailable:")


def _kib_field(path: Path, key: str) -> int | None:
    """Return the bytes of a ``Key: N kB`` line of a /proc file, or None if not there."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_CGROUP_FILES = {
    # version: (mount under /sys/fs/cgroup, limit, usage, reclaimable file cache in memory.stat)
    2: ("", "memory.max", "memory.current", ("active_file", "inactive_file")),
    1: (
        "memory",
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        ("total_active_file", "total_inactive_file"),
    ),
}


def _cgroup_available(root: Path) -> int | None:
    """Room left under the tightest memory limit of this process's control groups.

    A group's usage counts its file cache, which the kernel drops before it kills: that
    part is room too. A limit on a parent group holds its children, so every group up to
    the mount is read; a group the mount does not show (no cgroup namespace) is skipped.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        version = 2 if hierarchy == "0" and not controllers else 1
        if version == 1 and "memory" not in controllers.split(","):
            continue
        mount, limit_name, usage_name, cache_names = _CGROUP_FILES[version]
        top = root / "sys/fs/cgroup" / mount
        folder = top / group.strip("/")
        for level in [folder, *folder.parents]:
            if len(level.parts) < len(top.parts):
                break
            if (room := _group_room(level, limit_name, usage_name, cache_names)) is not None:
                rooms.append(room)
    return min(rooms) if rooms else None


def _group_room(folder: Path, limit_name: str, usage_name: str, cache: tuple) -> int | None:
    """Limit minus usage plus reclaimable cache of one group; None without a limit."""
    try:
        limit = (folder / limit_name).read_text(encoding="utf-8").strip()
        if limit == "max" or int(limit) >= 2**60:  # v1 writes "no limit" as a huge number
            return None
        usage = int((folder / usage_name).read_text(encoding="utf-8"))
        stat = dict(
            line.split()[:2]
            for line in (folder / "memory.stat").read_text(encoding="utf-8").splitlines()
        )
        return int(limit) - usage + sum(int(stat.get(name, 0)) for name in cache)
    except (OSError, ValueError):
        return None


def _check_memory(info: LocalModelInfo, slots: int, ctx_per_slot: int, starting: int) -> int:
    """Refuse, before a server starts, slots whose contexts cannot fit the memory.

    llama.cpp allocates every slot's KV cache up front: 4 slots of 1,048,576 tokens asked
    for 48 GiB on a 24 GiB machine, and the server's error was a Python traceback with the
    cause out of sight; a size the kernel grants but the machine cannot hold is worse (the
    out-of-memory killer picks a process). Unknown sizes or memory are not checked.

    The KV cache and the server's own memory (`SERVER_OVERHEAD_BYTES`) are counted, not the
    model file: llama.cpp maps it, and its pages are the file's (dropped and read again
    under pressure, never a cause for the killer, and already counted as available while
    the file is cached); counting them refused servers that run. Swap is not counted (the
    figures leave it out): a KV cache in swap is read back at every token, so a start that
    fits only with swap would crawl, and the user is better told to lower the context.

    Servers spawned together (the models of one run) load at once: `starting` bytes of
    theirs are not allocated yet and count as taken, so that all of them, not each alone,
    must fit. Return the bytes of memory this server takes (0 if unknown).

    Raises:
        LocalModelError: the slots' contexts need more than the memory available.
    """
    kv_cache = slots * ctx_per_slot * info.kv_bytes_per_token
    if not kv_cache:
        return 0
    needed = kv_cache + SERVER_OVERHEAD_BYTES
    available = available_memory()
    if available is None or needed <= available - starting:
        return needed
    others = f" besides the {starting / 1e9:.1f} GB of the servers starting with it"
    raise LocalModelError(
        f"Local model {info.name!r} with {slots} slot{'s' if slots != 1 else ''} of "
        f"{ctx_per_slot} tokens needs about {needed / 1e9:.1f} GB of memory for its KV "
        f"cache and the server itself{others if starting else ''}, "
        f"but {available / 1e9:.1f} GB is available: give it a smaller --context-size "
        "(LANGGRAPH_MOA_CONTEXT) or fewer slots (LANGGRAPH_MOA_SLOTS)."
    )


def _port_was_taken(log: str) -> bool:
    """Tell whether a server died because another program bound its port first."""
    text = log.lower()
    return "address already in use" in text or "couldn't bind" in text or "failed to bind" in text


class LocalRuntime:
    """The set of running local servers, one per model, shared by every graph in a process."""

    _default: LocalRuntime | None = None
    _default_lock = ForkSafeLock()

    def __init__(self, threads: int | None = None, slots: int | None = None) -> None:
        """Create an empty runtime; servers start on first use."""
        self.threads = threads or default_threads()
        self.slots = slots or default_slots()
        self._servers: dict[str, LocalServer] = {}
        # Free in a forked child, whose exit runs `stop_all` (atexit): the parent's servers it
        # holds there are left to the parent (`LocalServer._foreign`).
        self._lock = ForkSafeLock()
        self.room = CoreRoom()

    @classmethod
    def default(cls) -> LocalRuntime:
        """Return the process-wide runtime, stopped automatically at exit."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
                atexit.register(cls._default.stop_all)
            return cls._default

    def server(self, name: str) -> LocalServer:
        """Return the server of model `name`, spawning it if needed (does not wait)."""
        info = lookup(name)
        with self._lock:
            server = self._servers.get(name)
            if server is None or not server.alive():
                if server is not None:
                    # Dropped before the new one starts: if that fails, the next call starts
                    # afresh instead of naming this dead one again.
                    del self._servers[name]
                    server.stop()
                    server.replaced()
                starting = sum(s.memory_to_come() for s in self._servers.values())
                # Said at info (`moa serve` shows it): the call that needs the model waits
                # seconds while it loads, which looked like a hang.
                logger.info(
                    "starting local:%s (%.1f GB); the call that needs it waits while it loads",
                    name,
                    info.size / 1e9,
                )
                # Stored as its process starts: a Ctrl-C as the call returns (a REPL goes
                # on) leaves it here, for `stop_all` to stop, not running with no handle.
                server = LocalServer(
                    info,
                    threads=self.threads,
                    slots=self.slots,
                    starting=starting,
                    hold=functools.partial(self._servers.__setitem__, name),
                )
            return server

    def start(self, names: list[str]) -> list[LocalServer]:
        """Start several servers in parallel and wait until all answer."""
        servers = [self.server(n) for n in names]
        for server in servers:
            server.wait_ready()
        return servers

    def running(self) -> list[LocalServer]:
        """Servers whose process is alive."""
        with self._lock:
            return [s for s in self._servers.values() if s.alive()]

    def stop_all(self) -> None:
        """Stop every server this runtime started."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.terminate()  # all at once, then wait for each
        for server in servers:
            server.stop()

    def has_servers(self) -> bool:
        """Tell whether this runtime started any server, without its lock (see `kill_now`)."""
        return bool(self._servers)

    def kill_now(self) -> None:
        """Terminate every server at once, from a signal handler.

        It takes no lock: the handler runs in the main thread, which may be holding the
        runtime's lock (spawning a server) at the moment Ctrl-C arrives, and waiting for it
        there would hang forever. A server spawned in that instant exits by itself with us.
        """
        for server in list(self._servers.values()):
            server.terminate()

    def chat_model(self, name: str, params: dict[str, Any]) -> BaseChatModel:
        """Return a chat model bound to the server of `name` (spawned now, awaited later)."""
        server = self.server(name)
        # The model cache passes the async client shared by this event loop's models.
        # Loopback clients: the proxy variables must not apply to the local server.
        client = params.get("http_async_client") or own_async_client(loopback=True)
        sync_client = params.get("http_client") or own_sync_client(loopback=True)
        defaults = {
            "stream_usage": True,  # llama.cpp's server reports usage in the last chunk
            # Token logprobs for confidence-based selection (call records). One alternative
            # per token: without top_logprobs llama.cpp ranks the 20 likeliest tokens.
            "logprobs": True,
            "top_logprobs": 1,
        }
        model = LocalChatModel(
            model=name,
            base_url=server.url,
            api_key="local",  # type: ignore[arg-type]
            max_retries=0,  # retries belong to the graph's RetryPolicy
            **{**defaults, **params, "http_async_client": client, "http_client": sync_client},
        )
        model._runtime = self
        return model


class LocalChatModel(BaseChatOpenAI):
    """An OpenAI-compatible client that makes sure its llama.cpp server is up before calling.

    It looks the server up by model name at each call, so a server that died is replaced by
    a fresh one on the next attempt instead of failing every retry against a dead port.
    It has its own async HTTP client: langchain-openai's shared one binds to the first event
    loop that uses it.
    """

    _runtime: LocalRuntime | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "langgraph-moa-local"

    def _ensure_server(self) -> LocalServer:
        runtime = self._runtime or LocalRuntime.default()
        server = _replaced_or_said(runtime, self.model_name)
        server.wait_ready()  # may move to a new port if the first one was taken
        with _CLIENT_LOCK:
            if server.url != self.openai_api_base:
                # The server was replaced or moved: point this client at it.
                self.openai_api_base = server.url
                self.client = self.async_client = None
                self.root_client = self.root_async_client = None
                self.validate_environment()  # type: ignore[operator]  # rebuilds the clients
                lean_completions(self)
        return server

    def _room(self) -> CoreRoom:
        return (self._runtime or LocalRuntime.default()).room

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        server = self._ensure_server()
        with self._room().held(self.model_name), _naming_a_death(server):
            return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        server = await asyncio.to_thread(self._ensure_server)
        async with self._room().aheld(self.model_name), _anaming_a_death(server):
            return await super()._agenerate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        server = self._ensure_server()
        with self._room().held(self.model_name), _naming_a_death(server):
            yield from super()._stream(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> Any:
        server = await asyncio.to_thread(self._ensure_server)
        async with self._room().aheld(self.model_name), _anaming_a_death(server):
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk


def _replaced_or_said(runtime: LocalRuntime, name: str) -> LocalServer:
    """Return the model's server for a call; a replacement refused is warned, then raised short.

    A call replaces a server that died (`LocalRuntime.server`), and the replacement may be
    refused (no memory left for its KV cache, the cache folder gone). That error names the
    machine's memory, folders and the operator's flags, and a call's error reaches a
    `moa serve` client (``moa.calls[].error``): the operator's warning gets it whole.

    Raises:
        LocalModelError: one sentence naming the model.
    """
    try:
        return runtime.server(name)
    except LocalModelError as exc:
        logger.warning("%s", exc)
        raise LocalModelError(
            f"Local model {name!r} cannot start a server on this machine now; the operator's "
            "log says why."
        ) from exc


def _broke_the_connection(error: Exception) -> bool:
    """Tell whether a call's error is its connection broken off, as a dying server breaks it.

    A timeout is not: the server was still there, too slow to answer.
    """
    import openai

    if isinstance(error, (TimeoutError, httpx.TimeoutException, openai.APITimeoutError)):
        return False
    return isinstance(error, (ConnectionError, httpx.TransportError, openai.APIConnectionError))


@contextmanager
def _naming_a_death(server: LocalServer) -> Iterator[None]:
    """Raise `LocalServer.died_during`'s error for a call that failed as its server died."""
    try:
        yield
    except Exception as exc:
        if (died := server.died_during(exc)) is not None:
            raise died from exc
        raise


@asynccontextmanager
async def _anaming_a_death(server: LocalServer) -> AsyncIterator[None]:
    """`_naming_a_death` for async calls: the wait for the exit runs in a thread."""
    try:
        yield
    except Exception as exc:
        if (died := await asyncio.to_thread(server.died_during, exc)) is not None:
            raise died from exc
        raise


WAITERS = 64
"""Async calls that may wait for the core room at once, each on a thread (more queue)."""


SHARE_CORES_ENV = "LANGGRAPH_MOA_SHARE_CORES"
"""The 0/1 switch that lets every local model decode at once (`CoreRoom`)."""


class CoreRoom:
    """Lets one local model at a time use the cores, with any number of its own calls.

    Every server has all the cores, so two models decoding at once only fight over them
    (on 2 cores a busy second process slowed a 2-thread server several times over). Calls of
    the model in the room enter together and share its continuous batch; a call of another
    model waits until the room is empty. The total work is the same, without the contention.
    ``LANGGRAPH_MOA_SHARE_CORES=1`` lets all models run at once instead (many cores).
    """

    def __init__(self, shared: bool | None = None) -> None:
        """Create an empty room; `shared` True disables the exclusion."""
        if shared is None:
            shared = bool(switch_from_env(SHARE_CORES_ENV))
        self.shared = shared
        self._cond = threading.Condition()
        self._model: str | None = None
        self._inside = 0
        self._waiters = ThreadPoolExecutor(WAITERS, thread_name_prefix="moa-core-room")

    def enter(self, model: str) -> None:
        """Wait until the room is empty or holds `model`, then enter."""
        if self.shared:
            return
        with self._cond:
            self._cond.wait_for(lambda: self._let_in(model))

    def _try_enter(self, model: str) -> bool:
        """Enter if the room is empty or holds `model` now; never wait."""
        if self.shared:
            return True
        with self._cond:
            return self._let_in(model)

    def _let_in(self, model: str) -> bool:
        """Enter if `model` may (the lock held); tell whether it did."""
        if self._inside and self._model != model:
            return False
        self._model = model
        self._inside += 1
        return True

    def leave(self) -> None:
        """Leave; the last one out lets the next model in."""
        if self.shared:
            return
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._model = None
                self._cond.notify_all()

    @contextmanager
    def held(self, model: str) -> Iterator[None]:
        """Hold the room for one synchronous call."""
        self.enter(model)
        try:
            yield
        finally:
            self.leave()

    @asynccontextmanager
    async def aheld(self, model: str) -> AsyncIterator[None]:
        """Hold the room for one async call; waiting happens off the event loop.

        A call that must wait does so on a thread of the room's own (`_waiters`), not the
        loop's default executor: waits last as long as another model's calls, and a few of
        them would hold every default thread that the rest of the process works on.
        """
        if not self._try_enter(model):
            await self._wait_to_enter(model)
        try:
            yield
        finally:
            self.leave()

    async def _wait_to_enter(self, model: str) -> None:
        entering = self._waiters.submit(self.enter, model)
        try:
            await asyncio.shield(asyncio.wrap_future(entering))
        except asyncio.CancelledError:
            # Cancelled while waiting: a wait not begun is dropped; once a begun one gets in,
            # its own thread gives the place back (a callback of the loop would not run once
            # the loop is closed, and the room would stay held by this model for good).
            def give_back(entered: concurrent.futures.Future[None]) -> None:
                if not entered.cancelled() and entered.exception() is None:
                    self.leave()

            entering.cancel()
            entering.add_done_callback(give_back)
            raise


_CLIENT_LOCK = ForkSafeLock()


def _forget_default_after_fork() -> None:
    """Give a forked child a runtime of its own, made at its first local call.

    The parent's was inherited as its threads left it: its lock taken by a thread starting a
    server, its core room holding another model's calls, so the child's first call waited
    for ever. The parent's servers are not the child's processes, which cannot wait for
    them (they read as exited), so the child starts its own in any case.
    """
    LocalRuntime._default = None


os.register_at_fork(after_in_child=_forget_default_after_fork)


def start_local_servers(names: list[str]) -> None:
    """Assemble, verify and start the servers of these local models (blocking; idempotent).

    Async runs call this in a worker thread before they build their models on the event
    loop, so that the loop never waits on a disk read, a hash or a process start.
    """
    try:
        for name in names:
            LocalRuntime.default().server(name)
    except LocalModelError as exc:
        raise LocalRuntimeError(str(exc)) from None


def schema_probe(name: str, params: dict[str, Any]) -> BaseChatModel:
    """Return a client of local model `name` that starts no server, to ask it a schema.

    Whether it answers in a structured-output schema is its OpenAI client's to say
    (`with_structured_output` makes no call): a run refused for its schema must not first
    start a server (tens of seconds, GBs of memory). It is never called, so it has no
    clients: given none, LangChain's validation builds an OpenAI and an AsyncOpenAI client
    on its default HTTP clients at every run. A placeholder where they go makes it build
    none; a call would still find the server and build them (`LocalChatModel._ensure_server`).
    """
    return LocalChatModel(
        model=name,
        base_url="http://127.0.0.1:9/v1",
        api_key="local",  # type: ignore[arg-type]
        **{**params, "client": _NO_CLIENT, "async_client": _NO_CLIENT},
    )


_NO_CLIENT = object()
"""Stands where a schema probe's clients go, so that LangChain builds none (`schema_probe`)."""


def local_chat_model(name: str, params: dict[str, Any]) -> BaseChatModel:
    """Build the chat model of ``local:<name>`` on the process-wide runtime."""
    try:
        return LocalRuntime.default().chat_model(name, params)
    except LocalModelError as exc:
        raise LocalRuntimeError(str(exc)) from None
