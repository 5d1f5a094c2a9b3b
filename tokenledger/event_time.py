"""The event-time window every path enforces: no later than arrival + 5 minutes, no earlier than arrival - 30 days.

Arrival is the ingest's clock on HTTP and OTLP, and the ``usage-raw`` record's own timestamp on
Kafka (never the worker's clock, so a replay decides as the first pass did). Usage older than
the window goes through the backfill (``python -m billing backfill``). Pure integer arithmetic
on epoch microseconds: it runs once per event in the pricing stage.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_AHEAD_US = 5 * 60 * 1_000_000
MAX_AGE_US = 30 * 86_400 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(at: datetime) -> int:
    """An aware instant in epoch microseconds, exactly (no float)."""
    return (at - _EPOCH) // _MICROSECOND


def outside_window(at_us: int, arrival_us: int, arrival: str = "its record's timestamp") -> str | None:
    """Why an event dated ``at_us`` is refused when it arrived at ``arrival_us`` (epoch µs), or ``None``.

    ``arrival`` names the arrival clock in the reason: the record's timestamp on Kafka, the
    ingest's clock on HTTP and OTLP.
    """
    if at_us > arrival_us + MAX_AHEAD_US:
        return f"event time more than 5 minutes after {arrival} ({_iso(arrival_us)})"
    if at_us < arrival_us - MAX_AGE_US:
        return (
            f"event time more than 30 days before {arrival} ({_iso(arrival_us)}): "
            "use the backfill (python -m billing backfill)"
        )
    return None


def _iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()
