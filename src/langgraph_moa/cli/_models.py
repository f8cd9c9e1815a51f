"""`moa models`: the local models, provider keys and presets, with specs printed whole.

The spec is the value a user copies into `--proposers`, so it is never cut; off a terminal
the output is tab-separated lines, and `--json` gives the same facts to a script.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.table import Table

from langgraph_moa.cli._output import out


def facts() -> dict[str, Any]:
    """Everything `moa models` shows, as data."""
    from langgraph_moa.config._schema import list_presets
    from langgraph_moa.local.catalog import CATALOG
    from langgraph_moa.providers._table import providers

    return {
        "local": [
            {
                "spec": f"local:{info.name}",
                "model": info.title,
                "family": info.family,
                "size_bytes": info.size,
                "installed": info.installed(),
                "install": info.install_hint,
            }
            for info in CATALOG.values()
        ],
        "providers": [
            {
                "prefix": f"{row.prefix}:",
                "key": row.key_env,
                "key_set": bool(os.environ.get(row.key_env)),
            }
            for row in providers()
            if row.key_env
        ],
        "presets": list_presets(),
    }


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """List the local models (whole specs), which provider keys are set, and the presets."""
    data = facts()
    if as_json:
        out.data(json.dumps(data, indent=2))
        return
    if not out.stdout_is_terminal:
        lines = [
            "\t".join(
                (
                    m["spec"],
                    m["model"],
                    f"{m['size_bytes'] / 1e6:.0f} MB",
                    "installed" if m["installed"] else f"not installed: {m['install']}",
                )
            )
            for m in data["local"]
        ]
        lines += [
            f"{p['prefix']}\t{p['key']} {'set' if p['key_set'] else 'not set'}"
            for p in data["providers"]
        ]
        lines.append("presets\t" + ", ".join(data["presets"]))
        out.data("\n".join(lines))
        return
    from rich.console import Console

    console = Console()
    table = Table(title="Local models (llama.cpp, offline)")
    table.add_column("spec", no_wrap=True)  # the value to copy: never cut
    for column in ("model", "family", "size", "installed"):
        table.add_column(column)
    for m in data["local"]:
        installed = "[green]yes[/]" if m["installed"] else f"[red]no[/] ({m['install']})"
        size = f"{m['size_bytes'] / 1e6:.0f} MB"
        table.add_row(m["spec"], m["model"], m["family"], size, installed)
    console.print(table)
    remote = Table(title="Remote providers")
    remote.add_column("prefix", no_wrap=True)
    remote.add_column("key")
    for p in data["providers"]:
        state = f"[green]{p['key']} set[/]" if p["key_set"] else f"[dim]{p['key']} not set[/]"
        remote.add_row(p["prefix"], state)
    console.print(remote)
    console.print(f"Presets: {', '.join(data['presets'])}")
