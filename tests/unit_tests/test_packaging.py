"""What pyproject.toml promises the environments that build and test the package."""

import tomllib
from pathlib import Path

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


def test_every_declared_minimum_is_the_one_make_lowest_installs():
    # The floors were never installed: langsmith>=0.4 and pydantic>=2.7 could not co-install
    # with langchain-core 1.7, and typer 0.12 (the declared minimum) crashed every `moa`
    # command on a current click. constraints-lowest.txt is what `make lowest` tests.
    import re

    from packaging.version import Version

    lowest = Path(__file__).parents[2] / "constraints-lowest.txt"
    pins = dict(line.split("==") for line in lowest.read_text().splitlines() if "==" in line)
    floors = {}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, floor = re.match(r"([\w.-]+)(?:\[[\w,]+\])?>=([\w.]+)", requirement).groups()
        floors[name.lower()] = floor
    assert set(pins) == set(floors)
    differ = {n: (floors[n], pins[n]) for n in floors if Version(floors[n]) != Version(pins[n])}
    assert differ == {}


def test_the_libraries_the_transport_imports_are_declared():
    # transport/_http.py builds httpx2 Responses and raises httpx2's ConnectError (the types
    # of the openai SDK's transport) yet only openai's requirement brought httpx2 in: an SDK
    # release allowing httpx2 3 would have installed an API the module was never run on.
    import ast
    import re
    import sys

    transport = Path(__file__).parents[2] / "src" / "langgraph_moa" / "transport"
    imported = set()
    for module in transport.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"langgraph_moa", "__future__"}
    declared = {re.match(r"[\w.-]+", r).group() for r in PYPROJECT["project"]["dependencies"]}
    assert third_party == {"httpx2", "openai", "pydantic"}
    assert third_party - declared == set()
