"""The environment of a Faust stream worker started on the embedded broker (demo, benches, tests)."""

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
) -> dict[str, str]:
    """Environment for ``python -m stream_jobs worker`` against ``settings``.

    Args:
        settings: Bootstrap servers and topic names (passed as ``TOKENLEDGER_TOPIC_*``).
        app_id: Faust application id (consumer groups, changelog topic prefix).
        datadir: Faust data directory.
        role: ``all``, ``pricing`` or ``spend``.
        budgets: Budget file (the shipped one when None).
        metrics_port: Prometheus port; 0 disables, None keeps the role's default.
    """
    env = {
        **os.environ,
        "TOKENLEDGER_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "TOKENLEDGER_APP_ID": app_id,
        "TOKENLEDGER_AGENTS": role,
        "TOKENLEDGER_DATADIR": str(datadir),
        # tansu reports a partition's end offset as its last batch's base + 1 (stream_jobs/app.py).
        "TOKENLEDGER_SINGLE_RECORD_BATCHES": "1",
        **{f"TOKENLEDGER_TOPIC_{k.upper()}": v for k, v in settings.topics.__dict__.items()},
    }
    if budgets is not None:
        env["TOKENLEDGER_BUDGETS"] = str(budgets)
    if metrics_port is not None:
        env["TOKENLEDGER_METRICS_PORT"] = str(metrics_port)
    return env
