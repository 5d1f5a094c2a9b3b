"""A fix for a message-skipping race in faust-streaming 0.15.x recovery (applied at import).

What goes wrong (seen here with a kill -9 and restart, about 1 run in 8 under load): after
table recovery Faust *resumes* the stream partitions while its fetcher is already running,
and only then seeks them to their committed offsets (``Recovery.on_recovery_completed`` and
``Recovery._resume_streams``). Records fetched in that window are delivered while the seek
rewrites the consumer's read offsets under them; the read-offset guard in
``Consumer._drain_messages`` then drops the re-fetched records as already read, and the
commit moves past them. Traced per record in the pricing agent: after the restart it
received raw offsets 4, 5, 7, 8 of partition 0 (6 never), 6, 7, 9 of partition 1 and
8, 11 of partition 2, with the skipped requests never priced although their offsets were
committed.

The fix keeps Faust's code and order, but stops the consumer's flow (no record is handed to
the streams) from before the stream partitions are resumed until their seek to the committed
offsets has completed; the flow resumes afterwards, as in Faust. (Seeking paused partitions
first and resuming them afterwards was tried: the fetcher then never served them.)
Only the two methods are replaced, and only on the faust-streaming versions they were
copied from (0.15.x); on any other version nothing is patched and a warning says so.

Still needed on Apache Kafka 3.9 (checked 2026-11-23 with the patch disabled): in 8 runs of
``test_crash_exact.py``'s kill -9 tests, 2 spend-worker restarts never consumed again (59 and
61 priced events left uncommitted, the worker idle after "Worker ready"); with the patch the
same tests pass in every run.

The same place also seeks stream partitions *without* a committed offset to their start (see
``_seek_uncommitted_to_start``): without it, 2 of 4 runs of the two-worker crash test with a
core kept busy lost a partition's first records.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.tables.recovery import Recovery

log = logging.getLogger(__name__)
PATCHED_VERSIONS = ("0.15.",)


async def _seek_then_resume(self: Any, generation_id: int) -> bool:
    """Resume the stream partitions and seek them to their committed offsets with the flow stopped."""
    app = self.app
    consumer = app.consumer
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return False
    if assignment:
        # No delivery while the positions are rewritten: the fetcher is already running (it
        # read the changelogs), and a record delivered now would set a read offset that makes
        # the consumer drop the same records after the seek. The callers resume the flow.
        consumer.stop_flow()
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.log.info("Seek stream partitions to committed offsets (flow stopped).")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        await _seek_uncommitted_to_start(self, consumer)
    else:
        self.log.info("Resuming streams with empty assignment")
    return True


async def _seek_uncommitted_to_start(self: Any, consumer: Any) -> None:
    """Seek stream partitions without a committed offset (or committed 0) to their start.

    aiokafka's ``seek_to_committed`` leaves such partitions where the fetcher was, so records
    it had already fetched and Faust discarded during the rebalance are never fetched again,
    and Faust's commit (which checks for a hole at the head only when the committed offset is
    non-zero) then moves past them: seen here as offsets 0 of partition 1 and 0-1 of partition
    2 never priced while their offsets were committed, after a second worker joined under load.
    Seeking to 0 refetches them (past the log start, the reset policy ``earliest`` applies).
    """
    committed = await asyncio.wait_for(consumer.seek_to_committed(), self.app.conf.broker_request_timeout)
    for tp, offset in (committed or {}).items():
        if not offset and not self._is_changelog_tp(tp):
            await consumer.seek(tp, 0)


async def _resume_flow(self: Any, *, standbys_ready: bool) -> None:
    """Faust's common ending of both methods: mark recovery done and let records flow again."""
    app = self.app
    self.completed.set()
    app.flow_control.resume()
    app.consumer.resume_flow()
    await cast(Any, app)._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if standbys_ready:
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    app = self.app
    await app.on_rebalance_complete.send()
    if not await _seek_then_resume(self, generation_id):
        return
    self.log.info("Resuming flow...")
    await _resume_flow(self, standbys_ready=True)


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    app = self.app
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    if not await _seek_then_resume(self, generation_id):
        return
    await _resume_flow(self, standbys_ready=not app.assignor.assigned_standbys())


def apply() -> bool:
    """Patch ``Recovery`` on the versions the fix was written for; True when patched."""
    version = str(faust.__version__)
    if not version.startswith(PATCHED_VERSIONS):
        log.warning("faust-streaming %s: recovery seek-before-resume fix not applied (written for 0.15.x)", version)
        return False
    Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    return True


PATCHED = apply()
