"""The pure hot path per event: decode -> validate -> price -> fold into every dimension -> budgets.

Runs exactly the library calls the pricing and spend agents make, batch by batch, without
Kafka or Faust (their per-message cost is measured by ``bench_pipeline.py``): the pricing
stage decodes and validates each wire event, takes its request identity, prices it, encodes
the priced event and adds it to the batch's per-key deltas; the spend stage decodes each
delta, unpacks the key's state, folds the entries in, packs it again, and folds budgets
request by request (``fold_budget``).

Two streams of the same 20,000 simulated events: as a live stream at 10,000 events/s (what
the agents see whenever the rate matters: a batch holds a few seconds of traffic) and as the
demo tenant's sparse month (~1 event per 2 minutes: every event in a minute of its own). Also
measures, in the same run, a plain loop that only parses each event's JSON and sums its tokens
(the least any Python consumer does), and prints the hot path as a ratio of it.

Then the control plane at a platform's scale: the live stream again with 100,000 budgets
(1,000 tenants x 100, the demo tenant's 5 among them) and 1,000,000 keys in the control state,
as a ratio of the 5-budget figure measured in the same run; the time to replay those records
(what a restarted process does); memory per budget and per key; an ingest key lookup; and the
gateway's decision p50/p99 with 100,000 breakers. The last line is the headline, the live
stream: ``hot path: <N> µs/event`` (median of 5 runs). Not a timed test.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from stream_jobs.budget_fold import fold_budget
from stream_jobs.delta_batch import DeltaBatch
from stream_jobs.spend_codec import PackedView
from stream_jobs.spend_state import SpendFold
from tokenledger.batch_pricing import request_identity
from tokenledger.budget_eval import BudgetStatus, evaluate
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile, Record
from tokenledger.control.follow import WORKER_KINDS
from tokenledger.control.records import ApiKey, ControlBudget, encode
from tokenledger.control.state import ControlState
from tokenledger.event_time import outside_window
from tokenledger.guard import Guard, GuardRequest
from tokenledger.identity import placement_key
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.pricing.engine import price_with_spec
from tokenledger.sample import simulate
from tokenledger.schema.deltas import BUDGET_PREFIX, decode_deltas
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import BATCH_BYTES
from tokenledger.schema.priced_arrow import encode_arrow_batches
from tokenledger.schema.raw_batch import partition_for
from tokenledger.store.records import usage_row

N = 20_000
RUNS = 5
LIVE_RATE = 10_000  # events/s: the end-to-end target of the pipeline
BATCH = 2_000  # the agents' default batch (TOKENLEDGER_AGENT_BATCH)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def events(n: int, live_rate: int | None = None) -> list[bytes]:
    """``n`` simulated wire events: one month of the demo tenant's traffic, repeated as needed.

    With ``live_rate``, the same events are stamped as a live stream at that many events per
    second, in order: what the agents see when the rate is high enough to matter.
    """
    out: list[bytes] = []
    start = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    while len(out) < n:
        for doc in simulate(datetime(2026, 10, 1, tzinfo=UTC), 31, seed=len(out) + 7):
            if live_rate is not None:
                doc["time"] = (start + timedelta(microseconds=len(out) * 1_000_000 // live_rate)).isoformat()
            out.append(orjson.dumps(doc))
            if len(out) == n:
                break
    return out


def baseline(raws: list[bytes]) -> int:
    """Parse each event and add up its tokens."""
    total = 0
    for raw in raws:
        d = orjson.loads(raw)["data"]
        total += d["input_tokens"] + d["output_tokens"]
    return total


def hot_path(raws: list[bytes], control: ControlState, batch: int = BATCH) -> tuple[int, dict[str, Any], float]:
    """Both stages' pure work, batch by batch as the agents do it.

    Returns the total cost (nano-USD), the spend and budget state, and the share of the time
    spent in the pricing stage.
    """
    table = CachedPriceTable(LayeredPriceTable.from_path())
    tz = control.zone("acme")
    tz_name = control.tenant("acme").timezone
    by_id = control.budgets
    state: dict[str, Any] = {}
    spend = PackedView(state)
    statuses: dict[str, BudgetStatus | None] = {}
    seen: set[str] = set()
    total = 0
    pricing_s = 0.0
    for start in range(0, len(raws), batch):
        t0 = time.perf_counter()
        deltas = DeltaBatch(control)  # pricing stage
        priced: list[tuple[Any, ...]] = []  # stored rows, sent as Arrow columns as the agent does
        for offset, raw in enumerate(raws[start : start + batch], start):
            ev = decode_usage_event(raw)
            at_us = (ev.time - EPOCH) // MICROSECOND
            if outside_window(at_us, at_us) is not None:  # the record stamped at the event's time
                continue
            if partition_for(placement_key(ev), 3) < 0:  # its home partition (never negative: kept, as the agent)
                continue
            request = request_identity(ev)
            if request in seen:
                continue
            seen.add(request)
            cost = price_with_spec(
                ev.data,
                table.lookup_at(ev.data.provider, ev.data.model, at_us, ev.time, batch=ev.data.batch),
            )
            priced.append(usage_row(ev, cost, at_us))
            total += cost.total_nanos
            deltas.add_event(0, offset, at_us, cost.total_nanos, ev)
        encode_arrow_batches(priced, BATCH_BYTES)
        messages = deltas.partition_messages(3)
        pricing_s += time.perf_counter() - t0
        for _, wire in messages:  # spend stage
            for delta in decode_deltas(wire):
                if not delta.key.startswith(BUDGET_PREFIX):
                    fold = SpendFold(spend.get(delta.key))
                    fold.add_entries(delta.entries, tz)
                    spend[delta.key] = fold.view()  # packed, as the spend agent's table keeps it
                    continue
                budget = by_id[delta.key.removeprefix(BUDGET_PREFIX)]
                state[delta.key], statuses[budget.id], _ = fold_budget(
                    budget, state.get(delta.key), statuses.get(budget.id), delta.entries, tz=tz, tz_name=tz_name
                )
    return total, state, pricing_s


def measure(raws: list[bytes], control: ControlState) -> tuple[float, float, float, int]:
    """Medians over RUNS of the plain loop, the hot path and its pricing stage (µs/event), and the total."""
    base, hot, pricing = [], [], []
    total = None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        baseline(raws)
        base.append((time.perf_counter() - t0) / len(raws) * 1e6)
        t0 = time.perf_counter()
        got, _, pricing_s = hot_path(raws, control)
        hot.append((time.perf_counter() - t0) / len(raws) * 1e6)
        pricing.append(pricing_s / len(raws) * 1e6)
        assert total is None or got == total, "the hot path must be deterministic"
        total = got
    assert total is not None
    return statistics.median(base), statistics.median(hot), statistics.median(pricing), total


def scale_records(tenants: int = 1_000, per_tenant: int = 100, keys: int = 1_000_000) -> list[Record]:
    """The shipped control records plus ``tenants`` x ``per_tenant`` budgets (the demo tenant's 5 among
    its ``per_tenant``) and ``keys`` keys. The other budgets are scoped to users, projects and
    models of their own tenants (the demo tenant's other 95 to users it does not have)."""
    out = list(ControlFile.load(DEFAULT_CONTROL).records())
    dims = ("user_id", "project", "department", "model", "feature")
    for t in range(tenants):
        tenant = "acme" if t == 0 else f"tenant-{t:04d}"
        for i in range(per_tenant - (5 if t == 0 else 0)):
            dim = dims[i % len(dims)]
            bid = f"{tenant}-b{i:03d}"
            scope = {dim: f"ghost-{i}" if t == 0 else f"{dim}-{i}"}
            out.append(("budget", bid, ControlBudget(id=bid, tenant=tenant, scope=scope, limit_usd=Decimal(100 + i))))
    digest = hashlib.sha256
    for k in range(keys):
        kid = f"key-{k:07d}"
        sha = digest(kid.encode()).hexdigest()
        out.append(("key", kid, ApiKey(id=kid, tenant=f"tenant-{k % tenants:04d}", kind="ingest", sha256=sha)))
    return out


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gateway_decisions(control: ControlState, n: int = 20_000) -> tuple[float, float]:
    """p50 and p99 (µs) of ``Guard.decide`` with a breaker for every budget of ``control``."""
    guard = Guard(lambda model, prompt, out, at: 1_000, reservations=True)
    now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    for budget in control.budgets.values():
        _, _, breaker = evaluate(budget, None, 0, now, "UTC")
        assert breaker is not None
        guard.apply(breaker.to_json(), budget.id, 0.0)
    guard.bootstrapped = True
    guard.touch(0.0)
    reqs = [
        GuardRequest(
            "acme",
            {"department": d, "project": p, "user": f"u{i % 40}", "environment": "prod", "feature": "chat"},
            "gpt-4o",
            1_000,
            500,
        )
        for i, (d, p) in enumerate(zip(["research", "legal", "support"] * n, ["copilot", "agents"] * n, strict=False))
        if i < n
    ]
    times = []
    for req in reqs:
        t0 = time.perf_counter()
        d = guard.decide(req, now, 1.0, 0.5)
        times.append((time.perf_counter() - t0) * 1e6)
        if d.ticket is not None:
            guard.release(d.ticket)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def main() -> None:
    """Run both streams, then the scale scenario, and print; the headline figure (the live stream) last."""
    small = ControlState.from_records(ControlFile.load(DEFAULT_CONTROL).records())
    print(f"events: {N:,} simulated (one month of the demo tenant), {len(small.budgets)} budgets, {RUNS} runs each")
    results = {}
    live = events(N, LIVE_RATE)
    for name, raws in (
        ("month (sparse: ~1 event per 2 min)", events(N, None)),
        (f"live ({LIVE_RATE:,} events/s)", live),
    ):
        b, h, p, total = measure(raws, small)
        results[name] = h
        print(
            f"{name}: {h:.1f} µs/event = pricing stage {p:.1f} (decode, validate, identity, price, encode, deltas)"
            f" + spend stage {h - p:.1f}; plain loop (parse JSON, sum tokens) {b:.2f}; ratio {h / b:.1f}x;"
            f" total {total:,} nano-USD"
        )
    wire = [(f"{k}/{i}", encode(r)) for k, i, r in scale_records() if r is not None]  # what the control topic holds
    replayed = {}
    for role, kinds in (("worker", WORKER_KINDS), ("ingest", frozenset({"key"}))):
        before = rss_bytes()
        t0 = time.perf_counter()
        state = ControlState(kinds=kinds)
        for offset, (key, value) in enumerate(wire):
            state.apply(key, value, offset)
        replayed[role] = (state, time.perf_counter() - t0, rss_bytes() - before)
    big, worker_s, worker_rss = replayed["worker"]
    keys_state, ingest_s, ingest_rss = replayed["ingest"]
    n_budgets, n_keys = len(big.budgets), len(keys_state.keys)
    tenants = len({b.tenant for b in big.budgets.values()})
    print(
        f"control topic of {len(wire):,} records: a worker replays its {n_budgets:,} budgets "
        f"({tenants:,} tenants) in {worker_s:.1f} s, +{worker_rss / 2**20:.0f} MiB"
        f" ({worker_rss // n_budgets:,} bytes per budget); ingest its {n_keys:,} keys in {ingest_s:.1f} s,"
        f" +{ingest_rss / 2**20:.0f} MiB ({ingest_rss // n_keys:,} bytes per key)"
    )
    lookups = [hashlib.sha256(f"key-{k:07d}".encode()).hexdigest() for k in range(0, 1_000_000, 50)]
    t0 = time.perf_counter()
    found = sum(keys_state.key_for(d, "ingest") is not None for d in lookups)
    key_us = (time.perf_counter() - t0) / len(lookups) * 1e6
    assert found == len(lookups)
    print(f"ingest key lookup with {n_keys:,} keys: {key_us:.2f} µs (digest given)")
    runs = [(measure(live, small), measure(live, big)) for _ in range(2)]  # interleaved: drift hits both
    h_small, total_small = min(r[0][1] for r in runs), runs[0][0][3]
    h_big, total_big = min(r[1][1] for r in runs), runs[0][1][3]
    assert total_small == total_big, "the same events cost the same whatever other budgets exist"
    print(
        f"live stream with {n_budgets:,} budgets: {h_big:.1f} µs/event vs {h_small:.1f} with {len(small.budgets)}"
        f" (same run): ratio {h_big / h_small:.2f}x"
    )
    p50, p99 = gateway_decisions(small)
    p50b, p99b = gateway_decisions(big)
    print(
        f"gateway decision: p50 {p50:.1f} / p99 {p99:.1f} µs with {len(small.budgets)} breakers; "
        f"p50 {p50b:.1f} / p99 {p99b:.1f} µs with {n_budgets:,}"
    )
    print(f"hot path: {results[f'live ({LIVE_RATE:,} events/s)']:.1f} µs/event")


if __name__ == "__main__":
    main()
