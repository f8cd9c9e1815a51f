import ast
import importlib
from pathlib import Path

import pytest

import langgraph_moa

EXPECTED_ALL = {
    "AGGREGATE_AND_SYNTHESIZE_PROMPT",
    "DEFAULT_PRESET",
    "TAG_FINAL",
    "AggregatorConfig",
    "AggregatorFailedError",
    "AllProposersFailedError",
    "AnswerStream",
    "Budget",
    "BudgetExhaustedError",
    "CallCache",
    "CallRecord",
    "CallTimeoutError",
    "ContentFilteredError",
    "ContextLengthError",
    "EmptyResponseError",
    "EndpointNotFoundError",
    "EvalDatasetError",
    "LimitExceededError",
    "LocalModelError",
    "LocalRuntimeError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "MoAChatModel",
    "MoAConfig",
    "MoAConfigError",
    "MoAContext",
    "MoAError",
    "MoAInput",
    "MoAInputError",
    "MoAOutput",
    "MoAState",
    "ModelNotAllowedError",
    "ModelResolutionError",
    "OpenAIEndpoint",
    "ProposerConfig",
    "RequestLimits",
    "RequestTimeoutError",
    "RetryPastDeadlineError",
    "RetrySettings",
    "RunEvents",
    "SQLiteCallCache",
    "SelectionConfig",
    "SelfMoASeqConfig",
    "StragglerCancelledError",
    "StreamBrokenError",
    "StructuredOutputError",
    "ThreadBusyError",
    "ToolCallError",
    "UnsupportedContentError",
    "UnsupportedParameterError",
    "UpstreamResponseError",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
    "load_config",
    "open_checkpointer",
}


def test_all_is_the_public_surface():
    assert set(langgraph_moa.__all__) == EXPECTED_ALL
    for name in langgraph_moa.__all__:
        assert hasattr(langgraph_moa, name)


def test_all_is_sorted_and_exports_every_public_error():
    import inspect

    from langgraph_moa import errors

    def isort_style(name: str) -> tuple[int, str]:  # CONSTANTS, then Classes, then functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert langgraph_moa.__all__ == sorted(langgraph_moa.__all__, key=isort_style)
    public_errors = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and not name.startswith("_")
    }
    assert public_errors <= set(langgraph_moa.__all__)
    assert all(issubclass(getattr(errors, n), errors.MoAError) for n in public_errors)


def test_the_cli_and_the_package_work_without_the_serve_extra():
    """The quickstart installs [local] only: nothing outside `moa serve` may need FastAPI."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn', 'starlette'):\n"
        "            raise ImportError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import langgraph_moa, langgraph_moa.cli._app, langgraph_moa.serving\n"
        "from langgraph_moa.cli._app import app\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(app, ['serve', '-p', 'local-moa'])\n"
        "print(result.exit_code, type(result.exception).__name__, result.exception)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    code, kind, message = done.stdout.split(" ", 2)
    assert code != "0" and kind == "MissingExtraError"
    assert "install langgraph-moa[serve]" in message


def test_an_unknown_name_is_refused_without_an_import(monkeypatch):
    # Any lower-case name was tried as a submodule first (`langgraph_moa.nonsense` searched
    # the package folder; a tool probing `hasattr(module, "setup")` did so for each name).
    tried = []
    monkeypatch.setattr(langgraph_moa.importlib, "import_module", lambda *a: tried.append(a))
    for name in ("nonsense", "setup", "pytest_plugins", "_no_such_module"):
        assert not hasattr(langgraph_moa, name)
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        langgraph_moa.nonsense  # noqa: B018
    assert tried == []


def test_the_submodules_listed_are_the_packages_own():
    # The list `__getattr__` imports from must name every public submodule, and only those:
    # one missing would make `langgraph_moa.<it>` fail until imported by its full name.
    import pkgutil

    found = {m.name for m in pkgutil.iter_modules(langgraph_moa.__path__)}
    assert langgraph_moa._SUBMODULES == {name for name in found if not name.startswith("_")}
    for name in sorted(langgraph_moa._SUBMODULES):
        assert hasattr(langgraph_moa, name), name


def test_the_local_packages_names_are_listed_before_their_first_use():
    # `local` imports its names on first use (its server process must start light): dir()
    # and completion listed only the names already loaded.
    import subprocess
    import sys

    code = "import langgraph_moa.local as l; print(' '.join(n for n in dir(l) if n in l.__all__))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    import langgraph_moa.local as local

    assert out == sorted(local.__all__)
    for name in local.__all__:
        assert getattr(local, name) is not None


def private_imports(code: str) -> list[str]:
    """The package's internals `code` reaches: a `_module` on the path, or a `_name` imported.

    What a user copies from a page or an example is what they come to rely on; an internal
    name there would make a promise the package's versioning does not keep.
    """
    import ast

    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("langgraph_moa"):
            paths = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            paths = [alias.name for alias in node.names if alias.name.startswith("langgraph_moa")]
        else:
            continue
        found += [p for p in paths if any(part.startswith("_") for part in p.split(".")[1:])]
    return found


def test_a_private_import_is_recognised():
    assert private_imports("from langgraph_moa.text._selection import select") == [
        "langgraph_moa.text._selection.select"
    ]
    assert private_imports("import langgraph_moa.run._clock") == ["langgraph_moa.run._clock"]
    assert private_imports("from langgraph_moa.graph import _builder") == [
        "langgraph_moa.graph._builder"
    ]
    assert private_imports("from langgraph_moa import MoAConfig\nimport os._x") == []


def test_the_pages_and_examples_import_only_public_names():
    """README.md, docs/*.md's python blocks, examples/ and graphs/ use the public surface."""
    from tests.snippets import ROOT, snippets

    sources = {s.id: s.code for s in snippets()}
    for folder in ("examples", "graphs"):
        for path in sorted((ROOT / folder).glob("*.py")):
            sources[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    assert len(sources) > 10  # the pages' blocks and the files were found
    found = {where: names for where, code in sources.items() if (names := private_imports(code))}
    assert found == {}


PUBLIC_PACKAGES = ("", ".cli", ".config", ".eval", ".graph", ".local", ".providers")
PUBLIC_PACKAGES += (".serving", ".testing", ".variants")


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_exported_class_and_function_says_what_it_is(package):
    """What `__all__` promises has a docstring of its own (not one inherited from a base)."""
    import importlib
    import inspect

    module = importlib.import_module(f"langgraph_moa{package}")
    bare = [
        name
        for name in module.__all__
        if (inspect.isclass(obj := getattr(module, name)) and not obj.__dict__.get("__doc__"))
        or (inspect.isfunction(obj) and not obj.__doc__)
    ]
    assert bare == []


LAZY_PACKAGES = ("langgraph_moa", "langgraph_moa.local", "langgraph_moa.serving")


def _type_checking_imports(package: str) -> tuple[dict[str, str], list[ast.stmt]]:
    """The names a package imports for type checkers only (name -> module), and what the
    checkers see at its top level besides (the `if TYPE_CHECKING` branch, not the else)."""
    tree = ast.parse(Path(importlib.import_module(package).__file__).read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    seen: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.unparse(imp)
                names.update({alias.name: imp.module for alias in imp.names})
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "not TYPE_CHECKING":
            seen.extend(node.orelse)
        else:
            seen.append(node)
    return names, seen


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_type_checkers_see_every_lazy_name_and_no_module_getattr(package):
    """A lazily imported package declares its names for type checkers under TYPE_CHECKING and
    hides its `__getattr__` from them: one they saw made every name exist, typed Any, so a
    misspelt ``from langgraph_moa.local import LocalRuntme`` passed mypy. Each declared name is
    in `__all__` and is, at run time, the object the declaration names."""
    module = importlib.import_module(package)
    declared, seen = _type_checking_imports(package)
    defined = [n.name for n in seen if isinstance(n, ast.FunctionDef)]
    assert "__getattr__" not in defined
    assert set(declared) == set(module.__all__) - {"__version__"}
    lazy = getattr(module, "_EXPORTS", None) or module._WHERE  # what `__getattr__` imports
    assert set(lazy) == set(declared)
    for name, where in declared.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name), name
