"""Chat-completions calls without the openai SDK's slowest per-call steps: same requests, objects.

Before every request, ``chat.completions.create`` runs the parameters through the SDK's
type-hint transform (``async_maybe_transform``): for each value it walks the
``CompletionCreateParams`` types (unions, typed dicts, iterables), to rename aliased keys,
format dates and files, dump pydantic models and turn iterables into lists. Chat-completion
parameters have no aliased or formatted field, and LangChain's payload is plain JSON (dicts,
lists, strings, numbers), so for it the transform only drops the omitted values. Yet it took
0.30 of a bare call's 0.87 ms of client CPU (`benchmarks/call_stack_cpu.py`: 16 calls at a
time, zero-latency server), and in the profile of `benchmarks/orchestration_overhead.py` (64
runs) the openai SDK and ``typing`` went from 26% of the client's CPU time to 8.5% without it.

`LeanAsyncCompletions` and `LeanCompletions` are the SDK's own resources with ``create``
overridden: plain-JSON parameters are posted as they are, the omitted ones dropped, through the
SDK's own ``_post`` with the request options ``create`` builds (so retries, headers, auth,
streaming and the response types are the SDK's). Anything else (a pydantic model, a tuple,
a date, a missing ``model``, a key ``create`` does not take) goes to the SDK's ``create``
unchanged. Unit tests hold the requests these send to the SDK's (the same JSON body, its keys
in the caller's order), for payloads of every kind LangChain builds.

The SDK then builds the response, and each streamed chunk, with ``construct_type``, a walk of
the model's type hints in Python: 71 us for a chat completion and 65 us per chunk here. The
lean resources have pydantic build the same object by strict validation (3-4 us), and leave
to ``construct_type`` whatever would not validate strictly (`validate_or_construct`).

`lean_completions` puts them on a langchain-openai model the package built (endpoints, local
models, and providers whose LangChain class builds on ``BaseChatOpenAI``: OpenAI, Azure OpenAI,
Together); a model the user built is never touched. ``MOA_SDK_TRANSFORM=1`` keeps the SDK's
``create`` everywhere (a comparison, or an SDK whose ``create`` does more).
"""

from __future__ import annotations

import inspect
from typing import Any

import pydantic
from openai import AsyncStream, Stream
from openai._base_client import make_request_options
from openai._models import construct_type
from openai._types import NOT_GIVEN, NotGiven, Omit
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from langgraph_moa._env import switch_from_env

KEEP_TRANSFORM_ENV = "MOA_SDK_TRANSFORM"

_SCALARS = (str, int, float, bool, type(None))
_REQUEST_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


def _plain(value: Any) -> bool:
    """Tell whether `value` is JSON made of dicts with string keys, lists and scalars only."""
    if isinstance(value, _SCALARS):
        return True
    if type(value) is list:
        return all(_plain(item) for item in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def without_omitted(params: dict[str, Any]) -> dict[str, Any]:
    """Drop the SDK's omitted values: all that its transform does to plain-JSON parameters."""
    return {k: v for k, v in params.items() if not isinstance(v, (Omit, NotGiven))}


_BODY_KEYS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {
    "self",
    *_REQUEST_OPTIONS,
}
"""The body parameters the SDK's ``create`` takes; it refuses any other with a TypeError."""


def _plain_body(params: dict[str, Any]) -> dict[str, Any] | None:
    """Return the request body the transform would produce, or None where it might differ.

    None also for a parameter that ``create`` does not take, or without ``model`` or
    ``messages``: the SDK's ``create`` then raises its TypeError, as it would without this.
    """
    body = without_omitted(params)
    if not params.keys() <= _BODY_KEYS or "model" not in body or "messages" not in body:
        return None
    try:
        return body if _plain(body) else None
    except RecursionError:  # nested deeper than this walk goes: the SDK's transform decides
        return None


def validate_or_construct(sdk_type: type[pydantic.BaseModel], data: object) -> Any:
    """Build `sdk_type` from a response's JSON by strict validation, else as the SDK does.

    The SDK builds every response and every streamed chunk with ``construct_type``, which walks
    the type hints in Python to build the model without validating (71 us for a chat
    completion, 65 us for each streamed chunk, on this machine). pydantic's strict validation
    builds the same object in 3-4 us. Strict: any value that validation would coerce or refuse
    (a provider's own ``service_tier``, a missing ``created``, a number where text belongs)
    fails it, and that response is built as the SDK builds it, about 10% slower than the SDK
    alone for the failed try. Either way the result is an instance of `sdk_type`, equal field
    for field (unit tests hold this for every kind of response and chunk).
    """
    try:
        return sdk_type.model_validate(data, strict=True)
    except pydantic.ValidationError:
        return construct_type(type_=sdk_type, value=data)


def _stand_in(sdk_type: type[pydantic.BaseModel]) -> type:
    """Return a subclass of `sdk_type` to give the SDK as ``cast_to``: it builds `sdk_type`.

    The SDK calls ``build`` for a ``cast_to`` that has one (``ModelBuilderProtocol``). An SDK
    that no longer did would build the stand-in itself, by ``construct_type``, and hand out
    objects of the wrong class: then `sdk_type` itself is returned, and the SDK builds as
    before.
    """
    name = f"Validated{sdk_type.__name__}"

    def build(cls: type, *, response: Any, data: object) -> Any:
        return validate_or_construct(sdk_type, data)

    namespace = {"build": classmethod(build), "__module__": __name__, "__qualname__": name}
    stand_in = type(name, (sdk_type,), namespace)
    try:
        from openai._types import ModelBuilderProtocol
    except ImportError:
        return sdk_type
    return stand_in if issubclass(stand_in, ModelBuilderProtocol) else sdk_type


ValidatedChatCompletion = _stand_in(ChatCompletion)
ValidatedChatCompletionChunk = _stand_in(ChatCompletionChunk)


def _options(given: dict[str, Any]) -> Any:
    return make_request_options(
        extra_headers=given.get("extra_headers"),
        extra_query=given.get("extra_query"),
        extra_body=given.get("extra_body"),
        timeout=given.get("timeout", NOT_GIVEN),
        security={"bearer_auth": True},
    )


def _post_args(
    client: Any, body: dict[str, Any], options: dict[str, Any], stream: Any
) -> dict[str, Any]:
    """Return the arguments of the ``_post`` that the SDK's ``create`` makes, for this body.

    The response is built by validation where it can be (`validate_or_construct`), except
    for a client made with ``_strict_response_validation``, which must refuse what does not
    validate: there the SDK builds it, as its ``create`` would.
    """
    strict = getattr(client, "_strict_response_validation", False)
    return {
        "body": body,
        "options": _options(options),
        "cast_to": ChatCompletion if strict else ValidatedChatCompletion,
        "stream": body.get("stream") or False,
        "stream_cls": stream[ChatCompletionChunk if strict else ValidatedChatCompletionChunk],
    }


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    options = {k: params.pop(k) for k in _REQUEST_OPTIONS if k in params}
    return params, options


class LeanAsyncCompletions(AsyncCompletions):
    """The SDK's async chat-completions resource; ``create`` posts plain JSON untransformed."""

    async def create(self, **params: Any) -> Any:
        body, options = _split(params)
        plain = _plain_body(body)
        if plain is None:
            return await super().create(**body, **options)
        args = _post_args(self._client, plain, options, AsyncStream)
        return await self._post("/chat/completions", **args)


class LeanCompletions(Completions):
    """The SDK's sync chat-completions resource; ``create`` posts plain JSON untransformed."""

    def create(self, **params: Any) -> Any:
        body, options = _split(params)
        plain = _plain_body(body)
        if plain is None:
            return super().create(**body, **options)
        return self._post("/chat/completions", **_post_args(self._client, plain, options, Stream))


def lean_completions(model: Any) -> Any:
    """Give a langchain-openai model the lean chat-completions resources, in place; return it.

    Only a client that is exactly the SDK's resource is replaced (a subclass may do more in
    ``create``), so calling this twice, or on a model of another integration, changes nothing.
    """
    if switch_from_env(KEEP_TRANSFORM_ENV):
        return model
    async_client = getattr(model, "async_client", None)
    if type(async_client) is AsyncCompletions:
        model.async_client = LeanAsyncCompletions(async_client._client)
    client = getattr(model, "client", None)
    if type(client) is Completions:
        model.client = LeanCompletions(client._client)
    return model
