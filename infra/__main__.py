"""``python -m infra {broker-start,broker-stop,topics}``: the embedded broker from the project's files.

``broker-start`` runs tansu on loopback in the background and records its pid in
``data/tansu.pid``; ``broker-stop`` ends it; ``topics`` creates the pipeline topics on
whatever ``TOKENLEDGER_KAFKA_BOOTSTRAP`` points at (the embedded broker or a real cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from pathlib import Path

from infra.broker import start_broker
from infra.topics import create_topics
from tokenledger.kafka_config import KafkaSettings

PIDFILE = Path("data/tansu.pid")


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="infra", description=__doc__)
    ap.add_argument("command", choices=["broker-start", "broker-stop", "topics"])
    ap.add_argument("--port", type=int, default=19092)
    ap.add_argument("--partitions", type=int, default=3)
    args = ap.parse_args()
    if args.command == "broker-start":
        PIDFILE.parent.mkdir(parents=True, exist_ok=True)
        broker = start_broker(args.port, log_path=PIDFILE.parent / "tansu.log")
        PIDFILE.write_text(str(broker.process.pid))
        print(f"tansu listening on {broker.bootstrap} (pid {broker.process.pid}); stop: python -m infra broker-stop")
    elif args.command == "broker-stop":
        if PIDFILE.exists():
            pid = int(PIDFILE.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            PIDFILE.unlink()
            print(f"stopped tansu (pid {pid})")
    else:
        created = create_topics(KafkaSettings.from_env(), args.partitions)
        print("created:", ", ".join(created) or "(all existed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
