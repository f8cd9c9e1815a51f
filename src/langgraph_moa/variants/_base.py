"""A variant's contract: its rules for a config, and what it does on the shared graph.

Every variant runs on the same graph; a `Plan` subclass is the only place that tells them
apart. It owns the variant's name and one-line description, the checks and defaults of a
config (`derive`, `check`), how many calls a run makes (`calls_per_run`), which role and node
write the final answer, and the routing: a layer's fan-out, the join, the next step.

Config-time hooks are class methods that read the config by attribute and return plain data,
so this module needs `MoAConfig` only as a type: the config layer sits above the variants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.messages import BaseMessage
from langgraph.graph import END
from langgraph.types import Send

from langgraph_moa.run import _clock as clock
from langgraph_moa.run._options import run_options
from langgraph_moa.run._references import in_reference_order
from langgraph_moa.run.state import MoAState, ProposerTask

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig

PREPARE = "prepare"
PROPOSE = "propose"
JOIN_LAYER = "join_layer"
AGGREGATE = "aggregate"
RANK = "rank"
SELECT = "select"

Route = list[Send] | str
"""A router's answer: the next layer's calls, or the name of the next node."""


FinalRole = Literal["aggregator", "ranker", "selector"]


class Plan:
    """The base plan: layers of proposers, then an aggregator (layered MoA's routing)."""

    name: ClassVar[str] = ""
    """The variant's name in configs, presets, the CLI and the run context."""
    description: ClassVar[str] = ""
    """One line for the CLI's help, the context schema and the README's table."""
    final_node: ClassVar[str] = AGGREGATE
    final_role: ClassVar[FinalRole] = "aggregator"
    one_model: ClassVar[bool] = False
    """Samples of exactly one proposer model (Self-MoA's family)."""
    aggregates_with_proposer: ClassVar[bool] = False
    """Its aggregator is its proposer's own model (Self-MoA, Self-MoA-Seq): whatever names
    another proposer model moves the aggregator with it."""
    default_layers: ClassVar[int] = 2
    fixed_layers: ClassVar[bool] = False
    """The variant's layer count cannot be set (it is `default_layers`)."""
    step_name: ClassVar[str] = "layer"
    """What one round of proposals is called in progress output."""
    chunkable: ClassVar[bool] = True
    """Its aggregator can write the answer in parts while the last layer streams."""
    derived_fields: ClassVar[tuple[str, ...]] = ("layers",)
    """Fields derived from the variant: cleared when a config switches to this variant."""

    # --- config-time rules (class methods: no run state) ---------------------------------

    @classmethod
    def derive(cls, cfg: MoAConfig) -> dict[str, Any]:
        """Check the fields the user gave; return the derived defaults to fill in (raw values).

        Raises:
            ValueError: with one sentence naming the rule and the fix.
        """
        if cls.one_model and len(cfg.proposers) != 1:
            raise ValueError(
                f"variant {cls.name!r} samples one model: give exactly one proposer "
                f"(with samples=n), got {len(cfg.proposers)}"
            )
        cls._refuse_greedy_samples(cfg)
        if cls.fixed_layers and cfg.layers not in (None, cls.default_layers):
            raise ValueError(
                f"variant {cls.name!r} has exactly {cls.default_layers} layers; remove `layers`"
            )
        return {"layers": cls.default_layers} if cfg.layers is None else {}

    @classmethod
    def _refuse_greedy_samples(cls, cfg: MoAConfig) -> None:
        """Refuse a proposer drawing k > 1 samples at temperature 0, in any variant.

        Greedy decoding makes them one answer repeated: k calls paid for one proposal, and a
        vote over k copies reports full agreement. A greedy proposer of one sample beside
        sampled ones (local-vote's anchor) is no such case.
        """
        for p in cfg.proposers:
            if p.samples < 2 or p.temperature != 0:
                continue
            if cls.one_model:
                raise ValueError(
                    f"variant {cls.name!r} draws {p.samples} samples of one model, and at "
                    "temperature 0 they are one answer repeated: set the proposer's "
                    "temperature above 0 (the papers sample at 0.7)"
                )
            raise ValueError(
                f"proposer {p.label!r} draws {p.samples} samples, and at temperature 0 they "
                "are one answer repeated: set its temperature above 0 (the papers sample at "
                "0.7), or its samples to 1"
            )

    @classmethod
    def check(cls, cfg: MoAConfig) -> None:
        """Check the config once its defaults are filled in (raises `ValueError`)."""
        if cls.final_role != "selector" and cfg.aggregator is None:
            raise ValueError(
                f"variant {cls.name!r} needs an aggregator: set `aggregator` to a model spec "
                "(for example your strongest proposer)"
            )
        per_layer = sum(p.samples for p in cfg.proposers)
        if cfg.min_proposers > per_layer:
            raise ValueError(
                f"min_proposers ({cfg.min_proposers}) cannot exceed the {per_layer} proposals "
                "of a layer"
            )

    @classmethod
    def proposals_per_layer(cls, cfg: MoAConfig) -> int | None:
        """Proposals one layer draws (None where steps differ, as Self-MoA-Seq's windows)."""
        return sum(p.samples for p in cfg.proposers)

    @classmethod
    def returns_proposal(cls) -> bool:
        """Tell whether the answer is a proposal returned verbatim (select, ranker).

        Then what shapes or caps the answer (stop, max_tokens, response_format, logprobs)
        goes to the proposers, not to a final call.
        """
        return cls.final_node != AGGREGATE

    @classmethod
    def calls_per_run(cls, cfg: MoAConfig) -> int:
        """Model calls a fully successful run makes: the budget and the server count on it."""
        per_layer = sum(p.samples for p in cfg.proposers)
        if cls.final_role == "selector":
            final = 0
        else:  # chunk-wise: one call per part of the answer
            final = cfg.aggregation.max_parts if cfg.aggregation.chunked else 1
        return per_layer * cfg.proposer_layers + final

    @classmethod
    def is_adaptive(cls, cfg: MoAConfig) -> bool:
        """Tell whether samples are drawn in rounds until the answers agree."""
        return False

    def __init__(self, cfg: MoAConfig) -> None:
        self.cfg = cfg

    # --- fan-out -------------------------------------------------------------------------

    def first(self, state: MoAState) -> Route:
        """Fan out layer 1 (or go to the chunk-wise aggregator, which runs the last layer)."""
        if self.proposer_node_layers() == 0:
            return self.final_node
        return self.sends(state, layer=1)

    def proposer_node_layers(self) -> int:
        """Proposer layers run by the propose node; chunk-wise, the aggregator runs the last."""
        return self.cfg.proposer_layers - (1 if self.cfg.aggregation.chunked else 0)

    def sends(
        self, state: MoAState, *, layer: int, rounds: list[range] | None = None
    ) -> list[Send]:
        """Fan out one layer; `rounds` limits which samples each proposer draws now."""
        conversation: list[BaseMessage] = list(state["messages"])
        started = clock.now()
        return [
            self._send(state, layer, i, s, list(conversation), started, reads=layer > 1)
            for i, proposer in enumerate(self.cfg.proposers)
            for s in (rounds[i] if rounds is not None else range(proposer.samples))
        ]

    @staticmethod
    def _send(
        state: MoAState,
        layer: int,
        proposer: int,
        sample: int,
        messages: list[BaseMessage],
        started: float,
        *,
        reads: bool = False,
    ) -> Send:
        """Return one proposer's task; `reads`: it adds the references from the state."""
        task = ProposerTask(
            layer=layer,
            proposer=proposer,
            sample=sample,
            messages=messages,
            run_token=state["run_token"],
            layer_started_at=started,
        )
        if reads:
            task["reads_references"] = True
        if options := run_options(state):
            task["options"] = options
        return Send(PROPOSE, task)

    # --- join ----------------------------------------------------------------------------

    def joined_layer(self, state: MoAState) -> int:
        """Return the layer a join closes."""
        return state.get("layer", 0) + 1

    def references(self, state: MoAState, layer: int, outputs: list[str]) -> list[str]:
        """Order a layer's successful outputs as the next input's references."""
        return in_reference_order(self.cfg, layer, outputs)

    def can_go_on_without_proposals(self, state: MoAState) -> bool:
        """Tell whether a layer whose every proposal failed still has something to pass on."""
        return False

    def can_skip_failed_layer(self, state: MoAState, layer: int) -> bool:
        """Tell whether a layer after the first, whose every proposal failed, may be passed over.

        The layer before it answered, and its proposals are still the references: the next
        layer (or the aggregator) reads them, as a run with one layer fewer would, and the
        answer's ``failed_layers`` says so (a degraded answer is never silent). With
        ``on_aggregator_failure: raise`` the run raises `AllProposersFailedError` instead,
        as it does for a failed first layer (nothing to pass on), and where the final step
        returns a proposal verbatim (ranker, select: it would be an older layer's).
        """
        return (
            layer > 1
            and bool(state.get("references"))
            and not self.returns_proposal()
            and self.cfg.on_aggregator_failure != "raise"
        )

    # --- budget --------------------------------------------------------------------------

    def tokens_used(self, state: MoAState) -> int:
        """Return the tokens this run's calls used (answers from the call cache cost none)."""
        return sum(c["total_tokens"] for c in state.get("calls", []) if not c["cached"])

    def budget_spent(self, state: MoAState) -> bool:
        """Tell whether the run reached `budget.max_tokens`: then no new call starts."""
        limit = self.cfg.budget.max_tokens
        return limit is not None and self.tokens_used(state) >= limit

    # --- next step -----------------------------------------------------------------------

    def after_layer(self, state: MoAState) -> Route:
        """Next proposer layer, or the final step (at once when the budget is spent)."""
        if state["layer"] >= self.proposer_node_layers() or self.budget_spent(state):
            return self.final_node
        return self.sends(state, layer=state["layer"] + 1)

    def after_final(self, state: MoAState) -> Route:
        """After the aggregator: the run is done."""
        return END

    # --- final step ----------------------------------------------------------------------

    def final_position(self, state: MoAState) -> tuple[int, bool]:
        """Return the layer of the final-step call, and whether it writes the answer."""
        return self.cfg.proposer_layers + 1, True

    def skip_final(self, state: MoAState) -> bool:
        """Tell whether an intermediate aggregation has nothing new to read."""
        return False
