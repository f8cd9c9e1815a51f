"""Evaluation datasets: JSONL, AlpacaEval JSON and MT-Bench questions, read strictly.

Every problem in a file is reported with its path and line number (or item index for JSON)
and what to fix, before any model is called.

Formats:
- JSONL, one item per line: ``instruction`` (or ``question``/``prompt``), and optionally
  ``id``, ``expected`` (a string or a list of accepted answers), ``numeric`` (a number),
  ``pattern`` (a regular expression), ``reference`` (a reference output), ``category``.
- GSM8K (JSONL, as ``openai/grade-school-math`` publishes it): ``question``, and ``answer``,
  a worked solution whose last line is ``#### N``; N (commas allowed) becomes the numeric
  target and the solution the reference.
- MT-Bench question files (JSONL): ``question_id``, ``category``, ``turns`` (a list of user
  turns), optionally ``reference`` (a list).
- AlpacaEval (``.json``): a list of ``{"instruction", "output"?, "dataset"?}``.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from langgraph_moa.errors import EvalDatasetError
from langgraph_moa.text._selection import _VALUE, number_marks, number_value

_INSTRUCTION_KEYS = ("instruction", "question", "prompt")
# GSM8K's final line: "#### 18", "#### 1,600", "#### -3" (nothing else follows it).
# A comma groups thousands only between groups of three digits; a lone one before one or
# two digits is a decimal comma there, as the scorer reads "#### 3,4" (3.4).
_GSM8K_FINAL = re.compile(r"####\s*" + _VALUE + r"\s*$")
PACKAGED = {
    "verifiable": "data/verifiable.jsonl",
    "gsm8k": "data/gsm8k_test_300.jsonl",
}
"""Datasets shipped inside the package, by the name `load_dataset` accepts for them."""


@dataclass
class EvalItem:
    """One thing to ask, and what counts as right."""

    id: str
    turns: list[str]
    """User turns, in order (one for single-turn data)."""
    expected: list[str] = field(default_factory=list)
    numeric: float | None = None
    pattern: str | None = None
    reference: str | None = None
    category: str | None = None

    @property
    def verifiable(self) -> bool:
        """Tell whether the item has an answer that can be checked without a judge."""
        return bool(self.expected) or self.numeric is not None or self.pattern is not None


def shipped_dataset(name: str = "verifiable") -> Path:
    """Return the path of a dataset shipped in the package (see `PACKAGED`).

    ``verifiable`` is the small set this project wrote (offline demos); ``gsm8k`` is a fixed
    random sample of 300 items of GSM8K's test split (MIT license; see
    benchmarks/data/make_gsm8k.py and the NOTICE beside the file).
    """
    if name not in PACKAGED:
        raise EvalDatasetError(
            f"No packaged dataset {name!r}; the packaged ones are {', '.join(PACKAGED)}."
        )
    return Path(str(resources.files("langgraph_moa.eval").joinpath(PACKAGED[name])))


def dataset_path(source: str | Path) -> Path:
    """Return the file a dataset source names: the file itself, else a packaged dataset."""
    path = Path(source)
    if not path.is_file() and str(path) in PACKAGED:
        return shipped_dataset(str(path))
    return path


def load_dataset(path: str | Path) -> list[EvalItem]:
    """Load a dataset file, or a packaged one by name (``gsm8k``, ``verifiable``).

    The format is told by the file's suffix, in any case, and its fields. A file of that name in the
    working directory wins over the packaged dataset.
    """
    path = dataset_path(path)
    if not path.is_file():
        raise EvalDatasetError(
            f"Dataset file {str(path)!r} does not exist; give a file, or a packaged dataset "
            f"by name ({', '.join(PACKAGED)})."
        )
    text = _read_text(path)
    if not text.strip():
        raise EvalDatasetError(f"{path}: the file is empty; it needs at least one item.")
    suffix = path.suffix.lower()  # in any case (data.JSON), as a config file's is
    if suffix == ".json":
        items = _alpaca(path, text)
    elif suffix in (".jsonl", ".ndjson"):
        items = _jsonl(path, text)
    else:
        raise EvalDatasetError(
            f"{path}: unknown dataset format {path.suffix!r}; use .jsonl (one item per line, "
            "or MT-Bench questions) or .json (AlpacaEval)."
        )
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise EvalDatasetError(f"{path}: duplicate ids {duplicates[:5]}; ids must be unique.")
    return items


def _read_text(path: Path) -> str:
    """Read a dataset file as UTF-8; a file that cannot be read is one sentence, not a trace.

    A byte-order mark is honoured, not refused: Windows editors save "UTF-8" with one
    (read past it) and "Unicode" as UTF-16 (read as such; UTF-32 too).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EvalDatasetError(
            f"{path}: cannot read the file ({exc.strerror or type(exc).__name__}); check its "
            "permissions, or give another file."
        ) from None
    codec = _marked_codec(data)
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        if codec != "utf-8-sig":
            name = codec.upper()
            raise EvalDatasetError(
                f"{path}: the file starts with a {name} byte-order mark but is not {name} "
                "throughout; save it as UTF-8 and run again."
            ) from None
        raise EvalDatasetError(
            f"{path}:{line}: the file is not UTF-8 (byte 0x{exc.object[exc.start]:02x}); "
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8) and run again."
        ) from None


def _marked_codec(data: bytes) -> str:
    """Return the codec `data`'s byte-order mark names; UTF-8 (a mark skipped) without one.

    UTF-32's marks come first: its little-endian one starts as UTF-16's does (FF FE 00 00).
    """
    if data[:4] in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):
        return "utf-32"
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    return "utf-8-sig"


def _jsonl(path: Path, text: str) -> list[EvalItem]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDatasetError(f"{path}:{number}: not valid JSON ({exc.msg}).") from None
        if not isinstance(data, dict):
            raise EvalDatasetError(f"{path}:{number}: each line must be a JSON object.")
        items.append(_item(data, f"{path}:{number}", default_id=str(number)))
    if not items:
        raise EvalDatasetError(f"{path}: the file holds no items.")
    return items


def _alpaca(path: Path, text: str) -> list[EvalItem]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalDatasetError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})."
        ) from None
    if not isinstance(data, list) or not data:
        raise EvalDatasetError(
            f"{path}: an AlpacaEval file is a non-empty JSON list of "
            '{"instruction": ..., "output": ...} objects.'
        )
    items = []
    for index, entry in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("instruction"), str):
            raise EvalDatasetError(f"{where}: needs an 'instruction' string.")
        items.append(
            EvalItem(
                id=str(entry.get("id", index)),
                turns=[entry["instruction"]],
                reference=entry.get("output"),
                category=entry.get("dataset"),
            )
        )
    return items


def _item(data: dict[str, Any], where: str, default_id: str) -> EvalItem:
    if "turns" in data:  # MT-Bench
        turns = data["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise EvalDatasetError(f"{where}: 'turns' must be a non-empty list of strings.")
        reference = data.get("reference")
        return EvalItem(
            id=str(data.get("question_id", data.get("id", default_id))),
            turns=turns,
            reference="\n".join(reference) if isinstance(reference, list) else reference,
            category=data.get("category"),
        )
    key = next((k for k in _INSTRUCTION_KEYS if k in data), None)
    if key is None:
        raise EvalDatasetError(
            f"{where}: missing field 'instruction' (or 'question', 'prompt', or MT-Bench "
            "'turns'); every item needs the text to ask."
        )
    if not isinstance(data[key], str):
        raise EvalDatasetError(
            f"{where}: '{key}' has the wrong type ({_json_type(data[key])}): it must be a "
            "string, the text to ask."
        )
    if not data[key].strip():
        raise EvalDatasetError(f"{where}: '{key}' is empty: every item needs the text to ask.")
    expected = data.get("expected", data.get("answers", []))
    if isinstance(expected, str):
        expected = [expected]
    if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
        raise EvalDatasetError(f"{where}: 'expected' must be a string or a list of strings.")
    numeric = data.get("numeric")
    if numeric is not None and not isinstance(numeric, (int, float)):
        raise EvalDatasetError(f"{where}: 'numeric' must be a number, got {numeric!r}.")
    reference = data.get("reference") or data.get("output")
    category = data.get("category")
    if "answer" in data:
        numeric = _gsm8k_target(data["answer"], where) if numeric is None else numeric
        reference = reference or data["answer"]
        category = category or "gsm8k"
    pattern = data.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise EvalDatasetError(
            f"{where}: 'pattern' has the wrong type ({_json_type(pattern)}): it must be a "
            "string, a regular expression."
        )
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise EvalDatasetError(f"{where}: 'pattern' is not a valid regex ({exc}).") from None
    return EvalItem(
        id=str(data.get("id", default_id)),
        turns=[data[key]],
        expected=expected,
        numeric=float(numeric) if numeric is not None else None,
        pattern=pattern,
        reference=reference,
        category=category,
    )


def _json_type(value: Any) -> str:
    """Name a JSON value's type as the file's author wrote it (a number, not an int)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), "not text")


def gsm8k_final_number(solution: str) -> float | None:
    """Return N of a GSM8K worked solution that ends ``#### N``; None for any other text.

    Every reader of GSM8K's ``answer`` field (JSONL files, LangSmith datasets) takes its
    target from here, so the same data is scored the same way whichever way it came.
    """
    match = _GSM8K_FINAL.search(number_marks(solution))  # a U+2212 minus: as the scorer reads it
    value = None if match is None else number_value(match.group(1))
    try:
        return None if value is None else float(value)
    except OverflowError:  # "#### 1e999": past any float, no target
        return None


def _gsm8k_target(answer: Any, where: str) -> float:
    """Read N from a GSM8K worked solution that ends ``#### N``."""
    if not isinstance(answer, str):
        raise EvalDatasetError(
            f"{where}: 'answer' must be a GSM8K worked solution (a string ending '#### N'), "
            f"got {type(answer).__name__}; for other answers use 'expected' or 'numeric'."
        )
    target = gsm8k_final_number(answer)
    if target is None:
        last = answer.strip().splitlines()[-1] if answer.strip() else ""
        raise EvalDatasetError(
            f"{where}: 'answer' is read as a GSM8K solution, whose last line is '#### N' with "
            f"N a number, but it ends {last[-40:]!r}; end it with '#### N', or give the "
            "answer as 'expected' (text) or 'numeric' (a number) instead."
        )
    return target
