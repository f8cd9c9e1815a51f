"""The lean chat-completions resource sends what the openai SDK's own ``create`` sends.

`transport._completions` skips the SDK's per-request parameter transform when the parameters
are plain JSON, and builds responses by pydantic's validation where it can. These tests hold
it to the SDK: the same parameters through both resources must give the same HTTP request
(method, URL, headers, JSON body), for every kind of payload LangChain builds, streamed or
not, and for parameters it must hand back to the SDK; and every kind of response and chunk
must come back as the same object the SDK builds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from openai._types import omit
from openai.resources.chat.completions import AsyncCompletions, Completions

import langgraph_moa.transport._completions as lean_module
from langgraph_moa.providers._models import build_model
from langgraph_moa.transport._completions import (
    KEEP_TRANSFORM_ENV,
    LeanAsyncCompletions,
    LeanCompletions,
    lean_completions,
)

COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNKS = [
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    },
]


class Recorder:
    """An HTTP handler that keeps every request and answers like a chat-completions server."""

    def __init__(self, completion: Any = None, chunks: list[Any] | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.completion = COMPLETION if completion is None else completion
        self.chunks = CHUNKS if chunks is None else chunks

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        if body.get("stream"):
            events = "".join(f"data: {json.dumps(c)}\n\n" for c in self.chunks)
            return httpx2.Response(
                200,
                content=(events + "data: [DONE]\n\n").encode(),
                headers={"content-type": "text/event-stream"},
            )
        return httpx2.Response(200, json=self.completion)

    def seen(self, index: int = -1) -> tuple[str, str, dict[str, str], Any]:
        request = self.requests[index]
        headers = dict(request.headers)
        return request.method, str(request.url), headers, json.loads(request.content)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
PAYLOADS: dict[str, dict[str, Any]] = {
    "plain": {"model": "m", "messages": MESSAGES, "temperature": 0.7, "max_tokens": 64},
    "omitted values": {"model": "m", "messages": MESSAGES, "max_tokens": omit, "seed": omit},
    "tools": {
        "model": "m",
        "messages": MESSAGES,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "description": "Add two numbers.",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                        "required": ["a", "b"],
                    },
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    },
    "tool results": {
        "model": "m",
        "messages": [
            *MESSAGES,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "3"},
        ],
    },
    "sampling": {
        "model": "m",
        "messages": MESSAGES,
        "stop": ["\n\n", "END"],
        "n": 2,
        "logprobs": True,
        "top_logprobs": 1,
        "seed": 7,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "logit_bias": {"50256": -100},
    },
    "streamed": {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    "json schema": {
        "model": "m",
        "messages": MESSAGES,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True},
        },
    },
    "image": {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    },
    "request options": {
        "model": "m",
        "messages": MESSAGES,
        "extra_body": {"cache_prompt": True, "samplers": ["top_k"]},
        "extra_headers": {"X-Trace": "abc"},
        "extra_query": {"q": "1"},
        "timeout": 12.5,
    },
    # Not plain JSON: handed back to the SDK's create, which still sends the same request.
    "tuple of messages": {"model": "m", "messages": tuple(MESSAGES)},
    "tuple of stops": {"model": "m", "messages": MESSAGES, "stop": ("a", "b")},
}


def _clients(recorder: Recorder, strict: bool = False) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    common = {
        "base_url": "http://upstream.test/v1",
        "api_key": "k",
        "max_retries": 0,
        "_strict_response_validation": strict,
    }
    sync = openai.OpenAI(
        **common, http_client=httpx2.Client(transport=httpx2.MockTransport(recorder))
    )
    async_ = openai.AsyncOpenAI(
        **common, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    )
    return sync, async_


def _without_volatile(seen: tuple[str, str, dict[str, str], Any]) -> Any:
    method, url, headers, body = seen
    # The SDK's per-process counters and timings are the only headers that may differ.
    headers = {k: v for k, v in headers.items() if k not in ("x-stainless-read-timeout",)}
    return method, url, headers, body


HANDED_BACK = {"tuple of messages", "tuple of stops"}
"""The payloads that are not plain JSON: the lean create hands them to the SDK's transform."""


@pytest.fixture
def transforms(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the SDK's parameter transforms from here on (they still run)."""
    from openai.resources.chat.completions import completions

    seen: list[str] = []
    async_transform, sync_transform = completions.async_maybe_transform, completions.maybe_transform

    async def counted_async(data: Any, expected_type: Any) -> Any:
        seen.append("async")
        return await async_transform(data, expected_type)

    def counted_sync(data: Any, expected_type: Any) -> Any:
        seen.append("sync")
        return sync_transform(data, expected_type)

    monkeypatch.setattr(completions, "async_maybe_transform", counted_async)
    monkeypatch.setattr(completions, "maybe_transform", counted_sync)
    return seen


@pytest.mark.parametrize("name", list(PAYLOADS))
async def test_async_lean_create_sends_the_sdk_request(name: str, transforms: list[str]) -> None:
    recorder = Recorder()
    _, client = _clients(recorder)
    params = PAYLOADS[name]
    sdk = await AsyncCompletions(client).create(**params)
    assert transforms == ["async"]
    lean = await LeanAsyncCompletions(client).create(**params)
    # The lean create skips the transform for plain JSON, and hands the rest to it.
    assert transforms == ["async", "async"] if name in HANDED_BACK else ["async"]
    assert _without_volatile(recorder.seen(-1)) == _without_volatile(recorder.seen(-2))
    if params.get("stream"):
        sdk_chunks = [c async for c in sdk]
        lean_chunks = [c async for c in lean]
        assert [c.model_dump() for c in lean_chunks] == [c.model_dump() for c in sdk_chunks]
    else:
        assert lean.model_dump() == sdk.model_dump()


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_sync_lean_create_sends_the_sdk_request(name: str, transforms: list[str]) -> None:
    recorder = Recorder()
    client, _ = _clients(recorder)
    params = PAYLOADS[name]
    sdk = Completions(client).create(**params)
    lean = LeanCompletions(client).create(**params)
    assert transforms == ["sync", "sync"] if name in HANDED_BACK else ["sync"]
    assert _without_volatile(recorder.seen(-1)) == _without_volatile(recorder.seen(-2))
    if not params.get("stream"):
        assert lean.model_dump() == sdk.model_dump()


async def test_raw_response_wrapper_goes_through_the_lean_create() -> None:
    """LangChain calls ``with_raw_response.create``: the SDK's wrapper must reach our create."""
    recorder = Recorder()
    _, client = _clients(recorder)
    lean = LeanAsyncCompletions(client)
    raw = await lean.with_raw_response.create(**PAYLOADS["plain"])
    assert raw.parse().choices[0].message.content == "hi"
    assert recorder.requests[-1].headers["x-stainless-raw-response"] == "true"


@pytest.mark.parametrize(
    "params",
    [
        {"messages": MESSAGES},  # no model
        {"model": "m", "messages": MESSAGES, "cache_prompt": True},  # not a create parameter
    ],
    ids=["no model", "unknown parameter"],
)
async def test_a_call_the_sdk_refuses_is_still_refused(params: dict[str, Any]) -> None:
    """The SDK's create raises TypeError for these, before any request; so does the lean one
    (an unknown key belongs in ``extra_body``, and is not sent silently)."""
    recorder = Recorder()
    sync, client = _clients(recorder)
    with pytest.raises(TypeError):
        await AsyncCompletions(client).create(**params)
    with pytest.raises(TypeError):
        await LeanAsyncCompletions(client).create(**params)
    with pytest.raises(TypeError):
        LeanCompletions(sync).create(**params)
    assert recorder.requests == []


def _endpoint_model(recorder: Recorder, **params: Any) -> Any:
    return build_model(
        "m@http://upstream.test/v1",
        params,
        http_async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(recorder)),
    )


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_built_model_sends_what_langchain_sends_through_the_sdk(
    streamed: bool, monkeypatch: pytest.MonkeyPatch, transforms: list[str]
) -> None:
    """End to end from LangChain: the package's model and the same model on the SDK's create
    send the same requests and read the same answers (plain, with tools, with stop words)."""
    recorder = Recorder()
    lean = _endpoint_model(recorder, temperature=0.3, max_tokens=32)
    assert type(lean.async_client) is LeanAsyncCompletions
    monkeypatch.setenv(KEEP_TRANSFORM_ENV, "1")
    sdk = _endpoint_model(recorder, temperature=0.3, max_tokens=32)
    assert type(sdk.async_client) is AsyncCompletions
    messages = [SystemMessage("Be brief."), HumanMessage("Hi?")]
    for make in (lambda m: m, lambda m: m.bind_tools([add]), lambda m: m.bind(stop=["END"])):
        answers = []
        for model in (sdk, lean):
            bound = make(model)
            transforms.clear()
            if streamed:
                chunks = [c async for c in bound.astream(messages)]
                answers.append("".join(str(c.content) for c in chunks))
            else:
                answers.append((await bound.ainvoke(messages)).content)
            # The SDK's create transformed LangChain's payload; the lean one did not need to.
            assert transforms == ([] if model is lean else ["async"])
        assert answers[0] == answers[1] == "hi"
        assert _without_volatile(recorder.seen(-1)) == _without_volatile(recorder.seen(-2))


def test_only_the_sdk_resources_of_package_built_models_are_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = build_model("m@http://upstream.test/v1", {})
    assert type(built.async_client) is LeanAsyncCompletions
    assert type(built.client) is LeanCompletions
    again = lean_completions(built)  # idempotent: already lean
    assert type(again.async_client) is LeanAsyncCompletions

    from langchain_openai import ChatOpenAI

    users = ChatOpenAI(model="m", base_url="http://upstream.test/v1", api_key="k")  # type: ignore[arg-type]
    kept = build_model(users, {"temperature": 0.1})
    assert type(kept.async_client) is AsyncCompletions  # the user's model is left alone

    monkeypatch.setenv(KEEP_TRANSFORM_ENV, "1")
    assert type(build_model("m@http://upstream.test/v1", {}).async_client) is AsyncCompletions


def _annotations_in(tp: Any, seen: set[int]) -> list[Any]:
    """Every `PropertyInfo` reachable from a parameter type (typed dicts, unions, containers)."""
    import typing_extensions as typing  # the SDK's typed dicts are typing_extensions'
    from openai._utils._transform import PropertyInfo

    if id(tp) in seen:
        return []
    seen.add(id(tp))
    found: list[Any] = []
    if typing.get_origin(tp) is typing.Annotated:
        found += [a for a in tp.__metadata__ if isinstance(a, PropertyInfo)]
    if typing.is_typeddict(tp):
        for hint in typing.get_type_hints(tp, include_extras=True).values():
            found += _annotations_in(hint, seen)
    for arg in typing.get_args(tp):
        found += _annotations_in(arg, seen)
    return found


def test_chat_completion_parameters_have_nothing_for_the_transform_to_do() -> None:
    """The lean create rests on this: no aliased or formatted field in the parameter types.

    An SDK upgrade that adds one fails here, before a renamed key could be sent as is.
    """
    from openai.types.beta import response_create_params
    from openai.types.chat import completion_create_params

    # The walk does find such a field where there is one (the Responses API has an alias).
    aliased = _annotations_in(response_create_params.ResponseCreateParams, set())
    assert any(a.alias == "openai-beta" for a in aliased)

    found = _annotations_in(completion_create_params.CompletionCreateParamsBase, set())
    assert [a for a in found if a.alias is not None or a.format is not None] == []
    found_any = _annotations_in(completion_create_params.CompletionCreateParamsStreaming, set())
    assert [a for a in found_any if a.alias is not None or a.format is not None] == []


async def test_parameters_nested_past_the_walk_go_to_the_sdk(transforms: list[str]) -> None:
    """A tool schema nested deeper than the plain-JSON walk can go is the SDK's to transform."""
    recorder = Recorder()
    _, client = _clients(recorder)
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(400):  # past the walk (about 320 levels), within the JSON encoder
        schema = {"type": "object", "properties": {"x": schema}}
    tools = [{"type": "function", "function": {"name": "deep", "parameters": schema}}]
    await LeanAsyncCompletions(client).create(model="m", messages=MESSAGES, tools=tools)
    assert transforms == ["async"]
    assert json.loads(recorder.requests[-1].content)["tools"][0]["function"]["name"] == "deep"


def _completion(message: dict[str, Any], choice: Any = None, **top: Any) -> dict[str, Any]:
    first = {"index": 0, "message": message, "finish_reason": "stop", **(choice or {})}
    return {**COMPLETION, "choices": [first], **top}


def _chunk(delta: dict[str, Any], choice: Any = None, **top: Any) -> dict[str, Any]:
    first = {"index": 0, "delta": delta, "finish_reason": None, **(choice or {})}
    return {**CHUNKS[0], "choices": [first], **top}


USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
TOKEN = {"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": []}
CALL = {"id": "t1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
RESPONSES: dict[str, tuple[Any, bool]] = {
    # name: (response body, built by validation)
    "plain": (COMPLETION, True),
    "tool call": (_completion({"role": "assistant", "content": None, "tool_calls": [CALL]}), True),
    "custom tool call": (
        _completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t", "type": "custom", "custom": {"name": "g", "input": "x"}}
                ],
            }
        ),
        True,
    ),
    "logprobs": (
        _completion({"role": "assistant", "content": "hi"}, {"logprobs": {"content": [TOKEN]}}),
        True,
    ),
    "refusal": (_completion({"role": "assistant", "content": None, "refusal": "No."}), True),
    "citations": (
        _completion(
            {
                "role": "assistant",
                "content": "hi",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "start_index": 0,
                            "end_index": 2,
                            "title": "t",
                            "url": "u",
                        },
                    }
                ],
            }
        ),
        True,
    ),
    "usage details": (
        _completion(
            {"role": "assistant", "content": "hi"},
            usage={**USAGE, "prompt_tokens_details": {"cached_tokens": 2}},
            service_tier="default",
            system_fingerprint="fp",
        ),
        True,
    ),
    "two choices": (
        {
            **COMPLETION,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "a"},
                    "finish_reason": "stop",
                },
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": "b"},
                    "finish_reason": "length",
                },
            ],
        },
        True,
    ),
    # llama.cpp's server adds fields of its own: kept as the SDK keeps them.
    "llama.cpp": (
        _completion(
            {"role": "assistant", "content": "hi", "reasoning_content": "Hm."},
            usage=USAGE,
            timings={"prompt_n": 3, "predicted_per_second": 13.5},
            system_fingerprint="b1-abc",
            id_slot=0,
        ),
        True,
    ),
    # What validation would refuse or coerce is built as the SDK builds it.
    "a provider's own service tier": (
        _completion(COMPLETION["choices"][0]["message"], service_tier="on_demand"),
        False,
    ),
    "no created": ({k: v for k, v in COMPLETION.items() if k != "created"}, False),
    "no finish reason": (
        _completion({"role": "assistant", "content": "hi"}, {"finish_reason": None}),
        False,
    ),
    "text for the time": ({**COMPLETION, "created": "1"}, False),
    "text for a number": (
        _completion({"role": "assistant", "content": "hi"}, usage={**USAGE, "prompt_tokens": "3"}),
        False,
    ),
    "an error body": ({"error": {"message": "Overloaded."}}, False),
    "not an object": ([1, 2], False),
}
CHUNK_RESPONSES: dict[str, tuple[Any, bool]] = {
    "role": (_chunk({"role": "assistant", "content": ""}), True),
    "text": (_chunk({"content": " blue"}), True),
    "no finish reason key": (
        {**CHUNKS[0], "choices": [{"index": 0, "delta": {"content": "x"}}]},
        True,
    ),
    "tool call starts": (_chunk({"tool_calls": [{"index": 0, **CALL}]}), True),
    "tool call arguments": (
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a'}}]}),
        True,
    ),
    "finish": (_chunk({}, {"finish_reason": "stop"}), True),
    "usage only": ({**CHUNKS[0], "choices": [], "usage": USAGE}, True),
    "logprobs": (_chunk({"content": "hi"}, {"logprobs": {"content": [TOKEN]}}), True),
    "llama.cpp": (
        _chunk({"content": "x", "reasoning_content": "y"}, timings={"predicted_n": 1}),
        True,
    ),
    "a provider's own service tier": (
        _chunk({"content": "x"}, service_tier="on_demand", x_groq={"id": "r"}),
        False,
    ),
}


def _same_object(ours: Any, sdks: Any) -> None:
    """Hold a built response to the SDK's: same classes at every level, same fields and values.

    (pydantic counts a provider's extra fields as set when it validates; the SDK's construct
    does not: ``model_fields_set`` is the one place they may differ, and nothing reads it.)
    """
    assert type(ours) is type(sdks)
    assert repr(ours) == repr(sdks)  # classes and values of every nested model
    if isinstance(sdks, openai.BaseModel):
        assert ours.model_dump() == sdks.model_dump()
        assert ours.to_dict() == sdks.to_dict()  # the SDK's own: set fields only
        assert ours.to_json() == sdks.to_json()


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every response the lean create leaves to the SDK's construction."""
    seen: list[Any] = []
    construct = lean_module.construct_type

    def counted(**kwargs: Any) -> Any:
        seen.append(kwargs["value"])
        return construct(**kwargs)

    monkeypatch.setattr(lean_module, "construct_type", counted)
    return seen


@pytest.mark.parametrize("name", list(RESPONSES))
async def test_a_response_comes_back_as_the_sdk_builds_it(name: str, fallbacks: list[Any]) -> None:
    body, validated = RESPONSES[name]
    recorder = Recorder(completion=copy.deepcopy(body))
    sync_client, client = _clients(recorder)
    params = PAYLOADS["plain"]
    sdks = await AsyncCompletions(client).create(**params)
    ours = await LeanAsyncCompletions(client).create(**params)
    _same_object(ours, sdks)
    _same_object(
        LeanCompletions(sync_client).create(**params), Completions(sync_client).create(**params)
    )
    # Validation built the ones it can (the speed this is for); the rest fell back, both ways.
    assert fallbacks == ([] if validated else [body, body])


@pytest.mark.parametrize("name", list(CHUNK_RESPONSES))
async def test_a_streamed_chunk_comes_back_as_the_sdk_builds_it(
    name: str, fallbacks: list[Any]
) -> None:
    body, validated = CHUNK_RESPONSES[name]
    recorder = Recorder(chunks=[copy.deepcopy(body), CHUNKS[1]])
    sync_client, client = _clients(recorder)
    params = PAYLOADS["streamed"]
    sdks = [c async for c in await AsyncCompletions(client).create(**params)]
    ours = [c async for c in await LeanAsyncCompletions(client).create(**params)]
    for mine, theirs in zip(ours, sdks, strict=True):
        _same_object(mine, theirs)
    sync_chunks = list(LeanCompletions(sync_client).create(**params))
    for mine, theirs in zip(sync_chunks, Completions(sync_client).create(**params), strict=True):
        _same_object(mine, theirs)
    assert fallbacks == ([] if validated else [body, body])


def test_the_sdk_builds_through_the_stand_ins() -> None:
    """The SDK calls ``build`` on a ``cast_to`` that has one; the stand-ins must qualify, or
    nothing would be validated (and an SDK that stopped calling it gets the SDK's types)."""
    import pickle

    from openai._types import ModelBuilderProtocol
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    for stand_in, sdk_type in (
        (lean_module.ValidatedChatCompletion, ChatCompletion),
        (lean_module.ValidatedChatCompletionChunk, ChatCompletionChunk),
    ):
        assert stand_in is not sdk_type and issubclass(stand_in, ModelBuilderProtocol)
        assert pickle.loads(pickle.dumps(stand_in)) is stand_in  # a findable module and name


def test_an_sdk_that_would_not_call_build_keeps_its_own_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import Protocol, runtime_checkable

    import openai._types
    from openai.types.chat import ChatCompletion

    @runtime_checkable
    class OtherBuilder(Protocol):
        @classmethod
        def make(cls) -> Any: ...

    monkeypatch.setattr(openai._types, "ModelBuilderProtocol", OtherBuilder)
    assert lean_module._stand_in(ChatCompletion) is ChatCompletion
    monkeypatch.delattr(openai._types, "ModelBuilderProtocol")
    assert lean_module._stand_in(ChatCompletion) is ChatCompletion


async def test_a_client_that_validates_strictly_still_refuses_what_does_not_validate() -> None:
    """``_strict_response_validation`` makes the SDK raise on a response off its types; the
    lean create must not turn that into a lenient fallback."""
    body = RESPONSES["a provider's own service tier"][0]
    sync_client, client = _clients(Recorder(completion=body), strict=True)
    for create in (AsyncCompletions(client).create, LeanAsyncCompletions(client).create):
        with pytest.raises(openai.APIResponseValidationError):
            await create(**PAYLOADS["plain"])
    with pytest.raises(openai.APIResponseValidationError):
        LeanCompletions(sync_client).create(**PAYLOADS["plain"])
    # What does validate comes back as the SDK builds it there too.
    _, strict = _clients(Recorder(), strict=True)
    ours = await LeanAsyncCompletions(strict).create(**PAYLOADS["plain"])
    _same_object(ours, await AsyncCompletions(strict).create(**PAYLOADS["plain"]))


async def test_a_client_that_validates_strictly_refuses_a_chunk_that_does_not() -> None:
    body = CHUNK_RESPONSES["a provider's own service tier"][0]
    sync_client, client = _clients(Recorder(chunks=[body, CHUNKS[1]]), strict=True)
    for create in (AsyncCompletions(client).create, LeanAsyncCompletions(client).create):
        with pytest.raises(openai.APIResponseValidationError):
            [c async for c in await create(**PAYLOADS["streamed"])]
    for sync_create in (Completions(sync_client).create, LeanCompletions(sync_client).create):
        with pytest.raises(openai.APIResponseValidationError):
            list(sync_create(**PAYLOADS["streamed"]))


@pytest.mark.parametrize(
    "name", ["tool call", "refusal", "llama.cpp", "a provider's own service tier"]
)
async def test_langchain_reads_the_same_answer_from_either_build(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From LangChain's side: the message, its metadata and the run's output are the same."""
    body = RESPONSES[name][0]
    recorder = Recorder(completion=body)
    lean = _endpoint_model(recorder)
    monkeypatch.setenv(KEEP_TRANSFORM_ENV, "1")
    sdk = _endpoint_model(recorder)
    messages = [HumanMessage("Hi?")]
    ours, theirs = await lean._agenerate(messages), await sdk._agenerate(messages)
    assert ours == theirs
    assert ours.generations[0].message.content == str(
        body["choices"][0]["message"]["content"] or ""
    )
