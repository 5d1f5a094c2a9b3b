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
