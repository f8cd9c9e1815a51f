"""The environment variables the package reads: each in the README's table, none misread.

``MOA_GC_FREEZE=false`` or ``LANGGRAPH_MOA_SHARE_CORES=true`` was read as "not the one value
that flips the switch" and silently left it as it was; now a 0/1 switch refuses anything
else, naming the variable.
"""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from langgraph_moa import MoAChatModel, create_moa_graph
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.local.runtime import CoreRoom
from langgraph_moa.run._direct import DIRECT_CALLS_ENV, nobody_listens
from langgraph_moa.serving._server import GC_FREEZE_ENV, tune_collector
from langgraph_moa.transport._completions import KEEP_TRANSFORM_ENV, lean_completions
from tests.fakes import FakeChat


def _collector_tuned() -> None:
    tune_collector()()  # puts the collector back at once when it was tuned


def _room() -> None:
    CoreRoom()


READERS = pytest.mark.parametrize(
    ("name", "read"),
    [
        (GC_FREEZE_ENV, _collector_tuned),
        (KEEP_TRANSFORM_ENV, lambda: lean_completions(SimpleNamespace())),
        (DIRECT_CALLS_ENV, lambda: nobody_listens(FakeChat(label="a"), None)),
        ("LANGGRAPH_MOA_SHARE_CORES", _room),
    ],
)


@READERS
@pytest.mark.parametrize("value", ["false", "yes", "2", " on "])
def test_a_switch_other_than_0_or_1_is_refused_naming_the_variable(monkeypatch, name, read, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(MoAConfigError, match=rf"^{name} must be 0 or 1, got '{value.strip()}'"):
        read()


@READERS
@pytest.mark.parametrize("value", ["0", "1", "", " 1 "])
def test_a_switch_of_0_or_1_or_empty_is_taken(monkeypatch, name, read, value):
    monkeypatch.setenv(name, value)
    read()


ROOT = Path(__file__).resolve().parents[2]


def test_every_variable_the_package_names_is_in_the_readme_table():
    # They were explained one by one, where each feature is, in the README and four docs.
    names = {
        name
        for path in (ROOT / "src" / "langgraph_moa").rglob("*.py")
        for name in re.findall(r"\"((?:LANGGRAPH_)?MOA_[A-Z_]+)\"", path.read_text("utf-8"))
    }
    readme = (ROOT / "README.md").read_text("utf-8")
    table = readme.split("### Environment variables", 1)[1].split("\n#", 1)[0]
    assert names and not {name for name in names if f"`{name}`" not in table}


BUILT = {"proposers": ["openai:gpt-4o-mini"], "aggregator": "openai:gpt-4o"}


@pytest.mark.parametrize("name", [DIRECT_CALLS_ENV, KEEP_TRANSFORM_ENV])
@pytest.mark.parametrize(
    "build", [lambda: create_moa_graph(BUILT), lambda: MoAChatModel(config=BUILT)]
)
def test_a_bad_call_switch_is_refused_when_the_graph_or_model_is_built(monkeypatch, name, build):
    # Both are read on each model call: a graph or model was built, and a run started,
    # before the first call refused the switch.
    monkeypatch.setenv(name, "off")
    with pytest.raises(MoAConfigError, match=rf"^{name} must be 0 or 1, got 'off'"):
        build()
