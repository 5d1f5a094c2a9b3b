"""Worker memory with 1 M distinct users, in the workers' own tables.

Builds, for 1,000,000 distinct users with one request each, what a restarted pair of workers
holds once Faust has restored their tables from the changelogs:

* the spend worker's ``spend`` table: one record per dimension value (tenant, user,
  department, project, model, feature, api key), folded with ``SpendFold.add_entries`` and
  stamped with its last raw position, written to the changelog as the worker writes it (JSON)
  and restored through Faust's memory store (``apply_changelog_batch``, the recovery path);
* the pricing worker's ``priced-batches`` table (one record per 2,000 request identities, as
  the agent writes them) and the identity index built over it (``BatchIdentities.of``).

Reports RSS growth in bytes per distinct user (the spend table: what grows with users), per
request identity (what grows with requests over the 35-day dedup horizon), and both for this
one-request-per-user month. The headline is last. Run: ``.venv/bin/python
bench/bench_memory_users.py [users]``. Not a timed test.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import faust

from stream_jobs.batches import RAW_APPLIED
from stream_jobs.durable_table import PackedJsonCodec, durable_table
from stream_jobs.identities import PACKING as IDENTITY_PACKING
from stream_jobs.identities import BatchIdentities, batch_key
from stream_jobs.spend_codec import PACKING as SPEND_PACKING
from stream_jobs.spend_state import SpendFold, state_key

TZ = ZoneInfo("Asia/Shanghai")
START_US = 1_793_520_000_000_000  # 2026-11-01T08:00Z
PARTITIONS = 12
CHUNK = 20_000


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def changelog_event(key: str, wire: bytes, codec: PackedJsonCodec, partition: int) -> Any:
    """What Faust's recovery hands a table for one changelog record: the key and the decoded value."""
    return SimpleNamespace(key=key, value=codec.loads(wire), message=SimpleNamespace(partition=partition, value=wire))


def labels(i: int) -> dict[str, str]:
    return {
        "tenant": "acme",
        "user": f"user-{i:07d}",
        "department": f"d{i % 12}",
        "project": f"p{i % 40}",
        "model": ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "deepseek-chat")[i % 4],
        "feature": f"f{i % 25}",
        "api_key": f"key-{i % 300}",
    }


def spend_changelog(users: int) -> list[tuple[str, bytes]]:
    """The spend changelog of one request per user: every dimension key's record, as the worker writes it."""
    codec = PackedJsonCodec(SPEND_PACKING)
    folds: dict[str, SpendFold] = {}
    last: dict[str, int] = {}
    for i in range(users):
        at_us = START_US + i * 60_000  # 1M requests over ~17 hours
        pos = i * 65_536
        for dim, value in labels(i).items():
            key = state_key("acme", dim, value)
            fold = folds.get(key)
            if fold is None:
                fold = folds[key] = SpendFold(None)
            fold.add_entries([(i % PARTITIONS, pos, at_us, 1_000_000 + i)], TZ)
            last[key] = pos
    return [(key, codec.dumps({**fold.state(), RAW_APPLIED: {"0": last[key]}})) for key, fold in folds.items()]


def identity_changelog(requests: int) -> list[tuple[int, str, bytes]]:
    """Identity records of ``requests`` requests (2,000 a record per source partition), as the agent writes them."""
    codec = PackedJsonCodec(IDENTITY_PACKING)
    per_partition = -(-requests // PARTITIONS)
    out = []
    for partition in range(PARTITIONS):
        ids = {
            f"//svc/copilot|req-{partition:02d}-{n:08d}": (1_793_520_000 + n, partition, n * 65_536)
            for n in range(min(per_partition, requests - partition * per_partition))
        }
        for first, rec in BatchIdentities.records(ids):
            out.append((partition, batch_key(partition, first), codec.dumps(IDENTITY_PACKING.unpack(rec))))
    return out


def restore(kind: str, path: Path) -> dict[str, Any]:
    """In a fresh worker process: restore one table from its changelog file as Faust does; RSS growth."""
    app = faust.App("bench-memory", broker="kafka://127.0.0.1:1", store="memory://")
    packing = SPEND_PACKING if kind == "spend" else IDENTITY_PACKING
    table = durable_table(app, "spend" if kind == "spend" else "priced-batches", PARTITIONS, packing)
    codec = PackedJsonCodec(packing)
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    with path.open("rb") as f:
        # As Faust's recovery: each record decoded as it is fetched (its raw bytes then dropped),
        # the decoded events applied 1,000 at a time (recovery_buffer_size).
        events = []
        for line in f:
            partition, key, wire = line.rstrip(b"\n").split(b"\t", 2)
            events.append(changelog_event(key.decode(), wire, codec, int(partition)))
            if len(events) == 1_000:
                table.apply_changelog_batch(events)
                events = []
        table.apply_changelog_batch(events)
    if kind == "identities":
        identities = BatchIdentities(table)
        for p in range(PARTITIONS):
            identities.of(p)
        probe = identities.of(3).get("//svc/copilot|req-03-00000007")
        assert probe == (1_793_520_007, 3, 7 * 65_536), probe
        assert identities.of(3).get("//svc/copilot|req-03-x") is None
    took = time.perf_counter() - t0
    gc.collect()
    return {"bytes": rss_bytes() - before, "seconds": took, "records": len(table)}


def measure(kind: str, records: list[tuple[int, str, bytes]], tmp: Path) -> dict[str, Any]:
    """Write a changelog file and restore it in a fresh process (its RSS is the worker's)."""
    path = tmp / f"{kind}.log"
    with path.open("wb") as f:
        for partition, key, wire in records:
            f.write(b"%d\t%s\t%s\n" % (partition, key.encode(), wire))
    out = subprocess.run(
        [sys.executable, __file__, "--restore", kind, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    """Write both changelogs, restore each in a worker-like process, report; the headline last."""
    if sys.argv[1:2] == ["--restore"]:
        print(json.dumps(restore(sys.argv[2], Path(sys.argv[3]))))
        return
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        spend = measure("spend", [(0, key, wire) for key, wire in spend_changelog(users)], Path(tmp))
        ids = measure("identities", identity_changelog(users), Path(tmp))
    assert spend["records"] == users + 12 + 40 + 4 + 25 + 300 + 1
    per_user, per_id = spend["bytes"] / users, ids["bytes"] / users
    print(
        f"spend worker: {spend['records']:,} spend records for {users:,} distinct users: RSS "
        f"+{spend['bytes'] / 2**20:,.0f} MiB = {per_user:,.0f} bytes per user (restored in {spend['seconds']:.1f} s)"
    )
    print(
        f"pricing worker: {users:,} request identities in {ids['records']:,} records + index: RSS "
        f"+{ids['bytes'] / 2**20:,.0f} MiB = {per_id:,.0f} bytes per identity "
        f"(restored and indexed in {ids['seconds']:.1f} s)"
    )
    print(f"worker state per distinct user (one request each, both workers): {per_user + per_id:,.0f} bytes")


if __name__ == "__main__":
    main()
