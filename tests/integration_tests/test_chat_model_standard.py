"""LangChain's standard integration tests for chat models, on MoAChatModel over local models."""

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langgraph_moa import MoAChatModel, MoAConfig
from langgraph_moa.local.runtime import LocalRuntime

pytestmark = [pytest.mark.local_models, pytest.mark.usefixtures("local_models_available")]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    LocalRuntime.default().stop_all()


class TestMoAChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self):
        return MoAChatModel

    @property
    def chat_model_params(self):
        # Small and quick: two SmolLM2 samples aggregated by Qwen, short answers.
        config = MoAConfig(
            variant="single-proposer",
            proposers=[{"model": "local:qwen2.5-coder-0.5b", "samples": 2, "max_tokens": 48}],
            aggregator={"model": "local:qwen2.5-coder-0.5b", "max_tokens": 64},
        )
        return {"config": config, "model": "local-moa-small"}

    @property
    def has_tool_calling(self):
        return False

    @property
    def has_structured_output(self):
        return False

    @property
    def supports_json_mode(self):
        return False

    @property
    def returns_usage_metadata(self):
        return True
