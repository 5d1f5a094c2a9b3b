"""Agent: priced events -> spend windows, budget thresholds, breakers, spike anomalies.

For each priced request (counted once per ``source|id``):

* spend of each dimension value (tenant, user, department, project, model, feature, api key)
  in its calendar day and month (budget timezone) and its rolling hour;
* every budget whose scope matches: its period spend, threshold crossings (each level once
  per period, topic ``thresholds``) and the breaker state (compacted topic ``breakers``, key
  = budget id), including the return to normal when a new period starts;
* hourly spend per tenant and per department against the same hour yesterday: over 3x
  emits an anomaly.

Events arrive in batches (``stream.take_events``) and are folded per source partition into
staged table values; each touched key is then written once, so a busy tenant costs one
changelog record per batch rather than one per event.

Exactly once through crashes (``kill -9`` at any moment): a batch's outputs and then its table
writes are awaited until the broker acknowledged them, and only then are its events
acknowledged (so a committed offset never runs ahead of the state); every state record carries
the offset of the last event of its source partition folded into it, so the replay after a
crash skips, record by record, what that record already holds (see ``stream_jobs.batches``).
Outputs are at least once with deterministic keys: a threshold is keyed
``budget|period|level``, a breaker by its budget (compacted), an anomaly by tenant|key|hour.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from faust.types import TP

from stream_jobs.app import (
    BATCH_MAX,
    BATCH_WITHIN_S,
    BUDGETS,
    DEDUP_HORIZON_S,
    PARTITIONS,
    anomalies_topic,
    app,
    breakers_topic,
    dead_letter_topic,
    priced_topic,
    thresholds_topic,
)
from stream_jobs.batches import Staged, partition_batches
from stream_jobs.dead_letters import dead_letter_value, origin_key
from stream_jobs.durable_table import durable_table
from stream_jobs.identities import EXPIRE_EVERY, expire_identities, identity_value, is_repeat
from stream_jobs.spend_state import DIMENSIONS, Progress, When, add_spend, labels_of, spent, state_key
from tokenledger import metrics
from tokenledger.budget_eval import BudgetStatus, evaluate, matches, period_of, roll_over
from tokenledger.schema.priced import decode_priced
from tokenledger.spikes import check_spike
from tokenledger.windows import ROLLING

TZ = BUDGETS.tz

# Event identities already counted: source|id -> [event epoch s, source partition, offset].
counted_events = durable_table(app, "counted-events", PARTITIONS)
# Spend per tenant|dimension=value (see stream_jobs.spend_state).
spend = durable_table(app, "spend", PARTITIONS)
# Per budget: {"spend": state, "status": BudgetStatus fields}; "spikes:<key>": {"hours": reported}.
budget_state = durable_table(app, "budget-state", PARTITIONS)
# Dead letters and duplicates seen: {"n": count}.
counters = durable_table(app, "spend-counters", PARTITIONS)
SPIKE_DIMENSIONS = ("tenant", "department")


def _status_from(doc: dict[str, Any] | None) -> BudgetStatus | None:
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
    )


def _status_doc(status: BudgetStatus) -> dict[str, Any]:
    doc = asdict(status)
    doc["period_end"] = status.period_end.isoformat() if status.period_end else None
    doc["emitted"] = list(status.emitted)
    doc["as_of"] = status.as_of.isoformat() if status.as_of else None
    return doc


@app.agent(priced_topic)
async def track_spend(stream: Any) -> AsyncIterator[None]:
    """Fold priced requests into the spend tables and evaluate budgets, a batch at a time."""
    counted: dict[int, int] = {}  # per source partition, since the last identity expiry there
    async for partition, group in partition_batches(stream, BATCH_MAX, BATCH_WITHIN_S):
        staged = Staged()
        for event in group:
            counted[partition] = counted.get(partition, 0) + await _fold(event, staged)
        await staged.commit()  # outputs, then state, acknowledged by the broker: then the events
        if counted[partition] >= EXPIRE_EVERY:
            counted[partition] = 0
            expire_identities(counted_events, partition, time.time() - DEDUP_HORIZON_S)
        yield None


async def _fold(event: Any, staged: Staged) -> int:
    """Fold one priced event into ``staged``; 1 if it was counted, 0 if refused or a duplicate."""
    partition, offset = event.message.partition, event.message.offset
    staged.at(partition, offset)
    try:
        priced = decode_priced(event.value or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        staged.output(
            await dead_letter_topic.send(
                key=origin_key(event.message),
                value=dead_letter_value("spend", str(exc), event.message, event.value or b""),
            )
        )
        staged.add(counters, "dead-letter:spend")
        metrics.EVENTS.labels("spend", "dead_letter").inc()
        return 0
    identity = f"{priced.event.source}|{priced.event.id}"
    metrics.EVENTS.labels("spend", "in").inc()
    if is_repeat(staged.get(counted_events, identity), partition, offset):
        staged.add(counters, "duplicates:spend")
        metrics.EVENTS.labels("spend", "duplicate").inc()
        return 0
    at = priced.event.time
    _progress.seen(at)
    nanos = priced.cost.to_cost().total_nanos
    labels = labels_of(priced)
    tenant = labels["tenant"]
    when = When.of(at, TZ)
    for dim in DIMENSIONS:
        if labels[dim]:
            key = state_key(tenant, dim, labels[dim])
            if staged.fresh(spend, key):  # a replay skips records that already hold this event
                staged.set(spend, key, add_spend(staged.get(spend, key), when, nanos))
    for dim in SPIKE_DIMENSIONS:
        await _check_spike(staged, tenant, dim, labels[dim], at)
    for budget in BUDGETS.budgets:
        if matches(budget, tenant, labels, labels["model"]) and staged.fresh(budget_state, f"budget:{budget.id}"):
            await _evaluate_budget(staged, budget, when, nanos)
    staged.set(counted_events, identity, identity_value(int(at.timestamp()), partition, offset))
    return 1


async def _evaluate_budget(staged: Staged, budget: Any, when: When, nanos: int) -> None:
    key = f"budget:{budget.id}"
    at = when.at
    doc = staged.get(budget_state, key) or {}
    state = add_spend(doc.get("spend"), when, nanos)
    status = _status_from(doc)
    period_key, _ = period_of(budget, at, BUDGETS.timezone)
    if status is not None and budget.period not in ROLLING and period_key < status.period_key:
        # A late event of a closed period: its spend counts there; the open period is unchanged.
        staged.set(budget_state, key, {"spend": state, "status": _status_doc(status)})
        return
    # Evaluate at the budget's watermark: events of several partitions arrive interleaved, and
    # a rolling window or a crossing time must not move backwards with an older event.
    now = max(at, status.as_of) if status is not None and status.as_of is not None else at
    new_status, crossings, breaker = evaluate(
        budget, status, spent(state, budget.period, now, TZ), now, BUDGETS.timezone
    )
    for c in crossings:
        sent = await thresholds_topic.send(
            key=f"{c.budget_id}|{c.period_key}|{c.level}".encode(),  # a replayed crossing repeats its key
            value={
                "budget_id": c.budget_id,
                "level": c.level,
                "period_key": c.period_key,
                "spent_nanos": c.spent_nanos,
                "limit_nanos": c.limit_nanos,
                "at": c.at.astimezone(UTC).isoformat(),
            },
        )
        staged.output(sent)
    if breaker is not None:
        staged.output(await breakers_topic.send(key=budget.id.encode(), value=breaker.to_json()))
    metrics.record_budget(budget.id, new_status.spent_nanos, budget.limit_nanos, new_status.state)
    staged.set(budget_state, key, {"spend": state, "status": _status_doc(new_status)})


async def _check_spike(staged: Staged, tenant: str, dim: str, value: str, at: datetime) -> None:
    if not value:
        return
    key = state_key(tenant, dim, value)
    state = staged.get(spend, key)
    if not state:
        return
    marker = f"spikes:{key}"
    if not staged.fresh(budget_state, marker):
        return
    before = staged.get(budget_state, marker)
    reported = set(before.get("hours", []) if isinstance(before, dict) else before or [])  # a list before 2026-11
    hourly = {int(k): v for k, v in state["hour"].items()}
    found = check_spike(f"{dim}={value}", hourly, at, reported)
    if found is not None:
        staged.set(budget_state, marker, {"hours": sorted(reported)[-48:]})
        sent = await anomalies_topic.send(
            key=f"{tenant}|{found.key}|{found.hour_start.astimezone(UTC).isoformat()}".encode(),
            value={
                "kind": "hourly_spend_spike",
                "tenant": tenant,
                "key": found.key,
                "hour_start": found.hour_start.astimezone(UTC).isoformat(),
                "spent_nanos": found.spent_nanos,
                "baseline_nanos": found.baseline_nanos,
                "ratio": str(found.ratio),
            },
        )
        staged.output(sent)


_announced: set[tuple[str, str]] = set()
_introduced: set[str] = set()


def _owns_tenant(tenant: str) -> bool:
    """Whether this worker holds the priced partition of ``tenant`` (where its budgets live)."""
    partition = (murmur2(tenant.encode()) & 0x7FFFFFFF) % PARTITIONS  # the producer's default partitioner
    return TP(priced_topic.get_topic_name(), partition) in app.assignor.assigned_actives()


@app.timer(interval=2.0)  # type: ignore[untyped-decorator]
async def introduce_budgets() -> None:
    """Publish a first (normal, zero spend) breaker for every budget that has none yet.

    Gateways learn budgets only from the breakers topic; without this a budget would be
    unknown to them (and unenforced, no reservations) until its first priced event passes
    the pipeline. Only the worker owning the tenant's partition speaks for a budget, and only
    after table recovery, so a budget with stored spend is never announced as zero.
    """
    recovery = getattr(app.tables, "recovery", None)  # faust's TableManager; not on the typed interface
    if recovery is None or not recovery.completed.is_set() or app.rebalancing:
        return
    now = datetime.now(UTC)
    for budget in BUDGETS.budgets:
        if budget.id in _introduced or not _owns_tenant(budget.tenant):
            continue
        _introduced.add(budget.id)
        if budget_state.get(f"budget:{budget.id}") is None:
            _, _, breaker = evaluate(budget, None, 0, now, BUDGETS.timezone)
            if breaker is not None:
                await breakers_topic.send(key=budget.id.encode(), value=breaker.to_json())


_progress = Progress()


@app.timer(interval=30.0)  # type: ignore[untyped-decorator]
async def announce_new_periods() -> None:
    """Publish the return to normal when a calendar period starts, even before any event.

    A broken budget blocks its own traffic, so this cannot wait for an event. Timers cannot
    write tables, so the stored status moves on with the next event; this only announces (at
    most once per budget and period per process; repeats are harmless on a compacted topic),
    and only while the worker is live, not while it replays a backlog.
    """
    now = datetime.now(UTC)
    if not _progress.live(now):
        return  # replaying the past: the event-driven roll-over announces new periods
    for budget in BUDGETS.budgets:
        status = _status_from(budget_state.get(f"budget:{budget.id}"))
        if status is None or status.state == "normal":
            continue
        breaker = roll_over(budget, status, now, BUDGETS.timezone)
        if breaker is not None and (budget.id, breaker.period_key) not in _announced:
            _announced.add((budget.id, breaker.period_key))
            await breakers_topic.send(key=budget.id.encode(), value=breaker.to_json())
