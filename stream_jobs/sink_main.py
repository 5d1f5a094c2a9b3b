"""``python -m stream_jobs sink``: the store sink as a process of its own.

Consumes ``usage-priced`` in a consumer group (run several for more partitions in parallel on
a ClickHouse server), inserts batches into ``usage_events`` and commits offsets only after the
store acknowledged the insert. On the embedded chdb store, whose directory one process owns,
run the sink inside the billing service instead (``python -m billing serve --sink``) so bills
can be downloaded while it writes.

SIGTERM or Ctrl-C ends it cleanly: the batch in hand is finished (or abandoned uncommitted
while the store is down), the consumer leaves its group, the store is closed. A permanent
error (schema missing, credentials refused) stops it with one line and exit code 2.
``/metrics``, ``/healthz`` and ``/readyz`` on ``TOKENLEDGER_METRICS_PORT`` (default 9103).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.stage_watch import StageWatch, pipeline_stages
from stream_jobs.store_sink import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_WAIT_S, SinkStopped, StoreSink
from tokenledger import metrics, quiet
from tokenledger.errors import EXIT_PERMANENT, PermanentError, cli_errors, one_line
from tokenledger.gc_policy import tune_for_throughput
from tokenledger.health import HEALTH
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.base import Store
from tokenledger.store.factory import open_store

log = logging.getLogger("tokenledger.sink")


@dataclass
class SinkRun:
    """A sink with its consumer, run on the calling thread by :meth:`run` until ``stop`` is set."""

    sink: StoreSink
    consumer: ConfluentBatchConsumer
    stop: threading.Event
    failure: str | None = None
    running: bool = False
    # No step (a poll, an insert, a commit, one backoff) takes this long unless a call is wedged.
    wedged_after_s: float = 120.0

    @classmethod
    def open(cls, store: Store, settings: KafkaSettings, group: str, batch_size: int, batch_wait_s: float) -> SinkRun:
        """Check the schema, then join the consumer group.

        Raises:
            PermanentError: The store has no ``usage_events`` table.
        """
        if not store.query("EXISTS TABLE usage_events").rows[0][0]:
            raise PermanentError("the store has no table usage_events: run `python -m billing migrate` first")
        stop = threading.Event()
        consumer = ConfluentBatchConsumer(settings, settings.topics.usage_priced, group)
        quiet_broker = quiet.current()
        sink = StoreSink(
            store,
            consumer,
            KafkaDeadLetter(settings),
            batch_size=batch_size,
            batch_wait_s=batch_wait_s,
            should_stop=stop.is_set,
            broker_outage=quiet_broker.joined() if quiet_broker else None,
        )
        log.info("sink: %s -> usage_events (group %s)", settings.topics.usage_priced, group)
        return cls(sink, consumer, stop)

    def run(self, on_failure: Callable[[], None] = lambda: None) -> None:
        """Batches until ``stop``; a permanent or unexpected error is kept in ``failure`` and ends the run."""
        self.running = True
        try:
            while not self.stop.is_set():
                self.sink.run_once()
        except SinkStopped:
            log.info("stopped while the store or broker was away; the batch in hand stays uncommitted")
        except PermanentError as exc:
            self.failure = one_line(exc)
            on_failure()
        except Exception as exc:  # a bug: keep the traceback in the log, stop the process
            log.exception("sink failed")
            self.failure = f"unexpected {type(exc).__name__}: {one_line(exc)}"
            on_failure()
        finally:
            self.running = False
            self.consumer.close()
            st = self.sink.stats
            log.info("sink stopped: %d rows in %d batches, %d dead letters", st.rows, st.batches, st.dead_lettered)

    def live(self) -> str | None:
        """Why the sink is not live: stopped by a failure, or one step not returning (a wedged call)."""
        if not self.running:
            return None if self.stop.is_set() else (self.failure or "not running")
        stuck_s = time.monotonic() - self.sink.beat
        if stuck_s > self.wedged_after_s:
            return f"sink stuck: one step has not returned for {stuck_s:.0f} s"
        return None

    def register_health(self) -> None:
        """Live while the loop runs and its steps return; ready while it runs."""
        HEALTH.live["sink"] = self.live
        HEALTH.ready["sink"] = lambda: None if self.running else "sink not running"


def watch_stages(settings: KafkaSettings, stop: threading.Event) -> None:
    """Warn (and export a gauge) while a worker stage has no consumer and events wait for it."""
    watch = StageWatch(settings, pipeline_stages(settings, os.environ.get("TOKENLEDGER_APP_ID", "tokenledger")))
    threading.Thread(target=watch.run, args=(stop,), name="stage-watch", daemon=True).start()


@cli_errors("python -m stream_jobs sink")
def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGTERM/SIGINT; 0 on a clean stop, 2 on a permanent error."""
    ap = argparse.ArgumentParser(prog="python -m stream_jobs sink", description=__doc__)
    ap.add_argument(
        "--store", help="chdb:///dir or clickhouse://user:pass@host:8123/db (env TOKENLEDGER_CLICKHOUSE_URL)"
    )
    ap.add_argument("--group", default=os.environ.get("TOKENLEDGER_SINK_GROUP", "tokenledger-sink"))
    ap.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_ROWS,
        help=f"priced events per insert (default {DEFAULT_BATCH_ROWS})",
    )
    ap.add_argument(
        "--batch-wait-s",
        type=float,
        default=DEFAULT_BATCH_WAIT_S,
        help=f"longest wait to fill a batch (default {DEFAULT_BATCH_WAIT_S} s)",
    )
    ap.add_argument("-l", "--log-level", default="info")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2 <pid>`: every thread's stack to stderr
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    settings = KafkaSettings.from_env()
    tune_for_throughput()
    quiet.install(settings, "sink")
    store = open_store(args.store)
    try:
        run = SinkRun.open(store, settings, args.group, args.batch_size, args.batch_wait_s)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: stopping after the batch in hand", signal.Signals(signum).name)
            run.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        run.register_health()
        metrics.serve_from_env(9103)
        watch_stages(settings, run.stop)
        run.run()
        if run.failure:
            print(f"python -m stream_jobs sink: error: {run.failure}", file=sys.stderr)
            return EXIT_PERMANENT
        return 0
    finally:
        store.close()
