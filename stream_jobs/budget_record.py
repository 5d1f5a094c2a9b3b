"""One budget's state record through deltas and definition changes: what the spend agent stores. Pure.

The record (a ``budget-state`` table value) holds the budget scope's spend (``spend``), its
status (``status``), the digest of the definition it was last evaluated under (``def``) and, per
source partition, the position of the last entry folded in (``applied_raw``). :func:`step`
takes the record, the budget's live definition (None once deleted) and a delta's entries, and
returns the new record and what to publish, so the agent only stores and sends, and a test can
drive it through any interleaving of changes, batches and replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from stream_jobs.batches import RAW_APPLIED
from stream_jobs.budget_fold import OPENING_PARTITION, Output, fold_budget, opening_entries, redefine
from stream_jobs.delta_batch import Entry, fresh_entries
from tokenledger.budget_eval import BudgetStatus


@dataclass(frozen=True)
class Withdrawn:
    """A deleted budget's breaker is withdrawn: a tombstone on the compacted breakers topic."""

    budget_id: str


def step(
    budget_id: str,
    budget: Any | None,
    doc: dict[str, Any] | None,
    entries: Sequence[Entry],
    *,
    wanted: str | None,
    now: datetime,
    tz: ZoneInfo,
    tz_name: str,
) -> tuple[dict[str, Any] | None, list[Output | Withdrawn], int]:
    """Fold a delta into a budget record, applying a definition change first.

    Args:
        budget_id: The budget.
        budget: Its live definition, None once deleted.
        doc: The stored record (None: none yet).
        entries: The delta's entries (none for a marker).
        wanted: The definition's digest (None once deleted).
        now: The wall clock, only for the first breaker of a budget without spend.
        tz: Timezone of the tenant's calendar periods.
        tz_name: Its name.

    Returns:
        The new record (None: unchanged), the outputs in order, and the number of entries of a
        deleted budget still in flight (counted, not folded).
    """
    doc = doc or {}
    fresh, last = fresh_entries(doc.get(RAW_APPLIED, {}), entries)
    defined = doc.get("def")
    if not fresh and defined == wanted:
        return None, [], 0
    stamps = {**doc.get(RAW_APPLIED, {}), **last}
    if budget is None:
        # Forget its spend and opening: an id created again is a new budget with an opening of its own.
        stamps.pop(str(OPENING_PARTITION), None)
        outputs: list[Output | Withdrawn] = [Withdrawn(budget_id)] if defined is not None else []
        return {"spend": None, "status": None, "def": None, RAW_APPLIED: stamps}, outputs, len(fresh)
    state, status = doc.get("spend"), status_from(doc)
    outputs = []
    if defined != wanted:
        opening, opened = fresh_entries(doc.get(RAW_APPLIED, {}), opening_entries(budget))
        state, status, produced = fold_budget(budget, state, status, opening, tz=tz, tz_name=tz_name)
        outputs += produced
        stamps.update(opened)
        if status is not None or not fresh:  # else its first entry gives the first, event-time, breaker
            status, produced = redefine(budget, state, status, now, tz=tz, tz_name=tz_name)
            outputs += produced
    state, status, produced = fold_budget(budget, state, status, fresh, tz=tz, tz_name=tz_name)
    outputs += produced
    new_doc = {"spend": state, "status": status_doc(status) if status else None, "def": wanted, RAW_APPLIED: stamps}
    return new_doc, outputs, 0


def status_from(doc: dict[str, Any] | None) -> BudgetStatus | None:
    """The status a record holds."""
    if not doc or not doc.get("status"):
        return None
    s = doc["status"]
    end = datetime.fromisoformat(s["period_end"]) if s["period_end"] else None
    return BudgetStatus(
        s["budget_id"],
        s["period_key"],
        end,
        s["spent_nanos"],
        s["state"],
        tuple(s["emitted"]),
        s.get("published_spent", 0),
        datetime.fromisoformat(s["as_of"]) if s.get("as_of") else None,
        tuple((key, tuple(levels)) for key, levels in s.get("past", ())),
    )


def status_doc(status: BudgetStatus) -> dict[str, Any]:
    """A status as a record stores it (JSON)."""
    doc = asdict(status)
    doc["period_end"] = status.period_end.isoformat() if status.period_end else None
    doc["emitted"] = list(status.emitted)
    doc["as_of"] = status.as_of.isoformat() if status.as_of else None
    doc["past"] = [[key, list(levels)] for key, levels in status.past]
    return doc
