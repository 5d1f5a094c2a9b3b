"""A broker outage in one process's log: one line when it starts, one when it ends, counters between.

Kafka clients retry by themselves and each of them logs every failed attempt: librdkafka (the
confluent-kafka clients: the control reader, producers, the sink's consumer), aiokafka and Faust
(the workers). One 18 s broker restart wrote thousands of lines. :class:`BrokerOutage`, a filter
on the process's log handlers, takes the connection errors of those libraries out of the log,
counts them (``tokenledger_transient_errors_total{component, kind="broker"}``) and says the
outage once; a probe thread then connects to the bootstrap servers every half second and says
when the broker answers again, with the outage's length and the number of errors it absorbed.
Anything else those libraries log (a refused authentication, a missing topic) passes unchanged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from tokenledger import metrics
from tokenledger.outage import Outage

# Lines of the Kafka client libraries that mean "the broker (or the connection to it) is away".
CONNECTION_ERRORS = (
    # librdkafka
    "Connection refused",
    "Connect to ipv4#",
    "Connect to ipv6#",
    "Disconnected",
    "brokers are down",
    "Broker transport failure",
    "Receive failed",
    "Send failed",
    "Failed to resolve",
    "timed out",
    "Timed out",
    "Local: Broker",
    "Local: All broker",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "Coordinator not available",
    "coordinator query",
    # aiokafka / Faust / mode
    "Unable connect to",
    "Unable to connect",
    "Unable to update metadata",
    "Unable to request metadata",
    "KafkaConnectionError",
    "NodeNotReadyError",
    "RequestTimedOutError",
    "NotCoordinatorForGroupError",
    "GroupCoordinatorNotAvailableError",
    "CoordinatorNotAvailableError",
    "Marking the coordinator dead",
    "Heartbeat failed",
    "Heartbeat session expired",
    "OffsetCommit failed",
    "Failed fetch messages",
    "Got error produce response",
    "Failed to send",
    "Connection at",
    "connection closed",
    "Connection reset",
    "Error in Kafka",
    "LeaderNotAvailableError",
    "NotLeaderForPartitionError",
    "UnknownTopicOrPartitionError",
)
LIBRARIES = ("rdkafka", "aiokafka", "faust", "mode", "kafka")


def _bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def broker_answers(bootstrap: str, timeout_s: float = 0.5) -> bool:
    """Whether one of the bootstrap servers accepts a TCP connection."""
    for host, port in _bootstrap_addresses(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


class BrokerOutage(logging.Filter):
    """Drops the Kafka libraries' connection errors; says the outage once each way (see the module doc)."""

    def __init__(
        self,
        bootstrap: str,
        component: str,
        *,
        probe: Callable[[], bool] | None = None,
        probe_every_s: float = 0.5,
        quiet_for_s: float = 2.0,
    ) -> None:
        super().__init__()
        self.component = component
        self.outage = Outage(
            "Kafka broker",
            bootstrap,
            "clients retry by themselves; their connection errors are counted, not logged",
            logger=logging.getLogger("tokenledger.broker"),
        )
        self._probe = probe or (lambda: broker_answers(bootstrap))
        self._every, self._quiet_for = probe_every_s, quiet_for_s
        self._last_error = 0.0
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._errors = metrics.TRANSIENT.labels(component, "broker")

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a connection error of a Kafka library (counted); True for everything else."""
        if record.name.partition(".")[0] not in LIBRARIES or record.levelno < logging.INFO:
            return True
        text = record.getMessage()
        if not any(p in text for p in CONNECTION_ERRORS):
            return True
        self._errors.inc()
        with self._lock:
            self._last_error = time.monotonic()
            starting = self.outage.since is None
            self.outage.down(text.splitlines()[0][:160] if text else record.name)
            if starting and (self._prober is None or not self._prober.is_alive()):
                self._prober = threading.Thread(target=self._watch, name="broker-outage", daemon=True)
                self._prober.start()
        return False

    def _watch(self) -> None:
        while True:
            time.sleep(self._every)
            if not self._probe():
                continue
            with self._lock:
                if time.monotonic() - self._last_error >= self._quiet_for:  # answering, and the clients agree
                    self.outage.up()
                    return


def install(bootstrap: str, component: str, root: logging.Logger | None = None) -> BrokerOutage:
    """Put one :class:`BrokerOutage` on every handler of the root logger (idempotent per handler)."""
    root = root or logging.getLogger()
    found = next(
        (f for h in root.handlers for f in h.filters if isinstance(f, BrokerOutage)),
        None,
    )
    quiet = found or BrokerOutage(bootstrap, component)
    for handler in root.handlers:
        if quiet not in handler.filters:
            handler.addFilter(quiet)
    return quiet
