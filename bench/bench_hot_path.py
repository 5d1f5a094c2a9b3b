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
(the least any Python consumer does), and prints the hot path as a ratio of it. The last line
is the headline, the live stream: ``hot path: <N> µs/event`` (median of 5 runs). Not a timed
test.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stream_jobs.budget_fold import fold_budget
from stream_jobs.delta_batch import DeltaBatch
from stream_jobs.spend_codec import PackedView
from stream_jobs.spend_state import SpendFold
from tokenledger.batch_pricing import request_identity
from tokenledger.budget_eval import BudgetStatus
from tokenledger.budgets import BudgetFile
from tokenledger.event_time import outside_window
from tokenledger.identity import placement_key
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, price
from tokenledger.sample import simulate
from tokenledger.schema.deltas import BUDGET_PREFIX, decode_delta
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import encode_priced
from tokenledger.schema.raw_batch import partition_for

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


def hot_path(raws: list[bytes], budgets: BudgetFile, batch: int = BATCH) -> tuple[int, dict[str, Any], float]:
    """Both stages' pure work, batch by batch as the agents do it.

    Returns the total cost (nano-USD), the spend and budget state, and the share of the time
    spent in the pricing stage.
    """
    table = CachedPriceTable(LayeredPriceTable.from_path())
    tz = budgets.tz
    by_id = {b.id: b for b in budgets.budgets}
    state: dict[str, Any] = {}
    spend = PackedView(state)
    statuses: dict[str, BudgetStatus | None] = {}
    seen: set[str] = set()
    total = 0
    pricing_s = 0.0
    for start in range(0, len(raws), batch):
        t0 = time.perf_counter()
        deltas = DeltaBatch(budgets.budgets)  # pricing stage
        priced: list[bytes] = []
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
            cost = price(ev.data, ev.time, table)
            priced.append(encode_priced(ev, cost))
            total += cost.total_nanos
            deltas.add_event(0, offset, at_us, cost.total_nanos, ev)
        messages = deltas.messages()
        pricing_s += time.perf_counter() - t0
        for _, wire in messages:  # spend stage
            delta = decode_delta(wire)
            if not delta.key.startswith(BUDGET_PREFIX):
                fold = SpendFold(spend.get(delta.key))
                fold.add_entries(delta.entries, tz)
                spend[delta.key] = fold.state()  # packed, as the spend agent's table keeps it
                continue
            budget = by_id[delta.key.removeprefix(BUDGET_PREFIX)]
            state[delta.key], statuses[budget.id], _ = fold_budget(
                budget, state.get(delta.key), statuses.get(budget.id), delta.entries, tz=tz, tz_name=budgets.timezone
            )
    return total, state, pricing_s


def measure(raws: list[bytes], budgets: BudgetFile) -> tuple[float, float, float, int]:
    """Medians over RUNS of the plain loop, the hot path and its pricing stage (µs/event), and the total."""
    base, hot, pricing = [], [], []
    total = None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        baseline(raws)
        base.append((time.perf_counter() - t0) / len(raws) * 1e6)
        t0 = time.perf_counter()
        got, _, pricing_s = hot_path(raws, budgets)
        hot.append((time.perf_counter() - t0) / len(raws) * 1e6)
        pricing.append(pricing_s / len(raws) * 1e6)
        assert total is None or got == total, "the hot path must be deterministic"
        total = got
    assert total is not None
    return statistics.median(base), statistics.median(hot), statistics.median(pricing), total


def main() -> None:
    """Run both streams and print; the headline figure (the live stream) last."""
    budgets = BudgetFile.load()
    print(f"events: {N:,} simulated (one month of the demo tenant), {len(budgets.budgets)} budgets, {RUNS} runs each")
    results = {}
    for name, rate in (("month (sparse: ~1 event per 2 min)", None), (f"live ({LIVE_RATE:,} events/s)", LIVE_RATE)):
        b, h, p, total = measure(events(N, rate), budgets)
        results[name] = h
        print(
            f"{name}: {h:.1f} µs/event = pricing stage {p:.1f} (decode, validate, identity, price, encode, deltas)"
            f" + spend stage {h - p:.1f}; plain loop (parse JSON, sum tokens) {b:.2f}; ratio {h / b:.1f}x;"
            f" total {total:,} nano-USD"
        )
    print(f"hot path: {results[name]:.1f} µs/event")


if __name__ == "__main__":
    main()
