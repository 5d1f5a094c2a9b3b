"""``python -m infra topics``: idempotent when several run at once; replication from the cluster's defaults."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import replace

from confluent_kafka.admin import AdminClient

from infra.broker import KafkaBroker
from infra.workers import kafka_env
from tokenledger.kafka_config import KafkaSettings, Topics


def test_concurrent_runs_both_succeed(broker: KafkaBroker) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{v}-{suffix}" for k, v in Topics().__dict__.items()})
    settings = replace(KafkaSettings(bootstrap_servers=broker.bootstrap), topics=topics)
    env = kafka_env(settings)
    command = [sys.executable, "-m", "infra", "topics"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    results = [(p.wait(60), *p.communicate()) for p in runs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert all("Traceback" not in err for _, _, err in results)
    assert all(out.startswith("replication factor 1, the cluster's min.insync.replicas") for _, out, _ in results)
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "created: (all existed)" in again.stdout
    meta = AdminClient(settings.client_config()).list_topics(timeout=10)
    assert all(t in meta.topics for t in topics.__dict__.values())
