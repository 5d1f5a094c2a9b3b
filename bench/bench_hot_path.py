"""The pure hot path per event: decode -> validate -> price -> fold into every dimension -> budgets.

Runs exactly the library calls the pricing and spend agents make for each event, without
Kafka or Faust (their per-message cost is measured by ``bench_pipeline.py``): the pricing
stage decodes and validates the wire event, takes its request identity, prices it and
encodes the priced event; the spend stage decodes that, computes its calendar keys, folds
the cost into the state of every dimension value and evaluates every matching budget.

Also measures, in the same run, a plain loop that only parses each event's JSON and sums its
tokens (the least any Python consumer does), and prints the hot path as a ratio of it. The
last line is the headline: ``hot path: <N> µs/event`` (median of 5 runs over 20,000 simulated
events of a month). Not a timed test.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_jobs.spend_state import DIMENSIONS, When, add_spend, labels_of, spent, state_key
from tokenledger.batch_pricing import request_identity
from tokenledger.budget_eval import BudgetStatus, evaluate, matches
from tokenledger.budgets import BudgetFile
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, price
from tokenledger.sample import simulate
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import decode_priced, encode_priced

N = 20_000
RUNS = 5


def events(n: int) -> list[bytes]:
    """``n`` simulated wire events (one month of the demo tenant's traffic, repeated as needed)."""
    out: list[bytes] = []
    while len(out) < n:
        for doc in simulate(datetime(2026, 10, 1, tzinfo=UTC), 31, seed=len(out) + 7):
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


def hot_path(raws: list[bytes], budgets: BudgetFile) -> tuple[int, dict[str, Any]]:
    """Both stages' pure work for every event; returns the total cost (nano-USD) and the state."""
    table = CachedPriceTable(LayeredPriceTable.from_path())
    tz = budgets.tz
    state: dict[str, Any] = {}
    statuses: dict[str, BudgetStatus | None] = {}
    seen: set[str] = set()
    total = 0
    for raw in raws:
        ev = decode_usage_event(raw)  # pricing stage
        request = request_identity(ev)
        if request in seen:
            continue
        seen.add(request)
        cost = price(ev.data, ev.time, table)
        wire = encode_priced(ev, cost)
        priced = decode_priced(wire)  # spend stage
        nanos = priced.cost.to_cost().total_nanos
        total += nanos
        labels = labels_of(priced)
        tenant = labels["tenant"]
        when = When.of(priced.event.time, tz)
        for dim in DIMENSIONS:
            if labels[dim]:
                key = state_key(tenant, dim, labels[dim])
                state[key] = add_spend(state.get(key), when, nanos)
        for budget in budgets.budgets:
            if matches(budget, tenant, labels, labels["model"]):
                key = f"budget:{budget.id}"
                state[key] = add_spend(state.get(key), when, nanos)
                statuses[budget.id], _, _ = evaluate(
                    budget,
                    statuses.get(budget.id),
                    spent(state[key], budget.period, when.at, tz),
                    when.at,
                    budgets.timezone,
                )
    return total, state


def main() -> None:
    """Run and print; the headline figure last."""
    raws = events(N)
    budgets = BudgetFile.load()
    base, hot = [], []
    total = None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        baseline(raws)
        base.append((time.perf_counter() - t0) / N * 1e6)
        t0 = time.perf_counter()
        got, _ = hot_path(raws, budgets)
        hot.append((time.perf_counter() - t0) / N * 1e6)
        assert total is None or got == total, "the hot path must be deterministic"
        total = got
    b, h = statistics.median(base), statistics.median(hot)
    print(f"events: {N:,} simulated (one month of the demo tenant), {len(budgets.budgets)} budgets, {RUNS} runs")
    print(f"total priced: {total:,} nano-USD")
    print(f"plain loop (parse JSON, sum tokens): {b:.2f} µs/event")
    print(f"hot path / plain loop: {h / b:.1f}x")
    print(f"hot path: {h:.1f} µs/event")


if __name__ == "__main__":
    main()
