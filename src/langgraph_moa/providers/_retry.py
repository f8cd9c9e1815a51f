"""Which failures are worth retrying, and the retry settings of the model-calling nodes.

Retrying is for failures that can pass: rate limits (429), server errors (5xx), timeouts and
dropped connections. A bad request, a failed authentication or a prompt longer than the
context cannot succeed on a second try, so they fail at once and the provider's message is kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage
from langgraph.types import default_retry_on

from langgraph_moa._parts import MEDIA_PARTS
from langgraph_moa._redact import LABEL_CHARS, clip
from langgraph_moa.errors import (
    NO_VISION_FIX,
    PROVIDER_SAID,
    CallTimeoutError,
    ContextLengthError,
    EndpointNotFoundError,
    MoAError,
    RetryPastDeadlineError,
    UnsupportedContentError,
    UnsupportedParameterError,
    UpstreamResponseError,
)
from langgraph_moa.providers._table import retryable_status, sdk_retryable


def is_retryable(exc: BaseException) -> bool:
    """Tell whether a failed model call may succeed if tried again."""
    if isinstance(exc, CallTimeoutError):
        return True
    if isinstance(exc, MoAError):
        return False  # explained (`explain_failure`): the same call fails the same way
    by_sdk = sdk_retryable(exc)
    if by_sdk is not None:
        return by_sdk
    status = http_status(exc)
    if status is not None:  # httpx.HTTPStatusError (langchain-mistralai) and kin
        return retryable_status(status)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, json.JSONDecodeError):
        return True  # a truncated or garbled body (a proxy's error page): transient
    if isinstance(exc, (AttributeError, AssertionError)):
        # A bug, which no second try passes. LangGraph's rule retries every error it does
        # not list, these two among them: a bug in a node's own body was tried 20 times.
        # Unless the HTTP client raised it: a dropped connection (`_raised_by_http_client`).
        return _raised_by_http_client(exc)
    return isinstance(exc, Exception) and bool(default_retry_on(exc))


_HTTP_CLIENTS = frozenset({"aiohttp", "httpcore", "httpcore2", "httpx", "httpx2", "h11", "h2"})
"""The packages whose ``assert`` statements fail on a connection lost at the wrong moment.

httpx2 and httpcore2: the openai SDK's HTTP client since its 3.x releases (httpx and httpcore
before, and still for other SDKs)."""


def _raised_by_http_client(exc: BaseException) -> bool:
    """Tell whether `exc` was raised by the HTTP client's own code (its innermost frame).

    aiohttp (``assert conn.protocol is not None``) and httpcore or httpcore2 (``assert
    self.connection is not None``) raise AssertionError when a connection drops mid-request,
    and the SDKs pass it on unwrapped: a transient failure, which another try passes.
    """
    return _innermost_package(exc) in _HTTP_CLIENTS


def _innermost_package(exc: BaseException) -> str | None:
    """Return the top-level package of the code that raised `exc` (its innermost frame)."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__")
    return module.partition(".")[0] if isinstance(module, str) else None


def _unreadable_json(exc: BaseException) -> str | None:
    """Say what made an answer's JSON unreadable, if `exc` was raised parsing it, else None.

    The JSON parser's own errors for a body no server should send: nested deeper than the
    interpreter's recursion limit, a number of more digits than Python converts, bytes that
    are not UTF-8 (the openai SDK decodes a stream's lines itself, before the parser sees
    them). A body cut short (`json.JSONDecodeError`) is not one of them: it is a dropped
    connection, retried as before.
    """
    where = _innermost_package(exc)
    if isinstance(exc, UnicodeDecodeError) and where in ("json", "openai"):
        return "bytes that are not UTF-8"
    if isinstance(exc, json.JSONDecodeError) or where != "json":
        return None
    if isinstance(exc, RecursionError):
        return "JSON nested too deep"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return "a number of too many digits"
    return None


def http_status(exc: BaseException) -> int | None:
    """Return the HTTP error status (400 or more) an error carries, else None.

    Read from ``status_code`` or ``response.status_code``: integrations that are not built
    on a known SDK raise their HTTP client's own error (langchain-mistralai raises
    ``httpx.HTTPStatusError``), whose status decides a retry just as an SDK error's does, or
    a 429 from them would never be retried. A success status is not the error's cause (a
    body cut off mid-answer arrives with a 200): such an error is classified by its type.
    """
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
            return status
    return None


MAX_RETRY_AFTER_S = 60.0
"""The longest ``Retry-After`` a call waits out before its retry; one that asks for longer
fails at once (`run._calls`): a wait cut short is refused again, and an hour's wait holds the
run for nothing."""


def too_long_a_wait(label: str, wait: float) -> RetryPastDeadlineError | None:
    """Return the failure of a call asked to wait `wait` s, past `MAX_RETRY_AFTER_S`, else None.

    One sentence for a run's call and the eval's judge alike: the provider's own error ("slow
    down") does not say that the wait it asked for was refused, nor what to do.
    """
    if wait <= MAX_RETRY_AFTER_S:
        return None
    return RetryPastDeadlineError(
        f"{clip(label, LABEL_CHARS)} asked to be retried after {wait:g}s, longer than the "
        f"{MAX_RETRY_AFTER_S:g}s a call waits: try again later, or use another model or endpoint",
        wait,
    )


def retry_after_s(exc: BaseException) -> float | None:
    """Return the wait a 429 or 503 asks for in its Retry-After header (seconds, as given).

    Only a finite, positive number of seconds counts: a negative value would make
    ``time.sleep`` raise (replacing the provider's error) and NaN would make an async sleep
    never end, so anything else (including an HTTP date, rare for APIs) is ignored and the
    backoff alone applies.
    """
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def _is_context_overflow(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    body = getattr(exc, "body", None)
    if isinstance(body, dict):  # llama.cpp's server: {"type": "exceed_context_size_error"}
        code = code or body.get("type")
    if code in ("context_length_exceeded", "exceed_context_size_error"):
        return True
    text = str(exc).lower()
    return any(
        phrase in text
        for phrase in (
            "maximum context length",
            "context window",
            "exceeds the available context",
            "prompt is too long: ",  # Anthropic's: "prompt is too long: N tokens > M maximum"
        )
    )


# The context's size as llama.cpp's server, OpenAI and Anthropic word it.
_CONTEXT_SIZE = re.compile(
    r"available context size \((\d+) tokens\)|maximum context length is (\d+) tokens"
    r"|prompt is too long: \d+ tokens > (\d+) maximum"
)


def _context_size(exc: BaseException) -> str:
    """Name the context's size, if the provider did, ahead of its words (which get clipped)."""
    found = _CONTEXT_SIZE.search(str(exc))
    if found is None:
        return ""
    return f" (its context holds {next(size for size in found.groups() if size)} tokens)"


_PARAMETER_FIXES = {
    "temperature": "set temperature: null for it in the config, which leaves it out",
    "max_tokens": (
        "set max_tokens: null for it in the config, or name it openai:MODEL, whose "
        "LangChain class sends max_completion_tokens"
    ),
    "seed": (
        "send it no seed (a run's seed, moa eval --seed, a request's seed), or give its role "
        "a model whose provider takes one"
    ),
}
"""The fix of each call parameter a model may refuse, by OpenAI's ``param`` of the refusal.
A refused ``seed`` fails the call (a proposer's and the ranker's alike) rather than being
dropped: the run asked for it to repeat its draws, and an unseeded answer would not."""
_WHY_REFUSED = {"seed": "(its provider draws every answer anew)"}
"""Why a model refuses a parameter, where it is not that a reasoning model takes its own."""


def _error_body(exc: BaseException) -> dict[str, object] | None:
    """Return the error object of the body a provider's error keeps (OpenAI's ``error``)."""
    body = getattr(exc, "body", None)
    if not isinstance(body, dict):
        return None
    return body["error"] if isinstance(body.get("error"), dict) else body


def _refused_parameter(exc: BaseException) -> str | None:
    """Return the call parameter a provider refused for this model, if that is the error.

    OpenAI's reasoning models (o1, o3, gpt-5) refuse a ``temperature`` other than 1 and
    ``max_tokens``, and some providers a ``seed``, with a 400 whose ``code`` is
    ``unsupported_value`` or ``unsupported_parameter`` and whose ``param`` names it.
    """
    body = _error_body(exc)
    if body is None:
        return None
    param = body.get("param")
    if body.get("code") in ("unsupported_value", "unsupported_parameter") and isinstance(
        param, str
    ):
        return param if param in _PARAMETER_FIXES else None
    return None


RESPONSE_FORMAT_FIX = (
    "does not take OpenAI's response_format, which ProviderStrategy sends: use ToolStrategy "
    "in create_agent (in with_structured_output, method='function_calling'), or a model "
    "that takes it (ChatOpenAI, llama.cpp's server)."
)
"""The fix where a model refuses ``response_format``, after its name."""

_NO_RESPONSE_FORMAT = re.compile(
    r"(unexpected keyword argument|extraneous key|unrecognized request argument supplied:"
    r"|unknown parameter|not permitted)"
    r"\W{0,3}response_format(?![.\w])"
    r"|response_format\W{0,3}(of type \W?\w+\W? )?(is not (supported|permitted|allowed)"
    r"|not supported)",
    re.IGNORECASE,
)
"""How clients and servers refuse ``response_format``: Anthropic's and Ollama's clients
(a TypeError of an unexpected keyword argument), Bedrock (an extraneous key), Azure's older
API (an unrecognized argument), OpenAI's older models (``'response_format' of type
'json_schema' is not supported``). A key inside it (OpenAI's ``Unknown parameter:
'response_format.schema'``) is a schema sent wrong to a model that takes it: not matched."""


def _refused_response_format(exc: BaseException) -> bool:
    """Tell whether a model refused ``response_format`` itself, not one schema sent in it."""
    return _NO_RESPONSE_FORMAT.search(str(exc)[:2000]) is not None


_TEXT_ONLY = (
    "image input is not supported",  # llama.cpp's server without a projector (mmproj)
    "audio input is not supported",
    "is only supported by certain models",  # OpenAI: "image_url is only supported by ..."
    "is not a multimodal model",  # vLLM
    "no endpoints found that support image input",  # OpenRouter: no provider of the model
    "does not support image input",  # OpenRouter
)
"""How servers word their refusal of content parts a text-only model cannot read."""


def _sends_media(messages: Sequence[BaseMessage]) -> bool:
    """Tell whether a call's `messages` hold a part that is no text (an image, audio, a file)."""
    return any(
        isinstance(part, dict) and part.get("type") in MEDIA_PARTS
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
    )


def _refused_content(exc: BaseException, messages: Sequence[BaseMessage]) -> bool:
    """Tell whether `exc` is a model's refusal of the image, audio or file the call sent.

    Only a call that sent one can have been refused one: the wording alone is no proof, as
    an error may quote the user's text (vLLM's validation errors echo ``input_value``) or
    the model's output (a llama.cpp 500), and a 500 so misread was never retried.
    """
    text = str(exc).lower()
    return any(phrase in text for phrase in _TEXT_ONLY) and _sends_media(messages)


_NOT_PULLED = re.compile(r"model [\"']([^\"']+)[\"'] not found, try pulling it first")
"""Ollama's 404 for a model it has not downloaded, before 0.12 (still its words for one whose
files went missing)."""
_NOT_PULLED_SINCE_0_12 = re.compile(r"model '([^']+)' not found")
"""Ollama's words since 0.12, the whole message of an error of type ``not_found_error``: so
worded alone, they could be any server's."""
_NOT_PULLED_NATIVE = re.compile(r"model '([^']+)' not found \(status code: 404\)")
"""The same words from Ollama's native API, through langchain-ollama: ollama-python's
``ResponseError`` adds the status to its message."""


def _not_pulled(exc: BaseException) -> str | None:
    """Return the name of the model Ollama has not pulled, if that is what `exc` says."""
    if (pulled := _NOT_PULLED.search(str(exc))) is not None:
        return pulled.group(1)
    if (pulled := _NOT_PULLED_NATIVE.fullmatch(str(exc))) is not None:
        return pulled.group(1)
    body = _error_body(exc)
    message = body.get("message") if body is not None else None
    if body is None or body.get("type") != "not_found_error" or not isinstance(message, str):
        return None
    pulled = _NOT_PULLED_SINCE_0_12.fullmatch(message)
    return pulled.group(1) if pulled is not None else None


_NOT_SERVED = re.compile(r"The model `[^`]+` does not exist\.")
"""vLLM's 404 for a name other than its ``--served-model-name`` (by default ``--model``).

Its stop is part of it: OpenAI's own 404 begins alike ("The model `gpt-5x` does not exist or
you do not have access to it."), and its user has no --served-model-name to set."""

NAME_CHARS = 100
"""The most characters of the model's name in a 404's fix (``ollama pull NAME``): with the
label's `LABEL_CHARS`, the fix fits a failed call's 300-character line. A name can be long
(``hf.co/USER/REPO-GGUF:QUANT``); a longer one is not named in the command, which would
fail when copied clipped: the provider's words after the fix name it."""


def _not_found_fix(exc: BaseException) -> str | None:
    """Return the fix of an OpenAI-compatible server's 404 where its cause is known.

    The fix is a sentence, its stop included.

    Relayed as they came, Ollama's and vLLM's words name no fix, and a URL without its
    ``/v1`` got a bare "Error code: 404" (vLLM's ``{"detail": "Not Found"}``, Ollama's
    "404 page not found"), which reads as a model that does not exist.
    """
    if http_status(exc) != 404:
        return None
    text = str(exc)
    if (name := _not_pulled(exc)) is not None:
        pull = (
            f"`ollama pull {name}`"
            if len(name) <= NAME_CHARS
            else ("`ollama pull` with the model's name")
        )
        return (
            f"Ollama has not pulled that model: run {pull} on its host "
            "(`ollama list` shows the names it has)."
        )
    if _NOT_SERVED.search(text) is not None:
        return (
            "the server serves no model of that name: the name before @ must match "
            "vLLM's --served-model-name (its /v1/models lists the names)."
        )
    if "model" in text.lower():
        # Not a URL without /v1: a server at the root that has no such model (LiteLLM's
        # proxy, named without /v1 in its docs, relays an upstream's 404).
        return None
    url = getattr(getattr(exc, "request", None), "url", None)
    parts = urlsplit(str(url)) if url is not None else None
    if parts is not None and parts.path == "/chat/completions":
        root = f"{parts.scheme}://{parts.netloc}"
        return f"the server has no chat API at {root}: did you mean {root}/v1?"
    return None


def explain_failure(
    exc: BaseException, model: str, messages: Sequence[BaseMessage]
) -> BaseException:
    """Turn a provider error that cannot succeed on retry into a typed, explained one.

    Only errors whose meaning is certain are translated; everything else is returned as it
    is, so the provider's own message always reaches the user. `messages`: the failed call's
    input, which tells a refusal of its image from an error that only quotes such words.
    A translated error is not retried (`is_retryable`): llama.cpp refuses an image with a
    500, which would otherwise be tried again, to the same refusal.
    """
    if isinstance(exc, MoAError):
        return exc
    if isinstance(exc.__cause__, UpstreamResponseError):
        return exc.__cause__  # the package's HTTP client refused the answer; the SDK wrapped it
    if (what := _unreadable_json(exc)) is not None:
        return UpstreamResponseError(f"{clip(model, LABEL_CHARS)} sent an answer of {what}")
    # Each message puts its fix before the provider's words: a failed call's line is cut at
    # 300 characters (`describe_error`), so a label of hundreds (a role's name, an endpoint's
    # URL) is what gets shortened, never the fix.
    model = clip(model, LABEL_CHARS)
    if (param := _refused_parameter(exc)) is not None:
        # One line, the fix before the provider's words.
        why = _WHY_REFUSED.get(param, "(a reasoning model takes its own default)")
        return UnsupportedParameterError(
            f"{model} does not take the call parameter '{param}' {why}: "
            f"{_PARAMETER_FIXES[param]}. {PROVIDER_SAID} {exc}"
        )
    if _refused_response_format(exc):
        return UnsupportedParameterError(f"{model} {RESPONSE_FORMAT_FIX} {PROVIDER_SAID} {exc}")
    if _refused_content(exc, messages):
        return UnsupportedContentError(
            f"{model} cannot read images, audio or files{NO_VISION_FIX}. {PROVIDER_SAID} {exc}"
        )
    # After the refusal of an image: a proxy relays OpenRouter's, a 404, from a URL that
    # would pass for one without its /v1.
    if (fix := _not_found_fix(exc)) is not None:
        return EndpointNotFoundError(f"{model}: {fix} {PROVIDER_SAID} {exc}")
    if not _is_context_overflow(exc):
        return exc
    return ContextLengthError(
        f"The input is too long for {model}{_context_size(exc)}. Set its context_window in the "
        "config to trim the references, shorten the conversation, lower the proposers' "
        f"max_tokens, or choose a model with a longer context. {PROVIDER_SAID} {exc}"
    )
