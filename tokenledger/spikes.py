"""Cost spike detection: this hour's spend over 3x the same hour yesterday. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from tokenledger.windows import bucket_start

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Spike:
    """An anomaly event (topic ``anomalies``)."""

    key: str
    hour_start: datetime
    spent_nanos: int
    baseline_nanos: int
    ratio: Decimal


def check_spike(
    key: str,
    hourly: dict[int, int],
    now: datetime,
    already: set[int],
    *,
    factor: Decimal = Decimal(3),
    min_nanos: int = 1_000_000_000,
) -> Spike | None:
    """Compare the current hour with the same hour yesterday; report once per hour.

    Args:
        key: What is measured (e.g. ``tenant=acme`` or ``department=research``).
        hourly: Spend per hour bucket (epoch seconds of the hour start), nano-USD.
        now: The injected clock.
        already: Hour buckets already reported for this key (updated in place).
        factor: Ratio that counts as a spike.
        min_nanos: Ignore hours below this spend (a 3x jump from 1 cent is noise).
    """
    current = bucket_start(now, HOUR)
    spent = hourly.get(current, 0)
    baseline = hourly.get(current - 86_400, 0)
    if current in already or spent < min_nanos or spent <= factor * baseline:
        return None
    already.add(current)
    ratio = (Decimal(spent) / baseline).quantize(Decimal("0.01")) if baseline else Decimal("Infinity")
    return Spike(key, datetime.fromtimestamp(current, tz=now.tzinfo), spent, baseline, ratio)
