"""A fatal store error ends the billing service: /healthz fails, one line, exit 2; never a wedged "ok".

Reproduces what a broker loss did to the service on a cluster: a librdkafka thread aborted on an
assertion (confluentinc/librdkafka#4605), chdb's signal handler caught the abort, and from then
on every query answered ``Code: 236 ... fatal error (ABORTED)`` while ``/healthz`` said ok. Here
the abort is raised in one of the process's threads with ``tgkill`` (a Python thread: librdkafka's
block signals, and only its own ``abort()`` unblocks them), as the assertion raised it in another.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from tests.integration.test_stream_pipeline import wait_for
from tokenledger.kafka_config import KafkaSettings

SYS_TGKILL = 234  # x86_64


def python_thread(pid: int) -> int:
    """A thread of ``pid`` that Python runs, not the main one (librdkafka's threads block signals)."""
    main = (Path(f"/proc/{pid}/comm")).read_text()
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        if int(task.name) != pid and (task / "comm").read_text() == main:
            return int(task.name)
    raise AssertionError("no other Python thread")


def test_fatal_store_error_exits_the_service(kafka: KafkaSettings, tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "billing", "--store", f"chdb://{tmp_path / 'chdb'}",
        "serve", "--sink", "--port", str(port), "--group", "fatal-test",
    ]  # fmt: skip
    proc = Proc(command, kafka_env(kafka), tmp_path / "billing.log").start()
    try:
        proc.wait_log("serving on ")
        health = f"http://127.0.0.1:{port}/healthz"
        wait_for(lambda: urllib.request.urlopen(health, timeout=5).status == 200, 60, "healthy")
        assert proc.proc is not None
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(SYS_TGKILL, proc.proc.pid, python_thread(proc.proc.pid), signal.SIGABRT) == 0
        t0 = time.monotonic()
        code = proc.proc.wait(30)
        took = time.monotonic() - t0
    finally:
        if proc.alive:
            os.killpg(proc.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    log = (tmp_path / "billing.log").read_text()
    assert code == 2, log[-2000:]
    assert took < 10
    [line] = [x for x in log.splitlines() if "python -m billing serve: error:" in x]
    assert "the store failed and only a restart recovers it" in line and "(ABORTED)" in line
