"""Faust's routine backpressure lines are counted, not logged; other producer lines pass."""

from __future__ import annotations

import logging

import pytest

from stream_jobs import log_levels
from tokenledger import metrics


def test_backpressure_is_a_metric_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    log_levels.install()
    log_levels.install()  # idempotent
    logger = logging.getLogger("faust.transport.producer")
    before = metrics.PRODUCER_BACKPRESSURE._value.get()
    with caplog.at_level(logging.DEBUG, logger="faust.transport.producer"):
        logger.warning("producer buffer full size 101")
        logger.info("producer flush took 0.02")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert metrics.PRODUCER_BACKPRESSURE._value.get() - before == 1


class SpinnerHandler(logging.Handler):
    """Stands in for Faust's handler of the same name (matched by class name)."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def test_spinner_debug_level_is_undone() -> None:
    root = logging.Logger("faust-like-root")
    printing = logging.StreamHandler()
    printing.setLevel(logging.WARNING)  # -l warn
    root.addHandler(printing)
    root.addHandler(SpinnerHandler(level=logging.DEBUG))
    root.setLevel(logging.DEBUG)  # what Faust does while its spinner spins
    assert log_levels.drop_spinner_debug(root) == logging.WARNING
    assert root.handlers == [printing]
    assert not root.isEnabledFor(logging.DEBUG)


def test_library_loggers_build_no_debug_records_unless_asked() -> None:
    """Faust's recovery logs two debug lines per changelog record: below -l debug they are never built."""
    names = ("faust", "mode", "aiokafka")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.NOTSET)
        assert log_levels.quiet_library_debug(["python", "-m", "stream_jobs", "worker", "--loglevel=debug"]) == []
        assert logging.getLogger("faust.tables.recovery").isEnabledFor(logging.DEBUG) == (
            logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        )
        assert log_levels.quiet_library_debug(["python", "-m", "stream_jobs", "worker", "-l", "warn"]) == list(names)
        root = logging.getLogger()
        before = root.level
        root.setLevel(logging.DEBUG)  # as Faust's spinner sets it while the worker starts
        try:
            assert not logging.getLogger("faust.tables.recovery").isEnabledFor(logging.DEBUG)
            assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
            assert logging.getLogger("faust.tables.recovery").isEnabledFor(logging.INFO)
        finally:
            root.setLevel(before)
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
