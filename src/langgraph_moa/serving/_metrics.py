"""Prometheus metrics of `moa serve` (``--metrics``): what the access log counts, at /metrics.

A team serving MoA as a model graphs its request rate and errors, its latency, each model's
call outcomes, retries and tokens, its degraded answers and its load; the access log has
each request's facts, but a scrape needs them counted. `_access.AccessLog` hands every
request's facts to `Metrics.observe` and answers ``GET /metrics`` with `exposition`.

Every label is bounded by the operator, never by a client: a route is one of the server's
route templates (``/v1/models/{model}``, not the path a client sent, else ``other``), a
status is an HTTP status, and a model is a label of a model the served configs or
``--allow-model`` name (a client's own endpoint, or a spelling the configs do not use, is
``other``). A client sending a new path or model on every request would otherwise grow the
scrape, and the server's memory, without end, and a client's endpoint URL could carry its key.

The metrics live in a registry of their own, not prometheus_client's global one: a process
that serves twice (a test, an embedding) starts from zero, and no other library's metrics
are exposed with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from re import Pattern
from typing import Any

from langgraph_moa.serving._access import degraded_reasons

OTHER = "other"

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds: a refusal takes milliseconds, a run seconds to minutes (``--request-timeout``
is 600 s by default)."""


def route_templates(routes: Iterable[Any]) -> tuple[tuple[Pattern[str], str], ...]:
    """Return each of an app's `routes` as its pattern and its template, in the app's order.

    Read from the app, not listed by hand: a hand-kept list counted a route added to the
    server since as ``other``. A `Mount` counts by its template too (``/ui/static/{path}``).
    """
    return tuple(
        (route.path_regex, route.path_format) for route in routes if hasattr(route, "path_regex")
    )


class Metrics:
    """The counters, histogram and gauges of one server, in a registry of their own."""

    def __init__(
        self, models: Iterable[str], *, load: Any = None, routes: Iterable[Any] = ()
    ) -> None:
        """Count calls of `models` by name (any other is ``other``); tell `load`'s runs.

        `load` is the app's `RunLoad` (runs in flight and the cap); `routes` its routes, whose
        templates label the requests (`route_of`).
        """
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.models = frozenset(models)
        self.routes = route_templates(routes)
        self.registry = registry = CollectorRegistry()

        def counter(name: str, help_text: str, *labels: str) -> Any:
            return Counter(name, help_text, list(labels), registry=registry)

        self.requests = counter(
            "moa_requests",
            "HTTP requests answered, by route template and status.",
            "route",
            "status",
        )
        self.duration = Histogram(
            "moa_request_duration_seconds",
            "Seconds from a request's arrival to its response's end, by route template.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.calls = counter(
            "moa_model_calls",
            "Model calls of the runs answered, by model and outcome (ok, failed, cancelled).",
            "model",
            "outcome",
        )
        self.retries = counter(
            "moa_model_retries", "Attempts of model calls after their first, by model.", "model"
        )
        self.tokens = counter(
            "moa_model_tokens", "Tokens (prompt and completion) of the model calls.", "model"
        )
        self.degraded = counter(
            "moa_degraded_answers",
            "Answers given degraded: a fallback, layers passed over, an incomplete tool call.",
        )
        self.degraded_reasons = counter(  # an answer may have both: counted once above
            "moa_degraded_reasons",
            "Why answers were degraded, one count per reason (fallback, passed_over, "
            "incomplete_call).",
            "reason",
        )
        self.requests_in_flight = Gauge(
            "moa_requests_in_flight",
            "Requests being answered (runs and streams included; /health, /ready, /metrics not).",
            registry=registry,
        )
        self.in_flight: Callable[[], int] = lambda: 0
        """The requests being answered: the log that answers /metrics sets it (`AccessLog`)."""
        self.requests_in_flight.set_function(lambda: self.in_flight())
        if load is not None:
            runs = Gauge(
                "moa_runs_in_flight", "Runs in flight (--max-runs counts these).", registry=registry
            )
            runs.set_function(lambda: load.running)
            cap = Gauge(
                "moa_max_runs", "The cap on runs in flight (--max-runs).", registry=registry
            )
            cap.set(load.max_runs)

    @classmethod
    def for_app(cls, app: Any) -> Metrics:
        """Return the metrics of an app of `create_app`: the models it names, and its load."""
        return cls(app.state.model_labels, load=app.state.run_load, routes=app.routes)

    def route_of(self, path: str) -> str:
        """Return the route template a request's path is counted under, or ``other``."""
        return next((template for regex, template in self.routes if regex.match(path)), OTHER)

    def observe(self, path: str, record: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        """Count one request: its `record` (`AccessLog._record`) and its run's `calls`."""
        route = self.route_of(path)
        status = record["status"]
        self.requests.labels(route, str(status) if 100 <= status < 600 else OTHER).inc()
        self.duration.labels(route).observe(record["duration_s"])
        reasons = degraded_reasons(record)
        if reasons:
            self.degraded.inc()
        for reason in reasons:
            self.degraded_reasons.labels(reason).inc()
        for call in calls:
            model = call.get("configured_model")
            model = model if model in self.models else OTHER
            outcome = call.get("status")
            self.calls.labels(
                model, outcome if outcome in ("ok", "failed", "cancelled") else OTHER
            ).inc()
            if isinstance(attempts := call.get("attempts"), int) and attempts > 1:
                self.retries.labels(model).inc(attempts - 1)
            if isinstance(tokens := call.get("total_tokens"), int) and tokens > 0:
                self.tokens.labels(model).inc(tokens)

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    @property
    def content_type(self) -> str:
        """Return the exposition's content type."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return str(CONTENT_TYPE_LATEST)
