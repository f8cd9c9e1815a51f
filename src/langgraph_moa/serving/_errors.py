"""How `moa serve` answers an error: OpenAI's error shape, one sentence, the right status.

A degraded answer (one the configured mixture did not write) is marked here too
(`degraded_header`).
"""

import codecs
import logging
import math
from typing import Any

from pydantic import (
    ValidationError,
)

from langgraph_moa._redact import clip, redact
from langgraph_moa.config._schema import explain_errors
from langgraph_moa.errors import (
    NO_VISION_FIX,
    OVERFLOW_FIXES,
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    CallTimeoutError,
    LimitExceededError,
    LocalModelError,
    LocalRuntimeError,
    MissingAPIKeyError,
    MoAError,
    ModelNotAllowedError,
    RequestTimeoutError,
    RetryPastDeadlineError,
    UnsupportedContentError,
    UpstreamResponseError,
    ended_by,
    outgrew_context,
    proposals_may_overflow,
)
from langgraph_moa.serving._access import CrashWithoutInput
from langgraph_moa.serving._request_id import current, with_id
from langgraph_moa.serving._schema import REFUSED, _is_union_tag

CRASHED = "The server failed to answer this request; the operator's log names the request ID."
"""A bug's answer: no Python text for the client. Here, not in `_guard` (which answers it
too), since `_guard` needs uvicorn and the CLI imports this module without the serve extra."""
RETRY_AFTER_S = 5
"""Seconds a client turned away (`_guard.RunCap`, the drain) is told to wait (``Retry-After``)."""
MAX_PASSED_RETRY_AFTER_S = 3600
"""The longest provider's wait a 502 passes on as its ``Retry-After`` (`_passed_wait`)."""

MAX_BODY_BYTES = 1_000_000

logger = logging.getLogger(__name__)
"""Tells the operator (``moa serve``'s stderr) what a client's error leaves out."""
logger.addFilter(CrashWithoutInput())  # a crash's traceback quotes no request (`_run_failed`)

LOCAL_MODEL_FAILED = (
    "A local model this request uses cannot run on this server; the operator's log says why."
)


def context_exceeded(exc: MoAError) -> str:
    """Return what a client is told when its input outgrew a model's window (`outgrew_context`).

    A shorter conversation is the client's fix. A client's max_tokens caps the aggregator's
    answer only, whose window must hold it too: a smaller one is named only where the
    aggregator's chain overflowed, never where the proposers did (any max_tokens, the same
    input is refused). Where the calls that overflowed read the proposals too (the
    aggregator's chain, a layer after the first), the proposals may be what did not fit: a
    remote model with no ``context_window`` gets them untrimmed, and "fewer messages" alone
    cannot help a one-line question, so the operator's fixes are named as well.
    """
    smaller = " or a smaller max_tokens" if isinstance(exc, AggregatorFailedError) else ""
    if proposals_may_overflow(exc):
        return (
            "The conversation with the proposals drawn from it is too long for the context "
            "window of the models that answer it: send fewer or shorter messages (drop the "
            f"oldest turns){smaller}, or ask the operator to {OVERFLOW_FIXES}."
        )
    return (
        "The conversation is too long for the context window of the models that answer it: "
        f"send fewer or shorter messages (drop the oldest turns){smaller}, or ask the operator "
        "for models with a longer context."
    )


_NO_VISION = (
    "The models that answer this request take text only: send it without its images, audio "
    "or files, or ask the operator for a vision model. "
)
"""What a client is told first when every model that ended its run refused such content."""


class ServerStoppingError(MoAError):
    """The server stopped a run still open at the end of its drain (``--drain-timeout``)."""

    def __init__(self, seconds: float) -> None:
        """Say that the server, not the request, ended it, and that a retry may succeed."""
        super().__init__(
            f"The server is stopping and ended this request {seconds:g} s into its drain, "
            "before its answer was complete: send it again (to another instance, or once "
            "the server is back)."
        )
        self.seconds = seconds


class _APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = (
            status,
            message,
            kind,
            code,
            param,
        )
        self.headers = headers
        """Headers the answer carries besides the body (``Retry-After``)."""

    def body(self) -> dict[str, Any]:
        """Return the OpenAI-style error body."""
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": with_id(error)}

    def in_stream(self) -> dict[str, Any]:
        """Return what a stream that already answered 200 says of this error.

        ``status`` is the status the request would have had, and ``reason`` the body's
        ``code`` (``context_length_exceeded``): without it a stream's error (whose ``code``
        is the status, docs/event-stream.md) and the page's said a too-long conversation
        as every other 400, and neither could tell its user to shorten it. ``param`` is the
        field at fault, as in the error body (null where none is).
        """
        return {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "status": self.status,
            "reason": self.code,
        }


def _api_error(exc: MoAError) -> _APIError:
    """Map one of the package's errors to its HTTP status, OpenAI error type and code."""
    if isinstance(exc, ServerStoppingError):
        # Its words say to send it again: when, as RunCap's 503 says it.
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        return _APIError(503, str(exc), "server_error", "server_stopping", headers=retry)
    if isinstance(exc, RequestTimeoutError):
        return _APIError(504, str(exc), "timeout_error", "request_timeout")
    if outgrew_context(exc):  # the client's to shorten: OpenAI's 400, never a retried 502
        logger.info("%s", redact(str(exc)))  # which model's window, for the operator
        return _APIError(400, context_exceeded(exc), code="context_length_exceeded")
    if isinstance(exc, AllProposersFailedError | AggregatorFailedError):
        if ended_by(exc, UnsupportedContentError):  # the same request is refused again
            # The fix once: the client's, not the refused call's (the operator's) again.
            said = exc.summary.replace(NO_VISION_FIX, "")
            return _APIError(400, _NO_VISION + said, code="unsupported_content")
        return _APIError(502, exc.summary, "upstream_error", headers=_passed_wait(exc))
    if isinstance(exc, CallTimeoutError | UpstreamResponseError):  # the model server's doing
        return _APIError(502, redact(str(exc)), "upstream_error")
    if isinstance(exc, MissingAPIKeyError):
        return _APIError(500, str(exc), "server_configuration_error")
    if isinstance(exc, LocalModelError | LocalRuntimeError):
        # The machine's trouble, not the client's: its words name the server's folders, its
        # memory and the variables the operator sets, so they go to the operator alone.
        logger.warning("%s", redact(str(exc)))
        return _APIError(500, LOCAL_MODEL_FAILED, "server_error")
    if isinstance(exc, ModelNotAllowedError):
        return _APIError(403, str(exc), "permission_error", "model_not_allowed")
    if isinstance(exc, LimitExceededError):
        return _APIError(400, str(exc), code="limit_exceeded")
    if isinstance(exc, BudgetExhaustedError):  # its own words name a config field
        return _APIError(
            400,
            f"This request's run used {exc.used} tokens, reaching its limit of {exc.limit} "
            "before it had an answer it may return: use fewer layers, samples or proposers "
            "or a smaller max_tokens, or have the operator raise the run's token budget "
            "(--max-run-tokens, or the preset's budget.max_tokens where that is lower).",
            code="limit_exceeded",
        )
    return _APIError(400, redact(str(exc)))  # some carry a provider's words


def _passed_wait(exc: MoAError) -> dict[str, str] | None:
    """Return the ``Retry-After`` of a 502 whose aggregator was asked to wait, else None.

    A provider's wait longer than a call makes (or past the request's deadline) fails the
    call at once (`RetryPastDeadlineError`); with no ``Retry-After`` on the 502, a client's
    SDK retried at once, to be refused again. The wait goes on in whole seconds, rounded up,
    at most `MAX_PASSED_RETRY_AFTER_S`. Only a finite, positive one, as a provider's header
    is read (`retry_after_s`): the error is public, and whoever raises it gives the wait.
    """
    cause = exc.__cause__ if isinstance(exc, AggregatorFailedError) else None
    wait = cause.retry_after_s if isinstance(cause, RetryPastDeadlineError) else None
    if wait is None or not math.isfinite(wait) or wait <= 0:
        return None
    return {"Retry-After": str(min(math.ceil(wait), MAX_PASSED_RETRY_AFTER_S))}


def _run_failed(exc: Exception) -> _APIError:
    """Say how a run that failed once its stream had started is told, in-band.

    A bug (a run's own ``TimeoutError`` among them, since it is not the request's) cut the
    stream with no error and no end, and its client read the half answer as the whole one:
    it gets the crash's sentence, with no Python text; the operator's log, the traceback.
    """
    if isinstance(exc, MoAError):
        return _api_error(exc)
    logger.error("Request %s failed after its stream had started.", current(), exc_info=exc)
    return _APIError(500, CRASHED, "server_error", "internal_error")


def _invalid_json(msg: str, body: object = b"") -> _APIError:
    """Say what is wrong with a body the JSON parser refused.

    Its parser stops at 201 levels of nesting with "recursion limit exceeded", which read as
    "not valid JSON" for a body that is valid JSON, only nested too deep. A body in another
    encoding than UTF-8 read as "expected value at line 1 column 1" or "invalid unicode code
    point", and a lone surrogate escape as "unexpected end of hex escape": each is named.
    """
    return _APIError(400, _why_not_json(msg, body), code="invalid_json")


def _why_not_json(msg: str, body: object) -> str:
    """Return the sentence for `_invalid_json`: the parser's words, or what they stand for."""
    if encoding := _not_utf8(msg, body):
        return f"The body is {encoding}: send the JSON encoded as UTF-8, with no byte-order mark."
    if "hex escape" in msg:
        where = msg.rpartition(" escape ")[2]  # "at line 1 column 1069"
        return (
            f"The body is not valid JSON: a \\u escape {where} is cut short or is half of a "
            "surrogate pair (\\ud800 to \\udfff) without the other half; escape a character "
            "beyond U+FFFF as a whole pair, or send it unescaped in UTF-8."
        )
    if "recursion limit exceeded" in msg:
        where = msg.rpartition(" exceeded ")[2]  # "at line 1 column 1069"
        return (
            f"The body is nested too deep to read (objects and arrays within each other, "
            f"{where}): nest them less deeply."
        )
    return f"The body is not valid JSON: {msg}."


def _not_utf8(msg: str, body: object) -> str | None:
    """Name the encoding of a body that is not UTF-8 JSON, where its first bytes tell."""
    head = body[:4] if isinstance(body, bytes | bytearray) else b""
    if head.startswith(codecs.BOM_UTF8):
        return "UTF-8 with a byte-order mark (EF BB BF) before the JSON"
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in head:
        return "UTF-16 or UTF-32, not UTF-8"
    if "invalid unicode code point" in msg:
        return f"not UTF-8 (a byte {msg.rpartition(' point ')[2]} is no UTF-8 character)"
    return None


def _invalid_body(exc: ValidationError) -> _APIError:
    """Turn the request model's error into one sentence naming the field (OpenAI's param)."""
    first = exc.errors(include_url=False)[0]
    # The first part is always a field of the body: 'user' is one as well as a role's tag.
    parts = first["loc"]
    loc = [clip(str(p)) for i, p in enumerate(parts) if i == 0 or not _is_union_tag(p)]
    param = ".".join(loc) or None
    if first["type"] == "json_invalid":
        return _invalid_json(first["msg"], first.get("input"))
    if not loc and first["type"] in ("model_type", "dict_type"):
        return _APIError(
            400,
            "The body must be a JSON object with at least 'model' and 'messages'.",
            code="invalid_body",
        )
    if first["type"] == "extra_forbidden":
        why = REFUSED.get(param or "", "remove it")  # OpenAI's own fields say why
        return _APIError(
            400,
            f"The field {param!r} is not supported by this server: {why}.",
            param=param,
            code="unsupported_parameter",
        )
    if _not_finite(first):
        wanted = "an integer" if first["type"].startswith("int") else "a finite number"
        return _APIError(
            400,
            f"Invalid request: {param} is not a finite number (got {first['input']!r}); "
            f"send {wanted}, or leave the field out.",
            param=param,
            code="invalid_value",
        )
    # The first broken rule only, located by field names alone: one sentence.
    message = explain_errors([{**first, "loc": tuple(loc)}], "request")
    return _APIError(400, message, param=param, code="invalid_value")


_NUMBER_ERRORS = frozenset({"finite_number", "int_type", "int_from_float"})
"""The errors of a number field (a float's, an integer's) that a NaN or infinity gets."""


def _not_finite(error: Any) -> bool:
    """Tell a number field's error whose value is NaN or an infinity (``1e400`` reads as one).

    Pydantic said "Input should be a valid integer (got inf)", as if the value were text; a
    string field's NaN keeps its own error ("should be a valid string").
    """
    given = error.get("input")
    return error["type"] in _NUMBER_ERRORS and isinstance(given, float) and not math.isfinite(given)


def _too_large(limit: int) -> _APIError:
    return _APIError(
        413,
        f"The request body exceeds the limit of {limit} bytes (the server's --max-body-bytes); "
        "send a shorter conversation or smaller images, audio or files.",
        code="request_too_large",
    )


DEGRADED_HEADER = "X-MoA-Degraded"
"""The header of a non-streamed answer the configured mixture did not write (`degraded_header`)."""


def degraded_header(moa: dict[str, Any]) -> str | None:
    """Return the `DEGRADED_HEADER` of an answer's provenance, or None if it is not degraded.

    ``fallback=best_proposal``, ``failed-layers=2,3``, ``incomplete-call`` (a tool call
    whose arguments break its tool's schema: a required one left out, a wrong type, a value
    outside an enum, an unknown key), or several joined by ``; ``: a gateway, a
    retry policy or a dashboard that reads only the status and headers saw a fallback as a
    plain 200. A stream's headers go out before its outcome is known: its last chunk's
    ``moa`` says it (docs/event-stream.md).
    """
    parts = [f"fallback={moa['fallback']}"] if moa.get("fallback") else []
    if layers := [str(s["layer"]) for s in moa.get("failed_layers") or ()]:
        parts.append("failed-layers=" + ",".join(layers))
    if moa.get("incomplete_call"):
        parts.append("incomplete-call")
    return "; ".join(parts) or None
