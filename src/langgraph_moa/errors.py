"""Typed errors: every failure a user can meet names the problem and the fix.

All of them derive from `MoAError` so an application can catch one type. Errors raised
mid-run carry the call records gathered so far (`.calls`), so nothing already paid for is
lost when a run cannot finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph_moa.run.state import CallRecord


class MoAError(Exception):
    """Base class of every error this package raises on purpose."""


class MoAConfigError(MoAError, ValueError):
    """A configuration value breaks a rule; the message names the field and the rule."""


class MoAInputError(MoAError, ValueError):
    """The conversation given to the graph cannot be answered as it is."""


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

    def __init__(self, layer: int, calls: Sequence[CallRecord]) -> None:
        """List every failed call of `layer` with the error its provider gave."""
        failed = [c for c in calls if c["role"] == "proposer" and c["layer"] == layer]
        lines = "\n".join(
            f"  - proposer {c['proposer'] + 1} sample {c['sample'] + 1} "
            f"({c['configured_model']}): {c['error']}"
            for c in failed
        )
        super().__init__(
            f"All {len(failed)} proposer calls of layer {layer} failed, so the "
            f"aggregator was not called:\n{lines}\n"
            "Fix the provider errors above, or add proposers that can answer.",
            calls,
        )
        self.layer = layer


class BudgetExhaustedError(_RunError):
    """The run's recorded tokens reached `budget.max_tokens` before it had an answer.

    Raised only where no labelled best-available answer may stand in (a structured answer
    was asked for, or ``on_aggregator_failure: raise``); the calls made are in `.calls`.
    """

    def __init__(self, used: int, limit: int, calls: Sequence[CallRecord]) -> None:
        """Name the tokens used and the limit."""
        super().__init__(
            f"This run used {used} tokens, reaching its budget.max_tokens of {limit}, so no "
            "further model call was started: raise budget.max_tokens, or use fewer layers, "
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
            f"The aggregator {model!r} failed: {type(error).__name__}: {error}. "
            "The proposals gathered so far are kept in this error's `.calls`.",
            calls,
        )
        self.model = model
        self.__cause__ = error
