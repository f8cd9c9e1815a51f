"""Properties of `moa serve`'s request reading: any JSON body is answered, never with a 500.

Each example is a whole request through the app (fake models, no socket), so there are few.
"""

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app

_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "user",
    "metadata",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "layers",
    "moa",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["m", "user", "assistant", "system", "tool", "text", "function", "auto"]),
    st.text(max_size=12),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["role", "content", "type", "text", "name"]), st.text(max_size=4)
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]) | _SCALARS},
    optional={"content": _JSON, "name": _SCALARS, "tool_call_id": _SCALARS, "tool_calls": _JSON},
)
_PLAUSIBLE = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.integers(-1, 3),
    "temperature": st.floats(-1, 3),
    "max_tokens": st.integers(-1, 2**40),
    "top_p": st.floats(0, 1),
    "user": st.text(max_size=8),
    "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3),
    "seed": st.integers(-(2**70), 2**70),
    "logprobs": st.booleans(),
    "layers": st.integers(-1, 4),
}
_CONVERSATION = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "developer"]),
            "content": st.text(max_size=20)
            | st.lists(
                st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}),
                max_size=2,
            ),
        }
    ),
    min_size=1,
    max_size=3,
).map(lambda turns: [*turns, {"role": "user", "content": "q"}])
BODIES = st.one_of(
    _JSON,
    st.fixed_dictionaries({"model": st.just("m"), "messages": _CONVERSATION}, optional=_PLAUSIBLE),
    st.fixed_dictionaries(
        {"model": st.just("m") | _SCALARS, "messages": st.lists(_MESSAGE, max_size=3) | _JSON},
        optional={field: _JSON for field in _FIELDS[2:]},
    ),
)
"""Request bodies: any JSON, and objects shaped like a chat request holding any values."""


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_any_json_body_is_answered_or_refused_with_a_json_error_never_a_500(fake, body):
    system = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")
    client = TestClient(create_app({"m": system}), base_url="http://localhost")
    response = client.post(
        "/v1/chat/completions",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: how many ran
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and "\n" not in error["message"]
