"""librdkafka's log lines through Python logging, at the level of what an operator should do.

An idempotent producer's first request waits for the broker's transaction coordinator; on a
broker that just started (or after a coordinator moved) librdkafka logs ``Failed to acquire
idempotence PID ... Coordinator load in progress: retrying`` as a warning, then succeeds. It
is routine, so it is logged at DEBUG; anything else keeps librdkafka's own severity.
"""

from __future__ import annotations

import logging

_ROUTINE = ("Coordinator load in progress", "Coordinator not available")


class Routine(logging.Filter):
    """Lowers librdkafka's routine start-up retries to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; demote the routine ones."""
        text = record.getMessage()
        if record.levelno > logging.DEBUG and any(r in text for r in _ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


RDKAFKA = logging.getLogger("rdkafka")
if not any(isinstance(f, Routine) for f in RDKAFKA.filters):
    RDKAFKA.addFilter(Routine())
