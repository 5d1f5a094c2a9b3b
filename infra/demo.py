"""``make demo``: the main job end to end on the embedded defaults.

Starts the embedded Kafka broker (tansu) and the embedded ClickHouse (chdb, persistent
directory), publishes a simulated quarter of priced usage to Kafka (with redeliveries and
invalid messages), runs the store sink until the topic is drained, checks the store against
ground truth to the nano-dollar, then runs the billing jobs: October bills per department
and project (JSON/CSV/PDF), month-end forecasts for November, allocation splits and a
re-rating after a price override. Everything lands in ``--out``; every process started is
stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from confluent_kafka import Producer

from billing.allocation import Method
from billing.bill import build_bill
from billing.context import BillingContext
from billing.forecast_job import BudgetForecast
from billing.jobs import (
    WrittenBill,
    allocation_csv,
    allocation_for_month,
    generate_monthly_bills,
    run_forecasts,
    write_bill,
)
from billing.model import Scope
from billing.periods import month_period
from billing.rerate import RerateReport, rerate_period
from infra.broker import start_broker
from infra.topics import create_topics
from stream_jobs.store_sink import StoreSink
from tokenledger.budgets import BudgetFile
from tokenledger.kafka_config import KafkaSettings
from tokenledger.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from tokenledger.money import format_money
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, OverrideBook, price
from tokenledger.pricing.overrides import OverrideFile
from tokenledger.pricing.table import DEFAULT_OVERRIDES
from tokenledger.sample import simulate
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import encode_priced
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 9, 1, tzinfo=TZ)
TODAY = datetime(2026, 11, 22, 2, 0, tzinfo=TZ)  # the demo's clock: bills for October, forecast for November
DAYS = (TODAY.date() - START.date()).days


def say(msg: str) -> None:
    """Progress line with elapsed seconds."""
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


def publish(settings: KafkaSettings, table: CachedPriceTable) -> tuple[int, int, int, dict[str, int]]:
    """Price the simulated events and publish them, plus redeliveries and invalid messages.

    Returns:
        (messages published, distinct events, ground-truth nano-USD, truth by month)
    """
    producer = Producer({**settings.client_config(), "linger.ms": 20, "queue.buffering.max.messages": 200_000})
    topic = settings.topics.usage_priced
    total = distinct = sent = 0
    by_month: dict[str, int] = defaultdict(int)
    redeliver: list[tuple[bytes, bytes]] = []
    for raw in simulate(START, DAYS):
        ev = decode_usage_event(json.dumps(raw).encode())
        cost = price(ev.data, ev.time, table)
        key, value = f"{ev.source}|{ev.id}".encode(), encode_priced(ev, cost)
        producer.produce(topic, value, key=key)
        producer.poll(0)
        total += cost.total_nanos
        by_month[ev.time.astimezone(TZ).strftime("%Y-%m")] += cost.total_nanos
        distinct += 1
        sent += 1
        if distinct % 997 == 0:
            redeliver.append((key, value))  # a producer retry: same identity, sent again
        if distinct % 10_000 == 0:
            say(f"published {distinct:,} priced events")
    for key, value in redeliver:
        producer.produce(topic, value, key=key)
        sent += 1
    for bad in (b"{not json", b'{"type": "dev.tokenledger.priced.v1", "event": {}}', b""):
        producer.produce(topic, bad, key=b"bad")
        sent += 1
    if producer.flush(60) != 0:
        raise RuntimeError("broker did not acknowledge every message")
    say(f"published {sent:,} messages: {distinct:,} events, {len(redeliver)} redeliveries, 3 invalid")
    return sent, distinct, total, dict(by_month)


def drain(settings: KafkaSettings, store: ChdbStore, expected: int) -> StoreSink:
    """Run the store sink until it consumed ``expected`` messages."""
    consumer = ConfluentBatchConsumer(settings, settings.topics.usage_priced, "tokenledger-sink")
    sink = StoreSink(store, consumer, KafkaDeadLetter(settings), batch_size=5000, batch_wait_s=0.5)
    seen, idle = 0, 0
    while seen < expected and idle < 40:
        n = sink.run_once()
        seen += n
        idle = 0 if n else idle + 1
        if n:
            stats = sink.stats
            say(f"sink: {seen:,}/{expected:,} messages, {stats.rows:,} rows, {stats.dead_lettered} dead-lettered")
    consumer.close()
    return sink


@dataclass(frozen=True)
class Summary:
    """Counts of the ingestion part of the run."""

    distinct: int
    sent: int
    dead_lettered: int
    stored_nanos: int
    truth_nanos: int
    stored_rows: int
    days: int


def _usd(nanos: int) -> str:
    return format_money(nanos, "USD")


def print_summary(
    s: Summary, written: list[WrittenBill], forecasts: list[BudgetForecast], rerate: RerateReport, out: Path
) -> None:
    """The closing report."""
    print("\n================ tokenledger demo summary ================")
    print(
        f"events: {s.distinct:,} distinct over {s.days} days; {s.sent - s.distinct - 3} redelivered duplicates "
        f"ignored; {s.dead_lettered} invalid messages dead-lettered with a reason"
    )
    exact = (s.stored_rows, s.stored_nanos) == (s.distinct, s.truth_nanos)
    print(f"store total {format_money(s.stored_nanos, 'USD', 9)} == ground truth: {exact}")
    print("\nOctober 2026 (Asia/Shanghai) by department:")
    depts = sorted(
        (w.bill for w in written if w.bill.scope.dimension == "department"),
        key=lambda b: -b.summary.cost_nanos,
    )
    for b in depts:
        m = b.summary
        print(
            f"  {b.scope.value:<12} {_usd(m.cost_nanos):>12} {format_money(m.cost_nanos_local, 'CNY'):>14} "
            f"{m.requests:>6,} req  cache {m.cached_ratio:>6.1%}  best advice saves ~{_usd(b.best_saving_nanos)}"
        )
    best = max((g for w in written for g in w.bill.suggestions), key=lambda g: g.saving_nanos, default=None)
    if best:
        print(f"\nlargest single saving: {best.title} (~{_usd(best.saving_nanos)}/month)")
    print("\nNovember month-end forecasts (as of 2026-11-21):")
    for f in forecasts:
        fo = f.forecast
        bt = f"backtest MAPE {f.backtest.mape}%, coverage {f.backtest.coverage}%" if f.backtest else "no backtest"
        print(
            f"  {f.budget_id:<20} {_usd(fo.projected_nanos):>11} [{_usd(fo.low_nanos)} .. {_usd(fo.high_nanos)}] "
            f"limit {_usd(fo.limit_nanos or 0)}, exhausted {fo.exhausted_on or 'not this month'}; {bt}"
        )
    print(
        f"\nre-rating after a DeepSeek cut from 2026-10-15: {rerate.changed_rows:,} of {rerate.rows:,} requests "
        f"re-priced, October {_usd(rerate.old_total_nanos)} -> {_usd(rerate.new_total_nanos)}"
    )
    print(f"\nfiles in {out}/: bills/acme/2026-10/*.{{json,csv,pdf}}, forecasts.json, allocations/*.csv")
    print(
        f"download over HTTP: .venv/bin/python -m billing --store chdb://{out.resolve()}/chdb serve, then\n"
        "  curl -H 'Authorization: Bearer demo-acme-token' "
        "localhost:8088/v1/tenants/acme/bills/2026-10/department/research.pdf -o research.pdf"
    )


def main() -> int:
    """Run the demo."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out"))
    args = ap.parse_args()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    say("starting the embedded Kafka broker (tansu) and ClickHouse (chdb)")
    broker = start_broker(log_path=out / "logs" / "tansu.log")
    store = ChdbStore(out / "chdb")
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings)
        migrate(store)
        table = CachedPriceTable(LayeredPriceTable.from_path())
        sent, distinct, truth, truth_by_month = publish(settings, table)
        sink = drain(settings, store, sent)
        rows, stored = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
        check = "equals" if (rows, stored) == (distinct, truth) else "DIFFERS FROM"
        say(
            f"store: {rows:,} requests, {format_money(stored, 'USD', 9)} {check} ground truth "
            f"({distinct:,} requests, {format_money(truth, 'USD', 9)})"
        )

        ctx = BillingContext.default(clock=lambda: TODAY)
        ctx = replace(ctx, table=table)
        written = generate_monthly_bills(store, ctx, "2026-10", out / "bills")
        say(f"October bills: {len(written)} scopes x JSON/CSV/PDF in {out / 'bills'}")
        forecasts = run_forecasts(store, BudgetFile.load(), ctx, out)
        methods: tuple[Method, ...] = ("direct", "proportional", "hybrid")
        for method in methods:
            amount, split = allocation_for_month(store, ctx, "acme", "2026-10", method=method)
            path = out / "allocations" / f"2026-10-{method}-by-project.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(allocation_csv(amount, split, method, "project"))
        doc = yaml.safe_load(DEFAULT_OVERRIDES.read_text())
        doc["models"].append(
            {
                "provider": "deepseek",
                "model": "deepseek-chat",
                "valid_from": "2026-10-15T00:00:00+08:00",
                "input_per_mtok": "0.14",
                "cached_read_per_mtok": "0.014",
                "output_per_mtok": "0.21",
            }
        )
        new_table = LayeredPriceTable(OverrideBook.from_model(OverrideFile.model_validate(doc)))
        rerate = rerate_period(store, "acme", month_period("2026-10", TZ), new_table, "2026-10-deepseek-cut")
        rerated = build_bill(
            store,
            Scope("acme", "department", "engineering"),
            month_period("2026-10", TZ),
            ctx,
            rating="rerated:2026-10-deepseek-cut",
        )
        write_bill(rerated, out / "bills")

        print_summary(
            Summary(distinct, sent, sink.stats.dead_lettered, stored, truth, rows, DAYS),
            written,
            forecasts,
            rerate,
            out,
        )
        say("done; stopping the broker")
        return 0 if (rows, stored) == (distinct, truth) and truth_by_month else 1
    finally:
        store.close()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
