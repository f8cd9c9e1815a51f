"""First use of the local models, said out loud: assembling, verifying and loading, with sizes.

Before, a first `moa run` sat for 14 s behind a header while 1.1 GB was concatenated and
hashed, then loaded; the user could not tell work from a hang. The command now prepares the
models the run will call (only those: see `_config.local_models`) before the run starts,
saying what it does, how big it is and how long it took.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from langgraph_moa.cli._output import out


def prepare(names: list[str]) -> None:
    """Assemble, verify and start the servers of these local models, saying so on stderr."""
    if not names:
        return
    from langgraph_moa.local.catalog import assembled, cache_dir, lookup, model_path
    from langgraph_moa.local.runtime import LocalRuntime

    runtime = LocalRuntime.default()
    for name in names:
        info = lookup(name)
        info.chunk_paths()  # not installed: LocalModelError with the install command
        size = f"{info.size / 1e9:.1f} GB"
        if not assembled(info):
            parts = len(info.files)
            what = f"assembling {parts} parts and verifying" if parts > 1 else "verifying"
            out.info(
                f"[dim]first use of local:{name}: {what} {size} into {cache_dir()} "
                "(once; later runs skip this)[/]"
            )
            started = time.perf_counter()
            with _status(f"local:{name}: {what} {size}"):
                model_path(info)
            out.info(f"[dim]local:{name} ready on disk in {time.perf_counter() - started:.1f}s[/]")
        started = time.perf_counter()
        with _status(f"loading local:{name} ({size}) into llama.cpp"):
            runtime.start([name])
        out.info(f"[dim]loaded local:{name} ({size}) in {time.perf_counter() - started:.1f}s[/]")


def _status(text: str) -> AbstractContextManager[Any]:
    """Show a spinner with the elapsed time on a terminal; nothing elsewhere."""
    from contextlib import nullcontext

    if out.quiet or not out.stderr_is_terminal:
        return nullcontext()
    return out.err.status(f"[dim]{text}…[/]")
