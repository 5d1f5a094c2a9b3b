"""``python -m infra up`` / ``down``: the whole pipeline in the foreground on the embedded defaults.

``up`` starts, in the operator's order, and waits for each to answer ``/readyz``:

1. Kafka (embedded, only when ``TOKENLEDGER_KAFKA_BOOTSTRAP`` is not set; one already started
   with ``broker-start`` is used and left running), then the topics;
2. the store migrations (``TOKENLEDGER_CLICKHOUSE_URL``, else the embedded chdb under the
   data directory);
3. the pricing worker and the spend worker (``python -m stream_jobs worker``);
4. the billing service, which owns the embedded store: store sink + bills over HTTP +
   scheduled jobs (``python -m billing serve --sink --schedule``);
5. the mock upstream and the reference gateway (``python -m producers.gateway``); with
   ``--gateways N`` (N > 1), a Redis (Debian's ``redis-server``) and N gateways sharing their
   rate limits through it, on consecutive ports from 8080;
6. the HTTP and OTLP ingest (``python -m producers.ingest serve``).

Each default port is used when free, else a free one (and said so). Ctrl-C, SIGTERM or
``python -m infra down`` (from any directory of the checkout) stop every process it started,
in the reverse order. If one of them exits, ``up`` stops the others and exits 1 naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from infra.broker import ROOT, KafkaBroker, free_port, port_is_free
from infra.topics import create_topics
from infra.workers import Proc, kafka_env, worker_env
from tokenledger.errors import EXIT_PERMANENT
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.factory import open_store
from tokenledger.store.migrations import migrate

DEFAULT_DATA = ROOT / "data"
PORTS = {
    "kafka": 19092,
    "kafka-controller": 19093,
    "pricing": 9101,
    "spend": 9102,
    "billing": 8088,
    "upstream": 8090,
    "gateway": 8080,
    "ingest": 8070,
}


@dataclass
class Service:
    """One process of the pipeline and the URL that says it is ready."""

    name: str
    proc: Proc
    ready_url: str
    url: str = ""


def run_file(data: Path) -> Path:
    """Where ``up`` records its pid and services (``down`` reads it)."""
    return data / "run" / "up.json"


def pick_port(name: str, wanted: int) -> int:
    """``wanted`` when free, else a free port (said on stdout)."""
    if port_is_free(wanted):
        return wanted
    port = free_port()
    print(f"port {wanted} ({name}) is taken; using {port}", flush=True)
    return port


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Pipeline:
    """The processes ``up`` started, in start order."""

    def __init__(self, data: Path, gateways: int = 1) -> None:
        self.gateways = gateways
        self.data = data.resolve()
        self.logs = self.data / "logs"
        self.services: list[Service] = []
        self.broker: KafkaBroker | None = None
        self.ports = {name: pick_port(name, port) for name, port in PORTS.items()}

    def kafka(self) -> KafkaSettings:
        """The configured cluster, or the embedded broker (started unless ``broker-start`` runs one)."""
        if os.environ.get("TOKENLEDGER_KAFKA_BOOTSTRAP"):
            return KafkaSettings.from_env()
        recorded = self.data / "kafka" / "broker.json"
        with contextlib.suppress(OSError, ValueError, KeyError, ProcessLookupError):
            info = json.loads(recorded.read_text())
            os.kill(info["pid"], 0)
            print(f"using the running Kafka 127.0.0.1:{info['port']} (pid {info['pid']})", flush=True)
            return KafkaSettings(bootstrap_servers=f"127.0.0.1:{info['port']}")
        broker = KafkaBroker(self.data / "kafka", self.ports["kafka"], self.ports["kafka-controller"])
        self.broker = broker.start()
        recorded.write_text(
            json.dumps({"pid": broker.pid, "port": broker.port, "controller_port": broker.controller_port})
        )
        print(f"kafka      {broker.bootstrap} (pid {broker.pid}, log {broker.log_path})", flush=True)
        return KafkaSettings(bootstrap_servers=broker.bootstrap)

    def start(self) -> KafkaSettings:
        """Start everything in order and wait until each is ready."""
        self.logs.mkdir(parents=True, exist_ok=True)
        settings = self.kafka()
        create_topics(settings)
        store_url = os.environ.get("TOKENLEDGER_CLICKHOUSE_URL") or f"chdb://{self.data / 'chdb'}"
        store = open_store(store_url)
        try:
            migrate(store)
        finally:
            store.close()  # the billing service owns the embedded store from here on
        py = sys.executable
        for role in ("pricing", "spend"):
            port = self.ports[role]
            env = worker_env(
                settings,
                app_id=os.environ.get("TOKENLEDGER_APP_ID", "tokenledger"),
                datadir=self.data / "faust" / role,
                role=role,
                metrics_port=port,
            )
            self._add(f"{role} worker", [py, "-m", "stream_jobs", "worker", "-l", "info"], env, port)
        port = self.ports["billing"]
        billing = [
            py,
            "-m",
            "billing",
            "--store",
            store_url,
            "serve",
            "--port",
            str(port),
            "--sink",
            "--schedule",
            "--out",
            str(self.data / "out"),
        ]
        self._add("billing", billing, kafka_env(settings, 0), port, url=f"http://127.0.0.1:{port}")
        print(
            f"{'console':<10} http://127.0.0.1:{port}/console (sign in with a billing token: demo-acme-token)",
            flush=True,
        )
        up = self.ports["upstream"]
        self._add(
            "upstream",
            [py, "-m", "producers.gateway", "mock-upstream", "--port", str(up)],
            kafka_env(settings, 0),
            up,
            ready="/readyz",
        )
        redis = self._redis() if self.gateways > 1 else None
        for n in range(self.gateways):
            gw = self.ports["gateway"] if n == 0 else pick_port(f"gateway {n + 1}", self.ports["gateway"] + n)
            command = [
                py,
                "-m",
                "producers.gateway",
                "serve",
                "--port",
                str(gw),
                "--upstream",
                f"http://127.0.0.1:{up}",
            ]
            command += ["--spool", str(self.data / "spool" / f"gateway-{n + 1}-usage-raw.jsonl")]
            if redis is not None:
                command += ["--redis", redis]
            name = "gateway" if self.gateways == 1 else f"gateway-{n + 1}"
            self._add(name, command, kafka_env(settings, 0), gw, url=f"http://127.0.0.1:{gw}")
        port = self.ports["ingest"]
        ingest = [py, "-m", "producers.ingest", "serve", "--port", str(port)]
        self._add("ingest", ingest, kafka_env(settings, 0), port, url=f"http://127.0.0.1:{port}")
        return settings

    def _redis(self) -> str:
        """A Redis for the gateway fleet (Debian's ``redis-server``, nothing persisted); its URL."""
        if shutil.which("redis-server") is None:
            raise RuntimeError("--gateways N > 1 shares rate limits through Redis: apt-get install redis-server")
        port = pick_port("redis", 6379)
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = Proc(command, {}, self.logs / "redis.log", cwd=self.data).start()
        self.services.append(Service("redis", proc, f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"))
        deadline = time.monotonic() + 30
        while not _redis_ready(port):
            if not proc.alive or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (log {proc.log})")
            time.sleep(0.1)
        print(f"{'redis':<10} ready redis://127.0.0.1:{port}/0 (log {proc.log})", flush=True)
        return f"redis://127.0.0.1:{port}/0"

    def _add(
        self, name: str, command: list[str], env: dict[str, str], port: int, *, url: str = "", ready: str = "/readyz"
    ) -> None:
        proc = Proc(command, env, self.logs / f"{name.split(maxsplit=1)[0]}.log").start()
        service = Service(name, proc, f"http://127.0.0.1:{port}{ready}", url)
        self.services.append(service)
        deadline = time.monotonic() + 180
        while not _ready(service.ready_url):
            if not proc.alive:
                raise RuntimeError(f"{name} exited while starting: {proc.tail(3)} (log {proc.log})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in 180 s (log {proc.log})")
            time.sleep(0.3)
        pid = proc.proc.pid if proc.proc else 0
        print(f"{name:<10} ready {url or service.ready_url} (pid {pid}, log {proc.log})", flush=True)

    def exited(self) -> Iterator[Service]:
        """Services whose process has ended."""
        return (s for s in self.services if not s.proc.alive)

    def stop(self) -> None:
        """Stop in reverse start order; the broker last, only if this run started it."""
        for service in reversed(self.services):
            code = service.proc.stop(60)
            print(f"stopped {service.name} (exit {code})", flush=True)
        if self.broker is not None:
            self.broker.stop()
            (self.data / "kafka" / "broker.json").unlink(missing_ok=True)
            code = self.broker.process.returncode if self.broker.process is not None else None
            clean = ", the JVM's clean stop on SIGTERM" if code == 143 else ""
            print(f"stopped kafka (exit {code}{clean})", flush=True)


def up(data: Path = DEFAULT_DATA, gateways: int = 1) -> int:
    """Run the pipeline until a signal or ``down``; 0 on a clean stop, 1 if a process died."""
    stopping: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pipeline = Pipeline(data, gateways)
    record = run_file(pipeline.data)
    record.parent.mkdir(parents=True, exist_ok=True)
    status = 0
    try:
        settings = pipeline.start()
        record.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "kafka": settings.bootstrap_servers,
                    "services": {
                        s.name: {"url": s.url, "ready": s.ready_url, "log": str(s.proc.log)} for s in pipeline.services
                    },
                },
                indent=2,
            )
        )
        print(f"pipeline up; stop with Ctrl-C or `python -m infra down` (state in {record})", flush=True)
        while not stopping:
            dead = next(pipeline.exited(), None)
            if dead is not None:
                code = dead.proc.proc.returncode if dead.proc.proc else None
                print(
                    f"{dead.name} exited with {code}: {dead.proc.tail(3)} (log {dead.proc.log}); stopping everything",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
            time.sleep(0.5)
    except RuntimeError as exc:
        print(f"python -m infra up: error: {exc}", file=sys.stderr, flush=True)
        status = EXIT_PERMANENT
    finally:
        pipeline.stop()
        record.unlink(missing_ok=True)
    return status


def down(data: Path = DEFAULT_DATA, timeout_s: float = 180.0) -> int:
    """SIGTERM the running ``up`` and wait until it stopped everything."""
    record = run_file(data.resolve())
    try:
        pid = int(json.loads(record.read_text())["pid"])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        print(f"nothing to stop (no running `python -m infra up` recorded in {record})")
        return 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            gone = True
        else:
            gone = not record.exists()  # `up` removes it once everything stopped (it may linger as a zombie)
        if gone:
            print(f"stopped the pipeline (pid {pid})")
            return 0
        time.sleep(0.3)
    print(f"python -m infra down: error: pid {pid} still running after {timeout_s:.0f} s", file=sys.stderr)
    return 1
