"""``kill -USR2 <worker pid>`` writes every asyncio task's stack and the consumer positions to stderr.

For diagnosing a stalled worker in production (where is each agent awaiting?) without a
debugger; it costs nothing until the signal arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from stream_jobs.recovery_watch import RecoveryWatch, restart_process
from tokenledger.errors import PermanentError


def dump_state(app: Any) -> None:
    """Print task stacks, assigned partitions and the consumer's positions."""
    out = sys.stderr
    print("==== tokenledger worker state dump ====", file=out)
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()} {task.get_coro()!r}", file=out)
        task.print_stack(limit=12, file=out)
    try:
        consumer = app.consumer
        assigned = sorted(consumer.assignment(), key=str)
        paused = {str(tp) for tp in getattr(consumer, "_paused_partitions", set())}
        print(f"assigned: {[str(tp) for tp in assigned]}", file=out)
        print(f"paused: {sorted(paused)}", file=out)
        print(f"acked/committed: {getattr(consumer, '_committed_offset', {})}", file=out)
        print(f"read offsets: {dict(getattr(consumer, '_read_offset', {}))}", file=out)
        print(f"flow active: {app.flow_control.is_active()}", file=out)
    except Exception as exc:  # diagnostics must never kill the worker
        print(f"consumer state unavailable: {exc!r}", file=out)
    print("==== end of dump ====", file=out, flush=True)


def install(app: Any) -> None:
    """Register the SIGUSR2 handler on the running loop."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_state, app)


async def watch_health(
    app: Any,
    broker_answers: Callable[[], bool],
    beat_s: float = 1.0,
    stale_after_s: float = 30.0,
    stuck_after_s: float | None = None,
) -> None:
    """Register the worker's checks and beat forever.

    Live while the event loop turns (a beat younger than ``stale_after_s``) and while it is not
    stuck in a rebalance or recovery for longer than ``stuck_after_s``
    (``TOKENLEDGER_STUCK_REBALANCE_S``, default 300 s): Faust can wedge a rebalance on a commit
    started before a broker crash, and a supervisor's liveness probe then restarts the worker.
    Ready once the changelog recovery finished and no rebalance is in progress. A recovery
    that reads nothing while ``broker_answers()`` restarts the process (``recovery_watch``).
    """
    from tokenledger.health import HEALTH  # noqa: PLC0415 - only in the worker process

    stuck_after = stuck_after_s or float(os.environ.get("TOKENLEDGER_STUCK_REBALANCE_S", "300"))
    last = [time.monotonic()]
    unready_since: list[float | None] = [None]

    def loop_turns() -> str | None:
        age = time.monotonic() - last[0]
        return None if age < stale_after_s else f"event loop blocked for {age:.0f} s"

    def recovered() -> str | None:
        if not app.tables.recovery.completed.is_set():
            return "recovering table changelogs"
        return "rebalancing" if app.rebalancing else None

    def not_stuck() -> str | None:
        since = unready_since[0]
        if since is None or time.monotonic() - since < stuck_after:
            return None
        return f"not ready for {time.monotonic() - since:.0f} s ({recovered()}): restart me"

    HEALTH.live["event-loop"] = loop_turns
    HEALTH.live["not-stuck"] = not_stuck
    HEALTH.ready["recovered"] = recovered
    watch = RecoveryWatch()
    while True:
        now = last[0] = time.monotonic()
        if recovered() is None:
            unready_since[0] = None
        elif unready_since[0] is None:
            unready_since[0] = now
        recovery = app.tables.recovery
        idle = watch.observe(bool(recovery.in_recovery), int(recovery.active_remaining_total()))
        if idle is not None:
            if await asyncio.to_thread(broker_answers):
                restart_process(
                    f"table recovery read none of its {recovery.active_remaining_total():,} changelog records"
                    f" for {idle:.0f} s (a faust-streaming stall)"
                )
            watch.reset()  # the broker is away: recovery waits for it, as it should
        await asyncio.sleep(beat_s)


def stop_worker(stage: str, exc: BaseException) -> NoReturn:
    """End the worker process now, from inside an agent, on an error its batch cannot survive.

    Faust would log the crash, acknowledge the batch's events and keep the worker running with
    the agent dead (seen with a refused produce): events lost and nothing consuming. Exiting
    before control returns to Faust leaves the batch uncommitted; it is replayed when the
    worker restarts. Exit status 2 for a permanent error (fix the cause), 1 otherwise.
    """
    permanent = isinstance(exc, PermanentError)
    logging.getLogger(__name__).critical(
        "%s agent failed, worker stops: %s", stage, exc, exc_info=None if permanent else exc
    )
    logging.shutdown()
    os._exit(2 if permanent else 1)
