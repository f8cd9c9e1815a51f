"""The package as users get it: the sdist, the wheel built from that sdist (as `python -m build`
does), and the wheel's code reading its own data with the source tree out of reach.

Every other test runs on an editable install, where a data file left out of the wheel is still
found in src/. Building takes a few seconds and needs no network: it runs the setuptools the
test extra installs (the build-system's >=77), without build isolation.
"""

import email
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "langgraph_moa"
# What a checkout holds that is no source: environments, build output, caches, run output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".moa-cache",
    ".langgraph_api",
    "test-artifacts",
    "moa-eval*",
)


def _backend(hook: str, out: Path, cwd: Path) -> Path:
    """Run one PEP 517 hook of setuptools in a subprocess; return the file it wrote."""
    code = f"from setuptools import build_meta as b; print(b.{hook}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel): the sdist built from a copy of the checkout, the wheel from the sdist."""
    work = tmp_path_factory.mktemp("dists")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
    sdist = _backend("build_sdist", work, tree)
    with tarfile.open(sdist) as archive:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.11.4+
        archive.extractall(work / "unpacked", **safe)
    (unpacked,) = (work / "unpacked").iterdir()
    wheel = _backend("build_wheel", work, unpacked)
    return sdist, wheel


def _package_files() -> set[str]:
    """Every file of the package in the source tree, as a path from src/."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_module_and_data_file_of_the_package_and_nothing_else(dists):
    _, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert shipped == _package_files()
    # The data the code reads, named so that a glob gone wrong cannot pass unseen.
    for data in (
        "langgraph_moa/py.typed",
        "langgraph_moa/config/presets/local-confidence.yaml",
        "langgraph_moa/eval/data/gsm8k_test_300.jsonl",
        "langgraph_moa/eval/data/GSM8K_NOTICE.txt",
        "langgraph_moa/eval/data/verifiable.jsonl",
        "langgraph_moa/serving/static/index.html",
        "langgraph_moa/serving/static/app.js",
        "langgraph_moa/serving/static/style.css",
    ):
        assert data in shipped, data


def test_the_wheel_carries_the_license_and_its_metadata(dists):
    _, wheel = dists
    archive = zipfile.ZipFile(wheel)
    (info,) = {n.split("/")[0] for n in archive.namelist() if ".dist-info/" in n}
    licence = archive.read(f"{info}/licenses/LICENSE").decode()
    assert licence.startswith("MIT License") and "Permission is hereby granted" in licence
    meta = email.message_from_bytes(archive.read(f"{info}/METADATA"))
    assert meta["Name"] == "langgraph-moa" and meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    assert meta.get_payload().startswith("# langgraph-moa")  # the README, as the long description
    assert meta["Description-Content-Type"] == "text/markdown"
    extras = set(meta.get_all("Provides-Extra"))
    assert {"local", "local-0-5b", "serve", "eval", "postgres"} <= extras
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers, classifiers
    assert "Typing :: Typed" in classifiers, classifiers
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "moa = langgraph_moa.cli:main" in entry_points  # the light entry: see cli/__init__


def test_the_sdist_holds_what_a_rebuild_needs_and_no_checkout_clutter(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO"):
        assert needed in names, needed
    assert {f"src/{path}" for path in _package_files()} <= names
    assert not [n for n in names if n.startswith((".venv", ".git/", "build/", "test-artifacts"))]


def test_the_wheels_code_finds_its_presets_datasets_and_page_away_from_the_source(dists, tmp_path):
    _, wheel = dists
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import langgraph_moa
        from langgraph_moa import MoAConfig, list_presets
        from langgraph_moa.eval.datasets import load_dataset, shipped_dataset
        from langgraph_moa.serving._ui import STATIC

        site = Path({str(site)!r})
        assert Path(langgraph_moa.__file__).is_relative_to(site), langgraph_moa.__file__
        presets = list_presets()
        assert "local-confidence" in presets and len(presets) == {len(list((PACKAGE / "config" / "presets").glob("*.yaml")))}
        for name in presets:
            MoAConfig.from_preset(name)
        assert len(load_dataset("gsm8k")) == 300 and len(load_dataset("verifiable")) > 100
        assert (shipped_dataset("gsm8k").parent / "GSM8K_NOTICE.txt").is_file()
        assert STATIC.is_relative_to(site), STATIC
        page = (STATIC / "index.html").read_text()
        for asset in ("app.js", "style.css"):
            assert f'"ui/static/{{asset}}"' in page and (STATIC / asset).is_file(), asset
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
