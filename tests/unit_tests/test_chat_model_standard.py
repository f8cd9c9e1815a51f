"""LangChain's standard unit tests for chat models, run on MoAChatModel with fake models."""

from langchain_tests.unit_tests import ChatModelUnitTests

from langgraph_moa import MoAChatModel, MoAConfig
from tests.fakes import FakeChat


class TestMoAChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return MoAChatModel

    @property
    def standard_chat_model_params(self):
        # The unit suite adds api_key="test", which MoAChatModel refuses: it has no one key,
        # every inner model reads its own provider's (see MoAChatModel and its tests).
        params = dict(super().standard_chat_model_params)
        params.pop("api_key", None)
        return params

    @property
    def chat_model_params(self):
        config = MoAConfig(
            proposers=[FakeChat(label="A"), FakeChat(label="B")],
            aggregator=FakeChat(label="AGG"),
            layers=2,
        )
        return {"config": config, "model": "moa-under-test"}

    @property
    def has_tool_calling(self):
        return True

    @property
    def has_tool_choice(self):
        return True

    @property
    def has_structured_output(self):
        return True

    @property
    def supports_json_mode(self):
        return True

    @property
    def supports_image_inputs(self):
        return True

    @property
    def supports_image_tool_message(self):
        return True

    @property
    def supports_model_override(self):
        return True

    @property
    def model_override_value(self):
        return "local-moa"
