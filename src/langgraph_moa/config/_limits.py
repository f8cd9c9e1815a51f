"""Limits checked before a run makes its first call, so a run that is too large costs nothing.

Two sets of limits share these checks:

- `Budget`, a field of `MoAConfig` (``budget: {max_calls, max_tokens}``), which a Python user
  or a config file sets for its own runs. Its call limit is checked whenever a config is
  built, per-run context included, so a context that would multiply the calls is refused
  before the graph starts.
- `RequestLimits`, which `moa serve` and the LangGraph server entry points (``graphs/``)
  apply to every request on top of the budget: the operator pays for the calls, so clients
  get bounded proposers, samples, layers, model requests (retries counted), messages,
  characters, answer tokens, tokens per run and time per run (each with a default and a
  ``moa serve`` flag), and clients pick only the variants the package ships or the
  operator configured.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from langgraph_moa._redact import clip
from langgraph_moa.errors import LimitExceededError, MoAConfigError, ModelNotAllowedError
from langgraph_moa.providers._models import OpenAIEndpoint, parse_endpoint_string
from langgraph_moa.text._names import did_you_mean
from langgraph_moa.variants import shipped_variants

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig


MAX_WAIT_S = 86_400.0
"""The longest wait a setting may ask for (a day). A socket timeout, lock or sleep of 1e10 s
raises OverflowError ("timestamp out of range for platform time_t"): ``--timeout inf`` made
every local call fail, and a retry interval of 1e10 s ended a run in that traceback."""

MAX_TOKENS = 2**31 - 1
"""The largest token count a setting may give: llama.cpp and other OpenAI-compatible servers
read it as a 32-bit integer (a max_tokens of 10**23 arrived as -2147483648)."""

MAX_COUNT = 2**63 - 1
"""The largest count (or seed) a setting with no smaller bound takes: a 64-bit int, far past
any run. A config is written in decimal (its digests, the run's token, the shuffle's seed) and
Python refuses to write an int of over 4,300 digits: a setting of 10**5000 was taken where it
was made and failed later in that error's words, naming no setting."""

MAX_RUN_TOKENS = MAX_COUNT
"""The largest token budget of a run (`Budget.max_tokens`, ``--max-run-tokens``). The budget
is written in decimal into the run's token (`MoAState.run_token`): a budget of 10**5000 was
taken where it was made and failed the run in `prepare`."""

MAX_LAYERS = 16
"""The most layers of a run (`MoAConfig.layers`, a run context's ``layers``)."""

MAX_FAN_OUT = 256
"""The most proposers of a layer, and the most samples one proposer draws per layer: every
one of them is a call in every layer (10,000 proposers were taken). `moa serve` holds a
client to far fewer (--max-proposers, --max-samples)."""

MAX_PROPOSALS = MAX_FAN_OUT**2
"""The most proposals of a layer, so the largest quorum (`min_proposers`, `aggregation.quorum`)."""

MAX_FALLBACKS = 16
"""The most `aggregator_fallbacks`. Unlike proposers they run one after another, each only
once the one before it has spent its retries and its call timeout (300 s by default), so
a chain of 16 already holds a failing run for hours; any number was taken (10,000)."""


class Budget(BaseModel):
    """What one run may spend; None means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_calls: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Most model calls one fully successful run may make "
        "(`MoAConfig.calls_per_run()`); checked before the first call.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RUN_TOKENS,
        description="Most tokens (prompt plus completion, over every call) one run may use.",
    )


def check_calls(config: MoAConfig, limit: int | None, setting: str) -> None:
    """Refuse a config whose run would make more than `limit` model calls.

    Args:
        config: The effective config of the run.
        limit: The most calls allowed; None allows any number.
        setting: How the user raises the limit (a config field or a flag), for the message.

    Raises:
        LimitExceededError: the run would make more calls than `limit`.
    """
    calls = config.calls_per_run()
    if limit is not None and calls > limit:
        raise LimitExceededError(
            f"This run would make {calls} model calls, over the limit of {limit} set by "
            f"{setting}: use fewer layers, samples or proposers, or raise {setting}."
        )


def requests_per_run(config: MoAConfig) -> int:
    """Return the most model requests one run can send: every call, every attempt.

    A fully successful run makes `MoAConfig.calls_per_run()` calls; each may be tried
    ``retry.max_attempts`` times, and each aggregator fallback is one more call. A limit on
    what the operator pays for counts them all.
    """
    calls = config.calls_per_run() + len(config.aggregator_fallbacks)
    return calls * config.retry.max_attempts


def check_budget(config: MoAConfig) -> None:
    """Apply the config's own `budget` to it (called whenever a `MoAConfig` is built)."""
    check_calls(config, config.budget.max_calls, "budget.max_calls")


class RequestLimits(BaseModel):
    """Per-request limits of `moa serve`; the defaults suit a server shared by a few users.

    Each limit names the flag that sets it, and a request past any of them is refused with
    HTTP 400 before the graph starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_proposers: int = Field(default=8, ge=1, description="--max-proposers")
    max_samples: int = Field(default=8, ge=1, description="--max-samples")
    max_layers: int = Field(default=4, ge=2, description="--max-layers")
    max_calls: int = Field(default=64, ge=1, description="--max-calls")
    max_messages: int = Field(default=256, ge=1, description="--max-messages")
    max_chars: int = Field(default=200_000, ge=1, description="--max-chars")
    max_parts: int = Field(default=256, ge=1, description="--max-parts")
    max_answer_tokens: int = Field(default=4096, ge=1, description="--max-answer-tokens")
    max_run_tokens: int = Field(
        default=1_000_000, ge=1, le=MAX_RUN_TOKENS, description="--max-run-tokens"
    )
    request_timeout_s: float = Field(default=600.0, ge=1, description="--request-timeout")
    allow_client_endpoints: bool = Field(default=False, description="--allow-client-endpoints")
    """Whether a run's context may name OpenAI-compatible endpoints its graph's config does
    not (`check_endpoints`); `moa serve` reads its flag of that name into its model policy."""

    def covering(self, config: MoAConfig) -> RequestLimits:
        """Return these limits raised where a served config itself goes past them.

        The operator chose the served presets, so a request that runs one as it is always
        passes; the limits bound what a client's overrides may add on top.
        """
        return self.model_copy(
            update={
                "max_proposers": max(self.max_proposers, len(config.proposers)),
                "max_samples": max(self.max_samples, *(p.samples for p in config.proposers)),
                "max_layers": max(self.max_layers, config.layers or 0),
                "max_calls": max(self.max_calls, requests_per_run(config)),
                "max_answer_tokens": max(
                    self.max_answer_tokens,
                    *(r.max_tokens or 0 for r in [*config.proposers, *config.final_chain]),
                ),
            }
        )

    def with_budget(self, config: MoAConfig) -> MoAConfig:
        """Return `config` with its token budget at most ``max_run_tokens`` (--max-run-tokens)."""
        own = config.budget.max_tokens
        if own is not None and own <= self.max_run_tokens:
            return config
        budget = config.budget.model_copy(update={"max_tokens": self.max_run_tokens})
        return config.with_overrides(budget=budget)

    def check_answer_tokens(self, requested: int | None) -> None:
        """Refuse a client's ``max_tokens`` (or ``max_completion_tokens``) over the cap."""
        if requested is not None and requested > self.max_answer_tokens:
            raise LimitExceededError(
                f"This request asks for up to {requested} answer tokens, over the server's "
                f"limit of {self.max_answer_tokens}: ask for fewer, or have the operator "
                "raise --max-answer-tokens."
            )

    def check_config(self, config: MoAConfig) -> None:
        """Refuse a run config past the proposer, sample, layer or call limits."""
        samples = max(p.samples for p in config.proposers)
        layers = config.layers or 0
        for value, limit, what, flag in (
            (len(config.proposers), self.max_proposers, "proposers", "--max-proposers"),
            (samples, self.max_samples, "samples per proposer", "--max-samples"),
            (layers, self.max_layers, "layers", "--max-layers"),
        ):
            if value > limit:
                raise LimitExceededError(
                    f"This request asks for {value} {what}, over the server's limit of "
                    f"{limit}: ask for fewer, or have the operator raise {flag}."
                )
        for role in [*config.proposers, *config.final_chain]:
            self.check_answer_tokens(role.max_tokens)
        requests = requests_per_run(config)
        if requests > self.max_calls:
            raise LimitExceededError(
                f"This request could send {requests} model requests ({config.calls_per_run()} "
                f"calls, each tried up to {config.retry.max_attempts} times, plus fallbacks), "
                f"over the server's limit of {self.max_calls}: use fewer layers, samples or "
                "proposers, or have the operator raise --max-calls."
            )

    def check_endpoints(self, config: MoAConfig, configured: Collection[str]) -> None:
        """Refuse a run config that calls an endpoint URL not in `configured` (labels).

        A caller who names ``model@url`` makes the server post the conversation to a host of
        its choosing (server-side request forgery, scans of the server's network); `moa
        serve` refuses that unless its operator allows it, and so do graphs built with these
        limits. The URL is not repeated: it may hold a key.
        """
        if self.allow_client_endpoints:
            return
        roles = [("proposers", p.model) for p in config.proposers]
        roles += [("aggregator", r.model) for r in config.final_chain]
        for field, model in roles:
            label = endpoint_label(model)
            if label is not None and label not in configured:
                raise ModelNotAllowedError(
                    f"The run context's '{field}' names an endpoint URL that this graph's "
                    "config does not, and this graph calls only the endpoints its operator "
                    "configured: name one of its own models, or have the operator build the "
                    "graph with limits=RequestLimits(allow_client_endpoints=True)."
                )

    def check_variant(self, variant: Any, allowed: Sequence[str]) -> None:
        """Refuse a run context's variant unless it is in `allowed` (`served_variants`).

        Any module the server's process imports can register a variant; running it for a
        caller would run code the operator never chose, so, as `moa serve` does, a caller
        picks a shipped variant or one the operator configured (the graph's own). An unknown
        name gets the same answer, its did-you-mean drawn from those alone: the registry's
        message would name a registered variant that is not served.
        """
        hint = unserved_variant(variant, allowed)
        if hint is None:
            return
        raise MoAConfigError(
            f"The run context's 'variant' {clip(repr(variant))} is not served by this graph: "
            f"choose one of {', '.join(map(repr, allowed))}"
            + (f" ({hint})" if hint else "")
            + ", or have the operator build the graph with that variant in its config."
        )

    def check_conversation(self, messages: int, chars: int, parts: int = 0) -> None:
        """Refuse a conversation with too many messages, characters or content parts.

        `chars` counts what reaches the models: the messages' strings, and the tool
        definitions, response format and stop sequences sent with the calls. Parts (content
        parts, tool definitions, earlier turns' tool calls) are counted apart from
        characters: LangChain and the OpenAI SDK convert each of them on every call, on the
        event loop, at tens of microseconds each; 29,000 one-letter parts (145,000
        characters, under the character limit) held the loop for seconds per request.
        """
        if messages > self.max_messages:
            raise LimitExceededError(
                f"The conversation has {messages} messages, over the server's limit of "
                f"{self.max_messages}: send fewer, or have the operator raise --max-messages."
            )
        if chars > self.max_chars:
            raise LimitExceededError(
                f"The request has {chars} characters in its messages, tools, response format "
                f"and stop sequences, over the server's limit of {self.max_chars}: send less "
                "text, or have the operator raise --max-chars."
            )
        if parts > self.max_parts:
            raise LimitExceededError(
                f"The request has {parts} content parts, tool definitions and tool calls, over "
                f"the server's limit of {self.max_parts}: join adjacent text parts or send "
                "fewer tools, or have the operator raise --max-parts."
            )


def served_variants(served: Iterable[str]) -> tuple[str, ...]:
    """Return the variants a caller may pick: those shipped with the package, then `served`."""
    return tuple(dict.fromkeys([*shipped_variants(), *served]))


def unserved_variant(variant: Any, allowed: Sequence[str]) -> str | None:
    """Return None if `variant` may run (None, or in `allowed`); else its did-you-mean hint.

    The hint ("" when no name is close) is drawn from `allowed` alone: the registry's own
    message would name a registered variant that is not served. `moa serve` and the graph
    entry points each refuse with their own error and words.
    """
    if variant is None or variant in allowed:
        return None
    return did_you_mean(variant, allowed) or ""


def endpoint_label(model: Any) -> str | None:
    """Return an endpoint model's ``model@url`` label; None for any other model."""
    if isinstance(model, OpenAIEndpoint):
        return model.label()
    if isinstance(model, str):
        endpoint = parse_endpoint_string(model.strip())
        return endpoint.label() if endpoint is not None else None
    return None
