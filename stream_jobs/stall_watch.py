"""Notice a consumer that is behind the end of its topic yet receives nothing.

A healthy consumer with lag gets records; one that polls empty while the high watermark is ahead
of its position is stuck, and nothing in librdkafka reports it: the broker answers each fetch
without records and without an error (observed with tansu 0.6's S3 engine when listing a
partition outlasts ``fetch.wait.max.ms``). Pure: the caller supplies the clock readings and lag.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StallWatch:
    """Per-consumer stall bookkeeping (monotonic seconds)."""

    started_at: float
    stall_after_s: float = 60.0
    check_every_s: float = 5.0
    reported: bool = False

    def __post_init__(self) -> None:
        self._last_record = self._last_check = self.started_at

    def polled(self, now: float, received: int) -> bool:
        """Record one poll; True when the caller should measure lag and call :meth:`lag_is`."""
        if received:
            self._last_record = now
            return False
        if now - self._last_check < self.check_every_s:
            return False
        self._last_check = now
        return True

    def lag_is(self, now: float, lag: int) -> tuple[float, bool]:
        """Seconds stalled (0 when caught up) and whether the stall should be reported now."""
        if lag == 0:
            self._last_record, self.reported = now, False
            return 0.0, False
        stalled_s = now - self._last_record
        report = stalled_s >= self.stall_after_s and not self.reported
        self.reported = self.reported or report
        return stalled_s, report
