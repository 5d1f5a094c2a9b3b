"""Gateway decisions: latency alone, and the overshoot with and without local reservations.

1. ``Guard.decide`` + ``complete`` for 1,000 known budgets (50 tenants x 20 budgets), real
   prices (genai-prices + overrides), single thread: p50/p99 in microseconds.
2. Overshoot: a runaway loop of 32 concurrent gpt-4o calls (8,000 prompt + up to 1,200 output
   tokens, ~2.6 s each) against a 20 USD budget, while breaker updates reach the gateway
   with a pipeline delay of 1 s (the measured crossing -> deny p50 is ~0.8 s). Simulated
   time, the real Guard: spend past the limit with reservations vs with breakers alone.

Prints numbers measured in one run. Not a timed test.
"""

from __future__ import annotations

import heapq
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from producers.gateway.reservations import worst_case_pricer
from tokenledger.guard import Guard, GuardRequest
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, UsageRecord, price

NOW = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)
LIMIT = 20_000_000_000  # 20 USD


def breaker(budget_id: str, tenant: str, scope: dict[str, str], spent: int, at: datetime) -> dict[str, Any]:
    state = "broken" if spent >= LIMIT else "throttled" if spent >= LIMIT * 8 // 10 else "normal"
    if spent >= LIMIT // 2 and state == "normal":
        state = "warning"
    return {
        "budget_id": budget_id,
        "tenant": tenant,
        "scope": scope,
        "state": state,
        "spent_nanos": spent,
        "limit_nanos": LIMIT,
        "throttle_nanos": LIMIT * 8 // 10,
        "period_end": (NOW + timedelta(days=1)).isoformat(),
        "updated_at": at.isoformat(),
        "fail_open": False,
    }


def latency(table: CachedPriceTable) -> None:
    """Decision latency with 1,000 budgets."""
    guard = Guard(worst_case_pricer(table))
    for t in range(50):
        for b in range(20):
            scope = {"project": f"p{b}"} if b % 2 else {"department": f"d{b}"}
            guard.apply(breaker(f"t{t}-b{b}", f"tenant-{t}", scope, 0, NOW), f"t{t}-b{b}", 0.0)
    guard.bootstrapped = True
    rng = random.Random(1)
    samples: list[int] = []
    for i in range(50_000):
        req = GuardRequest(
            f"tenant-{i % 50}", {"project": f"p{i % 20}", "department": f"d{i % 20}"}, "gpt-4o", 800, 500
        )
        t0 = time.perf_counter_ns()
        d = guard.decide(req, NOW, 1.0, rng.random())
        if d.ticket is not None:
            guard.complete(d.ticket, 1_000, NOW, 1.0)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    p50, p99 = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
    print(f"decide + complete, 1,000 budgets, 50,000 requests: p50 {p50:.1f} us, p99 {p99:.1f} us")


def overshoot(table: CachedPriceTable, *, reservations: bool, delay_s: float = 1.0) -> tuple[int, int, int]:
    """Simulated runaway loop; returns (spent nano-USD, admitted, refused)."""
    guard = Guard(worst_case_pricer(table), reservations=reservations, hold_s=0.0)
    scope = {"project": "agents"}
    guard.apply(breaker("agents", "acme", scope, 0, NOW), "agents", 0.0)
    guard.bootstrapped = True
    rng = random.Random(7)
    spent, admitted, refused = 0, 0, 0
    clock = 0.0
    # (time, kind, payload): completions and breaker deliveries in simulated seconds.
    events: list[tuple[float, int, int, Any]] = []
    seq = 0
    slots = 32
    while clock < 600:
        while events and events[0][0] <= clock:
            at, _, _, payload = heapq.heappop(events)
            if payload[0] == "done":
                _, ticket, cost = payload
                spent += cost
                if ticket is not None:
                    guard.complete(ticket, cost, NOW + timedelta(seconds=at), at)
                slots += 1
                seq += 1
                heapq.heappush(
                    events,
                    (
                        at + delay_s,
                        1,
                        seq,
                        ("breaker", spent, NOW + timedelta(seconds=at)),
                    ),
                )
            else:
                _, total, when = payload
                guard.apply(breaker("agents", "acme", scope, total, when), "agents", at)
        if slots == 0:
            clock = events[0][0]
            continue
        req = GuardRequest("acme", {"project": "agents"}, "gpt-4o", 8_000, 1_200)
        d = guard.decide(req, NOW + timedelta(seconds=clock), clock, rng.random())
        if not d.admitted:
            refused += 1
            clock += 0.05  # the loop retries quickly
            continue
        admitted += 1
        slots -= 1
        out = rng.randint(600, 1_200)
        cost = price(UsageRecord("openai", d.model, 8_000, out), NOW, table).total_nanos
        seq += 1
        heapq.heappush(events, (clock + 2.6, 0, seq, ("done", d.ticket, cost)))
    while events:  # let the last calls finish
        _, _, _, payload = heapq.heappop(events)
        if payload[0] == "done":
            spent += payload[2]
    return spent, admitted, refused


def main() -> None:
    """Run and print."""
    table = CachedPriceTable(LayeredPriceTable.from_path())
    latency(table)
    for reservations in (True, False):
        spent, admitted, refused = overshoot(table, reservations=reservations)
        over = max(0, spent - LIMIT)
        label = "with reservations " if reservations else "breakers alone    "
        print(
            f"runaway, 32 in flight, 1 s pipeline delay, {label}: spent {spent / 1e9:.4f} USD of 20 USD, "
            f"overshoot {over / 1e9:.4f} USD ({admitted} admitted, {refused} refused)"
        )


if __name__ == "__main__":
    main()
