"""The broker-outage filter: one line each way, and no new outage from a line queued during the last one."""

from __future__ import annotations

import logging
import time

import pytest

from tokenledger.quiet import BrokerOutage


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tokenledger.broker"]


def wait_until(check: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_one_line_each_way_and_a_stale_line_after_the_end_is_not_a_new_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = {"now": False}
    quiet = BrokerOutage("b:9092", "test", probe=lambda: answers["now"], probe_every_s=0.01, quiet_for_s=0.05)
    lib = logging.getLogger("rdkafka")

    def client_says(text: str) -> bool:
        return quiet.filter(lib.makeRecord("rdkafka", logging.ERROR, __file__, 1, text, (), None))

    caplog.set_level(logging.INFO, logger="tokenledger.broker")
    assert not client_says("FAIL [rdkafka#consumer-1]: Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    assert not client_says("FAIL [rdkafka#producer-2]: 127.0.0.1:9092/bootstrap: Disconnected")
    assert client_says("a refused authentication passes")  # not a connection error: logged as it is
    assert len(said(caplog)) == 1 and said(caplog)[0].startswith("Kafka broker b:9092 unavailable (FAIL")
    answers["now"] = True
    wait_until(lambda: len(said(caplog)) == 2)
    assert said(caplog)[1].startswith("Kafka broker b:9092 back after ")

    # A client polled only now hands over a line it queued during the outage: the cluster answers.
    assert not client_says("FAIL [rdkafka#consumer-18]: Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    time.sleep(0.2)
    assert len(said(caplog)) == 2

    # The broker goes away again: the probe confirms it, and it is a new outage, said once.
    answers["now"] = False
    assert not client_says("FAIL [rdkafka#consumer-1]: Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    wait_until(lambda: len(said(caplog)) == 3)
    assert said(caplog)[2].startswith("Kafka broker b:9092 unavailable (FAIL")
    answers["now"] = True
    wait_until(lambda: len(said(caplog)) == 4)
    assert said(caplog)[3].startswith("Kafka broker b:9092 back after ") and len(said(caplog)) == 4


def test_a_retry_loop_of_its_own_joins_the_same_outage(caplog: pytest.LogCaptureFixture) -> None:
    answers = {"now": False}
    quiet = BrokerOutage("b:9092", "test", probe=lambda: answers["now"], probe_every_s=0.01, quiet_for_s=0.05)
    sink_side = quiet.joined()
    caplog.set_level(logging.INFO, logger="tokenledger.broker")
    sink_side.down("commit not answered within 10 s")
    lib = logging.getLogger("rdkafka")
    assert not quiet.filter(lib.makeRecord("rdkafka", logging.ERROR, __file__, 1, "Connection refused", (), None))
    sink_side.down("commit not answered within 10 s")
    sink_side.up()  # the commit went through; the probe, not the loop, says the outage ended
    assert said(caplog) == [
        "Kafka broker b:9092 unavailable (commit not answered within 10 s): " + quiet.outage.consequence
    ]
    answers["now"] = True
    wait_until(lambda: len(said(caplog)) == 2)
    assert said(caplog)[1].startswith("Kafka broker b:9092 back after ") and said(caplog)[1].endswith(
        "(3 failed attempts)"
    )
