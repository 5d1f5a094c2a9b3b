"""``python -m billing serve``: bill downloads over HTTP, optionally with the scheduler and the store sink.

On the embedded chdb store one process owns the data directory, so the process that writes
(the sink) must also be the one that answers: ``serve --sink --schedule`` runs the store sink
on a thread, the apscheduler jobs and the HTTP API over one store handle (queries and inserts
take turns on it). Bills downloaded while events stream are exact as of the last committed
batch. On a ClickHouse server the sink can run as its own processes instead.

SIGTERM/SIGINT stop everything cleanly. A permanent error of the sink (schema missing,
credentials refused) stops the whole service with one line and exit code 2. A store that can
no longer answer at all (chdb's fatal state, after any native library in the process aborted)
fails ``/healthz`` and ends the process at once with one line and exit code 2, so a supervisor
restarts it: nothing else can heal it, and a thread stuck in the engine's signal handler could
keep a clean stop from ever finishing. Bills answer 503 JSON meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from billing.admin_api import AdminApi
from billing.console.data import ConsoleData
from billing.context import BillingContext
from billing.http_api import BillingServer
from billing.scheduler import configure
from producers.breaker_client import BreakerClient
from stream_jobs.sink_main import SinkRun, watch_stages
from stream_jobs.store_sink import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_WAIT_S
from tokenledger.control.log import ControlLog, ControlWriter
from tokenledger.errors import EXIT_PERMANENT
from tokenledger.guard import Guard
from tokenledger.health import HEALTH
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.base import Store, StoreFailed

log = logging.getLogger("tokenledger.billing")


@dataclass(frozen=True)
class SinkOptions:
    """The sink's consumer group and batching."""

    group: str = "tokenledger-sink"
    batch_size: int = DEFAULT_BATCH_ROWS
    batch_wait_s: float = DEFAULT_BATCH_WAIT_S


def run_service(
    store: Store,
    ctx: BillingContext,
    control: ControlLog,
    *,
    host: str,
    port: int,
    out_dir: Path,
    sink: SinkOptions | None,
    schedule: bool,
) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 2 when the sink hit a permanent error.

    ``control`` is the followed control plane: billing tokens, tenants' timezones and
    currencies, budgets for forecasts, all live; the admin API writes it.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    HEALTH.ready["store"] = lambda: None if store.query("SELECT 1").rows else "store does not answer"
    threading.Thread(target=watch_store, args=(store, stop), name="store-watch", daemon=True).start()
    run: SinkRun | None = None
    thread: threading.Thread | None = None
    if sink is not None:
        settings = KafkaSettings.from_env()
        run = SinkRun.open(store, settings, sink.group, sink.batch_size, sink.batch_wait_s)
        run.register_health()
        thread = threading.Thread(target=run.run, args=(stop.set,), name="sink", daemon=True)
        thread.start()
        watch_stages(settings, stop)
    scheduler = None
    if schedule:
        scheduler = configure(BackgroundScheduler(timezone=ctx.config.tz), store, control.state, ctx, out_dir)
        scheduler.start()
    writer = ControlWriter(control.settings, control)
    admin = AdminApi(control, writer, store, ctx.config.admin_digests(os.environ.get("TOKENLEDGER_ADMIN_TOKEN_SHA256")))
    guard = Guard(lambda *_: 0)  # only its breaker snapshot: the console's budget states
    breakers = BreakerClient(control.settings, guard)
    breakers.start(wait_s=0)
    server = BillingServer(store, ctx, control.state, admin, host=host, port=port, breakers=guard.breakers).start()
    threading.Thread(target=refresh_rollups, args=(server.console, control, stop), name="rollups", daemon=True).start()
    advertise = getattr(store, "advertise", None)  # the embedded store: name this service to one-shot commands
    if advertise is not None:
        advertise(server.url)
    parts = ["bills over HTTP", *(["store sink"] if run else []), *(["scheduler"] if scheduler else [])]
    print(f"serving on {server.url} ({', '.join(parts)})", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        breakers.close()
        writer.close()
        control.close()
        if run is not None and thread is not None:
            run.stop.set()
            thread.join(60)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
    if run is not None and run.failure:
        print(f"python -m billing serve: error: {run.failure}", file=sys.stderr)
        return EXIT_PERMANENT
    return 0


def refresh_rollups(console: ConsoleData, control: ControlLog, stop: threading.Event, every_s: float = 30.0) -> None:
    """Build the console's stale closed days and warm its month caches, every ``every_s``.

    Figures never wait for this (a day without a fresh rollup is read raw); it keeps pages fast.
    """
    failing, delay = False, 1.0
    while not stop.wait(delay):
        delay = every_s
        try:
            for tenant in console.rollups.tenants_with_data():
                ctx = console.ctx_of(tenant)
                console.rollups.refresh(tenant, ctx.config.tz, ctx.clock())
                console.warm(tenant)
            if failing:
                log.info("console rollups: building again")
            failing = False
        except StoreFailed as exc:
            store_failed(exc)
        except Exception as exc:  # the store is away: pages read raw meanwhile; say it once
            if not failing:
                log.warning("console rollups: not built (%s); pages read the raw table until the store answers", exc)
            failing = True


def watch_store(store: Store, stop: threading.Event, every_s: float = 2.0) -> None:
    """Ask the store every ``every_s``; a fatal engine error ends the process (see the module doc)."""
    while not stop.wait(every_s):
        try:
            store.query("SELECT 1")
        except StoreFailed as exc:
            store_failed(exc)
        except Exception:  # transient: the sink and the readiness check report it  # noqa: S112
            continue


def store_failed(exc: StoreFailed) -> None:
    """Fail ``/healthz``, say it once, exit 2 now (no clean stop: the engine will not answer again)."""
    reason = f"the store failed and only a restart recovers it: {exc}"
    HEALTH.live["store"] = lambda: reason
    print(f"python -m billing serve: error: {reason}", file=sys.stderr, flush=True)
    logging.shutdown()
    time.sleep(0.5)  # a /healthz probe in flight gets its 503
    os._exit(EXIT_PERMANENT)
