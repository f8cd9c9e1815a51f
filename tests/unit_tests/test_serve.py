"""`moa serve` hardening, in process (no socket): bodies, policy, limits, size, disconnects."""

import asyncio
import codecs
import gc
import json
import threading
import types

import httpx
import pytest
from fastapi.testclient import TestClient

from langgraph_moa import MoAConfig
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.errors import MoAConfigError, ModelNotAllowedError
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._policy import ModelPolicy, _Preparer
from tests.helpers import _chat_scope, _stalled_exchange, _until

USER = [{"role": "user", "content": "Explain X"}]


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


JSON = {"content-type": "application/json"}


def local(app):
    """A test client that reaches the app by a loopback name, as the Host check requires."""
    return TestClient(app, base_url="http://localhost")


@pytest.fixture
def client(system):
    return local(create_app({"m": system}))


def post(client, body, headers=None, **kwargs):
    headers = {**JSON, **(headers or {})}
    return client.post("/v1/chat/completions", content=json.dumps(body), headers=headers, **kwargs)


def assert_one_sentence(response, status, *fragments):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    message = error["message"]
    assert "\n" not in message and "pydantic.dev" not in message
    assert message.endswith(".") and message.count(". ") == 0, message
    for fragment in fragments:
        assert fragment in message
    return error


# --- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ([{"model": "m"}], None, "JSON object"),
        ("hello", None, "JSON object"),
        (None, None, "JSON object"),
        ({"model": ["m"], "messages": USER}, "model", "valid string"),
        (
            {"model": "m", "messages": USER, "stream": True, "stream_options": "yes"},
            "stream_options",
            "object",
        ),
        (
            {"model": "m", "messages": [*USER, {"role": "tool", "content": "42"}, *USER]},
            "messages.1.tool_call_id",
            "Field required",
        ),
        ({"model": "m", "messages": "hello"}, "messages", "valid array"),
        ({"model": "m", "messages": {"role": "user", "content": "hi"}}, "messages", "valid array"),
        (
            {"model": "m", "messages": [{"role": "user", "content": None}]},
            "messages.0.content",
            "string",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
            "string",
        ),
        ({"model": "m", "messages": ["hello"]}, "messages.0", "object"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0", "wizard"),
        ({"model": "m", "messages": [{"role": "assistant"}, *USER]}, "messages.0", "content"),
        ({"model": "m", "messages": USER, "n": 3}, "n", "only n=1 is supported"),
        (
            {"model": "m", "messages": USER, "max_tokens": 0},
            "max_tokens",
            "greater than or equal to 1",
        ),
        ({"model": "m", "messages": USER, "stream": "false"}, "stream", "valid boolean"),
        (
            {"model": "m", "messages": USER, "temperature": 3},
            "temperature",
            "less than or equal to 2",
        ),
        ({"model": "m", "messages": USER, "top_p": 0.5}, "top_p", "temperature instead"),
        ({"model": "m", "messages": USER, "logit_bias": {}}, "logit_bias", "not supported"),
        (
            {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]},
            "tools.0.function",
            "needs a 'name'",
        ),
        (
            {"model": "m", "messages": USER, "response_format": {"type": "xml"}},
            "response_format.type",
            "json_schema",
        ),
        (
            {"model": "m", "messages": USER, "response_format": {"type": "json_schema"}},
            "response_format",
            "json_schema is required",
        ),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, None, "needs tools"),
        (
            {
                "model": "m",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "add"}}],
                "tool_choice": {"type": "function", "function": {"name": "multiply"}},
            },
            None,
            "names no bound tool",
        ),
        (
            {"model": "m", "messages": USER, "stream_options": {"include_usage": True}},
            None,
            "stream",
        ),
        (  # the Responses API's shape: it was forwarded, and the run failed upstream
            {
                "model": "m",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "add"}}],
                "tool_choice": {"type": "function", "name": "add"},
            },
            "tool_choice",
            '{"type": "function", "function": {"name": ...}}',
        ),
        (
            {
                "model": "m",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "add"}}],
                "tool_choice": {},
            },
            "tool_choice",
            '{"type": "function", "function": {"name": ...}}',
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
            "messages.0.content",
            "'bogus'",
        ),
        *(  # an image part without its image was forwarded, and the provider refused it
            (
                {"model": "m", "messages": [{"role": "user", "content": [part]}]},
                "messages.0.content",
                "'image_url' needs an object 'image_url' with a string 'url'",
            )
            for part in (
                {"type": "image_url"},
                {"type": "image_url", "image_url": "http://x/a.png"},
                {"type": "image_url", "image_url": {}},
                {"type": "image_url", "image_url": {"url": 5}},
            )
        ),
        (
            {
                "model": "m",
                "messages": [*USER, {"role": "tool", "tool_call_id": "nope", "content": "42"}],
            },
            "messages",
            "'nope'",
        ),
        (
            {"model": "m", "messages": USER, "stop": [f"s{i}" for i in range(65)]},
            "stop",
            "at most 64",
        ),
        ({"model": "m", "messages": USER, "layers": "3"}, "layers", "valid integer"),
        (
            {"model": "m", "messages": USER, "max_tokens": 64, "max_completion_tokens": 32},
            None,
            "give one of them",
        ),
    ],
)
def test_every_malformed_body_is_a_400_with_one_sentence(client, log, body, param, fragment):
    error = assert_one_sentence(post(client, body), 400, fragment)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert log.calls == []


@pytest.mark.parametrize("kind", ["video_url", "audio_url"])
def test_vllms_video_and_audio_url_parts_reach_the_models(client, log, kind):
    """vLLM takes ``video_url`` and ``audio_url`` parts (and the retry layer names its refusal
    of one), but `moa serve` refused them with a 400 as no type a model takes."""
    part = {"type": kind, kind: {"url": "https://host/clip"}}
    content = [{"type": "text", "text": "What happens here?"}, part]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    assert post(client, body).status_code == 200
    assert all(part in call.messages[-1].content for call in log.calls if call.label != "AGG")


def test_invalid_json_and_a_non_numeric_length_are_400(client):
    assert_one_sentence(
        client.post("/v1/chat/completions", content=b"{bad", headers=JSON), 400, "not valid JSON"
    )
    response = client.post(
        "/v1/chat/completions", content=b"{}", headers={**JSON, "content-length": "abc"}
    )
    assert response.status_code == 400


def test_neutral_sampling_fields_and_openai_extras_are_accepted(client, log):
    body = {
        "model": "m",
        "messages": [{"role": "developer", "content": "Be brief."}, *USER],
        "top_p": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "n": 1,
        "user": "u-1",
        "temperature": 1,
        "max_completion_tokens": 64,
    }
    response = post(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("AGG #")
    assert log.by("AGG")[0].max_tokens == 64
    assert {c.temperature for c in log.by("A") + log.by("B")} == {1.0}


def test_stream_null_is_taken_as_left_out_as_openai_does(client):
    """OpenAI's ``stream`` is "boolean or null" (default false), and clients that write every
    field send ``"stream": null``: that was a 400 (not a valid boolean). It is one JSON
    answer now, as ``false``; the run event stream, which always streams, takes it too."""
    response = post(client, {"model": "m", "messages": USER, "stream": None})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("AGG #")
    runs = client.post(
        "/v1/moa/runs",
        content=json.dumps({"model": "m", "messages": USER, "stream": None}),
        headers=JSON,
    )
    assert runs.status_code == 200 and "event: answer" in runs.text, runs.text
    refused = post(client, {"model": "m", "messages": USER, "stream": None, "moa_progress": True})
    assert_one_sentence(refused, 400, "moa_progress is only allowed with stream: true")


def test_tool_turns_and_text_parts_are_read_as_a_conversation(client, log):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is 6 x 7?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": "So?"},
    ]
    assert post(client, {"model": "m", "messages": messages}).status_code == 200
    seen = log.by("A")[0].messages
    assert [m.type for m in seen] == ["human", "ai", "tool", "human"]
    assert seen[1].tool_calls[0]["id"] == "c1"


# --- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "flag"),
    [
        ({"proposers": ["x@http://127.0.0.1:9/internal"]}, "--allow-client-endpoints"),
        ({"aggregator": "x@http://127.0.0.1:9/internal"}, "--allow-client-endpoints"),
        (
            {"proposers": [{"base_url": "http://127.0.0.1:9", "model": "x"}]},
            "--allow-client-endpoints",
        ),
        (
            {"aggregator": {"base_url": "http://127.0.0.1:9", "model": "x"}},
            "--allow-client-endpoints",
        ),
        ({"proposers": ["openai:gpt-4o"]}, "--allow-model"),
        ({"aggregator": "local:smollm2-135m"}, "--allow-model"),
    ],
)
def test_models_the_operator_did_not_enable_are_403(client, log, override, flag):
    error = assert_one_sentence(
        post(client, {"model": "m", "messages": USER, **override}), 403, flag
    )
    assert error["type"] == "permission_error" and error["code"] == "model_not_allowed"
    assert log.calls == []


def test_policy_enables_the_served_models_and_the_allowed_ones():
    served = MoAConfig(
        proposers=["openai:gpt-4o-mini", "p@http://10.0.0.2:8000/v1/"],
        aggregator="together:Qwen/Qwen2.5-72B-Instruct-Turbo",
        name="s",
    )
    policy = ModelPolicy.for_systems({"s": served}, ["anthropic:claude-x"])
    assert policy.admit("openai:gpt-4o-mini", "proposers[0]") == "openai:gpt-4o-mini"
    # the same endpoint, written with a trailing slash, is the same model
    assert policy.admit("p@http://10.0.0.2:8000/v1/", "aggregator") == "p@http://10.0.0.2:8000/v1"
    assert policy.admit(" anthropic:claude-x ", "aggregator") == "anthropic:claude-x"
    with pytest.raises(ModelNotAllowedError, match="--allow-client-endpoints"):
        policy.admit("p@http://10.0.0.2:8001/v1", "aggregator")  # another port
    with pytest.raises(ModelNotAllowedError, match="--allow-model"):
        policy.admit("openai:gpt-4o", "aggregator")


def test_client_endpoints_when_enabled_never_get_the_servers_keys():
    policy = ModelPolicy(frozenset(), allow_client_endpoints=True)
    assert (
        policy.admit({"base_url": "http://h:1/v1", "model": "x"}, "aggregator") == "x@http://h:1/v1"
    )
    assert policy.admit("x@http://h:1/v1", "aggregator") == "x@http://h:1/v1"
    with pytest.raises(ModelNotAllowedError, match="api_key_env"):
        policy.admit(
            {"base_url": "http://h:1/v1", "model": "x", "api_key_env": "OPENAI_API_KEY"}, "p"
        )
    with pytest.raises(MoAConfigError, match="base_url"):
        policy.admit({"base_url": "ftp://h", "model": "x"}, "aggregator")
    with pytest.raises(ModelNotAllowedError, match="--allow-model"):
        policy.admit("openai:gpt-4o", "aggregator")  # endpoints only, not any provider


def test_a_keyed_endpoint_of_another_preset_is_refused_not_called_without_its_key(fake):
    # A run resolves an endpoint label against its own preset's endpoints only: in a
    # request for preset b, preset a's keyed endpoint would be called without its key.
    from langgraph_moa.config.context import apply_context
    from langgraph_moa.providers._models import OpenAIEndpoint
    from langgraph_moa.serving._errors import _APIError

    keyed = OpenAIEndpoint(
        base_url="https://api.example/v1", model="big", api_key_env="EXAMPLE_KEY"
    )
    systems = {
        "a": MoAConfig(proposers=[{"model": keyed}], aggregator={"model": keyed}, name="a"),
        "b": MoAConfig(proposers=[fake("P")], aggregator=fake("AGG"), layers=2, name="b"),
    }
    prepare = _Preparer(systems, ModelPolicy.for_systems(systems), RequestLimits())
    label = "big@https://api.example/v1"
    for field in ("proposers", "aggregator"):
        body = {"model": "b", "messages": USER, field: [label] if field == "proposers" else label}
        with pytest.raises(_APIError) as refused:
            prepare(json.dumps(body).encode())
        assert refused.value.status == 400, refused.value
        assert "'a'" in refused.value.message and "\n" not in refused.value.message
    own = prepare(json.dumps({"model": "a", "messages": USER, "proposers": [label]}).encode())
    model = apply_context(systems["a"], own.context).proposers[0].model
    assert isinstance(model, OpenAIEndpoint) and model.api_key_env == "EXAMPLE_KEY"


def test_a_variant_registered_in_the_servers_process_is_served_only_where_the_operator_chose_it(
    fake,
):
    """Any module the server imports may register a variant; a client may not pick it."""
    from langgraph_moa.serving._errors import _APIError
    from langgraph_moa.variants import Plan, register, unregister

    toy = type("Toy", (Plan,), {"name": "toy-deep", "description": "a toy", "default_layers": 3})
    register(toy)
    try:
        systems = {"m": MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("C"))}
        prepare = _Preparer(systems, ModelPolicy.for_systems(systems), RequestLimits())
        body = {"model": "m", "messages": USER, "variant": "toy-deep"}
        with pytest.raises(_APIError) as refused:
            prepare(json.dumps(body).encode())
        assert refused.value.status == 400 and refused.value.param == "variant"
        assert "'toy-deep' is not served here" in refused.value.message
        assert "'self-moa'" in refused.value.message and "\n" not in refused.value.message
        # A shipped variant stays a client's to choose, and the operator's own is served.
        assert prepare(json.dumps({**body, "variant": "moa"}).encode()).context.variant == "moa"
        served = {"d": MoAConfig(variant="toy-deep", proposers=[fake("A")], aggregator=fake("C"))}
        chosen = _Preparer(served, ModelPolicy.for_systems(served), RequestLimits())
        job = chosen(json.dumps({**body, "model": "d"}).encode())
        assert job.context.variant == "toy-deep"
    finally:
        unregister(toy.name)


def test_an_unknown_variant_is_answered_with_the_served_choices_only(fake):
    """A typo must not name (nor tell apart) a registered variant the operator did not serve."""
    from langgraph_moa.serving._errors import _APIError
    from langgraph_moa.variants import Plan, register, unregister

    toy = type("Toy", (Plan,), {"name": "plugin-secret", "description": "a toy"})
    register(toy)
    try:
        systems = {"m": MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("C"))}
        prepare = _Preparer(systems, ModelPolicy.for_systems(systems), RequestLimits())
        body = {"model": "m", "messages": USER}
        for name, told in [
            ("plugin-secre", "choose one of 'moa'"),
            ("zz-top", "choose one of 'moa'"),
            ("self-mao", "did you mean 'self-moa'?"),
        ]:
            with pytest.raises(_APIError) as refused:
                prepare(json.dumps({**body, "variant": name}).encode())
            message = refused.value.message
            assert refused.value.status == 400 and refused.value.param == "variant"
            assert f"The variant {name!r} is not served here" in message and told in message
            assert "plugin-secret" not in message and "\n" not in message
    finally:
        unregister(toy.name)


def test_client_strings_echoed_in_errors_are_cut_short(client):
    long = "z" * 5000
    bodies = [
        {"model": long, "messages": USER},
        {"model": "m", "messages": USER, "variant": long},
        {"model": "m", "messages": USER, long: 1},
        {"model": "m", "messages": USER, "proposers": [long]},
        {"model": "m", "messages": [{"role": long, "content": "x"}]},
    ]
    for body in bodies:
        response = post(client, body)
        assert 400 <= response.status_code < 500
        error = response.json()["error"]
        assert "z" * 100 not in error["message"] and "z" * 99 in error["message"], error
        assert len(error["param"] or "") <= 100
    for path in (f"/v1/moa/runs/{long}", f"/v1/models/{long}", f"/v1/{long}"):
        message = client.get(path).json()["error"]["message"]
        assert "z" * 100 not in message and len(message) < 400


# --- limits ----------------------------------------------------------------------------------


def _tool(name, description="d"):
    return {"type": "function", "function": {"name": name, "description": description}}


def _schema_format(properties):
    schema = {"type": "object", "properties": properties}
    return {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}


def _calls_turn(n):
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in range(n)
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def _tool_turn():
    return {"role": "tool", "content": "ok", "tool_call_id": "c0"}


@pytest.mark.parametrize(
    ("override", "flag"),
    [
        ({"layers": 16}, "--max-layers"),
        ({"samples": 256}, "--max-samples"),
        ({"proposers": ["x"] * 9}, "--max-proposers"),
        ({"layers": 4, "samples": 8}, "--max-calls"),  # 2 proposers x 8 samples x 3 + 1 = 49
        ({"messages": USER * 300}, "--max-messages"),
        ({"messages": [{"role": "user", "content": "x" * 200_001}]}, "--max-chars"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "w"}] * 257}]},
            "--max-parts",
        ),
        # What the call options send with every call counts as the messages do.
        ({"tools": [_tool("f", "x" * 200_000)]}, "--max-chars"),
        ({"response_format": _schema_format({"x" * 200_000: {}})}, "--max-chars"),
        ({"stop": ["x" * 100_001, "y" * 100_000]}, "--max-chars"),
        ({"tools": [_tool(f"f{i}") for i in range(257)]}, "--max-parts"),
        (
            {
                "messages": [*USER, _calls_turn(200), _tool_turn(), *USER],
                "tools": [_tool("f")] * 60,
            },
            "--max-parts",
        ),
    ],
)
def test_requests_past_a_limit_are_refused_before_any_call(system, log, override, flag):
    app = create_app({"m": system}, limits=RequestLimits(max_calls=40), max_body_bytes=10**6)
    body = {"model": "m", "messages": USER, **override}
    error = assert_one_sentence(post(local(app), body), 400, flag)
    assert error["code"] == "limit_exceeded"
    assert log.calls == []


def test_a_served_preset_past_the_limits_still_runs_as_configured(fake, log):
    big = MoAConfig(
        proposers=[{"model": fake("A"), "samples": 12}], aggregator=fake("AGG"), layers=2
    )
    client = local(create_app({"big": big}))  # 12 samples > the default 8
    assert post(client, {"model": "big", "messages": USER}).status_code == 200
    assert len(log.calls) == 13
    refused = post(client, {"model": "big", "messages": USER, "samples": 13})
    assert_one_sentence(refused, 400, "limit of 12", "--max-samples")


def test_limits_can_be_raised_by_the_operator(system, log):
    app = create_app({"m": system}, limits=RequestLimits(max_layers=6, max_calls=100))
    assert post(local(app), {"model": "m", "messages": USER, "layers": 6}).status_code == 200
    assert len(log.calls) == 2 * 5 + 1


# --- body size -------------------------------------------------------------------------------


def test_the_key_is_checked_before_the_size(system):
    client = local(create_app({"m": system}, api_key="k", max_body_bytes=10))
    response = client.post("/v1/chat/completions", content=b"x" * 100)
    assert response.status_code == 401
    authorized = {"authorization": "Bearer k", **JSON}
    response = client.post("/v1/chat/completions", content=b"x" * 100, headers=authorized)
    assert_one_sentence(response, 413, "limit of 10 bytes")


def test_a_body_too_large_names_images_and_the_operators_limit(system):
    """An image (base64 in the body) is what passes the 1 MB limit, and the 413 said only to
    send a shorter conversation, not a smaller image, nor which setting the operator raises."""
    client = local(create_app({"m": system}, max_body_bytes=10))
    response = client.post("/v1/chat/completions", content=b"x" * 100, headers=JSON)
    message = assert_one_sentence(response, 413, "limit of 10 bytes")["message"]
    assert "smaller images" in message and "--max-body-bytes" in message, message


async def asgi(app, body_chunks, *, disconnect_after=None, leave_when=None, headers=()):
    """Call the app as a server would; return the messages it sent and the chunks it read.

    Once its body is sent, the client disconnects after `disconnect_after` seconds, or as
    soon as `leave_when(scope)` holds (waited for at most 30 s), or never.
    """
    chunks = list(body_chunks)
    read = 0
    sent = []
    scope = _chat_scope(headers)

    async def receive():
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        if leave_when is not None:
            await _until(lambda: leave_when(scope), 30)
        elif disconnect_after is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent, read


def _run_cap(app):
    """Return the app's `RunCap` middleware, to read how many runs hold a place."""
    from langgraph_moa.serving._guard import RunCap

    stack = app.middleware_stack
    while not isinstance(stack, RunCap):
        stack = stack.app
    return stack


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(system):
    app = create_app({"m": system}, max_body_bytes=100_000)
    sent, read = await asgi(app, [b"x" * 10_000] * 1_000)  # 10 MB, no Content-Length
    assert sent[0]["status"] == 413
    assert read == 11  # stopped right past 100 kB, never read the other 9.9 MB


# --- off the event loop ----------------------------------------------------------------------


async def test_reading_a_body_does_not_block_other_clients(system, monkeypatch):
    slow_parse = _Preparer.__call__
    parsing, listed = threading.Event(), threading.Event()
    answered_meanwhile = []

    def parse(self, raw, scope=None):
        # A 990 kB body of tiny messages used to hold the loop for a second. This parse only
        # ends once GET /v1/models has answered, which it cannot if parsing holds the loop.
        parsing.set()
        answered_meanwhile.append(listed.wait(timeout=10))
        return slow_parse(self, raw, scope)

    monkeypatch.setattr(_Preparer, "__call__", parse)
    transport = httpx.ASGITransport(app=create_app({"m": system}))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:

        async def listing():
            await asyncio.to_thread(parsing.wait, 10)
            assert (await http.get("/v1/models")).status_code == 200
            listed.set()

        chat = http.post("/v1/chat/completions", json={"model": "m", "messages": USER})
        answered, _ = await asyncio.gather(chat, listing())
    assert answered.status_code == 200
    assert answered_meanwhile == [True], "GET /v1/models waited behind a body being read"


async def test_an_answers_agreement_does_not_block_other_clients(system, monkeypatch):
    """The answer event's agreement (word runs of the answer against each proposal) ran on
    the event loop: a 1 MB answer, or many long proposals, held every other client meanwhile.
    This agreement only ends once GET /v1/models has answered, which it cannot if it holds
    the loop; the event carries what it computed."""
    from langgraph_moa.serving import _events

    computing, listed = threading.Event(), threading.Event()
    answered_meanwhile = []
    agreement = _events.synthesis_agreement

    def slow_agreement(answer, references):
        computing.set()
        answered_meanwhile.append(listed.wait(timeout=10))
        return agreement(answer, references)

    monkeypatch.setattr(_events, "synthesis_agreement", slow_agreement)
    transport = httpx.ASGITransport(app=create_app({"m": system}))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:

        async def listing():
            await asyncio.to_thread(computing.wait, 10)
            assert (await http.get("/v1/models")).status_code == 200
            listed.set()

        run = http.post("/v1/moa/runs", json={"model": "m", "messages": USER})
        answered, _ = await asyncio.gather(run, listing())
    assert answered_meanwhile == [True], "GET /v1/models waited behind an answer's agreement"
    events = [json.loads(line[6:]) for line in answered.text.splitlines() if line[:6] == "data: "]
    answer = next(e for e in events if e["event"] == "answer")
    assert [a["call"] for a in answer["agreement"]] == [
        ["proposer", 1, 0, 0],
        ["proposer", 1, 1, 0],
    ]


# --- disconnects -----------------------------------------------------------------------------


@pytest.fixture
def slow_system(fake):
    slow = {"delay": lambda n: 1.0}
    return MoAConfig(
        proposers=[fake("A", **slow), fake("B", **slow)], aggregator=fake("AGG"), layers=2
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_cancels_its_run(fake, log, stream):
    hung = {"delay": lambda n: 600.0}
    system = MoAConfig(
        proposers=[fake("A", **hung), fake("B", **hung)], aggregator=fake("AGG"), layers=2
    )
    app = create_app({"m": system})
    body = json.dumps({"model": "m", "messages": USER, "stream": stream}).encode()
    # The proposers never answer: the handler returns only if it stopped waiting for the run
    # (the timeout only keeps a broken server from hanging the suite).
    await asyncio.wait_for(asgi(app, [body], disconnect_after=0.2), timeout=60)
    run = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if run:  # a cancelled run winds down at once; one left running would take 600 s
        _, still_running = await asyncio.wait(run, timeout=60)
        assert not still_running
    assert log.calls == []


@pytest.mark.parametrize("stream", [False, True])
async def test_the_access_log_says_how_many_calls_had_ended_when_the_client_left(fake, stream):
    """The chat route sees no call events, so its "client left" line said nothing of what
    the run had already cost. It now counts the calls that had ended, answered or failed.

    The client leaves once the run has ended A's and C's calls (B hangs): after a fixed
    time, a loaded machine could still be running them."""
    from langgraph_moa.serving._access import CALLS_KEY, AccessLog

    def a_and_c_ended(scope) -> bool:
        tally = scope.get(CALLS_KEY)
        return tally is not None and (tally.ended, tally.failed) == (2, 1)

    system = MoAConfig(
        proposers=[
            fake("A"),
            fake("B", delay=lambda n: 600.0),
            fake("C", fail=lambda n, m: ValueError("down")),
        ],
        aggregator=fake("AGG"),
        layers=2,
        retry={"max_attempts": 1},
    )
    from langgraph_moa.serving._metrics import Metrics

    lines: list[str] = []
    served = create_app({"m": system})
    metrics = Metrics.for_app(served)
    app = AccessLog(served, ["m"], lines.append, metrics=metrics)
    body = json.dumps({"model": "m", "messages": USER, "stream": stream}).encode()
    await asyncio.wait_for(asgi(app, [body], leave_when=a_and_c_ended), timeout=60)
    assert "client left after 2 calls, 1 failed ·" in lines[0], lines
    # and the metrics count them, the hung call as cancelled (they counted none)
    text = metrics.exposition().decode()
    for model, outcome in (("A", "ok"), ("C", "failed"), ("B", "cancelled")):
        assert f'moa_model_calls_total{{model="{model}",outcome="{outcome}"}} 1.0' in text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_stays_gets_the_whole_run(slow_system, log, stream):
    app = create_app({"m": slow_system})
    body = json.dumps({"model": "m", "messages": USER, "stream": stream}).encode()
    # The run takes about 1 s; the client stays far longer, so a slow machine cannot turn
    # this into a client that left (the app stops listening once it has answered).
    sent, _ = await asgi(app, [body], disconnect_after=30.0)
    assert sent[0]["status"] == 200
    assert b"AGG #" in b"".join(m.get("body", b"") for m in sent[1:])
    assert [c.label for c in log.calls][-1] == "AGG"


def test_an_empty_key_is_refused_not_taken_for_no_key(system):
    with pytest.raises(MoAConfigError, match="API key is empty"):
        create_app({"m": system}, api_key="")
    with pytest.raises(MoAConfigError, match="API key is empty"):
        create_app({"m": system}, api_key="  ")


def test_user_and_metadata_are_forwarded_to_the_run_trace_never_dropped():
    from langgraph_moa.serving._schema import ChatRequest

    body = ChatRequest.model_validate(
        {"model": "m", "messages": USER, "user": "u-1", "metadata": {"team": "a"}}
    )
    assert body.trace_metadata() == {"user": "u-1", "request_metadata": {"team": "a"}}
    options = body.run_options(picks_proposal=False)
    assert "user" not in json.dumps(options)  # not sent to the models


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65, "at most 64"),
        ({"metadata": {"team": "v" * 513}}, "metadata.team", "at most 512"),
        ({"user": "u" * 257}, "user", "at most 256"),
    ],
)
def test_trace_metadata_past_openais_bounds_is_a_400(client, log, extra, param, fragment):
    """What a client forwards to the trace is copied onto every run of it: it is bounded."""
    body = {"model": "m", "messages": USER, **extra}
    error = assert_one_sentence(post(client, body), 400, fragment)
    assert error["param"] == param
    assert log.calls == []


def test_trace_metadata_at_openais_bounds_is_forwarded():
    from langgraph_moa.serving._schema import ChatRequest

    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    body = ChatRequest.model_validate(
        {"model": "m", "messages": USER, "user": "u" * 256, "metadata": metadata}
    )
    assert body.trace_metadata() == {"user": "u" * 256, "request_metadata": metadata}


def test_large_bodies_are_parsed_one_at_a_time_small_ones_at_once(system):
    # A parse holds the GIL: eight large ones at once starve the event loop (a side
    # request's p95 went from 19 to 247 ms in benchmarks/serve_large_bodies.py).
    from langgraph_moa.serving._policy import HEAVY_BODY_BYTES

    class Counting(_Preparer):
        def __init__(self):
            super().__init__(
                {"m": system}, ModelPolicy.for_systems({"m": system}, ()), RequestLimits()
            )
            self.now = self.most = 0
            self.lock = threading.Lock()

            self.overlapped = threading.Event()

        def __call__(self, raw, scope=None):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                if self.now > 1:
                    self.overlapped.set()
            # Stay until another parse has come in: small ones, which may run at once, end
            # as soon as two overlap, however late the worker threads start; large ones,
            # which take turns, never overlap and leave after `patience`.
            self.overlapped.wait(self.patience)
            with self.lock:
                self.now -= 1
            return types.SimpleNamespace()  # a job: `off_loop` notes its `since` on it

    async def prepare_all(size, patience):
        prepare = Counting()
        prepare.patience = patience
        await asyncio.gather(*(prepare.off_loop(b"x" * size) for _ in range(4)))
        return prepare.most

    assert asyncio.run(prepare_all(HEAVY_BODY_BYTES, patience=0.05)) == 1
    assert asyncio.run(prepare_all(100, patience=5.0)) > 1


# --- access log ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","messages":' + b"[" * 2000 + b"]" * 2000 + b"}",  # RecursionError
        b'{"model":"m","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe not utf-8",
        b'{"model": "m\\nGET /forged 200", "messages": []}',
        b'{"model": "m\\u001b[2J\\u001b]0;owned\\u0007", "messages": []}',  # terminal escapes
    ],
)
def test_the_access_log_writes_one_line_for_any_body(system, body):
    from langgraph_moa.serving._access import AccessLog

    lines: list[str] = []
    client = local(AccessLog(create_app({"m": system}), ["m"], lines.append))
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert 400 <= response.status_code < 500, response.text
    assert len(lines) == 1 and lines[0].isprintable(), lines  # no newline, no escape code
    assert lines[0].startswith(f"POST /v1/chat/completions {response.status_code}")


def test_the_access_log_writes_a_clients_path_on_one_printable_line(system):
    from langgraph_moa.serving._access import AccessLog

    lines: list[str] = []
    client = local(AccessLog(create_app({"m": system}), ["m"], lines.append))
    response = client.get("/v1/%0aGET%20/forged%20200%1b[2J")
    assert response.status_code == 404
    assert len(lines) == 1 and lines[0].isprintable(), lines


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/moa/runs"])
def test_the_access_log_says_when_a_run_degraded_or_failed_on_either_route(fake, path):
    """The run event stream's lines lacked the calls, the failed calls, the fallback and the
    error: a run whose every proposer failed was logged as `200 · m · 0.01s`."""
    from langgraph_moa.serving._access import AccessLog

    down = fake("AGG", fail=lambda n, m: ValueError("down"))
    degraded = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=down, layers=2, retry={"max_attempts": 1}
    )
    lines: list[str] = []
    app = create_app({"fb": degraded, "dead": _failing_system(fake)}, history=None)
    client = local(AccessLog(app, ["fb", "dead"], lines.append))
    for model in ("fb", "dead"):
        body = {"model": model, "messages": USER, "stream": True}
        client.post(path, content=json.dumps(body), headers=JSON).read()
    fallback, failed = lines
    # The failed call's model named on both routes: the page's stream counted it unnamed.
    assert "3 calls, 1 failed (AGG)" in fallback, fallback
    assert "fallback: best_proposal" in fallback, fallback
    assert "error: All 2 proposer calls of layer 1 failed" in failed, failed


@pytest.mark.parametrize("route", ["runs", "chat"])
def test_the_access_log_parses_only_the_events_that_carry_its_facts(monkeypatch, route):
    """Every token event of the stream's kept tail (up to 512 KiB) was parsed as JSON once the
    stream ended: about 3,000 parses, 20 ms of the event loop per run request. Only the
    events that can carry the facts (the answer, the error, the provenance and usage
    chunks) are parsed now, and a token whose text looks like one changes nothing."""
    import langgraph_moa.serving._access as access
    from langgraph_moa.serving._events import sse

    trick = 'x", "moa": {"fallback": "forged"}, "error": {"message": "forged"}, "y": "'
    if route == "runs":
        token = sse({"event": "token", "role": "proposer", "layer": 1, "text": " blue"})
        token += sse({"event": "token", "role": "aggregator", "layer": 2, "text": trick})
        usage = {"calls": 3, "failed": 1, "total_tokens": 9}
        end = sse({"event": "answer", "text": "a", "fallback": "best_proposal", "usage": usage})
        end += sse({"event": "done", "run_id": "r", "status": "degraded"})
    else:
        token = "".join(
            f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n"
            for text in (" blue", trick)
        )
        calls = [{"status": "ok"}, {"status": "ok"}, {"status": "failed"}]
        moa = {"calls": calls, "fallback": "best_proposal", "usage": {"total": {}}}
        end = f"data: {json.dumps({'choices': [], 'moa': moa, 'usage': {'total_tokens': 9}})}\n\n"
        end += "data: [DONE]\n\n"
    parsed: list[str] = []
    loads = json.loads
    monkeypatch.setattr(access.json, "loads", lambda *a, **k: parsed.append(a) or loads(*a, **k))
    facts = access._response_facts((token * 1000 + end).encode())
    assert facts == {"calls": 3, "failed": 1, "tokens": 9, "fallback": "best_proposal"}
    assert len(parsed) <= 2, len(parsed)


@pytest.mark.parametrize("route", ["runs", "chat"])
@pytest.mark.parametrize("pieces", [1, 7])
def test_the_access_log_reads_an_answer_larger_than_the_tail_it_keeps(route, pieces):
    """An answer with logprobs (740 KB here) was cut at its head when the kept tail was
    trimmed to its last 256 KiB: a degraded run was logged as a plain 200. The event that
    carries the facts is kept whole, in one ASGI message or split across several."""
    import asyncio

    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._events import sse

    logprobs = [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "b"}] * 20}] * 2000
    calls = [{"status": "ok"}, {"status": "ok"}, {"status": "failed"}]
    if route == "runs":
        usage = {"calls": 3, "failed": 1}
        token = sse({"event": "token", "role": "proposer", "layer": 1, "text": " blue"})
        answer = sse({"event": "answer", "fallback": "best_proposal", "usage": usage})
        answer = answer[:-3] + f', "logprobs": {json.dumps(logprobs)}}}\n\n'
        end = sse({"event": "done", "run_id": "r", "status": "degraded"})
    else:
        token = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'x'}}]})}\n\n"
        choice = {"index": 0, "delta": {}, "logprobs": logprobs}
        moa = {"calls": calls, "fallback": "best_proposal"}
        answer = f"data: {json.dumps({'choices': [choice], 'moa': moa})}\n\n"
        end = "data: [DONE]\n\n"
    size = len(answer) // pieces + 1
    sent = [token * 600, *(answer[i : i + size] for i in range(0, len(answer), size)), end]
    assert len(answer) > 700_000

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in sent:
            await send({"type": "http.response.body", "body": part.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def drop(message):
        pass

    async def nothing():
        return {"type": "http.request", "body": b"{}"}

    lines: list[str] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/moa/runs", "headers": []}
    asyncio.run(AccessLog(app, [], lines.append)(scope, nothing, drop))
    assert "3 calls, 1 failed" in lines[0] and "fallback: best_proposal" in lines[0], lines


@pytest.mark.parametrize("logprobs", [True, False])
def test_the_access_log_reads_a_chat_answer_larger_than_the_tail_it_keeps(fake, logprobs):
    """A non-stream answer over 512 KiB (logprobs, or a long text, which its provenance
    repeats) was cut to its last 256 KiB, no longer JSON: a run with a failed call was logged
    as a plain 200. Its usage and provenance are kept, and nothing before them."""
    from langgraph_moa.serving._access import AccessLog

    words = 30_000 if logprobs else 70_000
    agg = fake("AGG", reply=lambda label, n, m: " ".join(["word"] * words))
    agg.logprob = (lambda n: -0.25) if logprobs else None
    down = fake("C", fail=lambda n, m: ValueError("down"))
    config = MoAConfig(
        proposers=[fake("A"), fake("B"), down], aggregator=agg, layers=2, retry={"max_attempts": 1}
    )
    lines: list[str] = []
    client = local(AccessLog(create_app({"m": config}), ["m"], lines.append))
    response = post(client, {"model": "m", "messages": USER, "logprobs": logprobs})
    assert response.status_code == 200 and len(response.content) > 600_000
    tokens = response.json()["usage"]["total_tokens"]
    assert f"4 calls, 1 failed (C) · {tokens} tokens" in lines[0], lines


def test_the_access_log_reads_usage_only_from_the_answer_not_its_logprobs(fake):
    """A provider whose logprobs object carries a ``usage`` key of its own: the log kept a
    large answer from that key on, no longer JSON, and its line lost its calls, failures and
    tokens. Only the completion's own usage counts."""
    from langgraph_moa.serving._access import AccessLog

    agg = fake("AGG", reply=lambda label, n, m: " ".join(["word"] * 30_000))
    agg.logprob = lambda n: -0.25
    agg.logprobs_extra = {"usage": {"total_tokens": 1}}
    down = fake("C", fail=lambda n, m: ValueError("down"))
    config = MoAConfig(
        proposers=[fake("A"), fake("B"), down], aggregator=agg, layers=2, retry={"max_attempts": 1}
    )
    lines: list[str] = []
    client = local(AccessLog(create_app({"m": config}), ["m"], lines.append))
    response = post(client, {"model": "m", "messages": USER, "logprobs": True})
    assert response.status_code == 200 and len(response.content) > 600_000
    assert response.json()["choices"][0]["logprobs"]["usage"] == {"total_tokens": 1}
    tokens = response.json()["usage"]["total_tokens"]
    assert tokens != 1
    assert f"4 calls, 1 failed (C) · {tokens} tokens" in lines[0], lines


@pytest.mark.parametrize("pieces", [3, 4])  # kept whole past the head; cut between the two
@pytest.mark.parametrize("model_first", [True, False])
def test_the_access_log_names_the_model_of_a_request_larger_than_the_head_it_keeps(
    system, model_first, pieces
):
    """A request over 256 KiB (a long conversation: non-ASCII text is 3 bytes a character)
    was kept cut to its first 256 KiB, no longer JSON, and its line named no model: the
    openai SDK writes ``model`` after ``messages``, past the cut. It is read from the kept
    head or tail, wherever the top-level field sits; a nested ``model`` is not taken."""
    from langgraph_moa.serving._access import AccessLog

    lines: list[str] = []
    limits = RequestLimits(max_chars=500_000)
    client = local(AccessLog(create_app({"m": system}, limits=limits), ["m"], lines.append))
    messages = [{"role": "user", "content": "é" * 100_000 + f" {i}"} for i in range(pieces)]
    fields = {"messages": messages, "model": "m", "aggregator": {"model": "nested"}}
    if model_first:
        fields = {"model": "m", "aggregator": {"model": "nested"}, "messages": messages}
    body = json.dumps(fields, ensure_ascii=False).encode()
    assert len(body) > 200_000 * pieces
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert response.status_code == 403, response.text  # the nested endpoint is refused
    assert lines[0].startswith("POST /v1/chat/completions 403 · m · error: "), lines


@pytest.mark.parametrize(
    "tail",
    [
        ',"model":"m"}',  # a second top-level model: the app takes the last one
        ',"model":"m","proposers":[' + ",".join(['{"model":"p"}'] * 20) + "]}",  # hidden
    ],
)
def test_the_access_log_names_the_model_the_app_read_whatever_the_body_repeats(system, tail):
    """The log line named the first ``model`` of a body over 256 KiB, or guessed from its
    tail, while the app reads the last one (JSON's rule): a client could make the line name
    a model its request was not run under. It now names the one the app read."""
    from langgraph_moa.serving._access import AccessLog

    lines: list[str] = []
    limits = RequestLimits(max_chars=500_000)
    client = local(AccessLog(create_app({"m": system}, limits=limits), ["m"], lines.append))
    text = "é" * 100_000 + ' say "model": "decoy"'  # a text that spells a key out
    body = f'{{"model":"decoy","messages":[{{"role":"user","content":{json.dumps(text)}}}]'
    body = (body + tail).encode()
    assert len(body) > 256 * 1024
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert " · m · " in lines[0] and "decoy" not in lines[0], (response.status_code, lines)


def test_the_access_log_parses_none_of_a_request_the_app_read(system, monkeypatch):
    """The log reparsed a request on the event loop to name its model, up to 16 times 768
    KiB for a body repeating a nested ``model`` (the app parses bodies off the loop, one
    large body at a time). A request the app read is named from what the app read."""
    from langgraph_moa.serving._access import AccessLog

    parsed: list[int] = []
    raw_decode = json.JSONDecoder.raw_decode

    def counting(self, s, idx=0):
        try:  # on the event loop: the log's; the app reads bodies in worker threads
            asyncio.get_running_loop()
            parsed.append(len(s) - idx)
        except RuntimeError:
            pass
        return raw_decode(self, s, idx)

    lines: list[str] = []
    limits = RequestLimits(max_chars=500_000)
    client = local(AccessLog(create_app({"m": system}, limits=limits), ["m"], lines.append))
    nested = '{"model":' * 16 + json.dumps("x" * 440_000) + "}" * 16
    text = "é" * 150_000  # past the 256 KiB head the log kept
    body = (
        f'{{"messages":[{{"role":"user","content":"{text}"}}],"model":"m",'
        f'"aggregator":{{"a":{nested}}}}}'
    ).encode()
    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    monkeypatch.undo()
    assert 400 <= response.status_code < 500, response.text
    assert " · m · " in lines[0], lines
    assert sum(parsed) < 300_000, (len(parsed), sum(parsed))


@pytest.mark.parametrize("leaves", [True, False])
def test_the_access_log_says_when_the_client_left_before_the_answer(leaves):
    """A client that closed a stream mid-run (its run cancelled, kept as `cancelled`) was
    logged as `200 · m · 0.30s`, a run that answered to the eye. The line now says so; a
    client that leaves once the response is whole is not said to have left."""
    import asyncio

    from langgraph_moa.serving._access import AccessLog

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"event: run\n\n", "more_body": True})
        if not leaves:
            await send({"type": "http.response.body", "body": b""})
        await receive()  # a streaming response watches for the client's disconnect

    async def drop(message):
        pass

    async def disconnect():
        return {"type": "http.disconnect"}

    lines: list[str] = []
    scope = {"type": "http", "method": "POST", "path": "/v1/moa/runs", "headers": []}
    asyncio.run(AccessLog(app, [], lines.append)(scope, disconnect, drop))
    assert ("client left" in lines[0]) is leaves, lines


def test_the_access_log_still_keeps_only_a_tail_of_what_carries_no_facts():
    """Keeping an answer whole must not keep a long stream of tokens or a large body whole."""
    from langgraph_moa.serving._access import _KEEP, _cut
    from langgraph_moa.serving._events import sse

    tokens = sse({"event": "token", "text": " blue"}) * 20_000
    chunks = f"data: {json.dumps({'choices': [{'delta': {'content': 'x'}}]})}\n\n" * 20_000
    for body in (tokens, chunks, json.dumps({"data": ["x"] * 200_000}), "x" * 700_000):
        kept = bytearray(body.encode())
        assert _cut(kept) == len(kept) - _KEEP, body[:40]
    logprobs = [{"token": "a", "logprob": -0.1}] * 30_000
    choice = {"message": {"content": '"usage": x'}, "logprobs": {"content": logprobs}}
    head = {"id": "chatcmpl-1", "choices": [choice]}
    tail = {"usage": {"total_tokens": 9}, "moa": {"calls": []}}
    answer = json.dumps({**head, **tail}, separators=(",", ":")).encode()
    kept = bytearray(answer)
    del kept[: _cut(kept, completion=True)]
    assert bytes(kept) == b'"usage":{"total_tokens":9},"moa":{"calls":[]}}'  # no logprobs
    assert _cut(kept, completion=True) == 0
    arriving = bytearray(answer[: len(answer) // 2])  # its usage is yet to come
    assert _cut(arriving, completion=True) == len(arriving) - _KEEP
    other = bytearray(b"x" * (_KEEP + 10) + b'"usage":' + b"y" * (_KEEP - 8))
    del other[: _cut(other)]  # no completion: its tail begins with the key by chance
    other += b"z" * 2 * _KEEP
    assert _cut(other) == len(other) - _KEEP


# --- --allow-model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("openai:gpt-4o", "--allow-model 'openai:gpt-4o' needs OPENAI_API_KEY, which is not set"),
        ("gpt-4o", "needs OPENAI_API_KEY"),  # the provider LangChain infers
        ("foo@ftp://x", "--allow-model 'foo@ftp://x' is not a model spec: Unknown model provider"),
        ("openai:", "is not a model spec: Model spec 'openai:' has no model name"),
        ("  ", "is not a model spec"),
        ("local:nope", "names local:nope, which is not a local model: name one of"),
    ],
)
def test_allow_model_specs_that_could_never_run_stop_the_server_at_startup(
    system, monkeypatch, spec, fragment
):
    import uvicorn

    from langgraph_moa.serving import _server

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))
    announced: list[str] = []
    with pytest.raises(MoAConfigError) as refused:
        _server.serve({"m": system}, allow_models=[spec], announce=announced.append)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert announced == []
    with pytest.raises(MoAConfigError, match="--allow-model"):  # the app alone, too
        create_app({"m": system}, allow_models=[spec])


def test_an_allowed_model_with_its_key_set_is_enabled(system, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    app = create_app({"m": system}, allow_models=[" openai:gpt-4o", "x@http://h:1/v1/"])
    assert app.state.policy.admit("openai:gpt-4o", "aggregator") == "openai:gpt-4o"
    assert app.state.policy.admit("x@http://h:1/v1", "aggregator") == "x@http://h:1/v1"


# --- streams: the status waits for the first content -----------------------------------------


def _failing_system(fake, delay=None, why=lambda: RuntimeError("upstream down")):
    broken = {"fail": lambda n, messages: why()}
    if delay is not None:
        broken["delay"] = lambda n: delay
    return MoAConfig(
        proposers=[fake("A", **broken), fake("B", **broken)],
        aggregator=fake("AGG"),
        layers=2,
        retry={"max_attempts": 1},
        name="m",
    )


def test_a_stream_whose_run_fails_before_any_text_gets_the_error_status(fake):
    client = local(create_app({"m": _failing_system(fake)}))
    same = {"X-Request-ID": "r-1"}  # the one field that tells the two answers apart
    plain = post(client, {"model": "m", "messages": USER}, same)
    streamed = post(client, {"model": "m", "messages": USER, "stream": True}, same)
    assert plain.status_code == streamed.status_code == 502
    assert streamed.json() == plain.json()
    assert streamed.json()["error"]["type"] == "upstream_error"
    assert "text/event-stream" not in streamed.headers["content-type"]


def test_a_stream_opens_with_the_role_chunk_then_its_first_content(system):
    response = post(
        local(create_app({"m": system})), {"model": "m", "messages": USER, "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"  # nor cached
    assert response.headers["x-accel-buffering"] == "no"  # nor buffered by nginx
    events = [line for line in response.text.split("\n\n") if line]
    first, second = (json.loads(e.removeprefix("data: ")) for e in events[:2])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert second["choices"][0]["delta"]["content"] and second["id"] == first["id"]
    assert events[-1] == "data: [DONE]"


def test_a_stream_silent_past_the_keepalive_opens_and_reports_a_later_failure_in_band(fake):
    # Proxies drop a response silent for too long: the status goes out with the first
    # keep-alive comment, and a failure after it can only be reported in the stream.
    app = create_app({"m": _failing_system(fake, delay=0.5)}, keepalive_s=0.05)
    response = post(local(app), {"model": "m", "messages": USER, "stream": True})
    assert response.status_code == 200
    events = [line for line in response.text.split("\n\n") if line]
    assert json.loads(events[0].removeprefix("data: "))["choices"][0]["delta"]["role"]
    assert events[1] == ": keep-alive"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["type"] == "upstream_error" and error["code"] == 502
    assert error["reason"] is None  # as the body of the same 502 says no code
    assert events[-1] == "data: [DONE]"


def test_a_streams_in_band_error_tells_what_the_same_requests_error_body_would(fake):
    # A conversation too long for the models: 400 `context_length_exceeded` without stream;
    # in-band, `code` is the status (400, as any other 400), so a client that turned stream
    # on could not tell it to shorten the conversation. `reason` is the body's `code` now.
    from tests.unit_tests.test_failures import context_overflow

    config = _failing_system(fake, delay=0.5, why=context_overflow)
    plain = post(local(create_app({"m": config})), {"model": "m", "messages": USER})
    app = create_app({"m": config}, keepalive_s=0.05)
    streamed = post(local(app), {"model": "m", "messages": USER, "stream": True})
    body = plain.json()["error"]
    _, error, ended = _streamed(streamed)
    assert (plain.status_code, body["code"]) == (400, "context_length_exceeded")
    assert streamed.status_code == 200 and ended and error is not None
    assert (error["code"], error["status"]) == (400, 400)  # the documented rule, kept
    assert error["reason"] == body["code"]
    assert {k: error[k] for k in ("message", "type", "param")} == {
        k: body[k] for k in ("message", "type", "param")
    }


# --- what a client is told -------------------------------------------------------------------


TOOL_TURN = {"role": "tool", "tool_call_id": "c1", "content": "42"}


def _call(arguments):
    call = {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


@pytest.mark.parametrize(
    ("messages", "param", "fragment"),
    [
        ([], "messages", '"messages": [{"role": "user", "content": "Explain X"}]'),
        ([*USER, {"role": "assistant", "content": "hi"}], None, "it is an 'assistant' message"),
        ([{"role": "user", "content": ""}], None, "The last user message is empty"),
        ([{"role": "user", "content": " \n\t"}], None, "The last user message is empty"),
        ([{"role": "user", "content": [{"type": "text", "text": " "}]}], None, "is empty"),
        (
            [*USER, _call("{bad"), TOOL_TURN],
            "messages.1.tool_calls.0.function.arguments",
            "not JSON",
        ),
        (
            [*USER, _call("[1, 2]"), TOOL_TURN],
            "messages.1.tool_calls.0.function.arguments",
            "must be a JSON object",
        ),
        (
            # Deeper than Python's JSON reader goes: 3.13's stops near 10,000 levels, not 1,000.
            [*USER, _call("[" * 20000 + "]" * 20000), TOOL_TURN],
            "messages.1.tool_calls.0.function.arguments",
            "not JSON",
        ),
        (
            [*USER, {"role": "assistant", "tool_calls": [{}]}, TOOL_TURN],
            "messages.1.tool_calls.0.id",
            "required",
        ),
        (
            [*USER, {"role": "assistant", "tool_calls": [{"id": "c1", "function": {}}]}, TOOL_TURN],
            "messages.1.tool_calls.0.function.name",
            "required",
        ),
    ],
)
def test_conversations_no_model_can_answer_are_a_400_in_a_clients_words(
    client, log, messages, param, fragment
):
    error = assert_one_sentence(post(client, {"model": "m", "messages": messages}), 400, fragment)
    assert error["param"] == param
    assert "('user'" not in error["message"] and "'ai'" not in error["message"]
    assert log.calls == []


@pytest.mark.parametrize("limit", ["abc", "-1", "0", "1001", "1.5"])
def test_a_bad_query_parameter_is_a_400_in_openais_shape(system, tmp_path, limit):
    from langgraph_moa.serving._history import History

    client = local(create_app({"m": system}, history=History(tmp_path / "h.db")))
    error = assert_one_sentence(client.get(f"/v1/moa/runs?limit={limit}"), 400, "limit")
    assert error["param"] == "limit" and error["code"] == "invalid_value"
    assert client.get("/v1/moa/runs?limit=1000").status_code == 200


def test_unknown_routes_and_methods_list_every_route_the_server_has(system):
    from langgraph_moa.serving._access import AccessLog

    app = create_app({"m": system})
    client = local(AccessLog(app, ["m"], lambda line: None))
    for response, code in ((client.get("/nope"), 404), (client.delete("/v1/models"), 405)):
        message = assert_one_sentence(response, code)["message"]
        for route in (
            "GET /v1/models,",
            "GET /v1/models/{model},",
            "POST /v1/chat/completions,",
            "GET /ui,",
            "POST /v1/moa/runs,",
            "GET /v1/moa/runs,",
            "GET /v1/moa/runs/{run_id}",
            "GET /health and GET /ready.",
        ):
            assert route in message, message


SECRET_NAME = "acme-internal-moa"


def _logged(system, **options):
    from langgraph_moa.serving._access import AccessLog

    app = create_app({SECRET_NAME: system}, **options)
    return local(AccessLog(app, [SECRET_NAME], lambda line: None))


def test_health_names_the_models_only_to_a_client_that_sends_the_key(system):
    """/health listed the served models to anyone, while /v1/models refused them a 401."""
    client = _logged(system, api_key="k")
    assert client.get("/v1/models").status_code == 401
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k"}):
        health = client.get("/health", headers=headers)
        assert (health.status_code, health.json()) == (200, {"status": "ok", "busy": False})
        head = client.head("/health", headers=headers)
        assert head.status_code == 200
        assert head.headers["content-length"] == health.headers["content-length"]
    keyed = client.get("/health", headers={"Authorization": "Bearer k"})
    assert keyed.json() == {
        "status": "ok",
        "busy": False,
        "models": [SECRET_NAME],
        "in_flight": 0,
        "runs": 0,
        "max_runs": 256,
    }
    assert _logged(system).get("/health").json()["models"] == [SECRET_NAME]


def test_health_tells_a_key_holder_the_requests_in_flight_and_none_are_left_over(system):
    """An operator serving for weeks could not see the server's load: /health said only
    "ok". It now counts the requests being answered, for a client that sends the key, and
    every request that ended (answered, refused, failed) is counted out again."""
    client = _logged(system, api_key="k")
    key = {"Authorization": "Bearer k"}
    assert client.get("/health", headers=key).json()["in_flight"] == 0
    for i in range(20):
        post(client, {"model": SECRET_NAME, "messages": [{"role": "user", "content": "hi"}]}, key)
        post(client, {"model": f"nope{i}", "messages": []}, key)  # 404
        post(client, {"model": SECRET_NAME}, {"Authorization": "Bearer wrong"})  # 401
        client.post("/v1/chat/completions", content=b"{bad", headers={**JSON, **key})  # 400
        client.get("/nowhere", headers=key)
    health = client.get("/health", headers=key).json()
    assert health["in_flight"] == health["runs"] == 0
    assert client.get("/health").json() == {"status": "ok", "busy": False}  # no load told


def test_health_names_the_models_only_to_a_client_the_browser_guard_lets_in(system):
    """A DNS-rebinding page (a foreign Host) or another site's script (a foreign Origin) got
    a 421 or 403 from /v1/models but read the served models from /health: it answered them
    before the Host and Origin rules ran. It still answers them 200, as a load balancer needs."""
    client = _logged(system)
    assert client.get("/v1/models", headers={"Host": "evil.example"}).status_code == 421
    refused = ({"Host": "evil.example"}, {"Origin": "https://evil.example"}, {"Origin": "null"})
    for headers in refused:
        health = client.get("/health", headers=headers)
        assert (health.status_code, health.json()) == (200, {"status": "ok", "busy": False})
    assert client.get("/health", headers={"Host": "localhost"}).json()["models"] == [SECRET_NAME]


def test_security_md_names_health_as_the_route_the_host_and_origin_rules_let_answer(system):
    """docs/security.md said ``Origin: null`` gets a 403, with no exception: /health answered
    it 200, as it answers every client (a load balancer's check). The doc now says so."""
    from pathlib import Path

    client = _logged(system)
    null = {"Origin": "null"}
    assert client.get("/v1/models", headers=null).status_code == 403
    assert client.get("/health", headers=null).status_code == 200
    page = Path(__file__).parents[2] / "docs" / "security.md"
    said = " ".join(page.read_text(encoding="utf-8").split())
    browsers = said[said.index("- **Browsers**") : said.index("- **Slow clients**")]
    assert "on every route but `GET /health` (and `HEAD`), which answers every client 200" in (
        browsers
    )


def test_nothing_that_loads_without_the_key_names_a_served_model(system):
    client = _logged(system, api_key="k")
    for path in ("/", "/ui", "/ui/static/app.js", "/ui/static/index.html", "/ui/static/nope"):
        for method in (client.get, client.head):
            response = method(path)
            assert SECRET_NAME not in response.text, path
            assert SECRET_NAME not in str(response.headers), path
    for method in ("OPTIONS", "HEAD", "POST"):
        response = client.request(method, "/health")
        assert SECRET_NAME not in response.text, method


SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}


@pytest.mark.parametrize("response_format", [SCHEMA, {"type": "json_object"}])
def test_a_structured_request_whose_aggregator_fails_is_a_502_not_free_text(fake, response_format):
    # The graph's rule, "a caller asking for a structure gets one or an error", must hold
    # for the format a client sends, which travels in the run's final_kwargs.
    down = fake("AGG", fail=lambda n, m: ValueError("down"))
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=down, layers=2, name="m")
    app = local(create_app({"m": config}))
    body = {"model": "m", "messages": USER, "response_format": response_format}
    error = assert_one_sentence(post(app, body), 502)
    assert error["type"] == "upstream_error"


def test_a_text_response_format_still_gets_the_labelled_fallback(fake):
    down = fake("AGG", fail=lambda n, m: ValueError("down"))
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=down, layers=2, name="m")
    body = {"model": "m", "messages": USER, "response_format": {"type": "text"}}
    response = post(local(create_app({"m": config})), body)
    assert response.status_code == 200
    assert response.json()["moa"]["fallback"] == "best_proposal"


def _strict(text):
    """Parse JSON as a strict parser would: NaN and the infinities are not JSON."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("progress", [False, True])
def test_streamed_chunks_are_strict_json_with_non_finite_numbers_as_null(fake, progress):
    agg = fake("AGG", logprob=lambda n: float("-inf"))
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, name="m")
    body = {"model": "m", "messages": USER, "stream": True, "logprobs": True}
    text = post(local(create_app({"m": config})), {**body, "moa_progress": progress}).text
    data = [b.split("data: ", 1)[1] for b in text.split("\n\n") if "data: " in b]
    chunks = [_strict(d) for d in data if d != "[DONE]"]
    done = next(c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason"))
    assert [t["logprob"] for t in done["choices"][0]["logprobs"]["content"]] == [None, None]


def test_the_non_stream_answer_writes_non_finite_numbers_as_null_too(fake):
    agg = fake("AGG", logprob=lambda n: float("nan"))
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, name="m")
    body = {"model": "m", "messages": USER, "logprobs": True}
    answer = _strict(post(local(create_app({"m": config})), body).text)
    assert [t["logprob"] for t in answer["choices"][0]["logprobs"]["content"]] == [None, None]


def test_dumps_writes_strict_json_and_leaves_finite_values_alone():
    from langgraph_moa._json import dumps

    assert dumps({"a": float("nan"), "b": [float("-inf"), 1.5], "c": (float("inf"),)}) == (
        '{"a": null, "b": [null, 1.5], "c": [null]}'
    )
    assert dumps({"x": 0.25, "y": "s", "z": None}) == '{"x": 0.25, "y": "s", "z": null}'


def test_max_tokens_caps_the_proposals_where_the_answer_is_one(fake, log):
    # On select and ranker the answer is a proposal returned verbatim: the client's cap is
    # the proposers'; the ranker's own call keeps its own cap (it answers with a number).
    select = MoAConfig(proposers=[fake("S1"), fake("S2")], variant="select", name="s")
    ranker = MoAConfig(
        proposers=[fake("R1"), fake("R2")],
        aggregator={"model": fake("RANK"), "max_tokens": 16},
        variant="ranker",
        name="r",
    )
    client = local(create_app({"s": select, "r": ranker}))
    for name in ("s", "r"):
        body = {"model": name, "messages": USER, "max_tokens": 7}
        assert post(client, body).status_code == 200
    assert {c.label: c.max_tokens for c in log.calls} == {
        "S1": 7,
        "S2": 7,
        "R1": 7,
        "R2": 7,
        "RANK": 16,
    }


def test_max_tokens_caps_the_aggregator_not_the_proposers_where_it_writes_the_answer(system, log):
    response = post(
        local(create_app({"m": system})), {"model": "m", "messages": USER, "max_tokens": 9}
    )
    assert response.status_code == 200
    assert {c.label: c.max_tokens for c in log.calls} == {"A": 512, "B": 512, "AGG": 9}


def test_a_structured_request_past_the_run_token_limit_is_a_400_naming_the_flag(system, log):
    # Where no labelled fallback may answer (a structure was asked for), the spent budget
    # is the server's --max-run-tokens, which the client's sentence names.
    app = create_app({"m": system}, limits=RequestLimits(max_run_tokens=1))
    body = {"model": "m", "messages": USER, "response_format": {"type": "json_object"}}
    error = assert_one_sentence(post(local(app), body), 400, "--max-run-tokens")
    assert error["code"] == "limit_exceeded"
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # no aggregator call


def test_a_spent_budget_400_names_both_budgets_and_no_cause_it_cannot_know(fake, log):
    # A preset that raises rather than fall back, and asked for no structure: the sentence
    # must not say a structure was asked for, and its own budget may be the lower one.
    strict = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        on_aggregator_failure="raise",
        budget={"max_tokens": 1},
    )
    error = assert_one_sentence(
        post(local(create_app({"m": strict})), {"model": "m", "messages": USER}), 400, "budget"
    )
    assert "structure" not in error["message"] and "budget.max_tokens" in error["message"]


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}


@pytest.mark.parametrize(("stream", "progress"), [(False, False), (True, False), (True, True)])
def test_a_tool_call_fallback_is_sent_as_tool_calls(fake, stream, progress):
    # tool_choice 'required' and an aggregator answering in text: it is refused, and the
    # labelled fallback, B's call, is the answer. With moa_progress the aggregator's text
    # streamed to the client as it came, then the fallback's calls followed: two answers.
    from langgraph_moa import RetrySettings

    call = {"name": "add", "args": {"a": 1}, "id": "b1"}
    config = MoAConfig(
        proposers=[fake("A"), fake("B", tool_calls=lambda *a: [dict(call)])],
        aggregator=fake("AGG", reply=lambda *a: "I think it is three"),
        layers=2,
        retry=RetrySettings(max_attempts=1),
        name="m",
    )
    body = {"model": "m", "messages": USER, "tools": [ADD_TOOL], "tool_choice": "required"}
    if stream:
        body = {**body, "stream": True, "moa_progress": progress}
    response = post(local(create_app({"m": config})), body)
    assert response.status_code == 200, response.text
    if not stream:
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["add"]
        assert choice["message"]["tool_calls"][0]["id"] == "b1"
        assert response.json()["moa"]["fallback"] == "best_proposal"
        return
    data = [b.split("data: ", 1)[1] for b in response.text.split("\n\n") if b.startswith("data: ")]
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == ""  # the refused answer's text never reaches the client
    calls = [
        t
        for c in chunks
        if c.get("choices")
        for t in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(t["id"], t["function"]["name"]) for t in calls] == [("b1", "add")]
    done = next(c for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason"))
    assert done["choices"][0]["finish_reason"] == "tool_calls"
    assert done["moa"]["fallback"] == "best_proposal"


def _streamed(response):
    """Return a stream's content, its in-band error (or None) and whether [DONE] ended it."""
    data = [b[len("data: ") :] for b in response.text.split("\n\n") if b.startswith("data: ")]
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    errors = [c["error"] for c in chunks if "error" in c]
    return text, errors[0] if errors else None, data[-1] == "[DONE]"


def _breaking_aggregator(fake, how):
    """A system whose aggregator streams two words, then fails; another attempt answers.

    ``retry``: the aggregator's second attempt answers whole; ``fallback``: the next model
    of ``aggregator_fallbacks`` answers; ``best_proposal``: the labelled fallback answers.
    """
    from langgraph_moa import RetrySettings
    from tests.fakes import WordStreamer

    if how == "retry":
        agg = WordStreamer(label="AGG", words=4, fail_at=2, fail_at_calls=1)
        extra = {"retry": RetrySettings(max_attempts=2, initial_interval=0.0, jitter=False)}
    else:
        agg = WordStreamer(label="AGG", words=4, fail_at=2)
        extra = {"retry": RetrySettings(max_attempts=1)}
        if how == "fallback":
            extra["aggregator_fallbacks"] = [WordStreamer(label="FB", words=3)]
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, name="m", **extra)


@pytest.mark.parametrize("how", ["retry", "fallback", "best_proposal"])
@pytest.mark.parametrize("progress", [False, True])
def test_a_stream_broken_midway_ends_in_the_error_never_two_answers_spliced(fake, how, progress):
    # The aggregator sent "AGG0 AGG1" and failed; its retry (or the next aggregator) then
    # answered whole. The plain stream raised StreamBrokenError; with moa_progress the second
    # attempt's text was sent after the first's, as one reply, with no error (and where the
    # labelled fallback answered, the cut half was the whole reply).
    app = create_app({"m": _breaking_aggregator(fake, how)})
    body = {"model": "m", "messages": USER, "stream": True, "moa_progress": progress}
    text, error, done = _streamed(post(local(app), body))
    assert text == "AGG0 AGG1"  # the first attempt's pieces, and nothing after them
    assert error is not None and "stream broke" in error["message"], text
    assert "\n" not in error["message"] and done


@pytest.mark.parametrize("variant", ["select", "self-moa"])
def test_a_request_for_samples_at_temperature_zero_is_a_400_naming_the_fix(fake, log, variant):
    """k samples of one proposer at temperature 0 are one answer repeated, in any variant:
    a request asking for them is refused before any call, in one sentence with the fix."""
    model = fake("M")
    served = MoAConfig(variant=variant, proposers=[{"model": model, "samples": 3}], name="m")
    body = {"model": "m", "messages": USER, "temperature": 0}
    assert_one_sentence(post(local(create_app({"m": served})), body), 400, "above 0")
    assert log.calls == []
    body["samples"] = 1
    if variant == "select":  # one greedy sample is an answer
        assert post(local(create_app({"m": served})), body).status_code == 200


def test_a_seed_past_a_64_bit_integer_is_a_400_before_any_call(client, log):
    """Every provider takes a signed 64-bit seed; a larger one failed every call upstream."""
    body = {"model": "m", "messages": USER, "seed": 2**64}
    assert_one_sentence(post(client, body), 400, "seed")
    assert log.calls == []


def test_a_local_model_that_cannot_start_is_a_500_naming_no_path_of_the_server(
    fake, monkeypatch, tmp_path, caplog
):
    # The cache folder a local model is assembled in could not be written: the request got a
    # 400 (the client's fault, it said) whose message was the server's cache folder path and
    # the variable the operator sets. The client now reads one sentence; the operator's log
    # has the path and the fix.
    import logging

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LANGGRAPH_MOA_CACHE", str(blocker))
    config = MoAConfig(
        proposers=["local:qwen2.5-coder-0.5b", fake("B")], aggregator=fake("AGG"), name="m"
    )
    with caplog.at_level(logging.WARNING, logger="langgraph_moa.serving"):
        response = post(local(create_app({"m": config})), {"model": "m", "messages": USER})
    error = assert_one_sentence(response, 500, "local model")
    assert error["type"] == "server_error", error
    assert str(tmp_path) not in error["message"] and "LANGGRAPH_MOA_CACHE" not in error["message"]
    [warned] = [r.getMessage() for r in caplog.records]
    assert str(blocker) in warned and "LANGGRAPH_MOA_CACHE" in warned, warned


# --- runs in flight across all clients ---------------------------------------------------------


def test_runs_past_the_servers_cap_get_a_503_with_retry_after_and_none_is_queued(fake):
    """Only connections per address were bounded: clients from many addresses could start
    runs without end. Past ``max_runs`` in flight a run is refused at once (503, Retry-After,
    one sentence naming --max-runs); /health's in_flight stays truthful; once a run ends its
    place is free again, and other routes are never refused."""
    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._guard import ServeSecurity

    slow = fake("A", delay=lambda n: 0.5 if n == 1 else 0)
    config = MoAConfig(proposers=[slow], aggregator=fake("AGG"), layers=2, name="m")
    app = create_app({"m": config}, security=ServeSecurity(max_runs=1))
    logged = AccessLog(app, ["m"], lambda line: None)
    body = json.dumps({"model": "m", "messages": USER})

    async def scenario():
        transport = httpx.ASGITransport(app=logged)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            first = asyncio.create_task(
                http.post("/v1/chat/completions", content=body, headers=JSON)
            )
            await asyncio.sleep(0.2)  # the first run is waiting on its proposer
            refused = await http.post("/v1/chat/completions", content=body, headers=JSON)
            page_run = await http.post("/v1/moa/runs", content=body, headers=JSON)
            health = (await http.get("/health")).json()
            listed = await http.get("/v1/models")
            answered = await first
            after = await http.post("/v1/chat/completions", content=body, headers=JSON)
            return refused, page_run, health, listed, answered, after

    refused, page_run, health, listed, answered, after = asyncio.run(scenario())
    error = assert_one_sentence(
        refused, 503, "limit of 1 run at once", "--max-runs", "MOA_MAX_RUNS"
    )
    assert error["code"] == "too_many_runs"
    assert refused.headers["retry-after"] == "5"
    assert page_run.status_code == 503  # the page's runs share the cap
    assert health["in_flight"] == 1  # the run still going; the refused ones are done
    assert listed.status_code == 200
    assert answered.status_code == 200 and after.status_code == 200


def test_a_client_without_the_key_is_told_so_before_the_run_cap(system):
    from langgraph_moa.serving._guard import RunCap, ServeSecurity

    app = create_app({"m": system}, api_key="k", security=ServeSecurity(max_runs=1))
    cap = next(m for m in app.user_middleware if m.cls is RunCap)
    client = local(app)
    client.post("/v1/models")  # builds the middleware stack
    _run_cap(app).running = 1  # full
    assert post(client, {"model": "m", "messages": USER}).status_code == 401
    assert (cap.kwargs["max_runs"], cap.kwargs["unread_s"]) == (1, 30.0)


async def test_a_client_that_never_reads_its_stream_gives_its_run_place_back(fake):
    """A streaming client that stays connected but reads nothing: the run ends at its
    deadline (or once its output is held back), but the response's send waited for the
    reader for ever, so the exchange never ended and its place under --max-runs was never
    given back; a few such clients refused every run after them. A send that waits longer
    than --body-timeout now ends the exchange, and the place is free again."""
    from langgraph_moa.serving._guard import ServeSecurity

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2, name="m")
    app = create_app({"m": config}, security=ServeSecurity(max_runs=1, body_timeout_s=0.3))
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    scope, receive, send, sent = _stalled_exchange("/v1/chat/completions", body, reads=0)
    await asyncio.wait_for(app(scope, receive, send), 5)  # hung for ever
    assert sent[0]["status"] == 200
    assert _run_cap(app).running == 0


async def test_every_way_a_run_ends_gives_its_place_under_the_cap_back(fake, monkeypatch):
    """With --max-runs 1, any path that forgot its place would refuse every run after it:
    a 400 after the place was taken, a failed run, a stream failing before its first byte,
    a page run, a bug in the route (a 500), and a client leaving mid-stream."""
    from langgraph_moa.serving._guard import ServeSecurity

    slow = fake("A", delay=lambda n: 0.3)
    down = fake("AGG", fail=lambda n, m: ValueError("down"))
    systems = {
        "m": MoAConfig(proposers=[slow], aggregator=fake("AGG"), layers=2, name="m"),
        "bad": MoAConfig(
            proposers=[down], aggregator=down, layers=2, name="bad", retry={"max_attempts": 1}
        ),
    }
    app = create_app(systems, security=ServeSecurity(max_runs=1))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:

        async def chat(body, path="/v1/chat/completions"):
            response = await http.post(path, content=json.dumps(body), headers=JSON)
            assert _run_cap(app).running == 0, (body, response.status_code)
            return response.status_code

        assert await chat({"model": "m", "messages": "nope"}) == 400
        assert await chat({"model": "bad", "messages": USER}) >= 500
        assert await chat({"model": "bad", "messages": USER, "stream": True}) >= 500
        assert await chat({"model": "m", "messages": USER}, "/v1/moa/runs") == 200
        real = _Preparer.__call__

        def broken(self, raw, scope=None):
            raise RuntimeError("a bug")

        monkeypatch.setattr(_Preparer, "__call__", broken)
        assert await chat({"model": "m", "messages": USER}) == 500
        monkeypatch.setattr(_Preparer, "__call__", real)

    await asgi(  # a stream whose client leaves while the run waits on its proposer
        app,
        [json.dumps({"model": "m", "messages": USER, "stream": True}).encode()],
        disconnect_after=0.1,
    )
    assert _run_cap(app).running == 0


def test_health_stays_live_at_the_run_cap_but_says_it_is_busy(system):
    """/health answered {"status": "ok"} while every run got a 503 at --max-runs: a load
    balancer kept sending runs to a full server. It stays 200 "ok" (the process is alive),
    and now says "busy" to every client, and the runs in flight and the cap to a key holder."""
    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._guard import ServeSecurity

    app = create_app({"m": system}, api_key="k", security=ServeSecurity(max_runs=2))
    client = local(AccessLog(app, ["m"], lambda line: None))
    key = {"Authorization": "Bearer k"}
    assert client.get("/health").json() == {"status": "ok", "busy": False}  # before any request
    keyed = client.get("/health", headers=key).json()
    assert (keyed["runs"], keyed["max_runs"], keyed["busy"]) == (0, 2, False)
    post(client, {"model": "m", "messages": USER}, key)  # builds the stack; counted out again
    assert client.get("/health", headers=key).json()["runs"] == 0
    _run_cap(app).running = 2  # full: the next run would get a 503
    assert post(client, {"model": "m", "messages": USER}, key).status_code == 503
    health = client.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "busy": True})
    keyed = client.get("/health", headers=key).json()
    assert (keyed["runs"], keyed["max_runs"], keyed["busy"]) == (2, 2, True)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
def test_a_body_that_names_a_field_twice_is_one_sentence_400(system, route):
    """{"temperature": 0.5, "temperature": NaN} ran with the last value, silently: JSON
    leaves duplicate names to each parser (a proxy in front may have checked the first), so
    the request was not the one it looked like. It is now refused, naming the field."""
    client = local(create_app({"m": system}))
    user = '[{"role": "user", "content": "hi"}]'
    for raw, name in (
        (f'{{"model": "m", "model": "m", "messages": {user}}}', "model"),
        (
            f'{{"model": "m", "messages": {user}, "temperature": 0.5, "temperature": 1}}',
            "temperature",
        ),
        (
            '{"model": "m", "messages": [{"role": "user", "content": "a", "content": "b"}]}',
            "content",
        ),
    ):
        response = client.post(route, content=raw.encode(), headers=JSON)
        assert response.status_code == 400, raw
        message = response.json()["error"]["message"]
        assert f"'{name}'" in message and "twice" in message and message.count(". ") == 0
    for raw in (  # numbers JSON cannot hold or that are not the field's kind: 400, not 500
        f'{{"model": "m", "messages": {user}, "max_tokens": 1e400}}',
        f'{{"model": "m", "messages": {user}, "temperature": NaN}}',
        f'{{"model": "m", "messages": {user}, "max_tokens": {"9" * 5000}}}',
    ):
        assert client.post(route, content=raw.encode(), headers=JSON).status_code == 400


async def test_a_slow_reader_that_keeps_reading_a_long_answer_is_not_cut():
    """--body-timeout bounded one whole write of an answer, and a stream's write joins
    what queued up (up to a million characters): a live reader taking 1 MB/s had its
    1 MB write cut at 0.3 s as if it read nothing. A write now goes out in pieces of
    UNREAD_PIECE bytes, each bounded, so only a reader that takes nothing for the timeout
    is cut."""
    from langgraph_moa.serving._guard import _read_within, _Unread

    taken: list[int] = []

    async def reader(message):  # 1 MB/s
        await asyncio.sleep(len(message.get("body", b"")) / 1_000_000)
        taken.append(len(message.get("body", b"")))

    send = _read_within(reader, 0.3)
    await send({"type": "http.response.body", "body": b"x" * 1_000_000, "more_body": True})
    assert sum(taken) == 1_000_000
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    assert taken[-1] == 0  # the end of the body still goes out as its own message

    async def stalled(message):
        await asyncio.Event().wait()

    with pytest.raises(_Unread):
        await _read_within(stalled, 0.1)({"type": "http.response.body", "body": b"x"})


# --- text no encoder takes -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["proposer", "aggregator"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_surrogate_in_a_models_answer_is_replaced_not_a_500(fake, who, stream):
    # A JSON reply may spell a lone surrogate ("\ud800"; a server that cuts an emoji's pair
    # between two chunks sends two): the text reached the aggregator's prompt and the reply
    # unencodable, and the whole run was a 500 with every answer computed lost.
    broken = lambda label, n, messages: "Answer \ud800 here"  # noqa: E731
    proposers = [fake("A", reply=broken if who == "proposer" else None), fake("B")]
    aggregator = fake("AGG", reply=broken if who == "aggregator" else None)
    system = MoAConfig(proposers=proposers, aggregator=aggregator, layers=2, name="m")
    body = {"model": "m", "messages": USER, "stream": stream}
    response = post(local(create_app({"m": system})), body)
    assert response.status_code == 200, response.text
    response.content.decode("utf-8")  # strict: well-formed UTF-8 throughout
    text = response.text
    if stream:
        events = [json.loads(line[6:]) for line in text.splitlines() if line[6:7] == "{"]
        assert all("choices" in e for e in events), events
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert "\ud800" not in text
    assert ("Answer \ufffd here" in text) == (who == "aggregator")


def test_a_surrogate_pair_split_between_two_chunks_is_joined_again(fake):
    from langgraph_moa._unicode import well_formed

    assert well_formed("smile \ud83d" + "\ude00!") == "smile \U0001f600!"
    assert well_formed("\udc80 and \ud800") == "\ufffd and \ufffd"
    assert well_formed("plain 中文") == "plain 中文"


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (b'{"model":"m","messages":[{"role":"user","content":"hi \\ud800"}]}', ["\\ud800"]),
        (b'{"model":"m\\udc80","messages":[]}', ["surrogate pair", "line 1 column"]),
        (b'{"model":"m","messages":[{"role":"user","content":"caf\xe9"}]}', ["not UTF-8"]),
        (codecs.BOM_UTF8 + json.dumps({"model": "m", "messages": USER}).encode(), ["mark"]),
        (json.dumps({"model": "m", "messages": USER}).encode("utf-16"), ["UTF-16"]),
        (json.dumps({"model": "m", "messages": USER}).encode("utf-16-le"), ["UTF-16"]),
    ],
)
def test_a_body_in_another_encoding_or_with_a_lone_surrogate_is_named(client, log, body, fragments):
    # These read "not valid JSON: expected value at line 1 column 1", "invalid unicode code
    # point" or "unexpected end of hex escape": nothing said the encoding or the surrogate.
    response = client.post("/v1/chat/completions", content=body, headers=JSON)
    error = assert_one_sentence(response, 400, *fragments, "UTF-8")
    assert error["code"] == "invalid_json" and log.calls == []


def test_the_repeated_name_check_costs_few_calls_per_object():
    """The check runs on every accepted body, in the request's path: a reader built afresh
    per body and a Python set filled name by name cost 27 calls for a one-message body and
    one more than its names per object; now 16 per body and 3 per object (counted calls,
    not time)."""
    import cProfile
    import pstats

    from langgraph_moa.serving._policy import _refuse_repeated_names

    def calls(n: int) -> int:
        messages = [{"role": "user", "content": "x", "name": "a"} for _ in range(n)]
        raw = json.dumps({"model": "m", "messages": messages, "temperature": 1}).encode()
        _refuse_repeated_names(raw)
        profile = cProfile.Profile()
        profile.enable()
        _refuse_repeated_names(raw)
        profile.disable()
        return pstats.Stats(profile).total_calls

    assert calls(1) <= 16
    assert calls(101) - calls(1) <= 3 * 100


def test_a_name_repeated_deep_in_a_tools_schema_is_refused_naming_it(system):
    """docs/security.md: a repeated name is refused in any object, at any depth (a tool's
    `parameters` schema included), and `param` is the name, not its path."""
    client = local(create_app({"m": system}))
    raw = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
        '"function", "function": {"name": "f", "parameters": {"type": "object", "properties": '
        '{"a": {"type": "string", "type": "integer"}}}}}]}'
    )
    response = client.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("duplicate_field", "type")


def test_an_answer_in_content_blocks_with_a_lone_surrogate_is_made_well_formed():
    # An aggregator may answer in content blocks (a list, as Anthropic's models and OpenAI's
    # Responses API do); only a string answer was made well-formed, so a lone surrogate in a
    # block still reached the encoder.
    from langchain_core.messages import AIMessage

    from langgraph_moa.run._accounting import ok_record
    from langgraph_moa.run._answer import final_message

    blocks = [{"type": "text", "text": "smile \ud83d\ude00"}, " and \udc80", {"type": "x"}]
    response = AIMessage(content=blocks)
    record = ok_record(
        role="aggregator",
        layer=2,
        proposer=None,
        sample=0,
        configured_model="m",
        response=response,
        latency_s=0.1,
    )
    config = MoAConfig(proposers=["openai:a"], aggregator="openai:b", layers=2)
    answer = final_message(config, response, response.content, [record], record)
    assert answer.text == "smile \U0001f600 and \ufffd"
    assert answer.content[2] == {"type": "x"}  # blocks kept as they are, text made good
    assert record["output"] == answer.text
    answer.text.encode("utf-8")


def test_create_app_lets_clients_name_endpoints_when_its_limits_say_so(system):
    """`RequestLimits.allow_client_endpoints` says that `moa serve` reads it into its model
    policy, but `create_app` read only its own argument: a Python user who passed
    ``limits=RequestLimits(allow_client_endpoints=True)`` (as a LangGraph entry point takes
    it) had every client endpoint refused with a 403 naming a flag already set."""
    body = {"model": "m", "messages": USER, "proposers": ["x@http://127.0.0.1:9/v1"]}
    closed = local(create_app({"m": system}, limits=RequestLimits()))
    assert_one_sentence(post(closed, body), 403, "--allow-client-endpoints")
    opened = local(create_app({"m": system}, limits=RequestLimits(allow_client_endpoints=True)))
    response = post(opened, body)
    assert response.status_code != 403, response.text


_NUMBER_FIELDS = {
    **dict.fromkeys(("temperature", "top_p", "presence_penalty", "frequency_penalty"), "number"),
    **dict.fromkeys(
        ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs", "layers", "samples"),
        "integer",
    ),
}


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_a_number_field_that_is_not_finite_is_named_as_such(client, log, route, value):
    """A NaN temperature was 'Input should be less than or equal to 2 (got nan)' and a NaN
    max_tokens 'should be a valid integer': each number field's NaN or infinity (1e400
    reads as one) now says it is not a finite number, naming the field."""
    for field, kind in _NUMBER_FIELDS.items():
        logprobs = ', "logprobs": true' if field == "top_logprobs" else ""
        raw = f'{{"model": "m", "messages": {json.dumps(USER)}, "{field}": {value}{logprobs}}}'
        response = client.post(route, content=raw.encode(), headers=JSON)
        error = assert_one_sentence(response, 400, f"{field} is not a finite number", kind)
        assert error["param"] == field and error["code"] == "invalid_value"
    assert log.calls == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1e400"])
def test_a_tool_schemas_number_that_is_not_finite_is_refused_before_any_call(client, log, value):
    """A NaN or an infinity inside a tool's JSON schema is no number field of the body, so
    it passed and reached every call, whose provider refused it (strict JSON has none):
    now a 400 naming where it is, as a number field's NaN is answered."""
    parameters = (
        f'{{"type": "object", "properties": {{"n": {{"type": "number", "maximum": {value}}}}}}}'
    )
    tool = f'{{"type": "function", "function": {{"name": "f", "parameters": {parameters}}}}}'
    raw = f'{{"model": "m", "messages": {json.dumps(USER)}, "tools": [{tool}]}}'
    response = client.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
    error = assert_one_sentence(
        response, 400, "parameters.properties.n.maximum is not a finite number"
    )
    assert error["param"] == "tools.0.function"
    schema = f'{{"name": "s", "schema": {{"type": "object", "default": [1, {value}]}}}}'
    raw = f'{{"model": "m", "messages": {json.dumps(USER)}, "response_format": '
    raw += f'{{"type": "json_schema", "json_schema": {schema}}}}}'
    response = client.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
    assert_one_sentence(response, 400, "json_schema.schema.default.1 is not a finite number")
    assert log.calls == []


def test_a_text_fields_nan_keeps_its_own_error(client):
    """Only number fields say 'not a finite number': a string's NaN is not a string."""
    raw = f'{{"model": "m", "messages": {json.dumps(USER)}, "user": NaN}}'
    response = client.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
    error = assert_one_sentence(response, 400, "valid string")
    assert "finite" not in error["message"]


def test_the_usage_says_the_cached_and_reasoning_tokens_the_calls_reported(fake):
    """The answer's usage summed its calls' cache reads and reasoning tokens, but `moa serve`
    sent the three totals only: a client pricing cached tokens (ChatOpenAI reads
    `prompt_tokens_details.cached_tokens`) saw none. Kinds no call reported stay out."""
    details = lambda n: {  # noqa: E731
        "input_token_details": {"cache_read": 3, "cache_creation": 1},
        "output_token_details": {"reasoning": 2},
    }
    config = MoAConfig(
        proposers=[fake("A", usage_details=details), fake("B")],
        aggregator=fake("AGG", usage_details=details),
        layers=2,
    )
    client = local(create_app({"m": config}))
    usage = post(client, {"model": "m", "messages": USER}).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 6}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 4}
    body = {"model": "m", "messages": USER, "stream": True}
    body["stream_options"] = {"include_usage": True}
    lines = post(client, body).text.splitlines()
    chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert [c["usage"] for c in chunks if c.get("usage")] == [usage]
    plain = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    usage = post(local(create_app({"m": plain})), {"model": "m", "messages": USER}).json()
    assert set(usage["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_the_drain_brings_a_runs_deadline_forward_and_says_the_server_stopped_it():
    # On a stop, a run's own deadline (600 s) outlasted the orchestrator's grace: the drain
    # now ends it first, with an error of its own (a 503 or a stream's last event).
    import asyncio

    from langgraph_moa.errors import RequestTimeoutError
    from langgraph_moa.serving._errors import ServerStoppingError, _api_error
    from langgraph_moa.serving._requests import Drain, _within

    async def stopped(own_s, drain_s):
        drain = Drain()
        run = asyncio.ensure_future(_within(own_s, asyncio.sleep(600), drain))
        await asyncio.sleep(0)  # the run is open: its deadline is held to the drain's
        drain.end_in(drain_s)
        with pytest.raises((ServerStoppingError, RequestTimeoutError)) as err:
            await asyncio.wait_for(run, 60)
        return err.value, drain.stopped

    error, count = asyncio.run(stopped(600, 0.01))
    assert isinstance(error, ServerStoppingError) and count == 1
    assert (_api_error(error).status, _api_error(error).code) == (503, "server_stopping")
    error, count = asyncio.run(stopped(0.01, 600))  # its own deadline came first
    assert type(error) is RequestTimeoutError and count == 0


def test_a_request_the_drain_stopped_is_told_when_to_send_it_again(system):
    # The drain's 503 says "send it again" but, unlike RunCap's 503, set no Retry-After, so
    # a client's retry policy had nothing to go on.
    from langgraph_moa.serving._errors import RETRY_AFTER_S

    app = create_app({"m": system})
    app.state.drain.due = 0.0  # the drain ended long ago: a run that starts now is stopped
    response = post(local(app), {"model": "m", "messages": USER})
    error = assert_one_sentence(response, 503, "send it again")
    assert error["code"] == "server_stopping"
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)


def test_a_timeout_raised_inside_a_run_during_the_drain_is_not_the_drains():
    # Any TimeoutError out of the run was taken for the drain's expiry once a drain had
    # begun: a run's own TimeoutError (a library's wait) was reported as server_stopping
    # and counted among the runs the stop cut off.
    import asyncio

    from langgraph_moa.serving._errors import ServerStoppingError
    from langgraph_moa.serving._requests import Drain, _within

    async def its_own_timeout():
        await asyncio.sleep(0)  # the drain begins meanwhile
        raise TimeoutError("a wait of its own")

    async def failed():
        drain = Drain()
        run = asyncio.ensure_future(_within(600, its_own_timeout(), drain))
        drain.end_in(60)
        with pytest.raises(Exception) as err:  # any error but the drain's
            await asyncio.wait_for(run, 60)
        return err.value, drain.stopped

    error, count = asyncio.run(failed())
    assert not isinstance(error, ServerStoppingError) and count == 0


def test_a_timeout_raised_inside_a_run_is_not_reported_as_the_requests():
    # Any TimeoutError out of the run was taken for the request timer's: a run's own (a
    # library's wait, a model call's) was answered 504 "the request ran past the server's
    # limit", sending the client to ask the operator for a longer --request-timeout.
    import asyncio

    from langgraph_moa.errors import CallTimeoutError, RequestTimeoutError
    from langgraph_moa.serving._requests import _within

    async def its_own(error):
        await asyncio.sleep(0)
        raise error

    with pytest.raises(TimeoutError) as err:
        asyncio.run(_within(600, its_own(TimeoutError("a wait of its own"))))
    assert not isinstance(err.value, RequestTimeoutError) and str(err.value) == "a wait of its own"
    call = CallTimeoutError("aggregator 'openai:gpt-x' did not answer within 5s")
    with pytest.raises(CallTimeoutError):  # a run answers it inside its failure (a 502)
        asyncio.run(_within(600, its_own(call)))


def test_a_stream_that_fails_on_a_bug_after_it_started_still_ends_in_an_error(
    system, monkeypatch, caplog
):
    # A run's own TimeoutError (no package error) is a bug since it is not taken for the
    # request's: a stream that had sent text was cut there, with no error and no [DONE],
    # and a client read the half answer as the whole one.
    import langgraph_moa.serving._app as served
    from langgraph_moa.serving._errors import CRASHED

    class Breaking:
        answer = None

        def __init__(self, *args, **kwargs):
            pass

        async def __aiter__(self):
            yield "half an"
            raise TimeoutError("a wait of its own")

    monkeypatch.setattr(served, "AnswerStream", Breaking)
    response = post(
        local(create_app({"m": system})), {"model": "m", "messages": USER, "stream": True}
    )
    text, error, done = _streamed(response)
    assert response.status_code == 200 and text == "half an"
    assert error is not None and error["message"] == CRASHED and error["code"] == 500
    assert error["type"] == "server_error" and error["request_id"] and done
    assert "a wait of its own" not in response.text  # the operator's log has it
    assert "a wait of its own" in caplog.text and error["request_id"] in caplog.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_calls_timeout_that_ends_a_run_is_answered_as_security_md_says(fake, stream):
    # docs/security.md said such a run answers 504 upstream_timeout: the aggregator's (or a
    # layer's) timeout reaches the client inside the run's failure, a 502 upstream_error
    # whose sentence names the model and the timeout, and so the page says now.
    from pathlib import Path

    hung = fake("AGG", delay=lambda n: 1.0)  # 20 times its call_timeout_s
    served = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=hung,
        layers=2,
        call_timeout_s=0.05,
        retry={"max_attempts": 1},
        on_aggregator_failure="raise",
        name="m",
    )
    body = {"model": "m", "messages": USER, "stream": stream}
    error = assert_one_sentence(post(local(create_app({"m": served})), body), 502)
    assert (
        error["type"] == "upstream_error" and "AGG did not answer within 0.05s" in error["message"]
    )
    page = Path(__file__).parents[2] / "docs" / "security.md"
    said = " ".join(page.read_text(encoding="utf-8").split())
    assert "upstream_timeout" not in said
    assert "a model call's timeout that ends the run is a 502 (`upstream_error`)" in said
    changelog = (page.parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "upstream_timeout" not in changelog  # it said so too


# --- clients that stop reading ---------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # moa serve runs on uvloop
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
def test_a_stalled_reader_holds_the_models_stream_back_not_only_the_relay(
    fake, monkeypatch, route, loop
):
    """A client that stops reading held back only the relay (`pump`) past PENDING_CHARS:
    LangGraph's stream queue, between the model and the relay, has no bound, so the model
    went on writing its whole answer into memory (a 60,000-word answer to a stalled socket:
    server RSS +170 MB). The model's token stream now waits for the reader too, so the
    tokens written stay within the relay's bound, counted here, on both event loops (the
    context variable used before held these in-process models back on asyncio's loop only,
    and a real backend's stream on neither loop: each run's config now carries the pace).

    The wait ends on an event, not a clock: the model waits for the reader (held), or its
    stream ends (it wrote all its words unheld); a 5 s wait let a loaded machine's unbounded
    model stop short of its 3,000 words and pass."""
    from langgraph_moa.serving import _events
    from langgraph_moa.serving._guard import ServeSecurity
    from tests.fakes import WordStreamer

    monkeypatch.setattr(_events, "PENDING_CHARS", 2_000)  # a dozen chunks' worth
    monkeypatch.setattr(_events, "JOIN_CHARS", 500)  # the page's events join fewer words
    over: dict[str, asyncio.Event] = {}  # set once the model is held or has ended
    waiting = _events.ReaderPace.on_llm_new_token

    async def noted(pace, token, **kwargs):
        if not pace.room.is_set():
            over["event"].set()  # the model's next token waits for the reader
        await waiting(pace, token, **kwargs)

    class Watched(WordStreamer):
        async def _astream(self, *args, **kwargs):
            try:
                async for chunk in super()._astream(*args, **kwargs):
                    yield chunk
            finally:
                over["event"].set()

    monkeypatch.setattr(_events.ReaderPace, "on_llm_new_token", noted)
    agg = Watched(label="AGG", words=3_000)
    state = agg.state
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2, name="m")
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    seen: dict = {}

    async def stalled() -> None:
        over["event"] = asyncio.Event()
        app = create_app({"m": config}, security=ServeSecurity(body_timeout_s=600))
        gone = asyncio.Event()
        served = asyncio.ensure_future(app(*_stalled_exchange(route, body, gone)[:3]))
        try:
            await asyncio.wait_for(over["event"].wait(), 60)  # held, or all words written
            seen.update(state)
        finally:
            gone.set()  # the client leaves: the run ends
            await asyncio.wait_for(served, 10)

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(stalled())
    else:
        asyncio.run(stalled())
    # Held with typically 20 to 250 words written; 974 were seen on two cores shared by
    # eight test runs (the model runs ahead until the relay holds its bound).
    assert "ended" not in seen and 0 < seen["words"] <= 2_000, seen


@pytest.fixture
def without_gc():
    """Cyclic garbage collection off for a test: what it would close (an abandoned
    generator in a reference cycle) it closes at a time of its own."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
async def test_a_stalled_reader_cut_off_by_the_server_stops_its_run(fake, route, without_gc):
    """A client that reads nothing is cut off after --body-timeout: its place under
    --max-runs is given back, and its run is cancelled once the connection is closed (its
    model call ends), rather than left calling models outside the cap
    until --request-timeout while its relay waits in a send that never ends.

    Without the garbage collector: the run was stopped only once it closed the response's
    abandoned stream, so the test passed or failed by when it ran."""
    from langgraph_moa.serving._guard import ServeSecurity
    from tests.fakes import WordStreamer

    agg = WordStreamer(label="AGG", words=100_000, gap=0.01)  # 1,000 s of words
    state = agg.state
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2, name="m")
    app = create_app({"m": config}, security=ServeSecurity(body_timeout_s=0.3))
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    gone = asyncio.Event()
    await asyncio.wait_for(app(*_stalled_exchange(route, body, gone)[:3]), 30)  # cut off
    assert _run_cap(app).running == 0
    gone.set()  # the server closed the connection
    assert await _until(lambda: "ended" in state, 10), state  # its model call has ended


async def test_a_run_the_server_cut_off_is_kept_as_cut_not_as_left_by_its_client(
    fake, tmp_path, without_gc
):
    """A page's run whose reader the server cut off (a piece unread past --body-timeout)
    was kept in the history with "the client closed the event stream" on each call it
    stopped: the server closed it, and the history now says so, with why."""
    from langgraph_moa.serving._guard import ServeSecurity
    from langgraph_moa.serving._history import History
    from tests.fakes import WordStreamer

    agg = WordStreamer(label="AGG", words=100_000, gap=0.01)  # 1,000 s of words
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2, name="m")
    history = History(tmp_path / "h.db")
    security = ServeSecurity(body_timeout_s=0.3)
    app = create_app({"m": config}, security=security, history=history)
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    gone = asyncio.Event()
    await asyncio.wait_for(app(*_stalled_exchange("/v1/moa/runs", body, gone)[:3]), 30)
    gone.set()  # the server closed the connection
    assert await _until(lambda: history.list(), 10)
    record = history.get(history.list()[0]["id"])
    stopped = [e for e in record.events if e.get("status") == "cancelled"]
    assert record.status == "cancelled" and stopped, record.events
    for event in stopped:
        assert "the client closed" not in event["error"], event
        assert "a piece of the answer unread for 0.3 s" in event["error"], event


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
async def test_a_stalled_readers_run_held_back_stops_its_models_at_its_deadline(
    fake, monkeypatch, route
):
    """--request-timeout still ends a run held back by a client that reads nothing: its
    model call is cancelled where it waits for the reader, not let go to write the rest of
    its answer into memory."""
    from langgraph_moa.serving._guard import ServeSecurity
    from tests.fakes import WordStreamer

    agg = WordStreamer(label="AGG", words=3_000)
    state = agg.state
    app = _deadline_app(fake, monkeypatch, agg, 2_000, ServeSecurity(body_timeout_s=600))
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    gone = asyncio.Event()
    served = asyncio.ensure_future(app(*_stalled_exchange(route, body, gone)[:3]))
    try:
        assert await _until(lambda: "ended" in state, 10), state  # its call has ended
        assert state["words"] <= 1_000, state
    finally:
        gone.set()
        await asyncio.wait_for(served, 10)


# --- a degraded answer's header ----------------------------------------------------------------


def _aggregator_down(fake):
    down = fake("AGG", fail=lambda n, messages: RuntimeError("upstream down"))
    return MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=down, layers=2, retry={"max_attempts": 1}
    )


def test_a_degraded_answer_says_so_in_its_headers_not_only_in_its_body(fake):
    """A gateway or a client that reads only the status and headers (a retry policy, a
    dashboard) saw a fallback answer as a plain 200: only ``moa.fallback`` and
    ``moa.failed_layers`` in the body told it."""
    from tests.unit_tests.test_graph_failed_layers import _passed_over_config

    healthy = MoAConfig(proposers=[fake("C")], aggregator=fake("AGG2"), layers=2)
    configs = {"fb": _aggregator_down(fake), "po": _passed_over_config(fake), "ok": healthy}
    client = local(create_app(configs))
    fallback = post(client, {"model": "fb", "messages": USER})
    assert fallback.status_code == 200 and fallback.json()["moa"]["fallback"] == "best_proposal"
    assert fallback.headers["x-moa-degraded"] == "fallback=best_proposal"
    passed_over = post(client, {"model": "po", "messages": USER})
    assert passed_over.json()["moa"]["failed_layers"] == [{"layer": 2, "references_from": 1}]
    assert passed_over.headers["x-moa-degraded"] == "failed-layers=2"
    assert "x-moa-degraded" not in post(client, {"model": "ok", "messages": USER}).headers


def test_a_degraded_stream_says_so_in_its_last_chunk_its_headers_went_out_before(fake):
    client = local(create_app({"fb": _aggregator_down(fake)}))
    response = post(client, {"model": "fb", "messages": USER, "stream": True})
    assert response.status_code == 200 and "x-moa-degraded" not in response.headers
    chunks = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\n\n")[:-2]]
    assert next(c["moa"] for c in chunks if "moa" in c)["fallback"] == "best_proposal"


def test_a_call_timeout_that_reaches_the_error_mapping_is_an_upstream_error_not_a_400():
    # A bare CallTimeoutError (a model call ran past call_timeout_s) fell through to the
    # mapping's last line, a 400 that blamed the client; it is the upstream's failure, said as
    # the run's failure says a call's timeout: a 502 upstream_error naming the model.
    from langgraph_moa.errors import CallTimeoutError
    from langgraph_moa.serving._errors import _api_error

    answer = _api_error(CallTimeoutError("AGG did not answer within 0.05s"))
    assert (answer.status, answer.kind) == (502, "upstream_error")
    assert answer.message == "AGG did not answer within 0.05s"


def test_an_answer_the_client_refused_is_an_upstream_error_not_a_400():
    # An UpstreamResponseError (an answer too large, a redirect, JSON no parser reads) is the
    # model server's doing: it fell through to the 400 that blames the client.
    from langgraph_moa.errors import UpstreamResponseError
    from langgraph_moa.serving._errors import _api_error

    said = "Model 'm' at 10.0.0.5:8000 answered 307 redirecting the call to 'http://x/'"
    answer = _api_error(UpstreamResponseError(said))
    assert (answer.status, answer.kind) == (502, "upstream_error")
    assert answer.message == said


async def test_a_call_held_back_by_a_stalled_reader_is_not_timed_out_and_paid_for_again(
    fake, monkeypatch
):
    """The time a model call waited for its stream's reader (`ReaderPace`) counted against
    its own call_timeout_s: a reader that paused longer had the call cut, retried and paid
    for a second time. The call's timer now stops while it waits for the reader: one
    upstream call, and the whole answer once the reader reads again."""
    from langgraph_moa.serving import _events
    from langgraph_moa.serving._guard import ServeSecurity
    from tests.fakes import WordStreamer

    monkeypatch.setattr(_events, "PENDING_CHARS", 2_000)
    monkeypatch.setattr(_events, "JOIN_CHARS", 500)
    held = asyncio.Event()
    waiting = _events.ReaderPace.on_llm_new_token

    async def noted(pace, token, **kwargs):
        if not pace.room.is_set():
            held.set()  # the model's next token waits for the reader
        await waiting(pace, token, **kwargs)

    monkeypatch.setattr(_events.ReaderPace, "on_llm_new_token", noted)
    agg = WordStreamer(label="AGG", words=1_000)
    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=agg,
        layers=2,
        call_timeout_s=1,
        retry={"max_attempts": 2},
        name="m",
    )
    app = create_app({"m": config}, security=ServeSecurity(body_timeout_s=600))
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    gone, resume = asyncio.Event(), asyncio.Event()
    scope, receive, send, sent = _stalled_exchange(
        "/v1/chat/completions", body, gone, reads=0, resume=resume
    )
    served = asyncio.ensure_future(app(scope, receive, send))
    try:
        await asyncio.wait_for(held.wait(), 60)
        loop = asyncio.get_running_loop()
        paused = loop.time() + 2  # twice the call's timeout, all of it waiting for the reader
        while loop.time() < paused and not served.done():
            await asyncio.sleep(0.1)
        resume.set()  # the reader reads again
        await asyncio.wait_for(served, 60)
    finally:
        gone.set()
    text = b"".join(m.get("body", b"") for m in sent).decode()
    assert agg.state["calls"] == 1, agg.state
    assert "AGG999" in text and "StreamBroken" not in text and text.endswith("[DONE]\n\n")
    assert '"error": {' not in text  # no in-band error either


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/moa/runs"])
async def test_a_trickling_reader_gives_its_run_place_back_at_the_deadline_plus_body_timeout(
    fake, monkeypatch, route
):
    """A client that takes a piece of its answer now and then, each within --body-timeout
    (as a socket's buffers take them), kept its place under --max-runs past its run's
    deadline for as long as the run's unsent text took to trickle out. An exchange now
    lasts at most --request-timeout plus twice --body-timeout (upload and end) from its
    admission: then it is cut, its place given back, with most of that text still unsent (the
    run itself ended at its deadline)."""
    from langgraph_moa.serving import _guard
    from langgraph_moa.serving._access import CUT_KEY
    from langgraph_moa.serving._guard import ServeSecurity
    from tests.fakes import WordStreamer

    monkeypatch.setattr(_guard, "UNREAD_PIECE", 50)  # over 100 pieces to trickle out
    agg = WordStreamer(label="A" * 50, words=100_000)  # held back by the reader meanwhile
    state = agg.state
    # 5,000 characters unsent at the run's deadline
    app = _deadline_app(fake, monkeypatch, agg, 5_000, ServeSecurity(body_timeout_s=2))
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    scope, receive = _stalled_exchange(route, body)[:2]  # connected throughout
    sent: list[dict] = []

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body":  # none taken until the run is over,
            await _until(lambda: "ended" in state, 4)  # then one a tenth of a second
            await asyncio.sleep(0.1)

    await asyncio.wait_for(app(scope, receive, send), 60)
    assert _run_cap(app).running == 0 and "ended" in state, state  # its run stopped
    text = b"".join(m.get("body", b"") for m in sent)
    assert b"[DONE]" not in text and b'"event": "error"' not in text[-200:]  # cut, not ended
    assert sent[-1].get("more_body") is True
    assert scope[CUT_KEY].startswith("the response outlasted --request-timeout")  # logged


async def test_a_response_that_starts_late_is_bounded_from_its_admission_not_its_start():
    """A non-streamed answer starts only once its run is done (a stream without moa_progress
    at its first content): bounded from its start, a slow reader kept its place up to another
    --request-timeout past the run's deadline. The bound counts from RunCap's admission: a
    response that starts past it is cut at its first piece, its place given back."""
    from langgraph_moa.serving._access import CUT_KEY
    from langgraph_moa.serving._guard import RunCap

    done, stopped = asyncio.Event(), asyncio.Event()
    pieces: list[bytes] = []

    async def run(scope, receive, send):
        await receive()
        await done.wait()  # the run: over once the test says so, past the bound
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for i in range(3):
                await send({"type": "http.response.body", "body": b"x", "more_body": i < 2})
                pieces.append(b"x")
        finally:
            stopped.set()

    cap = RunCap(run, max_runs=1, unread_s=60, within_s=0.5)
    scope, receive, send, sent = _stalled_exchange("/v1/chat/completions", b"{}", reads=10)
    served = asyncio.ensure_future(cap(scope, receive, send))
    assert await _until(lambda: cap.running == 1, 10)
    await asyncio.sleep(1)  # past within_s from the admission
    done.set()
    await asyncio.wait_for(served, 10)
    assert cap.running == 0 and stopped.is_set()  # its place given back, its run stopped
    assert pieces == [] and sent[-1]["type"] == "http.response.start"  # not one piece sent
    assert scope[CUT_KEY].startswith("the response outlasted --request-timeout")  # logged


def _deadline_app(fake, monkeypatch, agg, pending: int, security):
    """Return an app serving model "m" (answered by `agg`) under a 1 s --request-timeout,
    whose streams hold its run back past `pending` characters unsent."""
    from langgraph_moa.serving import _events

    monkeypatch.setattr(_events, "PENDING_CHARS", pending)
    monkeypatch.setattr(_events, "JOIN_CHARS", 500)
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2, name="m")
    return create_app({"m": config}, security=security, limits=RequestLimits(request_timeout_s=1))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/moa/runs"])
def test_a_requests_wait_to_be_prepared_counts_against_its_request_timeout(fake, monkeypatch, path):
    # An exchange may last --request-timeout plus twice --body-timeout from its admission:
    # the upload, the run, the end. The run's deadline started only once the body was
    # prepared (parsed in a worker thread, a large body waiting its turn), so that wait came
    # out of the time the end was given: here a run answered though its request had been
    # in the server longer than its --request-timeout before the run started.
    import time

    prepare = _Preparer.__call__

    def slow(self, raw, scope=None):
        time.sleep(3)  # queued behind other bodies: longer than the whole request_timeout
        return prepare(self, raw, scope)

    monkeypatch.setattr(_Preparer, "__call__", slow)
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2, name="m")
    app = create_app({"m": config}, limits=RequestLimits(request_timeout_s=2))
    body = json.dumps({"model": "m", "messages": USER})
    response = local(app).post(path, content=body, headers=JSON)
    if path == "/v1/moa/runs":
        events = [
            json.loads(line[6:]) for line in response.text.splitlines() if line[:6] == "data: "
        ]
        error = next(e for e in events if e["event"] == "error")
    else:
        assert response.status_code == 504
        error = response.json()["error"]
    assert "limit of 2 s" in error["message"]


async def test_a_declared_length_one_byte_over_the_limit_is_refused_unread(system):
    """A Content-Length over the limit is refused from the head: not one byte is read."""
    body = json.dumps({"model": "m", "messages": USER}).encode()
    client = local(create_app({"m": system}, max_body_bytes=len(body)))
    assert client.post("/v1/chat/completions", content=body, headers=JSON).status_code == 200
    app = create_app({"m": system}, max_body_bytes=len(body) - 1)
    declared = [(b"content-length", str(len(body)).encode())]
    sent, read = await asgi(app, [body], headers=declared)
    assert sent[0]["status"] == 413
    assert read == 0


async def test_a_content_length_of_thousands_of_digits_is_a_413_unread(system):
    """A client's Content-Length is untrusted: one of over 4,300 digits made int() raise
    ValueError, and the request was answered with a crash's 500, not the limit's 413."""
    body = json.dumps({"model": "m", "messages": USER}).encode()
    app = create_app({"m": system})
    sent, read = await asgi(app, [body], headers=[(b"content-length", b"1" * 5000)])
    assert sent[0]["status"] == 413
    assert read == 0


def _aggregator_failing_with(fake, error):
    """Return the answer to a request whose only aggregator fails with `error` (no fallback)."""
    strict = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", fail=lambda n, msgs: error),
        layers=2,
        on_aggregator_failure="raise",
    )
    return post(local(create_app({"m": strict})), {"model": "m", "messages": USER})


@pytest.mark.parametrize(("asked", "told"), [("90", "90"), ("61.2", "62"), ("1e9", "3600")])
def test_a_502_for_an_aggregators_long_retry_after_passes_the_wait_on(fake, asked, told):
    """An aggregator asking to be retried after more than the 60 s a call waits fails at
    once, and the 502 carried no Retry-After: a client's SDK retried it at once, to be
    refused again. The provider's wait goes on, in whole seconds, at most an hour."""
    import openai

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    limited = httpx.Response(429, headers={"retry-after": asked}, request=request)
    error = openai.RateLimitError("slow down", response=limited, body=None)
    answer = _aggregator_failing_with(fake, error)
    assert_one_sentence(answer, 502, "asked to be retried after")
    assert answer.headers.get("retry-after") == told


def test_a_502_for_another_aggregator_failure_says_no_retry_after(fake):
    answer = _aggregator_failing_with(fake, ValueError("model AGG not found"))
    assert answer.status_code == 502 and "retry-after" not in answer.headers


@pytest.mark.parametrize(
    "payload",
    [
        {"moa": {"calls": [], "incomplete_call": "called 'add' without its required argument"}},
        {"event": "answer", "incomplete_call": "called 'add' without its required argument"},
    ],
)
def test_an_incomplete_tool_call_answer_is_a_degraded_reason_of_the_log_and_metrics(payload):
    # It was a plain 200 in the log line and the degraded-answer metrics.
    from langgraph_moa.serving._access import degraded_reasons, payload_facts

    assert degraded_reasons(payload_facts(payload)) == ["incomplete_call"]
    assert degraded_reasons(payload_facts({"moa": {"calls": []}})) == []


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -5.0, 0.0])
def test_a_502_passes_on_no_retry_after_but_a_finite_positive_wait(fake, wait):
    """RetryPastDeadlineError is public, its wait given by whoever raises it (a custom model):
    a NaN or infinite one made the 502's Retry-After fail to be written (math.ceil raised, the
    client got the server's crash instead), and a negative or zero one went out as it was."""
    from langgraph_moa.errors import RetryPastDeadlineError

    answer = _aggregator_failing_with(fake, RetryPastDeadlineError("AGG said: later", wait))
    assert answer.status_code == 502 and "retry-after" not in answer.headers
