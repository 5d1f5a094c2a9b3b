from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from stream_jobs.identities import PACKING as IDENTITY_PACKING
from stream_jobs.identities import BatchIdentities, HashBag, batch_key, is_repeat, pack_record, unpack_record
from stream_jobs.spend_state import Progress, When, add_spend, spent

SH = ZoneInfo("Asia/Shanghai")


def test_fold_keeps_calendar_periods_in_timezone_and_rolling_hour() -> None:
    t0 = datetime(2026, 10, 31, 15, 30, tzinfo=UTC)  # Oct 31 23:30 in Shanghai
    s = add_spend(None, When.of(t0, SH), 100)
    s = add_spend(s, When.of(t0 + timedelta(minutes=20), SH), 30)  # 23:50, still October
    s = add_spend(s, When.of(t0 + timedelta(minutes=40), SH), 50)  # Nov 1 00:10 in Shanghai
    assert s["month"] == {"2026-09-30T16:00Z": 130, "2026-10-31T16:00Z": 50}
    assert spent(s, "month", t0 + timedelta(minutes=40), SH) == 50
    assert spent(s, "day", t0, SH) == 130
    assert spent(s, "rolling_1h", t0 + timedelta(minutes=40), SH) == 180
    assert spent(s, "rolling_1h", t0 + timedelta(minutes=61), SH) == 80  # the 23:30 minute left
    # Two months later only the current and previous calendar periods are kept.
    s = add_spend(s, When.of(t0 + timedelta(days=40), SH), 7)
    assert len(s["month"]) == 2 and len(s["day"]) == 2
    assert spent(s, "month", t0 + timedelta(days=40), SH) == 7
    assert spent(s, "rolling_24h", t0 + timedelta(days=40), SH) == 7
    assert all(int(k) > int((t0 + timedelta(days=40)).timestamp()) - 49 * 3600 for k in s["hour"])


def test_fold_is_pure() -> None:
    w = When.of(datetime(2026, 10, 1, tzinfo=UTC), SH)
    a = add_spend(None, w, 5)
    b = add_spend(a, w, 5)
    assert a["day"] != b["day"] and spent(a, "day", w.at, SH) == 5 and spent(b, "day", w.at, SH) == 10


def test_batch_identities_index_and_expiry_per_partition() -> None:
    t: dict[str, Any] = {}
    ids = BatchIdentities(t)
    first = {"svc|r1": (100, 0, 5), "svc|r2": (900, 0, 6)}
    for partition, batch in [(0, first), (1, {"svc|r3": (100, 1, 3)}), (0, {"svc|r4": (200, 0, 9)})]:
        for pos, record in ids.records(batch):
            t[batch_key(partition, pos)] = record
    assert [pos for pos, _ in ids.records({f"r{i}": (1, 0, 10 + i) for i in range(5)}, per_record=2)] == [10, 12, 14]
    t["0:12"] = None  # a deleted record
    t["0:20"] = {"ids": [["svc|r5", 300, 20]]}  # as restored from the changelog (JSON)
    index = ids.of(0)
    assert [index.get(i) for i in ("svc|r1", "svc|r2", "svc|r4", "svc|r5", "svc|r3", "svc|nope")] == [
        (100, 0, 5),
        (900, 0, 6),
        (200, 0, 9),
        (300, 0, 20),
        None,  # recorded from partition 1
        None,
    ]
    assert len(index) == 4
    assert not is_repeat(index.get("svc|r1"), 0, 5)  # its own replay
    assert is_repeat(index.get("svc|r1"), 0, 7)  # a second copy
    # Only records of partition 0 whose every identity is past the horizon.
    assert sorted(ids.expired(0, 500)) == ["0:20", "0:9"]
    assert "svc|r4" not in ids.of(0) and "svc|r3" in ids.of(1)
    ids.forget_index()
    del t["0:9"], t["0:20"]
    assert [ids.of(0).get(i) for i in first] == list(first.values())
    assert len(ids.of(0)) == 2


def test_packed_identity_records_round_trip_and_collisions_are_confirmed() -> None:
    """A record's changelog form is the JSON of before; a hash match alone never makes a duplicate."""
    rows = [("//svc/a|req-1", 1_762_156_800, 5 * 65_536), ("//svc/b|x", 7, 2**40 + 3)]
    packed = pack_record(rows)
    assert unpack_record(packed) == rows
    assert IDENTITY_PACKING.unpack(packed) == {"ids": [list(r) for r in rows]}
    assert IDENTITY_PACKING.pack(IDENTITY_PACKING.unpack(packed)) == packed
    assert unpack_record(pack_record([])) == []
    t: dict[str, Any] = {batch_key(0, 5): packed}
    index = BatchIdentities(t).of(0)
    # Make another identity share a hash: the index says "maybe", the records say no.
    index.hashes.add(hash(b"//svc/a|req-2"))
    assert index.get("//svc/a|req-2") is None
    assert index.get("//svc/b|x") == (7, 0, 2**40 + 3)


def test_hash_bag_is_a_multiset() -> None:
    bag = HashBag()
    values = [(i * 2_654_435_761) % 2**64 - 2**63 for i in range(5_000)] + [42, 42]
    for h in values:
        bag.add(h)
    assert len(bag) == 5_002 and all(h in bag for h in values) and 43 not in bag
    bag.discard(42)
    assert 42 in bag and len(bag) == 5_001
    bag.discard(42)
    bag.discard(42)  # absent: nothing happens
    assert 42 not in bag and len(bag) == 5_000


def test_progress_tells_replay_from_live() -> None:
    clock = [1000.0]
    p = Progress(monotonic=lambda: clock[0])
    wall = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    p.seen(datetime(2026, 11, 18, 6, 0, tzinfo=UTC))  # replaying four days back
    assert not p.live(wall)
    clock[0] += 61  # no event for a minute: idle, so live
    assert p.live(wall)
    p.seen(wall - timedelta(minutes=2))  # caught up
    assert p.live(wall)
    p.seen(datetime(2026, 11, 1, tzinfo=UTC))  # an old event does not move the watermark back
    assert p.watermark == wall - timedelta(minutes=2)
