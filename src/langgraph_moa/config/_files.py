"""Reading a settings file (a config, a price table) as untrusted input.

Whatever the file holds, reading it ends in a mapping or in one `MoAConfigError` sentence
that names the file, the problem and the fix: never a parser's traceback, never minutes of
parsing or gigabytes of memory, never a setting silently overridden by a second copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from langgraph_moa._redact import shown_value
from langgraph_moa.errors import MoAConfigError

MAX_CONFIG_BYTES = 1 << 20
"""The largest settings file read (1 MiB). The largest preset is under 2 KB; a 36 MB file of
2,000,000 proposers took 72 s and 2 GB of memory to parse before validation refused it."""


class DuplicateKeyError(ValueError):
    """A mapping in the file gives one key twice (YAML and JSON parsers keep the last)."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Refuse a key written twice in `node`, then flatten its ``<<`` merges as usual.

        The keys are checked as written, before the merges are flattened in: a key that
        overrides a merged one is YAML's way to change an anchor's value, not a repeat.
        Each node is checked once, at its first flattening: a mapping merged into another
        is flattened in place, perhaps before it is built itself (an aggregator merging a
        proposer that merges another), and then holds its own keys and the merged ones.
        """
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if isinstance(key, str | int | float | bool) or key is None:
                    if key in seen:
                        raise DuplicateKeyError(key)
                    seen.add(key)
        super().flatten_mapping(node)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a repeated key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def parse_settings(text: str, is_json: bool) -> Any:
    """Parse YAML (safe: plain data only) or JSON text, refusing a key given twice.

    Raises:
        DuplicateKeyError: a mapping gives one key twice.
        ValueError, yaml.YAMLError, RecursionError: as the parsers do.
    """
    if is_json:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only


def read_mapping_file(path: str | Path, what: str, holds: str) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON (.json) file that must hold a mapping.

    Errors name the file, what it is (`what`) and what it must hold (`holds`).
    """
    path = Path(path)
    shown = repr(str(path))
    text = _read_text(path, what, shown)
    try:
        # Blank JSON is no document ("Expecting value: line 1 column 1"); blank YAML is None.
        data = parse_settings(text, path.suffix == ".json") if text.strip() else None
    except DuplicateKeyError as exc:
        raise MoAConfigError(
            f"{what} {shown} gives {shown_value(exc.key)} twice in one mapping, and only one "
            "can count: keep one."
        ) from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        where = " ".join(str(exc).split())
        # The parser's "character '\t' that cannot start any token" names no fix.
        tabs = "; indent with spaces, not tabs" if "'\\t'" in where else ""
        raise MoAConfigError(f"{what} {shown} is not valid: {where}{tabs}.") from None
    except RecursionError:
        raise MoAConfigError(
            f"{what} {shown} is nested too deeply to read: settings nest a few levels at most."
        ) from None
    except ValueError as exc:  # a scalar the parser could not build
        raise MoAConfigError(
            f"{what} {shown} has a value that cannot be read ({_unreadable(exc)}): quote it "
            "if it is text, or correct it."
        ) from None
    if data is None:  # nothing but blank lines and comments (or null)
        raise MoAConfigError(f"{what} {shown} is empty: it must hold {holds}.")
    if not isinstance(data, dict):
        raise MoAConfigError(f"{what} {shown} must hold {holds} at the top level.")
    named = [key for key in data if not isinstance(key, str)]
    if named:
        raise MoAConfigError(
            f"{what} {shown} has a top-level key that is not a name ({named[0]!r}): it must "
            f"hold {holds}; quote it or remove it."
        )
    return data


def _read_text(path: Path, what: str, shown: str) -> str:
    """Return the file's text, read no further than `MAX_CONFIG_BYTES`."""
    if path.is_dir():
        raise MoAConfigError(
            f"{what} {shown} is a directory: give the path of a YAML or JSON file instead."
        )
    if not path.is_file():
        # A relative path is read from the working folder: say which one was looked in.
        full = "" if path.is_absolute() else f" (looked for {str(path.absolute())!r})"
        raise MoAConfigError(f"{what} {shown} does not exist{full}: check the path.")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise MoAConfigError(f"{what} {shown} cannot be read ({exc.strerror}).") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise MoAConfigError(
            f"{what} {shown} is larger than {MAX_CONFIG_BYTES} bytes, more than any settings "
            "file needs: check that it is the right file."
        )
    try:
        return raw.decode("utf-8-sig")  # a byte order mark, as Windows Notepad saves one
    except UnicodeDecodeError:
        raise MoAConfigError(
            f"{what} {shown} is not UTF-8 text: give a YAML or JSON file."
        ) from None


def _unreadable(exc: ValueError) -> str:
    """Say why a scalar could not be built, without Python's advice to change a limit."""
    if "integer string conversion" in str(exc):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return " ".join(str(exc).split())
