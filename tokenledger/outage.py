"""A dependency's outage, said once when it starts and once when it ends (with its length).

Between the two lines only counters move: a retry loop that logged every attempt wrote
thousands of lines for one broker restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol


class OutageLog(Protocol):
    """Where a retry loop reports a dependency's failures and its recovery."""

    def down(self, exc: BaseException | str) -> None:
        """It did not answer."""
        ...

    def up(self) -> None:
        """It answered."""
        ...


class Outage:
    """One dependency (a store, a broker, Redis) as seen by one component."""

    def __init__(
        self,
        what: str,
        where: str,
        consequence: str,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.where, self.consequence = what, where, consequence
        self.since: float | None = None
        self.failures = 0
        self._log = logger or logging.getLogger("tokenledger.outage")
        self._clock = clock

    @property
    def name(self) -> str:
        """What and where, as the log lines say it."""
        return f"{self.what} {self.where}".strip()

    def down(self, exc: BaseException | str) -> None:
        """It did not answer (logs only the first time of an outage)."""
        self.failures += 1
        if self.since is None:
            self.since = self._clock()
            self._log.warning("%s unavailable (%s): %s", self.name, exc, self.consequence)

    def up(self) -> None:
        """It answered (logs only when an outage ends)."""
        if self.since is not None:
            self._log.warning(
                "%s back after %.1f s (%d failed attempts)", self.name, self._clock() - self.since, self.failures
            )
            self.since, self.failures = None, 0
        else:
            self.failures = 0
