"""Log lines at the level of what an operator should do about them.

Faust warns ``producer buffer full size N`` whenever more than 100 table-changelog records
wait to be sent, and then logs how long the flush took. That is its backpressure working
as designed under normal load (the stream pauses until the broker caught up): nothing to act
on, so no log line. Each wait is counted in ``tokenledger_producer_backpressure_total``
instead; a rate that keeps climbing means the broker is slower than the stage, which the
consumer-lag alert already reports.
"""

from __future__ import annotations

import logging

from tokenledger import metrics

_ROUTINE = ("producer buffer full", "producer flush took")


class Backpressure(logging.Filter):
    """Drops Faust's routine backpressure lines and counts the waits."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for the two routine lines; everything else passes unchanged."""
        message = str(record.msg)
        if message.startswith(_ROUTINE[0]):
            metrics.PRODUCER_BACKPRESSURE.inc()
            return False
        return not message.startswith(_ROUTINE[1])


class CoordinatorRetry(logging.Filter):
    """Demotes aiokafka's ERROR for a retried coordinator lookup to DEBUG (and counts it).

    The group coordinator is not available yet at every worker start, while
    ``__consumer_offsets`` loads; aiokafka retries by itself. A non-retriable one stays an ERROR.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote retried lookups; keep the rest."""
        if str(record.msg).startswith("Group Coordinator Request failed") and record.args:
            err = record.args[0] if isinstance(record.args, tuple) else None
            if getattr(err, "retriable", False):
                metrics.TRANSIENT.labels("worker", "coordinator").inc()
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def install() -> None:
    """Attach the filters to Faust's producer logger and aiokafka's coordinator logger (idempotent)."""
    logger = logging.getLogger("faust.transport.producer")
    if not any(isinstance(f, Backpressure) for f in logger.filters):
        logger.addFilter(Backpressure())
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    if not any(isinstance(f, CoordinatorRetry) for f in coordinator.filters):
        coordinator.addFilter(CoordinatorRetry())


LIBRARIES = ("faust", "mode", "aiokafka")


def quiet_library_debug(argv: list[str]) -> list[str]:
    """Below ``-l debug``, Faust, mode and aiokafka log from INFO up: their loggers build no debug records.

    Until the worker has started (:func:`drop_spinner_debug`) the root logger sits at DEBUG
    for Faust's spinner, and Faust's changelog recovery logs two debug lines per record:
    building them took 16 % of a restarted spend worker's replay (py-spy). Returns the loggers set.
    """
    level = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-l", "--loglevel")), "warn")
    level = next((a.split("=", 1)[1] for a in argv if a.startswith("--loglevel=")), level)
    if level.lower() == "debug":
        return []
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO)
    return list(LIBRARIES)


def drop_spinner_debug(root: logging.Logger | None = None) -> int:
    """Undo the DEBUG root level Faust sets for its start-up spinner; returns the level kept.

    With ``-l warn`` (or higher) Faust's worker adds a spinner handler at DEBUG and lowers the
    root logger to DEBUG, so every aiokafka and Faust debug call builds a record that no
    handler prints (5-9 % of a worker's CPU was measured). Once started, the spinner is done:
    its handlers go and the root level returns to the lowest level a remaining handler prints.
    """
    root = root or logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "SpinnerHandler":
            root.removeHandler(handler)
    levels = [h.level for h in root.handlers if h.level > logging.NOTSET]
    if root.level == logging.DEBUG and levels and min(levels) > logging.DEBUG:
        root.setLevel(min(levels))
    return root.level
