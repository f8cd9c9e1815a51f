"""A typed user's program over the public API beyond the README's blocks (serve, eval, the model).

Not run, only type-checked: by `make lint` (mypy, `tests.typing` checked as --strict would) and
by tests/integration_tests/test_typing_of_public_names.py (mypy --strict, a user's settings).
Each `assert_type` is a type a user's code is handed; a misspelt name must be refused, which the
`type: ignore` lines check (strict mypy reports an ignore that nothing needed).
"""

from typing import Any, assert_type

from fastapi import FastAPI
from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import Runnable
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from langgraph_moa import (
    MoAChatModel,
    MoAConfig,
    MoAContext,
    MoAInput,
    MoAOutput,
    MoAState,
    local,
    serving,
)
from langgraph_moa.local import LocalRuntime
from langgraph_moa.serving import History, create_app, default_history_path


class Answer(BaseModel):
    """A structured answer."""

    text: str


def serve_app(config: MoAConfig) -> FastAPI:
    app = create_app({"moa": config}, history=History(default_history_path()))
    assert_type(app, FastAPI)
    serving.craete_app  # type: ignore[attr-defined]  # noqa: B018  (a typo, refused)
    return app


def local_model() -> None:
    assert_type(local.LocalRuntime, type[LocalRuntime])
    local.LocalRuntme  # type: ignore[attr-defined]  # noqa: B018  (a typo, refused)


def chat_model(config: MoAConfig) -> str:
    llm = MoAChatModel(config=config, max_tokens=160)
    assert_type(llm.model_copy(update={"max_tokens": 99}), MoAChatModel)
    assert_type(llm.graph, CompiledStateGraph[MoAState, MoAContext, MoAInput, MoAOutput])
    structured = llm.with_structured_output(Answer)
    assert_type(structured, Runnable[LanguageModelInput, Answer])
    raw = llm.with_structured_output(Answer, include_raw=True).invoke("x")
    assert_type(raw, dict[str, Any])
    return structured.invoke("Why is the sky blue?").text
