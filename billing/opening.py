"""The spend a budget created while the pipeline runs starts from, read from the store.

A new budget counts priced requests whose event time is at or after its ``counts_from`` (the
instant it was created); the spend of its scope before that instant, in every period it can
still evaluate (the current month in the tenant's timezone, the last 24 hours), is its
``opening``: minutes of spend read from the store (``FINAL``: one row per request), folded in by
the spend stage before anything else. Together they count every request once, as long as the
requests of the period before ``counts_from`` are in the store when the budget is created: the
sink writes within about a second of pricing, so a budget created while requests of the
same minutes are still on their way can miss those (and a late event older than ``counts_from``
counts in neither; README, Known limits).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from billing.bill import scoped_query
from tokenledger.control.records import ControlBudget
from tokenledger.store.base import Store
from tokenledger.windows import calendar_window


def opening_window(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, now)``: the current calendar month in ``tz`` and the last 24 hours, whichever starts first."""
    month = calendar_window(now, "month", tz)
    return min(month.start, now - timedelta(hours=24)), now


def opening_for(store: Store, budget: ControlBudget, tz: ZoneInfo, now: datetime) -> ControlBudget:
    """``budget`` counting from ``now``, with its scope's spend per minute before ``now`` as opening."""
    start, end = opening_window(now, tz)
    rows = scoped_query(
        store,
        "budget_opening",
        "as-billed",
        {"tenant": budget.tenant, "start": start, "end": end},
        budget.scope,
    )
    opening = tuple((int(r["minute"]), int(r["cost_nanos"])) for r in rows)
    return budget.model_copy(update={"counts_from": now, "opening": opening})
