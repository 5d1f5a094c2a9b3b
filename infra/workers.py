"""The environment of a Faust stream worker started by the demo, the benches and the tests."""

from __future__ import annotations

import os
from pathlib import Path

from tokenledger.kafka_config import KafkaSettings


def worker_env(
    settings: KafkaSettings,
    *,
    app_id: str,
    datadir: Path,
    role: str = "all",
    budgets: Path | None = None,
    metrics_port: int | None = 0,
    session_timeout_s: float | None = None,
) -> dict[str, str]:
    """Environment for ``python -m stream_jobs worker`` against ``settings``.

    Args:
        settings: Bootstrap servers and topic names (passed as ``TOKENLEDGER_TOPIC_*``).
        app_id: Faust application id (consumer groups, changelog topic prefix).
        datadir: Faust data directory.
        role: ``all``, ``pricing`` or ``spend``.
        budgets: Budget file (the shipped one when None).
        metrics_port: Prometheus port; 0 disables, None keeps the role's default.
        session_timeout_s: Consumer group session (Faust's 60 s when None); short in fail-over tests.
    """
    env = {
        **os.environ,
        "TOKENLEDGER_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "TOKENLEDGER_APP_ID": app_id,
        "TOKENLEDGER_AGENTS": role,
        "TOKENLEDGER_DATADIR": str(datadir),
        **{f"TOKENLEDGER_TOPIC_{k.upper()}": v for k, v in settings.topics.__dict__.items()},
    }
    if budgets is not None:
        env["TOKENLEDGER_BUDGETS"] = str(budgets)
    if session_timeout_s is not None:
        env["TOKENLEDGER_SESSION_TIMEOUT_S"] = str(session_timeout_s)
    if metrics_port is not None:
        env["TOKENLEDGER_METRICS_PORT"] = str(metrics_port)
    return env
