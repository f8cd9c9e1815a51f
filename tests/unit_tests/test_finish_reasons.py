"""One spelling of why the answer stopped: OpenAI's, whichever provider answered.

Anthropic says ``stop_reason: max_tokens`` and Gemini ``MAX_TOKENS`` where OpenAI says
``length``; a reader that knows only OpenAI's (an OpenAI client of `moa serve`, the page,
`moa run`'s warning) took such a cut answer as finished.
"""

from fastapi.testclient import TestClient
from langchain_core.messages import AIMessageChunk

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.graph.streaming import token_event
from langgraph_moa.serving._app import create_app
from tests.fakes import FakeChat
from tests.helpers import QUESTION

USER = [{"role": "user", "content": "Explain X"}]


class _AnthropicLike(FakeChat):
    """Says why it stopped as Anthropic does: ``stop_reason``, no ``finish_reason``."""

    def _answer(self, messages, n=None, kwargs=None):
        answer = super()._answer(messages, n, kwargs)
        answer.response_metadata["stop_reason"] = "max_tokens"
        return answer


def _cut_by_max_tokens(fake, log):
    return MoAConfig(proposers=[fake("A")], aggregator=_AnthropicLike(label="AGG", log=log))


def test_an_answer_cut_by_anthropics_max_tokens_says_length(fake, log):
    answer = create_moa_graph(_cut_by_max_tokens(fake, log)).invoke(QUESTION)["messages"][-1]
    assert answer.response_metadata["finish_reason"] == "length"


def test_moa_serve_answers_length_for_anthropics_max_tokens(fake, log):
    app = create_app({"m": _cut_by_max_tokens(fake, log)})
    client = TestClient(app, base_url="http://localhost")
    answer = client.post("/v1/chat/completions", json={"model": "m", "messages": USER}).json()
    assert answer["choices"][0]["finish_reason"] == "length"


def test_a_token_events_finish_reason_is_spelled_as_the_finished_events():
    chunk = AIMessageChunk(content="", response_metadata={"finish_reason": "MAX_TOKENS"})
    event = token_event(chunk, {"moa_role": "aggregator", "moa_layer": 2})
    assert event is not None and event["finish_reason"] == "length"
