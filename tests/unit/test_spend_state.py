from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from stream_jobs.identities import expire_identities
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


def test_identity_expiry_only_touches_its_partition() -> None:
    t: dict[str, list[int] | None] = {"a": [100, 0], "b": [100, 1], "c": [900, 0], "d": None}
    assert expire_identities(t, 0, 500) == 1
    assert sorted(t) == ["b", "c", "d"]


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
