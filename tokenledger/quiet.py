"""A broker outage in one process's log: one line when it starts, one when it ends, counters between.

Kafka clients retry by themselves and each of them logs every failed attempt: librdkafka (the
confluent-kafka clients: the control reader, producers, the sink's consumer), aiokafka and Faust
(the workers). One 18 s broker restart wrote thousands of lines. :class:`BrokerOutage`, a filter
on the process's log handlers, takes the connection errors of those libraries out of the log,
counts them (``tokenledger_transient_errors_total{component, kind="broker"}``) and says the
outage once; a probe thread then asks the cluster for its metadata every half second and says
when it answers again (and the clients have been quiet for 5 s), with the outage's length and
the number of errors it absorbed.
Anything else those libraries log (a refused authentication, a missing topic) passes unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings
from tokenledger.outage import Outage, OutageLog

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
    "not found in cache",  # librdkafka: a partition's leader (the broker) is gone
)
# A periodic task that waited out the outage says so when it returns: part of the same outage.
AFTERMATH = ("is overlapping",)
AFTERMATH_S = 60.0
LIBRARIES = ("rdkafka", "aiokafka", "faust", "mode", "kafka")


_PROBE_LOG = logging.getLogger("tokenledger.broker.probe")  # the probe's own client: never printed
_PROBE_LOG.propagate = False
_PROBE_LOG.addHandler(logging.NullHandler())


def metadata_probe(config: dict[str, Any]) -> Callable[[], bool]:
    """A check that the cluster answers a metadata request, with a new client each time.

    A listening port is not enough (a starting broker accepts connections before it serves),
    and a long-lived client may answer from its metadata cache while no broker runs.
    """
    conf: dict[str, Any] = {**config, "logger": _PROBE_LOG}

    def answers() -> bool:
        admin = AdminClient(conf)
        try:
            return bool(admin.list_topics(timeout=1.0).brokers)
        except KafkaException:
            return False

    return answers


class BrokerOutage(logging.Filter):
    """Drops the Kafka libraries' connection errors; says the outage once each way (see the module doc)."""

    def __init__(
        self,
        bootstrap: str,
        component: str,
        *,
        probe: Callable[[], bool] | None = None,
        probe_every_s: float = 0.5,
        quiet_for_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.component = component
        self.outage = Outage(
            "Kafka broker",
            bootstrap,
            "clients retry by themselves; their connection errors are counted, not logged",
            logger=logging.getLogger("tokenledger.broker"),
        )
        self._probe = probe or metadata_probe({"bootstrap.servers": bootstrap})
        self._every, self._quiet_for = probe_every_s, quiet_for_s
        self._last_error = 0.0
        self._ended = float("-inf")
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._errors = metrics.TRANSIENT.labels(component, "broker")

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a connection error of a Kafka library (counted); True for everything else."""
        if record.name.partition(".")[0] not in LIBRARIES or record.levelno < logging.INFO:
            return True
        text = record.getMessage()
        if any(p in text for p in AFTERMATH) and self._recent():
            self._errors.inc()
            return False
        if not any(p in text for p in CONNECTION_ERRORS):
            return True
        self._errors.inc()
        self.saw(text.splitlines()[0][:160] if text else record.name)
        return False

    def saw(self, reason: str) -> None:
        """A connection failure (a library's log line, or one the process's own code met): part of one outage."""
        with self._lock:
            self._last_error = time.monotonic()
            if self.outage.since is None and self._last_error - self._ended < AFTERMATH_S:
                # Soon after an outage ended: librdkafka hands a client's log lines over when that
                # client is next polled, so this may be one queued during the outage. Only a
                # probe that fails makes it a new outage.
                if self._prober is None or not self._prober.is_alive():
                    self._prober = threading.Thread(
                        target=self._confirm, args=(reason,), name="broker-outage", daemon=True
                    )
                    self._prober.start()
                return
            starting = self.outage.since is None
            self.outage.down(reason)
            if starting and (self._prober is None or not self._prober.is_alive()):
                self._prober = threading.Thread(target=self._watch, name="broker-outage", daemon=True)
                self._prober.start()

    def joined(self) -> OutageLog:
        """This outage for code with a retry loop of its own: its failures join it, the probe ends it."""
        return _Joined(self)

    def _confirm(self, reason: str) -> None:
        """A connection error soon after an outage: a new outage only if the cluster does not answer."""
        if self._probe():
            return
        with self._lock:
            self.outage.down(reason)
        self._watch()

    def _recent(self) -> bool:
        """In an outage, or within ``AFTERMATH_S`` of one."""
        with self._lock:
            return self.outage.since is not None or time.monotonic() - self._ended < AFTERMATH_S

    def _watch(self) -> None:
        while True:
            time.sleep(self._every)
            if not self._probe():
                continue
            with self._lock:
                if time.monotonic() - self._last_error >= self._quiet_for:  # answering, and the clients agree
                    self.outage.up()
                    self._ended = time.monotonic()
                    return


class _Joined:
    def __init__(self, quiet: BrokerOutage) -> None:
        self._quiet = quiet

    def down(self, exc: BaseException | str) -> None:
        self._quiet.saw(str(exc))

    def up(self) -> None:
        """Nothing to say: the probe says when the broker answers again."""


def current(root: logging.Logger | None = None) -> BrokerOutage | None:
    """The process's :class:`BrokerOutage`, if :func:`install` put one on the root logger."""
    root = root or logging.getLogger()
    return next((f for h in root.handlers for f in h.filters if isinstance(f, BrokerOutage)), None)


def install(settings: KafkaSettings, component: str, root: logging.Logger | None = None) -> BrokerOutage:
    """Put one :class:`BrokerOutage` on every handler of the root logger (idempotent per handler)."""
    root = root or logging.getLogger()
    quiet = current(root) or BrokerOutage(
        settings.bootstrap_servers, component, probe=metadata_probe(settings.client_config())
    )
    for handler in root.handlers:
        if quiet not in handler.filters:
            handler.addFilter(quiet)
    return quiet
