"""A worker is ready after recovery, and reports itself for a restart when a rebalance never ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream_jobs.diagnostics import watch_health
from tokenledger.health import HEALTH


def test_ready_after_recovery_and_live_until_stuck() -> None:
    completed = asyncio.Event()
    recovery = SimpleNamespace(completed=completed, in_recovery=False, active_remaining_total=lambda: 0)
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery), rebalancing=False)

    async def scenario() -> list[tuple[bool, dict[str, str]]]:
        task = asyncio.create_task(watch_health(app, lambda: True, beat_s=0.01, stuck_after_s=0.2))
        seen = []
        await asyncio.sleep(0.05)
        seen.append(HEALTH.report(HEALTH.ready))  # recovering
        completed.set()
        await asyncio.sleep(0.05)
        seen.append(HEALTH.report(HEALTH.ready))  # ready
        app.rebalancing = True
        await asyncio.sleep(0.05)
        seen.append(HEALTH.report(HEALTH.live))  # rebalancing, not yet stuck: live
        await asyncio.sleep(0.3)
        seen.append(HEALTH.report(HEALTH.live))  # stuck: not live
        assert not task.done()  # the beat goes on (a failing check would end it silently)
        task.cancel()
        return seen

    try:
        recovering, ready, rebalancing, stuck = asyncio.run(scenario())
    finally:  # the registry is process-wide
        for checks in (HEALTH.live, HEALTH.ready):
            for name in ("event-loop", "not-stuck", "recovered"):
                checks.pop(name, None)
    assert recovering == (False, {"recovered": "recovering table changelogs"})
    assert ready == (True, {})
    assert rebalancing == (True, {})
    assert not stuck[0] and stuck[1]["not-stuck"].startswith("not ready for ")
    assert stuck[1]["not-stuck"].endswith("(rebalancing): restart me")
