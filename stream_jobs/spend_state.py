"""Per-key spend state kept in Faust tables: pure transitions on plain JSON-able dicts.

One table entry per ``tenant|dimension=value`` holds that key's spend in its current
calendar day and month (budget timezone) and in rolling 1-minute buckets for the last hour,
plus hourly buckets for spike detection. Old periods are dropped as time moves on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tokenledger.windows import ROLLING, RollingSum, bucket_start, calendar_window

HOURLY_KEEP = timedelta(hours=49)
DIMENSIONS = ("tenant", "user", "department", "project", "model", "feature", "api_key")


def state_key(tenant: str, dimension: str, value: str) -> str:
    """Table key of one dimension value of a tenant."""
    return f"{tenant}|{dimension}={value}"


def add_spend(state: dict[str, Any] | None, at: datetime, nanos: int, tz: ZoneInfo) -> dict[str, Any]:
    """Fold one priced request into a key's state (returns a new dict).

    Args:
        state: The table value (``None`` for a new key).
        at: Event time.
        nanos: Cost, nano-USD.
        tz: Timezone of calendar periods.
    """
    s = {"day": {}, "month": {}, "minute": {}, "hour": {}} if state is None else {k: dict(v) for k, v in state.items()}
    day, month = calendar_window(at, "day", tz).key, calendar_window(at, "month", tz).key
    # Keep the current and the previous calendar period only (late events within a period).
    s["day"][day] = s["day"].get(day, 0) + nanos
    s["month"][month] = s["month"].get(month, 0) + nanos
    s["day"] = dict(sorted(s["day"].items())[-2:])
    s["month"] = dict(sorted(s["month"].items())[-2:])
    length, width = ROLLING["rolling_1h"]
    rolling = RollingSum(length, width, {int(k): v for k, v in s["minute"].items()})
    newest = max([at, *(datetime.fromtimestamp(int(k), tz=at.tzinfo) for k in s["minute"])])
    rolling.add(at, nanos, newest)
    s["minute"] = {str(k): v for k, v in rolling.buckets.items()}
    hour = bucket_start(at, timedelta(hours=1))
    s["hour"][str(hour)] = s["hour"].get(str(hour), 0) + nanos
    horizon = hour - int(HOURLY_KEEP.total_seconds())
    s["hour"] = {k: v for k, v in s["hour"].items() if int(k) > horizon}
    return s


def spent(state: dict[str, Any] | None, period: str, at: datetime, tz: ZoneInfo) -> int:
    """Spend of the key in the budget period containing ``at`` (nano-USD)."""
    if not state:
        return 0
    if period in ("day", "month"):
        return int(state[period].get(calendar_window(at, period, tz).key, 0))  # type: ignore[arg-type]
    length, width = ROLLING["rolling_1h"] if period == "rolling_1h" else (timedelta(hours=24), timedelta(hours=1))
    source = state["minute"] if period == "rolling_1h" else state["hour"]
    return RollingSum(length, width, {int(k): v for k, v in source.items()}).total(at)
