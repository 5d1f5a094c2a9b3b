"""The embedded broker: a single-node Apache Kafka 3.9 (KRaft, broker + controller) on loopback.

Its jars come from Maven Central through ``infra/kafka/pom.xml`` (``python -m infra
broker-install``, run by ``make install``) into the git-ignored ``.cache/kafka-<version>/``.
Storage is formatted once and kept in the broker's data directory across restarts. Point
``TOKENLEDGER_KAFKA_BOOTSTRAP`` at a real cluster to use that instead (then nothing is started
here).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "3.9.2"
POM = ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = ROOT / "infra" / "kafka" / "log4j.properties"
MARKER_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
INSTALL_HINT = (
    "the embedded Kafka broker needs Java 17+ and Maven: install them "
    "(Debian/Ubuntu: `apt-get install -y openjdk-17-jre-headless maven`), "
    "or point TOKENLEDGER_KAFKA_BOOTSTRAP at a running Kafka cluster"
)


class BrokerSetupError(RuntimeError):
    """The broker cannot be installed or started here (the message says what to do)."""


def libs_dir() -> Path:
    """Where the broker's jars live (``TOKENLEDGER_KAFKA_LIBS`` overrides)."""
    return Path(os.environ.get("TOKENLEDGER_KAFKA_LIBS", str(ROOT / ".cache" / f"kafka-{KAFKA_VERSION}")))


def ensure_jars() -> Path:
    """Resolve the broker jars with Maven once; returns their directory.

    Raises:
        BrokerSetupError: Java or Maven is missing, or Maven could not resolve the jars.
    """
    libs = libs_dir()
    if (libs / MARKER_JAR).exists():
        if shutil.which("java") is None:
            raise BrokerSetupError(INSTALL_HINT)
        return libs
    mvn = shutil.which("mvn")
    if shutil.which("java") is None or mvn is None:
        raise BrokerSetupError(INSTALL_HINT)
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="kafka-libs-", dir=libs.parent))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 - fixed arguments
    if done.returncode != 0 or not (staging / MARKER_JAR).exists():
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BrokerSetupError(f"Maven could not resolve Apache Kafka {KAFKA_VERSION}: {' | '.join(tail)}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)  # whole or nothing: a half-copied directory is never taken for a good one
    return libs


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be bound now (as Kafka binds: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def server_properties(
    data_dir: Path, port: int, controller_port: int, *, node_id: int = 1, voters: str | None = None, replicas: int = 1
) -> str:
    """``server.properties`` of a KRaft node on loopback, sized for a small machine.

    One node by default; with ``voters`` (``id@host:port,...``) and ``replicas`` > 1 a node of a
    cluster whose defaults are a production layout: that replication factor, ``min.insync.replicas``
    of replicas - 1, and the internal topics replicated alike.
    """
    isr = str(max(1, replicas - 1))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "3",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A floor, not a default: lets tests ask for short sessions to show fail-over quickly.
        "group.min.session.timeout.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": "16777216",
        "log.retention.hours": "1000",
        "auto.create.topics.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def cluster_id() -> str:
    """A random KRaft cluster id: 22 base64url chars, never starting with ``-``.

    Like Kafka's own ``Uuid.randomUuid``: an id starting with ``-`` would be read as an option
    by ``StorageTool format -t <id>`` (it happened, about 1 format in 64).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaBroker:
    """One Kafka process on ``127.0.0.1:port`` with its data in ``data_dir``."""

    data_dir: Path
    port: int
    controller_port: int
    heap_mb: int = 512
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    node_id: int = 1
    voters: str | None = None  # a cluster's ``controller.quorum.voters``; None: a single node
    replicas: int = 1
    cluster: str | None = None  # the cluster id every node of a cluster is formatted with

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (``server.log``)."""
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        """The running broker's pid."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def start(self, timeout_s: float = 90.0, *, wait: bool = True) -> KafkaBroker:
        """Format the storage if new, start the JVM and wait until the broker serves metadata.

        ``wait=False`` returns once the JVM runs (a cluster's nodes wait for each other's quorum).

        Raises:
            BrokerSetupError: Java/Maven missing, or the broker exited or was not ready in time.
        """
        libs = ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(
            server_properties(
                self.data_dir,
                self.port,
                self.controller_port,
                node_id=self.node_id,
                voters=self.voters,
                replicas=self.replicas,
            )
        )
        java = [shutil.which("java") or "java", *self._jvm(), "-cp", f"{libs}/*"]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            formatted = subprocess.run(  # noqa: S603 - our own jars, fixed arguments
                [*java, "kafka.tools.StorageTool", "format", "-t", self.cluster or cluster_id(), "-c", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise BrokerSetupError(f"formatting Kafka storage failed: {formatted.stderr.strip()[-400:]}")
        out = (self.data_dir / "stdout.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own jars, fixed arguments
            [*java, "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the caller's terminal is the caller's to handle
        )
        out.close()
        if wait:
            self._wait_ready(timeout_s)
        return self

    def _jvm(self) -> list[str]:
        extra = os.environ.get("TOKENLEDGER_KAFKA_JVM_OPTS", "").split()
        return [
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC",
            # The client-grade (C1) compiler only: on two cores the server compiler (C2) kept
            # compiling through a 100k-event run, 9 of the broker's 19 µs CPU per event
            # (bench_pipeline's split by thread), while the request threads ran no slower on C1.
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j.configuration=file:{LOG4J}",
            *extra,
        ]

    def _wait_ready(self, timeout_s: float) -> None:
        # The listener is bound before the broker is unfenced: an open port is not readiness;
        # a metadata answer that lists this broker is.
        # log_level 0: refused connections while the JVM starts are expected, not worth a line.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise BrokerSetupError(f"Kafka exited with {code} while starting; see {self.data_dir / 'stdout.log'}")
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except KafkaException:
                pass
            time.sleep(0.2)
        self.kill()
        raise BrokerSetupError(f"Kafka was not ready within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Clean shutdown (SIGTERM; SIGKILL only if it does not end in ``timeout_s``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would (the data directory stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_broker(
    data_dir: Path, port: int | None = None, controller_port: int | None = None, timeout_s: float = 90.0
) -> KafkaBroker:
    """Start a broker on ``data_dir`` (free loopback ports unless given) and wait until it is ready."""
    return KafkaBroker(data_dir, port or free_port(), controller_port or free_port()).start(timeout_s)
