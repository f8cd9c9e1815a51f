"""Proposers on Ollama and vLLM, given as ``model@url``: what the user sees when they fail.

Neither server runs here; `FaultServer` answers with their own error bodies, word for word
(``scripted_error``), over real HTTP through langchain-openai.
"""

import pytest

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from langgraph_moa.testing import FaultProfile, FaultServer

QUESTION = {"messages": [("user", "Why is the sky blue?")]}
RETRY = RetrySettings(max_attempts=3, initial_interval=0.01, jitter=False)

OLLAMA_NOT_PULLED = (
    404,
    {
        "error": {
            "message": 'model "llama3.2" not found, try pulling it first',
            "type": "api_error",
            "param": None,
            "code": None,
        }
    },
)
OLLAMA_NOT_PULLED_SINCE_0_12 = (  # ChatHandler looks the model up before it schedules it
    404,
    {
        "error": {
            "message": "model 'qwen3:8b' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    },
)
VLLM_NO_SUCH_MODEL = (
    404,
    {
        "object": "error",
        "message": "The model `Qwen/Qwen2.5-7B-Instruct` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    },
)
VLLM_CONTEXT = (
    400,
    {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you "
        "requested 5000 tokens (4488 in the messages, 512 in the completion). Please reduce "
        "the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
)


def first_call(proposer: str, server: FaultServer) -> dict:
    """Run one MoA turn with `proposer` beside a healthy one; return the proposer's call."""
    config = MoAConfig(
        proposers=[proposer, f"good@{server.url}"], aggregator=f"agg@{server.url}", retry=RETRY
    )
    out = create_moa_graph(config).invoke(QUESTION)
    return next(c for c in out["calls"] if c["configured_model"].startswith(proposer[:8]))


@pytest.fixture
def server():
    profiles = {
        "llama3.2": FaultProfile(scripted_error=OLLAMA_NOT_PULLED),
        "qwen3:8b": FaultProfile(scripted_error=OLLAMA_NOT_PULLED_SINCE_0_12),
        "Qwen/Qwen2.5-7B-Instruct": FaultProfile(scripted_error=VLLM_NO_SUCH_MODEL),
        "small-ctx": FaultProfile(scripted_error=VLLM_CONTEXT),
    }
    with FaultServer(profiles) as s:
        yield s


def test_an_ollama_model_not_pulled_names_the_pull_command_and_is_not_retried(server):
    call = first_call(f"llama3.2@{server.url}", server)
    assert call["status"] == "failed" and call["attempts"] == 1
    assert call["error"].startswith("EndpointNotFoundError: llama3.2@"), call["error"]
    assert "ollama pull llama3.2" in call["error"]
    assert "try pulling it first" in call["error"]  # the server's own words stay


def test_a_model_not_pulled_names_the_pull_command_in_ollamas_words_since_0_12(server):
    # Since Ollama 0.12 a chat with a model it has not pulled is refused with "model 'NAME'
    # not found" (the "try pulling it first" of earlier versions is gone): relayed bare.
    call = first_call(f"qwen3:8b@{server.url}", server)
    assert call["status"] == "failed" and call["attempts"] == 1
    assert call["error"].startswith("EndpointNotFoundError: qwen3:8b@"), call["error"]
    assert "ollama pull qwen3:8b" in call["error"]


def test_a_vllm_model_name_that_is_not_served_names_served_model_name(server):
    call = first_call(f"Qwen/Qwen2.5-7B-Instruct@{server.url}", server)
    assert call["status"] == "failed" and call["attempts"] == 1
    assert call["error"].startswith("EndpointNotFoundError: "), call["error"]
    assert "--served-model-name" in call["error"] and "/v1/models" in call["error"]


def test_a_vllm_context_overflow_is_a_context_length_error_with_the_size(server):
    call = first_call(f"small-ctx@{server.url}", server)
    assert call["attempts"] == 1
    assert call["error"].startswith("ContextLengthError: "), call["error"]
    assert "its context holds 4096 tokens" in call["error"]


def test_a_url_without_v1_asks_whether_v1_was_meant(server):
    root = server.url.removesuffix("/v1")  # the server answers 404 at /chat/completions
    call = first_call(f"m@{root}", server)
    assert call["status"] == "failed" and call["attempts"] == 1
    assert call["error"].startswith("EndpointNotFoundError: "), call["error"]
    assert f"did you mean {root}/v1?" in call["error"]


def test_a_keyless_private_http_endpoint_is_called_without_asking_for_a_key(server):
    call = first_call(f"good@{server.url}", server)
    assert call["status"] == "ok"
    assert server.last_headers["good"]["authorization"] == "Bearer not-needed"


def test_a_streamed_answer_asks_for_usage_which_vllm_sends_only_when_asked(server):
    # FaultServer, as vLLM, sends a stream's usage only under stream_options.include_usage.
    config = MoAConfig(proposers=[f"good@{server.url}"], aggregator=f"agg@{server.url}")
    final = None
    for mode, chunk in create_moa_graph(config).stream(
        QUESTION, stream_mode=["messages", "values"]
    ):
        if mode == "values":
            final = chunk
    assert server.last_body["agg"]["stream"] is True
    assert server.last_body["agg"]["stream_options"] == {"include_usage": True}
    aggregator = next(c for c in final["calls"] if c["role"] == "aggregator")
    assert aggregator["completion_tokens"] > 0
