"""Typed errors: every failure a user can meet names the problem and the fix.

All of them derive from `MoAError` so an application can catch one type::

    MoAError
    ├── MoAConfigError (ValueError)          a config, preset, context or request is invalid
    │   ├── LimitExceededError               a run would exceed a budget or server limit
    │   └── ModelNotAllowedError             a server's model policy refuses a model
    ├── MoAInputError (ValueError)           the input is not a conversation
    │   └── ThreadBusyError                  the thread already has a run in this process
    ├── ModelResolutionError (ValueError)    a model spec cannot be built
    │   └── MissingAPIKeyError               its key variable is not set
    ├── MissingExtraError                    a feature needs an extra that is not installed
    ├── AllProposersFailedError              a layer has no proposal to pass on (.calls)
    ├── BudgetExhaustedError                 the token budget ran out first (.calls)
    ├── AggregatorFailedError                every aggregator failed (.calls)
    ├── EmptyResponseError                   a model answered with no text (one call)
    ├── ContentFilteredError                 a provider's content filter stopped the answer
    ├── CallTimeoutError (TimeoutError)      one attempt ran past call_timeout_s
    ├── StragglerCancelledError              a proposer left behind by its layer's deadline
    ├── StructuredOutputError                the answer does not parse into the schema
    ├── ToolCallError                        the answer's tool calls break the bound tools
    ├── ContextLengthError                   the input does not fit the model's context
    ├── UnsupportedParameterError            a model refuses a call parameter (temperature)
    ├── UnsupportedContentError              a text-only model refuses an image, audio, a file
    ├── EndpointNotFoundError                an endpoint has no such model, or no API at its URL
    ├── UpstreamResponseError                an endpoint's answer is too large, or a redirect
    ├── StreamBrokenError                    a streamed answer broke after text was sent
    ├── RetryPastDeadlineError               a Retry-After asks for too long a wait (deadline)
    ├── RequestTimeoutError                  a served request ran past --request-timeout
    ├── LocalModelError (RuntimeError)       a packaged model is missing, corrupt or unknown
    ├── LocalRuntimeError (RuntimeError)     a local model server could not start or died
    └── EvalDatasetError (ValueError)        a dataset file cannot be used Errors raised
mid-run carry the call records gathered so far (`.calls`), so nothing already paid for is
lost when a run cannot finish.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langgraph_moa._redact import LABEL_CHARS, clip, describe_error, summarize_error

if TYPE_CHECKING:
    from langgraph_moa.run.state import CallRecord


class MoAError(Exception):
    """Base class of every error this package raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the error as it is, not by calling its class with its message again.

        An exception is rebuilt from its ``args`` (here the message alone) through its
        class: one whose constructor takes other arguments (`MissingAPIKeyError`'s spec and
        variable) raised when unpickled, or wrote another message, so a worker process's
        error never reached its parent. It is made without its constructor, with its
        message and attributes as they were.
        """
        return (_unpickled, (type(self), self.args), self.__dict__ or None)


def _unpickled(cls: type[MoAError], args: tuple[Any, ...]) -> MoAError:
    """Make an error of `cls` with `args`, without its constructor (`MoAError.__reduce__`).

    The built-in exception class it derives from is made with `args` all the same: it keeps
    what it reads of them out of ``__dict__`` (`ImportError`'s ``msg``, `OSError`'s
    ``errno`` and ``strerror``, which its message is written from).
    """
    error = cls.__new__(cls, *args)
    built_in: Any = next(base for base in cls.__mro__ if base.__module__ == "builtins")
    built_in.__init__(error, *args)
    return error


class MoAConfigError(MoAError, ValueError):
    """A configuration value breaks a rule; the message names the field and the rule."""


class MoAInputError(MoAError, ValueError):
    """The conversation given to the graph cannot be answered as it is."""


class ThreadBusyError(MoAInputError):
    """A run was started on a checkpointed thread whose earlier run has not ended.

    LangGraph does not lock a thread: both runs would call the proposers that had not
    answered yet and write two answers into one history. Raised before any node runs.
    """


class LimitExceededError(MoAConfigError):
    """A run would go past a limit (calls, proposers, samples, layers, input size).

    Raised before any model is called, so nothing is paid for; the message names the limit,
    the setting or flag that sets it, and how to stay within it.
    """


class ModelNotAllowedError(MoAConfigError):
    """A request names a model or an endpoint that the server's operator did not enable."""


class ModelResolutionError(MoAError, ValueError):
    """A model spec cannot be turned into a chat model (unknown provider, missing key)."""


class MissingAPIKeyError(ModelResolutionError):
    """A configured provider needs an API key that is not set."""

    def __init__(self, spec: str, env_var: str) -> None:
        """Build the message from the spec and the environment variable it needs."""
        self.spec = spec
        self.env_var = env_var
        super().__init__(
            f"Model {spec!r} needs the environment variable {env_var}, which is not set. "
            f"Export {env_var}=... or choose a local model (for example the "
            "'local-moa' preset)."
        )


class MissingExtraError(MoAError, ImportError):
    """A feature needs an optional dependency group (an extra) that is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        """Name the feature, the extra that brings it and the module that is missing."""
        self.extra = extra
        super().__init__(
            f"{feature} needs the {extra!r} extra ({module} is not installed): "
            f"install langgraph-moa[{extra}]."
        )


class _RunError(MoAError):
    """An error raised during a run; keeps every call record made before it."""

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.calls: list[CallRecord] = list(calls)


class AllProposersFailedError(_RunError):
    """Every proposer of a layer failed, so there is nothing to aggregate.

    The aggregator is not called. The message lists each provider's own error.
    """

    def __init__(self, layer: int, calls: Sequence[CallRecord], why: str = "") -> None:
        """List every failed call of `layer` with the error its provider gave.

        `why`: a sentence on why this layer ended the run where a later one would have been
        passed over (chunk-wise aggregation's streamed last layer), said before the fix.
        """
        failed = [c for c in calls if c["role"] == "proposer" and c["layer"] == layer]
        lines = "\n".join(
            f"  - proposer {c['proposer'] + 1} sample {c['sample'] + 1} "
            f"({c['configured_model']}): {c['error']}"
            for c in failed
        )
        super().__init__(
            f"All {len(failed)} proposer calls of layer {layer} failed, so the "
            f"aggregator was not called:\n{lines}\n{why}"
            "Fix the provider errors above, or add proposers that can answer.",
            calls,
        )
        self.layer = layer
        self.layer_calls = failed
        """The proposer calls of `layer`, the ones that ended the run (`outgrew_context`)."""
        first = failed[0]["error"] if failed else "no call was made"
        self.summary = (
            f"All {len(failed)} proposer calls of layer {layer} failed, so no answer was "
            f"written; the first said: {_own_sentence(str(first))}."
        )
        """The error in one short sentence (what `moa serve` sends its client)."""


def budget_reached(used: int, limit: int, calls: Sequence[CallRecord]) -> str:
    """Say that a run used `used` tokens of `calls`, reaching its budget of `limit`.

    The clause follows "the run": one wording for `BudgetExhaustedError` and a labelled
    budget fallback's reason. A call whose provider reported no usage counts by the
    package's estimate (``usage_estimated``): said, a budget it reached is not taken for a
    provider's count.
    """
    spent = f"{used} tokens"
    if estimated := sum("usage_estimated" in c for c in calls):
        spent += f" ({estimated} of its calls estimated: their providers reported no usage)"
    return f"used {spent}, reaching its budget.max_tokens of {limit}"


class BudgetExhaustedError(_RunError):
    """The run's recorded tokens reached `budget.max_tokens` before it had an answer.

    Raised only where no labelled best-available answer may stand in (a structured answer
    was asked for, or ``on_aggregator_failure: raise``); the calls made are in `.calls`.
    """

    def __init__(self, used: int, limit: int, calls: Sequence[CallRecord]) -> None:
        """Name the tokens used and the limit."""
        super().__init__(
            f"This run {budget_reached(used, limit, calls)}, so no further model call was "
            "started: raise budget.max_tokens, or use fewer layers, "
            "samples, proposers or max_tokens.",
            calls,
        )
        self.used = used
        self.limit = limit


class AggregatorFailedError(_RunError):
    """The final aggregator (or ranker) failed; the proposals stay in `.calls`."""

    def __init__(self, model: str, error: BaseException, calls: Sequence[Any]) -> None:
        """Name the aggregator and repeat its provider's error."""
        super().__init__(
            f"The aggregator {model!r} failed: "
            f"{describe_error(error).rstrip('.')}. "
            "The proposals gathered so far are kept in this error's `.calls`.",
            calls,
        )
        self.model = model
        self.__cause__ = error
        self.summary = (
            f"The aggregator {clip(model, LABEL_CHARS)!r} failed, so no answer was written: "
            f"{_own_sentence(describe_error(error, sys.maxsize))}."
        )
        """The error in one short sentence (what `moa serve` sends its client)."""


# --- one call -----------------------------------------------------------------------------


class _RejectedAnswer(MoAError):
    """A model answered, but its answer cannot be used; the answer is kept on the error."""

    def __init__(self, message: str, response: Any = None) -> None:
        """Keep the refused answer: what it said, and its `usage_metadata` (its cost)."""
        super().__init__(message)
        self.response = response
        """The model's message as it came back (None where there was none)."""


class EmptyResponseError(_RejectedAnswer):
    """A model answered with no text; counted as a failed call, never rendered as a reference."""


class ContentFilteredError(_RejectedAnswer):
    """A provider's content filter stopped the answer; a failed call, not retried.

    Its text, if any, is what was left when the filter stopped it: passed on as a reference
    (or returned as the answer) it would read as a whole answer, with nothing said.
    """


class CallTimeoutError(MoAError, TimeoutError):
    """One attempt of a model call ran past `call_timeout_s`; retried like any timeout."""


class StragglerCancelledError(MoAError):
    """A proposer still running when its layer's deadline passed with the quorum met."""


class RunInterrupted(BaseException):
    """A sync run's caller stopped waiting: its calls are cancelled and no new one is made.

    A BaseException, as KeyboardInterrupt is, so that no retry and no node's error handling
    takes it for a failed call: it ends the node at once (`run._interrupt`).
    """


class StructuredOutputError(_RejectedAnswer):
    """The aggregator's answer could not be parsed into the requested structure."""


class ToolCallError(_RejectedAnswer):
    """A model's tool calls break what the request bound: counted as a failed call.

    A call to a tool that is not bound, arguments that are not a JSON object, calls where
    ``tool_choice`` was ``"none"``, none (or another tool's) where it forced one, or several
    where ``parallel_tool_calls`` was false. Passed on, an agent would get a call it cannot
    run, or text where it asked for a call; refused, the next aggregator or a labelled
    fallback answers, as for an empty answer.
    """


class ContextLengthError(MoAError):
    """The input (conversation plus references) does not fit the model's context window."""


PROVIDER_SAID = "The provider said:"
"""What comes before a provider's own words in an explained failure (`providers._retry`),
after the package's sentence and its fix: a summary keeps the sentence alone (`_own_sentence`)."""


def _own_sentence(error: str) -> str:
    """Return a failed call's error as a run's one-line summary repeats it, redacted.

    Without the provider's words (`PROVIDER_SAID`) where it has any, at most `ERROR_CHARS`.

    Both summaries (`moa serve`'s 502) are made here. What the package says of an explained
    failure ends with its fix, which a `LABEL_CHARS` label keeps within `ERROR_CHARS`: cut
    at 200 characters with the provider's words, the fix was lost.
    """
    return summarize_error(error.partition(f" {PROVIDER_SAID} ")[0]).rstrip(".")


class UnsupportedParameterError(MoAError):
    """A model refuses a call parameter its role sends; the message names the setting to change.

    OpenAI's reasoning models refuse a temperature other than 1, and max_tokens; some
    providers refuse a seed. Not retried: the same call is refused again.
    """


class UnsupportedContentError(MoAError):
    """A model refuses the conversation's images, audio or files: it takes text only.

    The message names the model and the fix (leave it out for such input, or use a model
    that takes them). Not retried: the same call is refused again. Never dropped silently:
    the model's failed call stays in the run's calls, as any other failure does.
    """


NO_VISION_FIX = ": remove it for such input, or use a vision model"
"""The fix an `UnsupportedContentError` names after its model (the operator's, in a config's
words): `moa serve` names its client's own instead, and cuts this one out of the run's."""


class EndpointNotFoundError(MoAError):
    """An endpoint answered 404: it serves no model of that name, or no chat API at its URL.

    The message names the fix for the server that said it: ``ollama pull`` for Ollama, the
    name given to vLLM's ``--served-model-name``, the URL's missing ``/v1``. Not retried: the
    same call is refused again until the setup changes.
    """


class UpstreamResponseError(MoAError):
    """An endpoint's answer is one the package will not read: too large, a redirect, bad JSON.

    The JSON is one no parser reads: nested too deep, a number of too many digits, bytes
    not UTF-8. One sentence naming the model, and its host where the HTTP client refused the answer
    (`transport/_http.py`), and what it sent. Not retried: a server that ignores
    ``max_tokens`` or sends the calls elsewhere does so again.
    """


def outgrew_context(exc: BaseException) -> bool:
    """Tell whether a run failed because its input did not fit a model's context, and only so.

    The fix is the caller's (a shorter conversation), and the same request sent again fails
    the same way (`ended_by`).
    """
    return ended_by(exc, ContextLengthError)


def ended_by(exc: BaseException, kind: type[MoAError]) -> bool:
    """Tell whether a run failed because each call that ended it failed with a `kind` error.

    A run's failure wraps the errors of the calls that ended it: the proposers of the layer
    left with no proposal (`AllProposersFailedError.layer`), or the final step's chain (the
    aggregator or ranker and each of its fallbacks). When each of them is a `kind` error
    (`ContextLengthError`, `UnsupportedContentError`), the same request sent again fails the
    same way. The chain's models before its last count too: one that failed for another
    reason (down, rate-limited) may answer the same request later. An earlier call's
    failure does not: a proposer rate-limited in layer 1 changes nothing of a later step
    that outgrew every model's context.
    """
    if isinstance(exc, AllProposersFailedError):
        ended = exc.layer_calls
    elif isinstance(exc, AggregatorFailedError):
        chain = [c for c in exc.calls if c["role"] != "proposer"]
        last = max((c["layer"] for c in chain), default=0)
        ended = [c for c in chain if c["layer"] == last]
    else:
        return isinstance(exc, kind)
    errors = [str(c["error"]) for c in ended if c["status"] == "failed"]
    prefix = f"{kind.__name__}:"
    return bool(errors) and all(e.startswith(prefix) for e in errors)


def proposals_may_overflow(exc: BaseException) -> bool:
    """Tell whether the calls that ended a run (`outgrew_context`) read the proposals too.

    The aggregator's chain and a layer after the first read every proposal, which a remote
    model with no ``context_window`` gets untrimmed: there the proposals may be what did not
    fit, and a shorter conversation alone cannot help a one-line question, so each entrance
    names the operator's fixes too (``context_window``, fewer proposers or layers).
    """
    return isinstance(exc, AggregatorFailedError) or (
        isinstance(exc, AllProposersFailedError) and exc.layer > 1
    )


OVERFLOW_FIXES = (
    "set those models' context_window in the config (the proposals are then trimmed to fit), "
    "use fewer proposers or layers, or models with a longer context"
)
"""The operator's fixes where the proposals may be what overflowed (`proposals_may_overflow`):
one wording for the chat's advice and `moa serve`'s client."""


# --- the embedded runtime and evaluation ----------------------------------------------------


class LocalModelError(MoAError, RuntimeError):
    """A local model is missing, corrupt or unknown; the message names the fix."""


class LocalRuntimeError(MoAError, RuntimeError):
    """A local server could not start or died; the message names the model, a warning its log.

    The message may reach a `moa serve` client, so the server's pid, port, log path and last
    lines go only to the runtime's warning (`local.runtime.LocalServer._warn_with_log`).
    """


class EvalDatasetError(MoAError, ValueError):
    """A dataset file cannot be used; the message names the file, the line and the fix."""


class StreamBrokenError(MoAError):
    """A streamed answer broke after part of it was sent, and the rest would not match it.

    The call writing the answer failed midway and another attempt (a retry, the next
    aggregator of the chain, or a fallback answer) took over; its text cannot be appended to
    what was already sent, so the stream ends with this error instead of splicing two
    answers. A non-streamed request is unaffected.
    """

    def __init__(self, sent_chars: int) -> None:
        """Say how much had been sent before the break."""
        super().__init__(
            f"The answer's stream broke after {sent_chars} characters had been sent (the call "
            "writing it failed midway and another attempt took over), so the partial answer "
            "is void: send the request again, or ask without streaming."
        )
        self.sent_chars = sent_chars


class RetryPastDeadlineError(MoAError):
    """A provider asked to be retried (``Retry-After``) later than the request's deadline.

    Or later than the longest wait a call makes (``MAX_RETRY_AFTER_S``, 60 s). The call fails
    for good at once instead of holding the request past its deadline.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        """Keep the wait asked for: `moa serve` passes it on as its 502's ``Retry-After``."""
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """The provider's ``Retry-After``, in seconds (None where it is not known)."""


class RequestTimeoutError(MoAError):
    """A `moa serve` request ran past the server's ``--request-timeout``; its run was cancelled."""

    def __init__(self, seconds: float) -> None:
        """Name the limit and the flag."""
        super().__init__(
            f"The request ran past the server's limit of {seconds:g} s and was stopped: ask "
            "for fewer layers, samples or tokens, or have the operator raise --request-timeout."
        )
        self.seconds = seconds
