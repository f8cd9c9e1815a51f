"""Reading a settings file (a config, a price table) as untrusted input.

Whatever the file holds, reading it ends in a mapping or in one `MoAConfigError` sentence
that names the file, the problem and the fix: never a parser's traceback, never minutes of
parsing or gigabytes of memory, never a setting silently overridden by a second copy.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from langgraph_moa._redact import clip, shown_value
from langgraph_moa._settings_bytes import read_settings_bytes
from langgraph_moa.errors import MoAConfigError


class DuplicateKeyError(ValueError):
    """A mapping in the file gives one key twice (YAML and JSON parsers keep the last)."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class OldNumberError(ValueError):
    """The file writes a number that YAML 1.1 reads one way and YAML 1.2 another.

    PyYAML reads YAML 1.1: ``layers: 010`` is 8 (octal), ``call_timeout_s: 1:30`` is 90
    (base 60), ``0b11`` is 3; YAML 1.2, and most people, read 10, the text "1:30" and the
    text "0b11". Each was taken without a word; now the file is refused with the fix.
    """

    def __init__(self, written: str, line: int, read: float | None) -> None:
        super().__init__(written)
        self.written, self.line, self.read = written, line, read

    def explain(self) -> str:
        """Say how YAML 1.1 reads the number written, and how to write what was meant."""
        written, read = self.written, self.read
        kind = "binary" if "b" in written else "base 60" if ":" in written else "octal"
        if read is None:  # too long to write out
            return (
                f"{clip(written, _SHOWN_NUMBER_CHARS)} (line {self.line}), which YAML 1.1 reads "
                f"as a number ({kind}): write the number meant in decimal, or quote it if it "
                "is text"
            )
        sign = written[:1] if written[:1] in ("+", "-") else ""
        digits = written[len(sign) :].lstrip("0_")  # -0010 meant as -10, not -010
        meant = (sign + digits if digits else "0") if kind == "octal" else ""
        fix = f"{meant} or {read} as meant" if meant and meant != str(read) else str(read)
        return (
            f"{written} (line {self.line}), which YAML 1.1 reads as {read} ({kind}) and YAML "
            f"1.2 does not: write {fix}, or quote it if it is text"
        )


_SHOWN_NUMBER_CHARS = 40
"""The longest YAML 1.1 number a refusal writes out and reads (a longer one is clipped)."""

_OLD_NUMBER_TAG = "tag:langgraph-moa,2026:yaml-1.1-number"
_OLD_NUMBER = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0_]*[1-7]_*[0-7][0-7_]*
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*)$""",
    re.VERBOSE,
)
"""PyYAML's int and float forms that YAML 1.2's core schema reads otherwise: a leading zero
(octal) before two digits or more, 0b (binary), and base 60. 0x and plain decimals read alike
and are taken, and so is 1_000 (YAML 1.2 reads text there, but 1000 is what a person reads);
so is a leading zero before one octal digit or none (00, -007), the same number either way."""


class _SettingsLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a repeated key and an ambiguous number.

    A key given twice in one mapping, and a number that YAML 1.1 and 1.2 read differently
    (`OldNumberError`).
    """

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

    def construct_old_number(self, node: yaml.ScalarNode) -> Any:
        """Refuse a number written in a form only YAML 1.1 reads as a number."""
        written = node.value
        read = None
        if len(written) <= _SHOWN_NUMBER_CHARS:  # a long one is not read: not written out
            read = (
                self.construct_yaml_float(node) if "." in written else self.construct_yaml_int(node)
            )
        raise OldNumberError(written, node.start_mark.line + 1, read)


# Tried before PyYAML's own int and float forms, which would match first. Keyed by a
# scalar's first character: the `''` key (an empty scalar's) starts no number.
_SettingsLoader.yaml_implicit_resolvers = {
    first: [(_OLD_NUMBER_TAG, _OLD_NUMBER)] * bool(first and first in "+-0123456789") + resolvers
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SettingsLoader.add_constructor(_OLD_NUMBER_TAG, _SettingsLoader.construct_old_number)


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
        OldNumberError: a number is written in a form only YAML 1.1 reads (`_OLD_NUMBER`).
        ValueError, yaml.YAMLError, RecursionError: as the parsers do.
    """
    if is_json:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    return yaml.load(text, Loader=_SettingsLoader)  # a SafeLoader: plain data only


def is_json(path: Path) -> bool:
    """Tell whether `path` names a JSON file: ``.json`` in any case (``moa.JSON`` too)."""
    return path.suffix.lower() == ".json"


def read_mapping_file(path: str | Path, what: str, holds: str) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON (.json) file that must hold a mapping.

    Errors name the file, what it is (`what`) and what it must hold (`holds`).
    """
    path = Path(path)
    shown = repr(str(path))
    text = _read_text(path, what, shown)
    try:
        # Blank JSON is no document ("Expecting value: line 1 column 1"); blank YAML is None.
        data = parse_settings(text, is_json(path)) if text.strip() else None
    except DuplicateKeyError as exc:
        raise MoAConfigError(
            f"{what} {shown} gives {shown_value(exc.key)} twice in one mapping, and only one "
            "can count: keep one."
        ) from None
    except OldNumberError as exc:
        raise MoAConfigError(f"{what} {shown} has {exc.explain()}.") from None
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
    refuse_unnamed_keys(data, f"{what} {shown}", holds)
    return data


def refuse_unnamed_keys(data: Mapping[Any, Any], what: str, holds: str) -> None:
    """Refuse a mapping whose top-level key is not a string: no setting is named so.

    Its keys become keyword arguments, where such a key raised a TypeError ("keywords must
    be strings"), not the refusal that names it.
    """
    named = [key for key in data if not isinstance(key, str)]
    if named:
        raise MoAConfigError(
            f"{what} has a top-level key that is not a name ({named[0]!r}): it must hold "
            f"{holds}; quote it or remove it."
        )


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
        raw = read_settings_bytes(path, f"{what} {shown}")
    except OSError as exc:
        raise MoAConfigError(f"{what} {shown} cannot be read ({exc.strerror}).") from None
    except ValueError as exc:
        raise MoAConfigError(f"{exc}.") from None
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
