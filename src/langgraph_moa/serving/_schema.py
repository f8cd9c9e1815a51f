"""The request body `moa serve` accepts: OpenAI's chat-completions schema, validated."""

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from langgraph_moa._parts import PART_TYPES
from langgraph_moa._redact import clip
from langgraph_moa.run._inputs import check_openai_name
from langgraph_moa.run._options import split_call_kwargs


class _Body(BaseModel):
    """Base of the request models: unknown fields are refused, never silently dropped.

    A number field's NaN or infinity (``NaN``, ``Infinity``, ``1e400``, which Python's JSON
    reads) is refused before its bounds are checked, so the 400 says it is not a finite
    number rather than "less than or equal to 2 (got nan)" (`_errors._invalid_body`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _text_content(value: Any, *, optional: bool = False) -> Any:
    """Accept a string or a list of content parts (dicts with a 'type'), as OpenAI does."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in value
    ):
        if any(p["type"] == "text" and not isinstance(p.get("text"), str) for p in value):
            raise ValueError("a content part of type 'text' needs a string 'text'")
        if any(p["type"] == "image_url" and not _has_image_url(p) for p in value):
            # Forwarded without its image, it reached every call and came back a 502.
            raise ValueError(
                "a content part of type 'image_url' needs an object 'image_url' with a string 'url'"
            )
        unknown = next((p["type"] for p in value if p["type"] not in PART_TYPES), None)
        if unknown is not None:
            raise ValueError(
                f"the content-part type {clip(unknown)!r} is not one a model takes; use one "
                f"of {', '.join(PART_TYPES)}"
            )
        return value
    raise ValueError("content must be a string or a list of content parts with a 'type'")


def _has_image_url(part: dict[str, Any]) -> bool:
    """Tell whether an ``image_url`` part carries its image: ``{"image_url": {"url": str}}``."""
    image = part.get("image_url")
    return isinstance(image, dict) and isinstance(image.get("url"), str)


def _json_text(value: Any) -> str:
    """Return `value` as compact JSON (what a schema costs in characters)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _string_chars(value: Any) -> int:
    """Count the characters of every string in `value` (nested lists and dicts included)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_string_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_string_chars(v) for v in value)
    return 0


class _RoleMessage(_Body):
    name: StrictStr | None = None

    def chars(self) -> int:
        """Characters this message sends to the models (what the character limit counts).

        Every string it carries counts, wherever it sits: the content or its parts, the
        ``name``, tool calls and their arguments, ids. Each of them reaches every call.
        """
        return _string_chars(self.model_dump(exclude={"role"}, exclude_none=True))

    def parts(self) -> int:
        """Content parts this message carries (a plain string content is none)."""
        content = getattr(self, "content", None)
        return len(content) if isinstance(content, list) else 0


class _SystemMessage(_RoleMessage):
    role: Literal["system", "developer"]
    content: Any

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _text_content(value)


class _UserMessage(_SystemMessage):
    role: Literal["user"]  # type: ignore[assignment]


class _ToolCallFunction(BaseModel):
    """The function an assistant's tool call names, with its arguments as a JSON string."""

    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    arguments: StrictStr

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        # Read here, so that a broken one is refused naming its message and field; LangChain
        # would fail later with the JSON parser's words alone.
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else "nested too deep"
            raise ValueError(f"must be a JSON object, but it is not JSON ({reason})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"must be a JSON object, not {type(parsed).__name__}")
        return value


class _ToolCall(BaseModel):
    """One tool call of an earlier assistant turn, as OpenAI sends it back."""

    model_config = ConfigDict(extra="ignore")  # e.g. a streamed delta's 'index'

    id: StrictStr
    type: Literal["function"] = "function"
    function: _ToolCallFunction


class _AssistantMessage(_RoleMessage):
    role: Literal["assistant"]
    content: Any = None
    tool_calls: list[_ToolCall] | None = None
    refusal: StrictStr | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _text_content(value, optional=True)

    def parts(self) -> int:
        """Content parts and tool calls: each is converted again on every call."""
        return super().parts() + len(self.tool_calls or ())

    @model_validator(mode="after")
    def _says_something(self) -> "_AssistantMessage":
        if not self.content and self.refusal is not None:
            # OpenAI writes a refused turn with null content, LangChain's
            # `convert_to_openai_messages` with ""; the refusal is what the turn said, and
            # the models must read it (LangChain would keep it aside, and send an empty turn).
            self.content, self.refusal = self.refusal, None
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content', 'refusal' or 'tool_calls'")
        return self


class _ToolMessage(_SystemMessage):
    role: Literal["tool"]  # type: ignore[assignment]
    tool_call_id: StrictStr


_Message = Annotated[
    _SystemMessage | _UserMessage | _AssistantMessage | _ToolMessage, Field(discriminator="role")
]


class _StreamOptions(_Body):
    include_usage: StrictBool = False
    include_obfuscation: StrictBool = False
    """OpenAI pads its chunks with a random ``obfuscation`` field unless this is false; these
    chunks carry none, so false (what some clients send to save bytes) is what they get."""

    @field_validator("include_obfuscation")
    @classmethod
    def _no_padding(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "this server adds no obfuscation field to its chunks; leave it out or send false"
            )
        return value


class _ResponseFormat(_Body):
    """OpenAI's ``response_format``: plain text, any JSON object, or a JSON schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "_ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        _finite_throughout(self.json_schema, "json_schema")
        return self

    @field_validator("json_schema")
    @classmethod
    def _named(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # OpenAI requires the name: one without it, or one that is not a short word ("my
        # answer"), was forwarded, and the provider's refusal came back as a 502 once the
        # proposers had been paid for.
        if value is not None:
            check_openai_name(value.get("name"), "The json_schema")
        return value


class _Tool(_Body):
    type: Literal["function"]
    function: dict[str, Any]

    @field_validator("function")
    @classmethod
    def _named(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_openai_name(value.get("name"), "The function tool")
        return _finite_throughout(value)


def _finite_throughout(value: Any, where: str = "") -> Any:
    """Return `value`, refusing a NaN or an infinity anywhere inside it (a JSON schema's).

    A free-form object's numbers are no float field: ``NaN``, ``Infinity`` or ``1e400`` in
    a tool's ``parameters`` (its ``maximum``, a ``default``) passed and reached the
    provider, which refused the call (strict JSON has no such numbers) as a 502.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"{where or 'the value'} is not a finite number (got {value!r}); send a finite "
            "number, or leave it out"
        )
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _finite_throughout(item, f"{where}.{clip(str(key))}" if where else clip(str(key)))
    return value


# OpenAI's bounds on what a request forwards to the trace (``metadata``: 16 pairs, keys of
# 64 characters, values of 512); `user` gets 256. The trace copies them onto every run of
# the request (each node, each model call), so an unbounded body would be copied that often.
_MetadataKey = Annotated[StrictStr, Field(max_length=64)]
_MetadataValue = Annotated[StrictStr, Field(max_length=512)]


REFUSED = {
    "logit_bias": "each of the mixture's models has its own token ids, so one bias would push "
    "different tokens in each",
    "audio": "MoA answers in text only, its aggregator writing from the proposals' text",
    "prediction": "the answer is the aggregator's synthesis of proposals, not an edit of a text "
    "known ahead, so no predicted output can be matched",
    "reasoning_effort": "the mixture's models take it differently or not at all (llama.cpp has "
    "no such setting), so one value cannot mean the same to each",
    "verbosity": "the mixture's models take it differently or not at all (llama.cpp has no "
    "such setting), so one value cannot mean the same to each",
    "web_search_options": "the mixture's calls search no web; put what you found in the "
    "messages, or give a tool",
    "functions": "it is OpenAI's deprecated form of tools; send them as 'tools'",
    "function_call": "it is OpenAI's deprecated form of tool_choice; send 'tool_choice'",
}
"""OpenAI's Chat Completions fields MoA refuses, with why (the 400's words, `_invalid_body`).
They are no fields of `ChatRequest`: unknown fields are refused, and these say why."""

NEUTRAL_TIERS = ("auto", "default")
"""The ``service_tier`` values that ask for nothing besides what each call gets anyway."""

MOA_FIELDS = frozenset(("layers", "samples", "variant", "proposers", "aggregator", "moa_progress"))
"""`ChatRequest`'s fields of MoA's own; every other one is OpenAI's."""


MAX_STOPS = 64
"""Stop strings a request may give: OpenAI's limit is 4, but llama.cpp takes more, and the
server does not refuse what its backends take; a bound still caps the per-token matching."""


class ChatRequest(_Body):
    """The body of ``POST /v1/chat/completions``: OpenAI's fields MoA honours, and its own.

    Fields MoA cannot honour are refused rather than ignored; the sampling fields some
    clients always send (``top_p``, the penalties) pass only at their neutral values.
    """

    model: StrictStr
    messages: list[_Message]
    stream: StrictBool | None = False
    """OpenAI's is "boolean or null": null is left out (one JSON answer)."""
    stream_options: _StreamOptions | None = None
    n: StrictInt | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, strict=True)
    presence_penalty: float | None = Field(default=None, strict=True)
    frequency_penalty: float | None = Field(default=None, strict=True)
    user: StrictStr | None = Field(default=None, max_length=256)
    """Forwarded as the run's trace metadata (``user``), not to the models."""
    metadata: dict[_MetadataKey, _MetadataValue] | None = Field(default=None, max_length=16)
    """Forwarded as the run's trace metadata (``request_metadata``)."""
    safety_identifier: StrictStr | None = Field(default=None, max_length=64)
    """OpenAI's successor of ``user``: forwarded to the trace metadata as ``user`` is."""
    prompt_cache_key: StrictStr | None = Field(default=None, max_length=256)
    """A caching hint that changes no answer: forwarded to the trace metadata."""
    service_tier: StrictStr | None = None
    """Only ``"auto"`` (OpenAI's default, which SDKs may send) or ``"default"``: nothing."""
    store: StrictBool | None = None
    """Accepted, and nothing is stored: it asks OpenAI to keep the answer for its own tools."""
    modalities: list[StrictStr] | None = None
    """Only ``["text"]``: MoA answers in text."""
    # Passed through to the model calls (see `run._options`).
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: _ResponseFormat | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    # MoA's own overrides (``extra_body`` in the OpenAI client).
    layers: StrictInt | None = None
    samples: StrictInt | None = None
    variant: StrictStr | None = None
    proposers: list[StrictStr | dict[str, Any]] | None = None
    aggregator: StrictStr | dict[str, Any] | None = None
    moa_progress: StrictBool = False
    """Opt-in: interleave the run's progress events (``event: moa.progress``) in the stream."""

    @model_validator(mode="before")
    @classmethod
    def _refused_but_null(cls, value: Any) -> Any:
        # The OpenAI SDK sends a keyword given as None as null (a wrapper's unset
        # ``reasoning_effort=None``): that asks for OpenAI's default, what MoA does anyway.
        if isinstance(value, dict) and any(value.get(key, ...) is None for key in REFUSED):
            return {k: v for k, v in value.items() if not (k in REFUSED and v is None)}
        return value

    @field_validator("service_tier", mode="before")
    @classmethod
    def _no_tier_promised(cls, value: Any) -> Any:
        # "auto" and "default" ask for what every call gets; any other tier promises a
        # latency or a price that the operator's accounts with the providers decide.
        if value is not None and value not in NEUTRAL_TIERS:
            raise ValueError(
                f"the tier {clip(str(value))!r} cannot be given: the operator's accounts with "
                "the providers choose it, not a request; leave it out or send 'auto'"
            )
        return value

    @field_validator("messages", mode="before")
    @classmethod
    def _no_function_role(cls, value: Any) -> Any:
        # Pydantic's own words said only that 'function' matched none of the roles.
        if isinstance(value, list):
            for i, message in enumerate(value):
                if isinstance(message, dict) and message.get("role") == "function":
                    raise ValueError(
                        f"messages[{i}] has the role 'function', OpenAI's deprecated form of a "
                        "tool result: send it as role 'tool', with the tool_call_id of the "
                        "assistant's call"
                    )
        return value

    @field_validator("messages")
    @classmethod
    def _answered_calls(cls, value: list[Any]) -> list[Any]:
        # A tool result answering no call was forwarded, and the provider's refusal (OpenAI
        # requires a preceding assistant message with that call) reached the client as a 502.
        called: set[str] = set()
        for i, message in enumerate(value):
            if isinstance(message, _AssistantMessage):
                called.update(call.id for call in message.tool_calls or ())
            elif isinstance(message, _ToolMessage) and message.tool_call_id not in called:
                raise ValueError(
                    f"messages[{i}] is the result of tool call "
                    f"{clip(message.tool_call_id)!r}, which no earlier assistant message "
                    "made: send that assistant message, with its tool_calls, before the result"
                )
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_shape(cls, value: Any) -> Any:
        # Another shape (the Responses API's {"type": "function", "name": ...}, {}) was
        # forwarded to the calls and failed there, a 502 naming the aggregator.
        if isinstance(value, dict) and not (
            value.get("type") == "function"
            and isinstance(value.get("function"), dict)
            and isinstance(value["function"].get("name"), str)
        ):
            raise ValueError(
                "a tool_choice object must be "
                '{"type": "function", "function": {"name": ...}}, naming one of the tools; '
                "or use 'none', 'auto' or 'required'"
            )
        return value

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: Any) -> Any:
        # OpenAI takes 4, llama.cpp more; each is matched against every token of every call.
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(
                f"this server takes at most {MAX_STOPS} stop strings, and this request has "
                f"{len(value)}: send fewer"
            )
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and set(value) - {"text"}:
            raise ValueError(
                "MoA answers in text only, its aggregator writing from the proposals' text; "
                'leave it out or send ["text"]'
            )
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported, since MoA returns one answer per request")
        return value

    @field_validator("top_p", "presence_penalty", "frequency_penalty")
    @classmethod
    def _neutral(cls, value: float | None, info: ValidationInfo) -> float | None:
        neutral = 1 if info.field_name == "top_p" else 0
        if value is not None and value != neutral:
            raise ValueError(
                f"MoA varies its proposals by temperature alone; leave it out (or at {neutral}) "
                "and use temperature instead"
            )
        return value

    @model_validator(mode="after")
    def _usage_needs_a_stream(self) -> "ChatRequest":
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        if self.moa_progress and not self.stream:
            raise ValueError("moa_progress is only allowed with stream: true")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if None not in (self.max_tokens, self.max_completion_tokens) and (
            self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError(
                "max_tokens and max_completion_tokens are two names for the answer's token "
                "cap, and they differ here: give one of them"
            )
        return self

    def option_chars(self) -> int:
        """Characters the call options send with the calls (what the character limit adds).

        The JSON of the tool definitions, the ``tool_choice`` and the ``response_format``
        (its schema's keys count as much as its strings), and the stop sequences.
        """
        schemas: list[Any] = [t.function for t in self.tools or ()]
        if isinstance(self.tool_choice, dict):
            schemas.append(self.tool_choice)
        if self.response_format is not None:
            schemas.append(self.response_format.json_schema or {})
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return sum(len(_json_text(s)) for s in schemas) + sum(map(len, stops))

    def option_parts(self) -> int:
        """Tool definitions: each is converted on every call, as a content part is."""
        return len(self.tools or ())

    def run_options(self, *, picks_proposal: bool) -> dict[str, Any]:
        """Return the graph input's call options (see `MoAInput`) this request asks for."""
        options: dict[str, Any] = {}
        if self.tools:
            options["tools"] = [t.model_dump() for t in self.tools]
            if self.tool_choice is not None:
                options["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                options["parallel_tool_calls"] = self.parallel_tool_calls
        if self.stop:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        extra: dict[str, Any] = {}
        if self.seed is not None:
            extra["seed"] = self.seed
        if self.response_format is not None and self.response_format.type != "text":
            extra["response_format"] = self.response_format.model_dump(exclude_none=True)
        if self.logprobs:
            extra["logprobs"] = True
            if self.top_logprobs is not None:
                extra["top_logprobs"] = self.top_logprobs
        every, final = split_call_kwargs(extra, picks_proposal=picks_proposal)
        if every:
            options["call_kwargs"] = every
        if final:
            options["final_kwargs"] = final
        return options

    def trace_metadata(self) -> dict[str, Any]:
        """Return what the request forwards to the run's trace (``user``, ``metadata``, ...)."""
        out: dict[str, Any] = {
            key: value
            for key in ("user", "safety_identifier", "prompt_cache_key")
            if (value := getattr(self, key)) is not None
        }
        if self.metadata:
            out["request_metadata"] = dict(self.metadata)
        return out


_UNION_TAGS = {"system", "developer", "user", "assistant", "tool", "str", "int", "float", "bool"}


def _is_union_tag(part: Any) -> bool:
    """Tell pydantic's union-member labels in an error's location from real field names."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)
