"""What the serve benchmarks share: a server process on a free port, up before it is measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from langgraph_moa.transport._net import free_port

MOA_SERVE = [sys.executable, "-m", "langgraph_moa", "serve"]
"""The real `moa serve` command; a script adds its presets and flags (`--port` is added here)."""


def load_average() -> str:
    """The machine's load average, to print beside figures that depend on it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def answers(url: str, proc: subprocess.Popen[Any], within_s: float, poll_s: float = 0.2) -> bool:
    """Wait until ``GET url`` answers 200; False if `proc` exits or `within_s` passes first."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def spawn(
    code: str, args: list[str], probe: str, within_s: float, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Run `code` (a Python script that exits when its stdin closes) with `args`; return once
    ``GET probe`` answers 200. Stop it with `stop`: a closed stdin, not a signal, so that it
    shuts down the way the script chose."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, text=True, env=env
    )
    if not answers(probe, proc, within_s, poll_s=0.1):
        raise RuntimeError(f"{probe} did not start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """Close a `spawn`ed script's stdin and wait for it to exit."""
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


@contextmanager
def served(
    command: list[str],
    *,
    port_flag: bool = True,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    start_s: float = 60,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `command` (with ``--port N`` unless `port_flag` is False: then N is its last
    argument) until its ``GET /v1/models`` answers 200; yield its root URL and process, and
    kill it afterwards (a graceful stop would wait for the load's open connections)."""
    port = free_port()
    argv = [*command, "--port", str(port)] if port_flag else [*command, str(port)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec_fn
    )
    root = f"http://127.0.0.1:{port}"
    try:
        if not answers(f"{root}/v1/models", proc, start_s):
            raise SystemExit(f"the server did not start: {' '.join(argv)}")
        yield root, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)
