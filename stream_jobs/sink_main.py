"""``python -m stream_jobs sink``: the store sink as a process of its own.

Consumes ``usage-priced`` in a consumer group (run several for more partitions in parallel on
a ClickHouse server; one per data directory on the embedded chdb store), inserts batches into
``usage_events`` and commits offsets only after the store acknowledged the insert. SIGTERM or
Ctrl-C ends it cleanly: the batch in hand is finished (or abandoned uncommitted while the
store is down), the consumer leaves its group, the store is closed. Metrics on
``TOKENLEDGER_METRICS_PORT`` (default 9103).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import SinkStopped, StoreSink
from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.factory import open_store

log = logging.getLogger("tokenledger.sink")


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGTERM/SIGINT; 0 on a clean stop, 2 on a permanent error."""
    ap = argparse.ArgumentParser(prog="python -m stream_jobs sink", description=__doc__)
    ap.add_argument(
        "--store", help="chdb:///dir or clickhouse://user:pass@host:8123/db (env TOKENLEDGER_CLICKHOUSE_URL)"
    )
    ap.add_argument("--group", default=os.environ.get("TOKENLEDGER_SINK_GROUP", "tokenledger-sink"))
    ap.add_argument("--batch-size", type=int, default=5000, help="messages per insert (default 5000)")
    ap.add_argument("--batch-wait-s", type=float, default=0.5, help="longest wait to fill a batch (default 0.5 s)")
    ap.add_argument("-l", "--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    settings = KafkaSettings.from_env()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping after the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store = open_store(args.store)
    try:
        if not store.query("EXISTS TABLE usage_events").rows[0][0]:
            print("error: the store has no table usage_events: run `python -m billing migrate` first", file=sys.stderr)
            return 2
        metrics.serve_from_env(9103)
        consumer = ConfluentBatchConsumer(settings, settings.topics.usage_priced, args.group)
        sink = StoreSink(
            store,
            consumer,
            KafkaDeadLetter(settings),
            batch_size=args.batch_size,
            batch_wait_s=args.batch_wait_s,
            should_stop=stop.is_set,
        )
        log.info("sink: %s -> usage_events (group %s)", settings.topics.usage_priced, args.group)
        try:
            while not stop.is_set():
                sink.run_once()
        except SinkStopped:
            log.info("stopped while the store was unavailable; the batch in hand stays uncommitted")
        finally:
            consumer.close()
        log.info(
            "sink stopped: %d rows in %d batches, %d dead letters",
            sink.stats.rows,
            sink.stats.batches,
            sink.stats.dead_lettered,
        )
        return 0
    finally:
        store.close()
