"""Restart a worker whose table recovery stopped making progress (a faust-streaming stall).

After partitions move, Faust's recovery sometimes never receives a changelog record for the
partitions it must restore ("No event received for active tp ... since recovery start";
akin to faust-streaming #74 and #155): seen in 1 of 49, then 2 of ~10, two-worker crash runs
under CPU load. Nothing is miscounted, but nothing moves until the process restarts, and a
restarted worker recovers. So the worker watches the records its recovery still has to read
(``Recovery.active_remaining_total()``) and, when that number has not fallen for
``TOKENLEDGER_RECOVERY_STALL_S`` (default 30 s) while the broker answers, replaces itself with
a fresh process (``exec``: same pid, same command). That is a kill -9 and restart, which the
crash tests prove exact.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)
STALL_S = float(os.environ.get("TOKENLEDGER_RECOVERY_STALL_S", "30"))


class RecoveryWatch:
    """Tells a stalled recovery from a slow one: the records left must fall within ``stall_s``."""

    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_s = stall_s
        self._clock = clock
        self._least: int | None = None  # the fewest records left seen in this recovery
        self._since = clock()  # when that number was first seen

    def observe(self, in_recovery: bool, remaining: int) -> float | None:
        """Seconds without progress when the recovery counts as stalled, else ``None``."""
        now = self._clock()
        if not in_recovery or self._least is None or remaining < self._least:
            self._least = remaining if in_recovery else None
            self._since = now
            return None
        idle = now - self._since
        return idle if remaining > 0 and idle >= self._stall_s else None

    def reset(self) -> None:
        """Start over (the broker was away: not a stall)."""
        self._least = None
        self._since = self._clock()


def restart_process(reason: str) -> NoReturn:
    """Replace this process with a fresh run of the same command (same pid, same environment)."""
    log.error("%s: restarting this worker", reason)
    logging.shutdown()
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - the same command, no shell
