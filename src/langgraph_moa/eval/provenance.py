"""What an evaluation needs recorded to be run again: ``provenance.json`` and the report's end.

A summary's accuracies say nothing of where they came from: which package (and so which
scorers and prompts), which model files, which full config of each system, which items in
which order, and which command. Without these a number in a report cannot be reproduced,
and two reports cannot be told apart. `provenance` gathers them once per run; the report
prints the parts a reader needs, and ``provenance.json`` keeps all of it.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from fnmatch import fnmatchcase
from importlib import metadata, resources
from pathlib import Path, PurePosixPath
from typing import Any

from langchain_core.language_models import BaseChatModel

import langgraph_moa
from langgraph_moa._redact import redact_urls_in
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.errors import MoAError
from langgraph_moa.eval.datasets import EvalItem, dataset_path
from langgraph_moa.eval.stats import ALPHA
from langgraph_moa.providers._models import describe_model
from langgraph_moa.run._calls import local_digest

INTERVALS = {
    "accuracy": "Wilson score 95% interval over the items scored",
    "vs_baseline": "paired percentile bootstrap 95% interval (2000 resamples, seed 0) of the "
    "per-item difference over the items both systems answered and scored; exact sign test "
    f"(McNemar); a difference is called only when the interval excludes zero and p < {ALPHA}",
}
"""How the summary's intervals are computed, named in the record (see `stats`)."""


def package_version() -> str:
    """Return the version of the code that runs: the package's own `__version__`.

    Not the installed metadata: an editable install's stays as it was installed, and a
    source tree run without installing has none.
    """
    return langgraph_moa.__version__


PACKAGE_DIR = Path(langgraph_moa.__file__).parent
"""The package's source folder, whose files `source_digest` names."""


def source_digest(folder: Path) -> str:
    """Return one SHA-256 over every source file under `folder`, with its relative path.

    The version names no code: it stayed the same through every change to prompts,
    presets, graph and scorers, so two runs of different code were recorded alike. The
    digest changes with any edit, and is the same for the same code in a wheel and in any
    checkout: only what a wheel ships counts (`_is_source`), so compiled files follow the
    source and differ between Python versions, hidden files (``.DS_Store``, an editor's swap
    file) and backups are no source, and CRLF line ends (git on Windows) are read as LF.

    A name that is no UTF-8 is hashed as the bytes the file system holds (it raised, and no
    Evaluation could start); a file that cannot be read is a `MoAError` naming it, since a
    digest without it would name code that may not be what ran.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_source(p, folder))
    for path in files:
        name = path.relative_to(folder).as_posix()
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise MoAError(
                f"Cannot read the package file {name!r} under {str(folder)!r} to take the "
                f"source digest ({exc.strerror or exc}); make it readable, or remove it."
            ) from None
        digest.update(hashlib.sha256(content.replace(b"\r\n", b"\n")).digest())
    return digest.hexdigest()


def package_source() -> str:
    """Return the `source_digest` of this package: taken when a run starts, the code it runs.

    Taken when it finished, a file edited in a checkout during a long run (whose code was
    loaded at its start) was recorded as the code that ran.
    """
    return source_digest(PACKAGE_DIR)


PACKAGE_DATA = (
    "py.typed",
    "config/presets/*.yaml",
    "eval/data/*.jsonl",
    "eval/data/*.txt",
    "serving/static/*",
)
"""The files besides ``*.py`` a wheel ships: pyproject.toml's package-data, which no wheel
holds to read (a test keeps the two alike)."""


def _is_source(path: Path, folder: Path) -> bool:
    """Tell whether `path` (under `folder`) is a file a wheel of the package would ship.

    Only ``*.py`` and the `PACKAGE_DATA` patterns: an editor's backups (``a.py~``,
    ``#a.py#``, ``.orig``, ``.bak``) and scratch files were hashed as source. A pattern's
    ``*`` stays in its folder, as setuptools' glob does, and matches no hidden file.
    """
    relative = PurePosixPath(path.relative_to(folder).as_posix())
    if any(part.startswith(".") for part in relative.parts) or "__pycache__" in relative.parts:
        return False
    if relative.suffix == ".py":
        return True
    return any(
        relative.parent == PurePosixPath(pattern).parent
        and fnmatchcase(relative.name, PurePosixPath(pattern).name)
        for pattern in PACKAGE_DATA
    )


def runtime_versions() -> dict[str, str | None]:
    """Return the version of the llama.cpp binding that serves local models (None: absent).

    A local model's answers depend on the inference code as well as on its file.
    """
    try:
        return {"xllamacpp": metadata.version("xllamacpp")}
    except metadata.PackageNotFoundError:
        return {"xllamacpp": None}


_SCORING_MODULES = (
    ("langgraph_moa.eval", "scorers.py"),
    ("langgraph_moa.text", "_selection.py"),  # reads the numbers ("1/2", "1e-5", "1,250")
    ("langgraph_moa.eval", "datasets.py"),  # reads a GSM8K target ("#### 18")
)


def scorer_rule() -> dict[str, Any]:
    """Name the scoring code by its digest: a scorer changed between two runs shows here.

    The digest covers every module that decides a score, not scorers.py alone: the number
    reader lives in text/_selection.py, and a change there changes scores as much.
    """
    digest = hashlib.sha256()
    for package, name in _SCORING_MODULES:
        digest.update(resources.files(package).joinpath(name).read_bytes())
    return {
        "module": "langgraph_moa.eval.scorers",
        "modules": [f"{package}/{name}" for package, name in _SCORING_MODULES],
        "sha256": digest.hexdigest(),
    }


def model_identity(spec: Any) -> dict[str, Any]:
    """Return what names one model: its spec, and for a local model its file's SHA-256.

    A model instance is named by its model name only: nothing in it tells its weights.
    """
    entry: dict[str, Any] = {"spec": describe_model(spec)}
    if isinstance(spec, BaseChatModel):
        entry["instance"] = type(spec).__name__
    elif (digest := local_digest(spec)) is not None:
        entry["sha256"] = digest
    return entry


def system_record(config: MoAConfig) -> dict[str, Any]:
    """Return a system's full config and the identity of every model it calls."""
    roles = [*config.proposers, *config.final_chain]
    models = {}
    for role in roles:
        entry = model_identity(role.model)
        models[entry["spec"]] = entry
    return {
        # An endpoint given as {base_url, model} dumps its URL as written, ?key=... included.
        "config": redact_urls_in(config.model_dump(mode="json")),
        "models": sorted(models.values(), key=lambda m: str(m["spec"])),
    }


def dataset_record(source: str | None, items: Sequence[EvalItem]) -> dict[str, Any]:
    """Return the dataset's source (and its file's SHA-256) and the exact items, in order."""
    ids = [item.id for item in items]
    record: dict[str, Any] = {
        "source": source,
        "items": len(ids),
        "ids": ids,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest(),
    }
    if source is None or source.startswith(LANGSMITH_SOURCE):
        return record  # no file here: a LangSmith dataset is named and its items listed
    if (path := dataset_path(source)).is_file():
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


LANGSMITH_SOURCE = "langsmith:"
"""How a LangSmith dataset's name is recorded as the source: a dataset called "gsm8k" there,
or named like a file here, was taken for that file and recorded with its SHA-256."""


def provenance(
    configs: dict[str, MoAConfig],
    items: Sequence[EvalItem],
    *,
    dataset: str | None,
    command: str | None,
    judge: Any = None,
    baseline: str | None = None,
    seed: int | None = None,
    source_sha256: str | None = None,
) -> dict[str, Any]:
    """Return everything an evaluation needs recorded to be run again (see the module doc).

    `source_sha256`: the `package_source` taken when the run started (now if not given).
    """
    return {
        "langgraph_moa": package_version(),
        "source_sha256": source_sha256 or package_source(),
        "runtime": runtime_versions(),
        "python": platform.python_version(),
        "command": command,
        "dataset": dataset_record(dataset, items),
        "scorer": scorer_rule(),
        "intervals": INTERVALS,
        "judge": model_identity(judge) if judge is not None else None,
        "baseline": baseline,
        "seed": seed,
        "systems": {name: system_record(config) for name, config in configs.items()},
    }


def render_provenance(record: dict[str, Any]) -> list[str]:
    """Return the report's "Reproduce" section: the command, versions, data and models."""
    data = record["dataset"]
    lines = [
        "## Reproduce",
        "",
        f"- command: `{record['command']}`" if record.get("command") else "- command: (Python)",
        f"- langgraph-moa {record['langgraph_moa']}"
        + (f" (source sha256 {src[:16]})" if (src := record.get("source_sha256")) else "")
        + f", Python {record['python']}; scorers sha256 {record['scorer']['sha256'][:16]}",
        f"- dataset: {data['source'] or 'items given in Python'}"
        + (f" (sha256 {data['sha256'][:16]})" if data.get("sha256") else "")
        + f"; {data['items']} items in this order, ids sha256 {data['ids_sha256'][:16]}",
    ]
    if "seed" in record:  # a record written before seeds were recorded says nothing of them
        lines.append(_seed_line(record["seed"]))
    for name, system in record["systems"].items():
        cfg = system["config"]
        models = ", ".join(
            m["spec"] + (f" (sha256 {m['sha256'][:16]})" if m.get("sha256") else "")
            for m in system["models"]
        )
        lines.append(f"- {name}: {_settings(cfg)}; {models}")
    lines += [
        "",
        "Every system's full config (temperatures, max tokens, samples, windows), the item "
        "ids and the interval methods are in provenance.json.",
    ]
    return lines


def _seed_line(seed: int | None) -> str:
    """Say whether a rerun can draw the same samples: only a seeded run's can."""
    if seed is None:
        return (
            "- seed: none (each sampled call drew a random seed: a rerun draws other samples; "
            "pass --seed to fix them)"
        )
    return f"- seed: {seed} (each sample of a layer gets seed + its position)"


def _settings(cfg: dict[str, Any]) -> str:
    """Say a system's variant and the settings that shape its answers, in one phrase."""
    words = [f"variant {cfg.get('variant')}", f"{cfg.get('layers')} layers"]
    for p in cfg.get("proposers") or []:
        words.append(
            f"{p.get('samples', 1)} sample(s) at T={p.get('temperature')}, "
            f"max {p.get('max_tokens')} tokens"
        )
    if (agg := cfg.get("aggregator")) is not None:
        words.append(f"aggregator T={agg.get('temperature')}, max {agg.get('max_tokens')} tokens")
    if cfg.get("variant") == "self-moa-seq" and (seq := cfg.get("seq")):
        per_step = seq.get("samples_per_step") or seq["window_size"] - 1
        words.append(f"window {seq['window_size']}, {per_step} new samples per later step")
    return ", ".join(words)
