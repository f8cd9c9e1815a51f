"""What pyproject.toml promises the environments that build and test the package."""

import tomllib
from pathlib import Path

import pytest

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def test_the_test_extra_installs_the_setuptools_the_build_needs():
    # test_wheel.py builds the sdist and the wheel with the environment's setuptools (no
    # build isolation, so no download). The build needs what build-system requires
    # (>=77, for the SPDX license and license-files); the test extra asked only for
    # eval's setuptools<81, which Python 3.11's venv satisfied with its own 65.5, and
    # only a dependency of langgraph-cli happened to pull in a newer one.
    build = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    test = PYPROJECT["project"]["optional-dependencies"]["test"]
    assert build == ["setuptools>=77"]
    assert "setuptools>=77" in test


def test_the_version_is_written_once_in_the_package_and_read_by_the_build():
    # pyproject.toml, `langgraph_moa.__version__` and the installed metadata each had a copy:
    # a release bumping one left `moa --version` or provenance.json saying another.
    import langgraph_moa

    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "langgraph_moa.__version__"}
    assert isinstance(langgraph_moa.__version__, str) and langgraph_moa.__version__[0].isdigit()


def test_the_operating_systems_claimed_are_the_one_the_tests_run_on():
    # The package named no OS, while its tests (and the local runtime's kill-with-parent,
    # PR_SET_PDEATHSIG) run on Linux only: a Windows or macOS classifier would claim support
    # nobody checks.
    claimed = [c for c in PYPROJECT["project"]["classifiers"] if c.startswith("Operating System")]
    assert claimed == ["Operating System :: POSIX :: Linux"]


def _pins(name: str) -> dict[str, str]:
    path = Path(__file__).parents[2] / name
    return dict(line.split("==") for line in path.read_text().splitlines() if "==" in line)


def _floors(requirements: list[str]) -> dict[str, str]:
    import re

    floors = {}
    for requirement in requirements:
        found = re.match(r"([\w.-]+)(?:\[[\w,]+\])?>=([\w.]+)", requirement)
        if found:
            floors[found.group(1).lower()] = found.group(2)
    return floors


@pytest.mark.parametrize(
    ("pins", "declared"),
    [
        ("constraints-lowest.txt", ("dependencies", "eval")),
        ("constraints-lowest-serve.txt", ("serve",)),
    ],
)
def test_every_declared_minimum_is_the_one_make_lowest_installs(pins, declared):
    # The floors were never installed: langsmith>=0.4 and pydantic>=2.7 could not co-install
    # with langchain-core 1.7, and typer 0.12 (the declared minimum) crashed every `moa`
    # command on a current click. The extras' floors were declared and never installed
    # either: pandas 2.0 fails at import beside numpy 2, uvicorn 0.29 has no _TrustedHosts
    # (every `moa serve` failed at import) and starlette below 0.46 let a cut-off reader's
    # error escape as an ExceptionGroup. The constraints files are what `make lowest` tests.
    from packaging.version import Version

    requirements = []
    for part in declared:
        project = PYPROJECT["project"]
        requirements += (
            project[part] if part == "dependencies" else project["optional-dependencies"][part]
        )
    floors = _floors(requirements)
    pinned = _pins(pins)
    # typing-extensions was left unpinned at a floor (4.6.1) that openai 3.57 (>=4.14) and
    # langchain-core 1.7 (>=4.7) never let install: it is pinned at its floor like the rest.
    assert set(pinned) == set(floors)
    differ = {n: (floors[n], pinned[n]) for n in floors if Version(floors[n]) != Version(pinned[n])}
    assert differ == {}


def _third_party_imports() -> dict[str, set[str]]:
    """Map each third-party top-level module that src imports to the modules it imports of it."""
    import ast
    import sys

    src = Path(__file__).parents[2] / "src" / "langgraph_moa"
    imported: dict[str, set[str]] = {}
    for module in src.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # A private name imported from a public module is as private as the module.
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                imported.setdefault(name.split(".")[0], set()).add(name)
    for local in [*sys.stdlib_module_names, "langgraph_moa", "__future__"]:
        imported.pop(local, None)
    return imported


def _declared() -> dict[str, str]:
    """Map each distribution pyproject declares (normalized name) to its requirement."""
    import re

    requirements = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        requirements += extra
    declared = {}
    for requirement in requirements:
        name = re.match(r"[\w.-]+", requirement).group()
        declared.setdefault(re.sub(r"[-_.]+", "-", name).lower(), requirement)
    return declared


# Where a module's name is not its distribution's.
_DISTRIBUTION_OF = {"yaml": "pyyaml", "sklearn": "scikit-learn"}


def test_every_library_the_package_imports_is_declared():
    # typing_extensions (run/state.py), pydantic_core (config/_schema.py) and starlette
    # (serving) were imported but came in only as other packages' dependencies; the
    # transport's httpx2 did too, until an openai release allowing httpx2 3 could have
    # installed an API the module was never run on.
    declared = _declared()
    missing = {
        module
        for module in _third_party_imports()
        if _DISTRIBUTION_OF.get(module, module.replace("_", "-")) not in declared
    }
    assert missing == set()


def test_a_library_whose_private_modules_are_imported_is_capped_below_its_next_major():
    # transport/_completions.py imports openai._base_client, openai._models and openai._types,
    # which a new major may move or drop; openai had a floor only. A private name from a
    # public module counts too: serving/_guard.py imports uvicorn's _TrustedHosts.
    declared = _declared()
    private = {
        module
        for module, names in _third_party_imports().items()
        if any(part.startswith("_") for name in names for part in name.split(".")[1:])
    }
    assert {"openai", "uvicorn"} <= private
    uncapped = {module for module in private if "<" not in declared[module.replace("_", "-")]}
    assert uncapped == set()


def test_the_lowest_pins_satisfy_the_test_tools_make_lowest_installs_with_them():
    # `make lowest` installs the test extra under constraints-lowest.txt: rich was pinned at
    # 13.0 (its declared floor) while every import-linter the extra allows (>=2.7) requires
    # rich>=14.2, so pip refused the install and the floors were never tested at all.
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    lowest = Path(__file__).parents[2] / "constraints-lowest.txt"
    pins = dict(line.split("==") for line in lowest.read_text().splitlines() if "==" in line)
    unmet = []
    for tool in ("import-linter",):  # the tool whose every allowed release asks more
        for line in requires(tool) or []:
            wanted = Requirement(line)
            pin = pins.get(wanted.name.lower())
            if pin is not None and not wanted.specifier.contains(Version(pin), prereleases=True):
                unmet.append(f"{tool} needs {wanted}, pinned {pin}")
    assert unmet == []
