"""Agent: spend deltas -> spend windows, budget thresholds, breakers, spike anomalies.

The second phase of a two-phase aggregation: the pricing stage sends, per batch, one delta per
touched key (``tokenledger.schema.deltas``), keyed by that key, so this agent receives one
message per key per batch, and one tenant's keys (and budgets) spread over every partition and
every spend worker. For each delta:

* a dimension value (``tenant|dimension=value``: tenant, user, department, project, model,
  feature, api key): its spend in its calendar day and month (budget timezone), its rolling
  hour, and hourly buckets; for tenants and departments, the hour against the same hour
  yesterday (over 3x emits an anomaly);
* a budget (``budget:<id>``, every priced request in its scope, in the order the pricing stage
  sent them): its period spend, evaluated request by request: threshold crossings (each level
  once per period, topic ``thresholds``) and the breaker state (compacted topic ``breakers``,
  key = budget id), including the return to normal when a new period starts.

Exactly once through crashes (``kill -9`` of any stage at any moment): every state record
remembers, per source partition of ``usage-raw``, the raw offset of the last entry folded into
it, and entries at or below it are skipped. A batch re-priced after a pricing crash (maybe with
other boundaries) and a delta replayed after a spend crash are therefore folded once, entry by
entry. A batch's outputs and then its table writes are acknowledged by the broker before its
deltas are, so a committed offset never runs ahead of the state. Outputs are at least once with
deterministic keys: a threshold is keyed ``budget|period|level``, a breaker by its budget
(compacted), an anomaly by tenant|key|hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec

from stream_jobs.app import (
    BATCH_MAX,
    BATCH_WITHIN_S,
    PARTITIONS,
    _Control,
    anomalies_topic,
    app,
    breakers_topic,
    control_state,
    dead_letter_topic,
    deltas_topic,
    thresholds_topic,
)
from stream_jobs.batches import RAW_APPLIED, Staged, partition_batches
from stream_jobs.budget_record import Withdrawn, status_from, step
from stream_jobs.dead_letters import dead_letter_value, origin_key
from stream_jobs.delta_batch import Entry, fresh_entries
from stream_jobs.diagnostics import stop_worker
from stream_jobs.durable_table import durable_table
from stream_jobs.spend_codec import PACKING, PackedView
from stream_jobs.spend_state import Progress, SpendFold
from tokenledger import metrics
from tokenledger.budget_eval import (
    BreakerUpdate,
    ThresholdCrossing,
    breaker_for,
    period_of,
    roll_over,
)
from tokenledger.control.records import digest
from tokenledger.control.state import Change
from tokenledger.schema.deltas import BUDGET_PREFIX, SpendDeltaV1, decode_deltas, encode_delta
from tokenledger.schema.raw_batch import partition_for
from tokenledger.spikes import check_spike

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Spend per tenant|dimension=value (see stream_jobs.spend_state).
# Packed in memory, the JSON dict on the changelog (stream_jobs.spend_codec); read and written
# as dicts through ``spend``.
spend_table = durable_table(app, "spend", PARTITIONS, PACKING)
spend = PackedView(spend_table)
# Per budget: {"spend": state, "status": BudgetStatus fields}; "spikes:<key>": {"hours": reported}.
budget_state = durable_table(app, "budget-state", PARTITIONS)
# Dead letters and deltas of unknown budgets: {"n": count}.
counters = durable_table(app, "spend-counters", PARTITIONS)
SPIKE_DIMENSIONS = ("tenant", "department")


_MESSAGES_IN = metrics.MESSAGES.labels("spend", "in")
_ENTRIES_IN = metrics.ENTRIES.labels("spend", "in")  # a labelled child per call took ~1 µs, per key
_EVENTS_IN = metrics.EVENTS.labels("spend", "in")


@app.agent(deltas_topic)
async def track_spend(stream: Any) -> AsyncIterator[None]:
    """Fold spend deltas into the spend tables and evaluate budgets, a batch at a time."""
    async for _, group in partition_batches(stream, BATCH_MAX, BATCH_WITHIN_S):
        try:
            async with _batch_lock:  # repeat_breakers must not read a status older than a breaker just sent
                staged = Staged()
                _MESSAGES_IN.inc(len(group))
                for event in group:
                    await _apply(event, staged)
                await staged.commit()  # outputs, then state, acknowledged by the broker: then the deltas
        except Exception as exc:
            stop_worker("spend", exc)
        yield None


async def _apply(event: Any, staged: Staged) -> None:
    """Fold one delta message into ``staged``: each key's entries its record does not hold yet."""
    try:
        deltas = decode_deltas(event.value or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        staged.at(event.message.partition, event.message.offset)
        staged.output(
            await dead_letter_topic.send(
                key=origin_key(event.message),
                value=dead_letter_value("spend", str(exc), event.message, event.value or b""),
            )
        )
        staged.add(counters, "dead-letter:spend")
        metrics.EVENTS.labels("spend", "dead_letter").inc()
        return
    for delta in deltas:
        if delta.key.startswith(BUDGET_PREFIX):
            await _apply_budget(staged, delta)
        else:
            await _apply_spend(staged, delta)


def _fresh(record: Any, delta: SpendDeltaV1) -> tuple[list[Entry], dict[str, int]]:
    """The delta's entries ``record`` does not hold yet, and its new stamp (see ``fresh_entries``)."""
    done = record.get(RAW_APPLIED, {}) if isinstance(record, dict) else {}
    return fresh_entries(done, delta.entries)


async def _apply_spend(staged: Staged, delta: SpendDeltaV1) -> None:
    record = staged.get(spend, delta.key)
    entries, last = _fresh(record, delta)
    if not entries:
        return
    fold = SpendFold(record)
    latest = fold.add_entries(entries, control_state().zone(delta.key.partition("|")[0]))  # hour -> latest µs
    staged.set(spend, delta.key, fold.view(), applied=last)  # the fold ends here: its dicts, not copies
    _ENTRIES_IN.inc(len(entries))
    dim = delta.key.partition("|")[2].partition("=")[0]
    if dim == "tenant":  # every priced request has exactly one entry on its tenant's own key
        _EVENTS_IN.inc(len(entries))
    if dim in SPIKE_DIMENSIONS:
        instants = [EPOCH + timedelta(microseconds=at_us) for at_us in sorted(latest.values())]
        _progress.seen(instants[-1])
        await _check_spikes(staged, delta.key, instants, last)


async def _apply_budget(staged: Staged, delta: SpendDeltaV1) -> None:
    """Fold a budget's entries; first, when its definition changed (or it is new or deleted), apply that.

    The record keeps the digest of the definition it was last evaluated under (``def``): a marker
    (a delta without entries, see :func:`mark_changed_budgets`) or any delta finding another one
    applies the change, once, in the order of the budget's deltas (``stream_jobs.budget_record``).
    """
    key = delta.key
    budget_id = key.removeprefix(BUDGET_PREFIX)
    _ENTRIES_IN.inc(len(delta.entries))
    control = control_state()
    budget = control.budgets.get(budget_id)
    tenant = control.tenant(budget.tenant if budget is not None else "")
    doc, outputs, orphans = step(
        budget_id,
        budget,
        staged.get(budget_state, key),
        delta.entries,
        wanted=None if budget is None else _digest(budget),
        now=datetime.now(UTC),
        tz=control.zone(tenant.id),
        tz_name=tenant.timezone,
    )
    for out in outputs:
        staged.output(await _publish(out))
    if orphans:  # entries of a deleted budget still in flight: counted, not folded
        before = staged.get(counters, f"unknown-budget:{key}") or {"n": 0}
        staged.set(counters, f"unknown-budget:{key}", {"n": before["n"] + orphans})
    if doc is None:
        return
    status = status_from(doc)
    if budget is not None and status is not None:
        metrics.record_budget(budget.id, status.spent_nanos, budget.limit_nanos, status.state)
    staged.set(budget_state, key, doc)


_DIGESTS: dict[int, tuple[Any, str]] = {}


def _digest(budget: Any) -> str:
    """The content digest of a budget definition (memoised per record object)."""
    found = _DIGESTS.get(id(budget))
    if found is None or found[0] is not budget:
        if len(_DIGESTS) >= 200_000:
            _DIGESTS.clear()
        found = _DIGESTS[id(budget)] = (budget, digest(budget))
    return found[1]


async def _publish(out: ThresholdCrossing | BreakerUpdate | Withdrawn) -> Any:
    """Send a crossing (keyed budget|period|level: a replay repeats its key), a breaker or its tombstone (by budget)."""
    if isinstance(out, Withdrawn):
        return await app.producer.send(breakers_topic.get_topic_name(), out.budget_id.encode(), None, None, None, None)
    if isinstance(out, BreakerUpdate):
        return await breakers_topic.send(key=out.budget_id.encode(), value=out.to_json())
    return await thresholds_topic.send(
        key=f"{out.budget_id}|{out.period_key}|{out.level}".encode(),
        value={
            "budget_id": out.budget_id,
            "level": out.level,
            "period_key": out.period_key,
            "spent_nanos": out.spent_nanos,
            "limit_nanos": out.limit_nanos,
            "at": out.at.astimezone(UTC).isoformat(),
        },
    )


async def _check_spikes(staged: Staged, key: str, instants: list[datetime], last: dict[str, int]) -> None:
    """Hourly spike checks of a tenant or department key at the latest instant of each hour a delta touched.

    The state already holds the whole delta, so an hour is compared with its spend up to the end
    of the batch (a spike is reported at most one batch earlier than request by request would).
    """
    state = staged.get(spend, key)
    marker = f"spikes:{key}"
    before = staged.get(budget_state, marker)
    done = before.get(RAW_APPLIED, {}) if isinstance(before, dict) else {}
    if not state or all(offset <= done.get(p, -1) for p, offset in last.items()):
        return  # a replayed delta whose checks were already made
    tenant, _, dim_value = key.partition("|")
    reported = set(before.get("hours", []) if isinstance(before, dict) else before or [])  # a list before 2026-11
    hourly = {int(k): v for k, v in state["hour"].items()}
    found_any = False
    for at in instants:
        found = check_spike(dim_value, hourly, at, reported)
        if found is None:
            continue
        found_any = True
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
    if found_any:
        staged.set(budget_state, marker, {"hours": sorted(reported)[-48:]}, applied=last)


_announced: set[tuple[str, str]] = set()


def _owns_budget(budget_id: str, owned: set[int] | None = None) -> bool:
    """Whether this worker holds the ``spend-deltas`` partition of the budget (where its state lives)."""
    partition = partition_for((BUDGET_PREFIX + budget_id).encode(), PARTITIONS)  # the producers' murmur2
    return partition in (_owned() if owned is None else owned)


def _owned() -> set[int]:
    """The ``spend-deltas`` partitions this worker holds."""
    topic = deltas_topic.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


class _Changed:
    """Budget ids changed on the control topic since the last marking (filled by the reader thread)."""

    ids: ClassVar[set[str]] = set()
    wake: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None


def _on_change(change: Change) -> None:
    if change.kind != "budget":
        return
    _Changed.ids.add(change.id)
    if _Changed.loop is not None and _Changed.wake is not None:
        _Changed.loop.call_soon_threadsafe(_Changed.wake.set)


MARK_EVERY_S = 5.0
# A budget without state is announced (a normal breaker at the wall clock) only this long after
# the worker recovered its tables: a backlog's first deltas give it an event-time status first.
INTRODUCE_AFTER_S = 2.0


@app.task  # type: ignore[untyped-decorator]
async def mark_changed_budgets() -> None:
    """Send a marker (a delta without entries) to every owned budget whose definition changed.

    The marker travels in the budget's own ``spend-deltas`` partition, so the change is applied
    by the agent, in order with the budget's spend, with its table writes and breaker made
    durable like any delta's (and a crash replays it). Woken by the control reader at once; a
    scan every ``MARK_EVERY_S`` catches what a rebalance or a restart left (new budgets,
    deleted ones, changes made while this worker was down). A repeated marker is harmless: the
    record already holds the definition it carries.
    """
    _Changed.loop, _Changed.wake = asyncio.get_running_loop(), asyncio.Event()
    if _Control.log is not None:
        _Control.log.listen(_on_change)
    next_scan, recovered_at = 0.0, None
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_Changed.wake.wait(), timeout=0.5)
        _Changed.wake.clear()
        recovery = getattr(app.tables, "recovery", None)  # faust's TableManager; not on the typed interface
        if recovery is None or not recovery.completed.is_set() or app.rebalancing:
            recovered_at = None
            continue
        loop_now = asyncio.get_running_loop().time()
        recovered_at = loop_now if recovered_at is None else recovered_at
        if loop_now - recovered_at < INTRODUCE_AFTER_S:
            continue  # a backlog's first deltas define new budgets in event time (see _mark)
        ids, _Changed.ids = _Changed.ids, set()
        if loop_now >= next_scan:
            next_scan = loop_now + MARK_EVERY_S
            ids |= set(control_state().budgets)
            ids |= {k.removeprefix(BUDGET_PREFIX) for k in list(budget_state.keys()) if k.startswith(BUDGET_PREFIX)}
        await _mark(ids)


async def _mark(ids: set[str]) -> None:
    budgets = control_state().budgets
    owned = _owned()
    for budget_id in sorted(ids):
        if not _owns_budget(budget_id, owned):
            continue
        budget = budgets.get(budget_id)
        key = BUDGET_PREFIX + budget_id
        doc = budget_state.get(key) or {}
        if doc.get("def") != (None if budget is None else _digest(budget)):
            await deltas_topic.send(key=key.encode(), value=encode_delta(key, []))


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
    control = control_state()
    for budget in list(control.budgets.values()):
        status = status_from(budget_state.get(f"budget:{budget.id}"))
        if status is None or status.state == "normal":
            continue
        breaker = roll_over(budget, status, now, control.tenant(budget.tenant).timezone)
        if breaker is not None and (budget.id, breaker.period_key) not in _announced:
            _announced.add((budget.id, breaker.period_key))
            await breakers_topic.send(key=budget.id.encode(), value=breaker.to_json())


REPEAT_S = float(os.environ.get("TOKENLEDGER_BREAKER_REPEAT_S", "2.0"))
_batch_lock = asyncio.Lock()


@app.timer(interval=REPEAT_S)  # type: ignore[untyped-decorator]
async def repeat_breakers() -> None:
    """Republish the breaker of every budget above normal, every ``TOKENLEDGER_BREAKER_REPEAT_S``.

    A gateway counts its own completed requests on top of a breaker until a breaker received
    at least ``hold_s`` (5 s) after a completion covers it (``tokenledger.guard``). Breakers now
    arrive within ~0.1 s; when a budget's traffic then stops (every request denied), no newer
    breaker ever came and the gateway kept counting those requests twice: the demo's runaway
    loop was held at 10 of its 20 USD. The repeat (same status, same event-time watermark) lets
    the gateway confirm them. Only the worker owning the budget speaks, after recovery, and not
    for a period the event-time watermark has left (the roll-over announces that one).
    """
    recovery = getattr(app.tables, "recovery", None)
    if recovery is None or not recovery.completed.is_set() or app.rebalancing:
        return
    async with _batch_lock:
        await _repeat(_progress.watermark)


async def _repeat(watermark: datetime | None) -> None:
    control = control_state()
    for budget in list(control.budgets.values()):
        doc = budget_state.get(f"budget:{budget.id}") or {}
        status = status_from(doc)
        if status is None or status.state == "normal" or status.as_of is None or not _owns_budget(budget.id):
            continue
        if doc.get("def") != _digest(budget):
            continue  # its marker is on the way: the breaker of the new definition comes with it
        if (
            watermark is not None
            and period_of(budget, watermark, control.tenant(budget.tenant).timezone)[0] != status.period_key
        ):
            continue
        await breakers_topic.send(key=budget.id.encode(), value=breaker_for(budget, status, status.as_of).to_json())
