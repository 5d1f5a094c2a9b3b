"""The pipeline's processes as the demo, the benches and the tests start them: the same commands a user runs.

``python -m stream_jobs worker`` (Faust agents) and ``python -m stream_jobs sink`` (store sink),
each in its own session so a SIGKILL of its group is a crash of exactly that process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from stream_jobs.store_sink import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_WAIT_S
from tokenledger.kafka_config import KafkaSettings


def kafka_env(settings: KafkaSettings, metrics_port: int | None = 0) -> dict[str, str]:
    """Environment naming the cluster and topics of ``settings`` (``TOKENLEDGER_TOPIC_*``).

    Args:
        settings: Bootstrap servers and topic names.
        metrics_port: Prometheus port; 0 disables, None keeps the process's default.
    """
    env = {
        **os.environ,
        "TOKENLEDGER_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        **{f"TOKENLEDGER_TOPIC_{k.upper()}": v for k, v in settings.topics.__dict__.items()},
    }
    if metrics_port is not None:
        env["TOKENLEDGER_METRICS_PORT"] = str(metrics_port)
    return env


def worker_env(
    settings: KafkaSettings,
    *,
    app_id: str,
    datadir: Path,
    role: str = "all",
    budgets: Path | None = None,
    control_seed: Path | None = None,
    metrics_port: int | None = 0,
    session_timeout_s: float | None = None,
) -> dict[str, str]:
    """Environment for ``python -m stream_jobs worker`` against ``settings``.

    Args:
        settings: Bootstrap servers and topic names (passed as ``TOKENLEDGER_TOPIC_*``).
        app_id: Faust application id (consumer groups, changelog topic prefix).
        datadir: Faust data directory.
        role: ``all``, ``pricing`` or ``spend``.
        budgets: An older budgets file seeding an empty control plane (tests).
        control_seed: The control file seeding an empty control plane (the shipped one when None).
        metrics_port: Prometheus port; 0 disables, None keeps the role's default.
        session_timeout_s: Consumer group session (Faust's 60 s when None); short in fail-over tests.
    """
    env = {
        **kafka_env(settings, metrics_port),
        "TOKENLEDGER_APP_ID": app_id,
        "TOKENLEDGER_AGENTS": role,
        "TOKENLEDGER_DATADIR": str(datadir),
    }
    if budgets is not None:
        env["TOKENLEDGER_BUDGETS"] = str(budgets)
    if control_seed is not None:
        env["TOKENLEDGER_CONTROL_SEED"] = str(control_seed)
    if session_timeout_s is not None:
        env["TOKENLEDGER_SESSION_TIMEOUT_S"] = str(session_timeout_s)
    return env


def worker_command(log_level: str = "info") -> list[str]:
    """``python -m stream_jobs worker`` with a log level."""
    return [sys.executable, "-m", "stream_jobs", "worker", "-l", log_level]


def sink_command(
    store_url: str, group: str, batch_size: int = DEFAULT_BATCH_ROWS, batch_wait_s: float = DEFAULT_BATCH_WAIT_S
) -> list[str]:
    """``python -m stream_jobs sink`` into ``store_url`` as consumer group ``group``."""
    return [
        sys.executable,
        "-m",
        "stream_jobs",
        "sink",
        "--store",
        store_url,
        "--group",
        group,
        "--batch-size",
        str(batch_size),
        "--batch-wait-s",
        str(batch_wait_s),
    ]


class Proc:
    """One pipeline process with its output appended to ``log``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.command, self.env, self.log, self.cwd = command, env, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        """Start it (again)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own commands
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.cwd
            )
        return self

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL its whole process group: a crash, nothing flushed."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def wait_log(self, text: str, timeout_s: float = 120.0) -> None:
        """Wait until ``text`` appears in its log (e.g. Faust's ``Worker ready``).

        Raises:
            RuntimeError: It exited first, or ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        while text not in self.log.read_text(errors="replace"):
            if not self.alive:
                raise RuntimeError(f"{' '.join(self.command[1:4])} exited; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} in {self.log} after {timeout_s:.0f} s")
            time.sleep(0.2)

    def dump_stacks(self) -> None:
        """SIGUSR2: workers and the sink write their tasks' and threads' stacks to their log."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGUSR2)

    def tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of its log, librdkafka's connection chatter (``%3|...``) left out."""
        if not self.log.exists():
            return ""
        kept = [ln for ln in self.log.read_text(errors="replace").splitlines() if not ln.startswith("%")]
        return "\n".join(kept[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait for the clean stop (SIGKILL after ``timeout_s``); its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode


def committed_and_end(settings: KafkaSettings, group: str, topic: str) -> tuple[int, int]:
    """Offsets of ``topic`` committed by consumer group ``group``, and its end offsets, each summed."""
    c = Consumer({**settings.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
        done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        return done, ends
    finally:
        c.close()


def committed_offsets(settings: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """Offset committed by ``group`` per partition of ``topic`` (0 where none)."""
    c = Consumer({**settings.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        return {tp.partition: max(tp.offset, 0) for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()


def committed_lag(settings: KafkaSettings, group: str, topic: str) -> int:
    """Messages of ``topic`` that consumer group ``group`` has not committed yet."""
    done, ends = committed_and_end(settings, group, topic)
    return ends - done


def latest_values(settings: KafkaSettings, topic: str, idle_polls: int = 3) -> dict[bytes, Any]:
    """The last value per key of a (compacted) topic, read from the start by a fresh reader (JSON values)."""
    c = Consumer({**settings.client_config(), "group.id": f"read-latest-{time.time_ns()}", "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: dict[bytes, Any] = {}
    idle = 0
    while idle < idle_polls:
        msgs = [m for m in c.consume(5000, 0.5) if not m.error()]
        idle = 0 if msgs else idle + 1
        for m in msgs:
            value = m.value()
            out[m.key() or b""] = orjson.loads(value) if value else None
    c.close()
    return out
