"""The one way to turn what a user names into a `MoAConfig`: preset, file, mapping or object.

`create_moa_graph`, `MoAChatModel`, the CLI and `moa eval` all resolve their config here, so a
preset name, a path to a YAML/JSON file, a mapping of settings and a `MoAConfig` are accepted
(and refused) the same way everywhere. Run contexts sent by clients are the exception on
purpose: they may name a preset, never a file on the server's disk (`config.context`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph_moa.config._files import refuse_unnamed_keys
from langgraph_moa.config._schema import MoAConfig, list_presets
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.text._names import did_you_mean

DEFAULT_PRESET = "local-confidence"
"""The preset used when none is named: the most accurate local system measured (README,
"What it found on the local models"); it needs no API key and no network."""

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def names_a_file(source: str) -> bool:
    """Tell whether `source` is a config file's path: its suffix, in any case (``moa.JSON``)."""
    return Path(source).suffix.lower() in CONFIG_SUFFIXES


ConfigSource = MoAConfig | str | os.PathLike[str] | Mapping[str, Any] | None
"""A preset name, a YAML/JSON file path, a mapping of settings, a `MoAConfig`, or None for
the default preset."""


def load_config(source: ConfigSource = None) -> MoAConfig:
    """Resolve a config source into a validated `MoAConfig` (no network, no model built).

    Raises:
        MoAConfigError: the preset is unknown, the file is missing or invalid, or a
            setting breaks a rule; the message names the problem and the fix.
    """
    if source is None:
        return MoAConfig.from_preset(DEFAULT_PRESET)
    if isinstance(source, MoAConfig):
        return source
    if isinstance(source, Mapping):
        refuse_unnamed_keys(source, "A config mapping", "a mapping of settings")
        data = dict(source)
        preset = data.pop("preset", None)
        return MoAConfig.from_preset(preset, **data) if preset else MoAConfig(**data)
    if isinstance(source, os.PathLike):
        return MoAConfig.from_file(Path(source))
    if isinstance(source, str):
        if names_a_file(source):
            return MoAConfig.from_file(source)
        presets = list_presets()
        if source in presets:
            return MoAConfig.from_preset(source)
        close = did_you_mean(source, presets)
        raise MoAConfigError(
            f"Unknown preset {source!r} ({close}): give a preset or a path to a .yaml, .yml "
            "or .json file."
            if close
            else f"Unknown preset {source!r}: give a preset ({', '.join(presets)}) or a path "
            "to a .yaml, .yml or .json file."
        )
    raise MoAConfigError(
        f"A config must be a preset name, a file path, a mapping or a MoAConfig, "
        f"got {type(source).__name__}."
    )
