"""Prometheus metrics shared by the stream workers, the store sink and the gateway.

Cardinality guard: per-user, per-key and per-trace detail never becomes a label (those
label names are refused when a metric is defined), and every label that carries data values
(model, department, budget) admits a bounded number of distinct values per process; later
values are folded into ``__other__`` and counted in ``tokenledger_label_overflow_total``.
One hostile producer sending 10^6 departments cannot blow up the time-series database.

Money in metrics is a monitoring signal, not money of record: cost counters count nano-USD
(integers; exact in a float64 series up to 2^53 nano-USD = 9,007,199 USD per series); bills
come from the store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FORBIDDEN_LABELS = frozenset({"user", "user_id", "api_key", "trace_id", "span_id", "request_id", "event_id"})
OTHER = "__other__"
DEFAULT_MAX_VALUES = 200
STATE_VALUE = {"normal": 0, "warning": 1, "throttled": 2, "broken": 3}

REGISTRY = CollectorRegistry()
log = logging.getLogger(__name__)


class LabelGuard:
    """Admits at most ``max_values`` distinct values per (metric, label); the rest become ``__other__``."""

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        """Create a guard admitting ``max_values`` values per label."""
        self.max_values = max_values
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def admit(self, metric: str, label: str, value: str) -> str:
        """The value to use as a label: itself while the label has room, else ``__other__``."""
        key = (metric, label)
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) < self.max_values:
                seen.add(value)
                return value
        LABEL_OVERFLOW.labels(metric, label).inc()
        return OTHER


def _check(names: Sequence[str]) -> Sequence[str]:
    bad = FORBIDDEN_LABELS.intersection(names)
    if bad:
        raise ValueError(f"high-cardinality label(s) {sorted(bad)} are not allowed on metrics")
    return names


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A counter in the shared registry (label names checked)."""
    return Counter(name, doc, _check(labels), registry=REGISTRY)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    """A gauge in the shared registry (label names checked)."""
    return Gauge(name, doc, _check(labels), registry=REGISTRY)


def histogram(name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = ()) -> Histogram:
    """A histogram in the shared registry (label names checked)."""
    if buckets:
        return Histogram(name, doc, _check(labels), registry=REGISTRY, buckets=buckets)
    return Histogram(name, doc, _check(labels), registry=REGISTRY)


LABEL_OVERFLOW = counter(
    "tokenledger_label_overflow_total",
    "Label values folded into __other__ by the cardinality guard",
    ["metric", "label"],
)
GUARD = LabelGuard(int(os.environ.get("TOKENLEDGER_METRICS_MAX_LABEL_VALUES", DEFAULT_MAX_VALUES)))

EVENTS = counter(
    "tokenledger_events_total",
    "Usage events (requests) by pipeline stage and outcome; a batch message counts its events",
    ["stage", "outcome"],
)
MESSAGES = counter("tokenledger_messages_total", "Kafka messages by pipeline stage and outcome", ["stage", "outcome"])
ENTRIES = counter(
    "tokenledger_delta_entries_total",
    "Spend-delta entries (one per request and key it counts in) by stage and outcome",
    ["stage", "outcome"],
)
TOKENS = counter("tokenledger_tokens_total", "Tokens billed, by model and token type", ["model", "type"])
COST = counter(
    "tokenledger_cost_nanousd_total", "Cost billed in nano-USD, by model and department", ["model", "department"]
)
BUDGET_RATIO = gauge("tokenledger_budget_usage_ratio", "Budget spend / limit in the current period", ["budget"])
BREAKER_STATE = gauge(
    "tokenledger_breaker_state", "Breaker state: 0 normal, 1 warning, 2 throttled, 3 broken", ["budget"]
)
CONSUMER_LAG = gauge("tokenledger_consumer_lag", "Messages behind the end of the topic", ["group", "topic"])
CONSUMER_STALLED = gauge(
    "tokenledger_consumer_stalled_seconds",
    "Seconds a consumer has been behind the end of its topic without receiving a record (0 = flowing)",
    ["group", "topic"],
)
PRODUCER_BACKPRESSURE = counter(
    "tokenledger_producer_backpressure_total",
    "Times a worker paused its stream until the changelog producer's buffer drained (Faust backpressure)",
)
STAGE_UNCONSUMED = gauge(
    "tokenledger_stage_unconsumed_events",
    "Events waiting for a pipeline stage (pricing, spend) whose consumer group has no member",
    ["stage"],
)
TRANSIENT = counter(
    "tokenledger_transient_errors_total",
    "Transient failures retried with backoff (store or broker away)",
    ["component", "kind"],
)
SINK_BATCH = histogram(
    "tokenledger_sink_batch_seconds",
    "Store sink: insert + commit time per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GATEWAY_DECISION = histogram(
    "tokenledger_gateway_decision_seconds",
    "Gateway budget decision time",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2),
)
GATEWAY_DECISIONS = counter("tokenledger_gateway_decisions_total", "Gateway decisions", ["action"])
GATEWAY_UPSTREAM = histogram(
    "tokenledger_gateway_upstream_seconds", "Gateway: time to the upstream's full answer", ["stream"]
)


def record_priced(model: str, department: str, tokens: dict[str, int], cost_nanos: int) -> None:
    """Count one priced request (tokens by type, cost by model and department)."""
    m = GUARD.admit("tokenledger_tokens_total", "model", model)
    for kind, n in tokens.items():
        if n:
            TOKENS.labels(m, kind).inc(n)
    d = GUARD.admit("tokenledger_cost_nanousd_total", "department", department or "none")
    COST.labels(m, d).inc(cost_nanos)


def record_budget(budget_id: str, spent_nanos: int, limit_nanos: int, state: str) -> None:
    """Set a budget's usage ratio and breaker state."""
    b = GUARD.admit("tokenledger_budget", "budget", budget_id)
    BUDGET_RATIO.labels(b).set(spent_nanos / limit_nanos if limit_nanos else 0.0)
    BREAKER_STATE.labels(b).set(STATE_VALUE.get(state, 0))


def serve_from_env(default_port: int) -> int | None:
    """Serve ``/metrics``, ``/healthz``, ``/readyz`` on ``TOKENLEDGER_METRICS_PORT`` (else ``default_port``; 0: off)."""
    from tokenledger.health import serve  # noqa: PLC0415 - health imports this module

    port = int(os.environ.get("TOKENLEDGER_METRICS_PORT", default_port))
    if port <= 0:
        return None
    try:
        serve(port, os.environ.get("TOKENLEDGER_METRICS_ADDR", "127.0.0.1"))
    except OSError as exc:  # a second worker on the same host: metrics off, work goes on
        log.warning("metrics port %d unavailable (%s); /metrics and health disabled in this process", port, exc)
        return None
    return port


# Gateway rate limits and claims (producers/gateway/).
RATELIMIT_DECISIONS = counter(
    "tokenledger_ratelimit_decisions_total",
    "Rate-limit decisions per limit, quantity and outcome",
    ["limit", "kind", "outcome"],
)
RATELIMIT_REMAINING = gauge(
    "tokenledger_ratelimit_remaining",
    "Units left in a limit's tightest bucket after the last decision",
    ["limit", "kind"],
)
RATELIMIT_STORE_ERRORS = counter(
    "tokenledger_ratelimit_store_errors_total",
    "Decisions made without the shared store (Redis), by outcome",
    ["outcome"],
)
CLAIMS_REFUSED = counter(
    "tokenledger_gateway_claims_refused_total", "Calls refused for claiming outside their key's grant", ["claim"]
)
