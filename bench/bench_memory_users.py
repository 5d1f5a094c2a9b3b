"""Worker memory with 1 M distinct users.

Folds 1,000,000 priced requests, each from a different user, into the spend agent's state
exactly as the agent does (``spend_state.add_spend`` per dimension: tenant, user,
department, project, model, feature, api key; day, month and rolling-hour buckets) and
remembers each request identity as the pricing and spend agents' dedup tables do. Reports
process RSS growth and bytes per user, and the fold rate.

Faust's memory store keeps table values as these Python objects, and its changelogs carry
the same keys, so this is what a worker holds. Run: ``.venv/bin/python
bench/bench_memory_users.py [users]``. Not a timed test.
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from stream_jobs.spend_state import DIMENSIONS, When, add_spend, state_key

TZ = ZoneInfo("Asia/Shanghai")


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    """Fold and report."""
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    gc.collect()
    before = rss_bytes()
    spend: dict[str, object] = {}
    identities: dict[str, list[int]] = {}
    start = datetime(2026, 11, 3, tzinfo=UTC)
    t0 = time.perf_counter()
    for i in range(users):
        at = start + timedelta(seconds=i % 86_400)
        when = When.of(at, TZ)
        labels = {
            "tenant": "acme",
            "user": f"user-{i:07d}",
            "department": f"d{i % 12}",
            "project": f"p{i % 40}",
            "model": ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "deepseek-chat")[i % 4],
            "feature": f"f{i % 25}",
            "api_key": f"key-{i % 300}",
        }
        for dim in DIMENSIONS:
            key = state_key("acme", dim, labels[dim])
            spend[key] = add_spend(spend.get(key), when, 1_000_000 + i)  # type: ignore[arg-type]
        identities[f"//svc/app|req-{i:08d}"] = [int(at.timestamp()), i % 3]
    took = time.perf_counter() - t0
    gc.collect()
    grown = rss_bytes() - before
    print(
        f"{users:,} distinct users: {len(spend):,} spend keys + {len(identities):,} request identities; "
        f"RSS +{grown / 2**20:,.0f} MiB ({grown / users:,.0f} bytes per user); folded in {took:.1f} s "
        f"({users / took:,.0f} events/s, {took / users * 1e6:.0f} us/event)"
    )


if __name__ == "__main__":
    main()
