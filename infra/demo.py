"""``make demo``: the main job end to end on the embedded defaults.

Starts the embedded Kafka broker (Apache Kafka 3.9, KRaft), the embedded ClickHouse (chdb,
persistent directory), the two Faust stream workers and the store sink, each by the command
an operator runs (``python -m stream_jobs worker`` / ``sink``). September and October are backfilled directly (the
history bills and forecasts need); November streams live: services publish usage events
(some streamed, with running estimates; some redelivered; three invalid), the pricing agent
prices them, the spend agent keeps windows and trips budgets (a runaway agent loop breaks
the research budget), and the store sink writes priced events to ClickHouse. The store is
checked against ground truth to the nano-dollar; then the billing jobs run: October bills
per department and project (JSON/CSV/PDF), November month-end forecasts, allocation splits
and a re-rating after a price override. Everything lands in ``--out``; every process
started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml
from confluent_kafka import Consumer, TopicPartition

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
from infra.demo_gateway import (
    PROBES,
    GatewayRig,
    LatencyReport,
    drive,
    percentile_us,
    probe_budgets_yaml,
    probe_latency,
    report_json,
)
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import Proc, committed_lag, kafka_env, sink_command, worker_command, worker_env
from producers.publisher import UsagePublisher
from tokenledger.budgets import BudgetFile
from tokenledger.control.files import DEFAULT_CONTROL
from tokenledger.kafka_config import KafkaSettings
from tokenledger.money import format_money, units_text
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, OverrideBook, price
from tokenledger.pricing.overrides import OverrideFile
from tokenledger.pricing.table import DEFAULT_OVERRIDES
from tokenledger.sample import simulate
from tokenledger.schema import UsageEventV1
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw
from tokenledger.store.migrations import migrate

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 9, 1, tzinfo=TZ)
TODAY = datetime(2026, 11, 22, 2, 0, tzinfo=TZ)  # the demo's clock: bills for October, forecast for November
APP_ID = "tokenledger-demo"
SINK_GROUP = "tokenledger-sink"
LIVE_FROM = "2026-11-01"  # events from November on stream live; earlier ones are backfilled
DAYS = (TODAY.date() - START.date()).days


def say(msg: str) -> None:
    """Progress line with elapsed seconds."""
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


@dataclass
class Truth:
    """Ground truth computed on the side, to check the pipeline against."""

    distinct: int = 0
    nanos: int = 0
    sent: int = 0
    estimates: int = 0
    redelivered: int = 0


def backfill(store: ChdbStore, table: CachedPriceTable, truth: Truth) -> None:
    """September and October straight into the store (the history path)."""
    lines = (json.dumps(raw).encode() for raw in simulate(START, DAYS) if raw["time"] < LIVE_FROM)
    stats = ingest_raw(store, lines, table)
    truth.distinct += stats.inserted
    truth.nanos += stats.total_nanos
    say(f"backfilled Sep-Oct: {stats.inserted:,} requests, {format_money(stats.total_nanos, 'USD')}")


def gateway_kind(raw: dict[str, Any]) -> str | None:
    """Which simulated calls go through the gateway: the runaway loop and untraced copilot chat."""
    labels = raw["data"]["labels"]
    if labels["feature"] == "agent-loop":
        return "runaway"
    if labels["project"] == "copilot" and labels["feature"] == "chat" and not raw["data"].get("trace_id"):
        return "copilot"
    return None


def publish_direct(
    publisher: UsagePublisher, raw: dict[str, Any], n: int, table: CachedPriceTable, truth: Truth
) -> None:
    """A service publishing its own usage: sometimes streamed (estimates first), sometimes retried."""
    event = UsageEventV1.model_validate_json(json.dumps(raw))
    cost = price(event.data, event.time, table)
    truth.distinct += 1
    truth.nanos += cost.total_nanos
    if n % 40 == 0:  # a streamed response: two running estimates before the final figure
        for seq in (1, 2):
            data = event.data.model_copy(
                update={
                    "usage_source": "estimated",
                    "final": False,
                    "stream_seq": seq,
                    "output_tokens": event.data.output_tokens * seq // 3,
                    "reasoning_tokens": 0,
                }
            )
            publisher.publish(event.model_copy(update={"id": f"{event.id}:est:{seq}", "data": data}))
            truth.estimates += 1
    publisher.publish(event)
    if n % 997 == 0:  # a producer retry: same identity, published again
        publisher.publish(event)
        truth.redelivered += 1


def publish_live(settings: KafkaSettings, table: CachedPriceTable, truth: Truth, rig: GatewayRig) -> UsagePublisher:
    """November, day by day: services publish directly; copilot chat and the agent loop use the gateway."""
    publisher = UsagePublisher(settings, spool=Path("data/spool/demo-usage-raw.jsonl"), record_time="event")
    days: dict[str, list[dict[str, Any]]] = {}
    for raw in simulate(START, DAYS):
        if raw["time"] >= LIVE_FROM:
            days.setdefault(raw["time"][:10], []).append(raw)
    n = 0
    for day, raws in sorted(days.items()):
        via_gateway: list[tuple[str, dict[str, Any]]] = []
        for raw in raws:
            kind = gateway_kind(raw)
            if kind is not None:
                via_gateway.append((kind, raw))
                continue
            n += 1
            publish_direct(publisher, raw, n, table, truth)
        publisher.flush()
        asyncio.run(drive(rig, via_gateway))
        d = rig.gateway.stats.decisions
        say(
            f"{day}: {len(raws) - len(via_gateway):4,} calls published by services, {len(via_gateway):5,} through "
            f"the gateway (so far: {d.get('allow', 0):,} allowed, {d.get('downgrade', 0):,} downgraded, "
            f"{d.get('throttle', 0):,} throttled, {d.get('deny', 0):,} denied)"
        )
    for junk in (b"{not json", b'{"specversion": "1.0", "id": "x"}', b"\xff\xfe"):
        publisher.publish_raw(b"junk", junk)
    publisher.flush()
    rig.publisher.flush()
    stats = rig.gateway.stats
    truth.distinct += len(stats.events)
    truth.nanos += sum(price(e.data, e.time, table).total_nanos for e in stats.events)
    truth.estimates += stats.estimates
    truth.sent = publisher.stats.enqueued + rig.publisher.stats.enqueued
    say(
        f"published November live: {n:,} requests by services + {len(stats.events):,} through the gateway, "
        f"{truth.estimates:,} running estimates, {truth.redelivered:,} redeliveries, 3 invalid events"
    )
    return publisher


def start_processes(settings: KafkaSettings, out: Path) -> list[Proc]:
    """Pricing worker, spend worker and store sink, each a process of its own."""
    procs = []
    for role in ("pricing", "spend"):
        env = worker_env(
            settings, app_id=APP_ID, datadir=out / "faust" / role, role=role, control_seed=out / "control.yaml"
        )
        procs.append(Proc(worker_command(), env, out / "logs" / f"stream-{role}.log").start())
    sink = sink_command(f"chdb://{(out / 'chdb').resolve()}", SINK_GROUP, batch_size=2000)
    # The sink's stage watch names the workers' groups from the application id: the demo's own.
    procs.append(Proc(sink, {**kafka_env(settings), "TOKENLEDGER_APP_ID": APP_ID}, out / "logs" / "sink.log").start())
    for worker in procs[:2]:
        worker.wait_log("Worker ready")  # recovered and consuming: breakers flow from the first event
    return procs


def drain(settings: KafkaSettings, procs: list[Proc], timeout_s: float = 600.0) -> None:
    """Wait until the pricing agent, the spend agent and the sink committed everything published."""
    t = settings.topics
    stages = [
        ("pricing agent", f"{APP_ID}-pricing", t.usage_raw),
        ("spend agent", f"{APP_ID}-spend", t.spend_deltas),
        ("store sink", SINK_GROUP, t.usage_priced),
    ]
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        if not all(p.alive for p in procs):
            raise RuntimeError("a pipeline process exited: see out/logs/")
        lags = {name: committed_lag(settings, group, topic) for name, group, topic in stages}
        if not any(lags.values()):
            return
        if lags != last:
            say("behind: " + ", ".join(f"{name} {lag:,}" for name, lag in lags.items()))
            last = lags
        time.sleep(2)
    raise RuntimeError(f"the pipeline did not catch up in {timeout_s:.0f} s: {last}")


def read_topic(settings: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Every JSON message of a topic, in order (single-partition topics)."""
    c = Consumer({**settings.client_config(), "group.id": f"demo-read-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    idle = 0
    while idle < 3:
        msgs = [m for m in c.consume(1000, 0.3) if not m.error()]
        idle = 0 if msgs else idle + 1
        out.extend(orjson.loads(m.value() or b"{}") for m in msgs)
    c.close()
    return out


RUNAWAY_BUDGET = ("acme-agents-day", "agents", 20_000_000_000)  # id, project, limit nano-USD


def gateway_report(store: ChdbStore, rig: GatewayRig, latency: LatencyReport) -> dict[str, Any]:
    """What the gateway did and the two measurements of issue #5, as a JSON-ready dict."""
    budget_id, project, limit = RUNAWAY_BUDGET
    spent_by_day = store.query(
        "SELECT toString(toDate(event_time, 'Asia/Shanghai')) AS d, sum(cost_nanos) FROM usage_events FINAL "
        "WHERE tenant = 'acme' AND project = {project:String} GROUP BY d ORDER BY d",
        {"project": project},
    ).rows
    worst_day, spent = max(spent_by_day, key=lambda r: r[1], default=("", 0))
    stats = rig.gateway.stats
    return {
        "decisions": stats.decisions,
        "http_status_by_traffic": {k: {str(c): n for c, n in v.items()} for k, v in rig.statuses.items()},
        "decision_latency_us": {
            "p50": round(percentile_us(stats.decide_ns, 0.50), 1),
            "p99": round(percentile_us(stats.decide_ns, 0.99), 1),
            "samples": len(stats.decide_ns),
        },
        "crossing_to_deny_ms": {
            "p50": round(latency.p50, 1),
            "p99": round(latency.p99, 1),
            "samples": len(latency.samples_ms),
            "denied_after": latency.denied_after,
        },
        "runaway": {
            "budget_id": budget_id,
            "day": worst_day,
            "limit_nanos": limit,
            "spent_nanos": int(spent),
            "overshoot_nanos": max(0, int(spent) - limit),
            "overshoot_usd": units_text(max(0, int(spent) - limit)),
            "calls": {str(c): n for c, n in rig.statuses.get("runaway", {}).items()},
        },
        "streams_aborted": stats.aborted_streams,
        "upstream_errors": stats.upstream_errors,
    }


def _usd(nanos: int) -> str:
    return format_money(nanos, "USD")


def print_summary(
    truth: Truth,
    stored: tuple[int, int],
    *,
    dead_letters: list[dict[str, Any]],
    breakers: list[dict[str, Any]],
    thresholds: list[dict[str, Any]],
    written: list[WrittenBill],
    forecasts: list[BudgetForecast],
    rerate: RerateReport,
    out: Path,
    gateway: dict[str, Any],
) -> None:
    """The closing report."""
    print("\n================ tokenledger demo summary ================")
    print(
        f"requests: {truth.distinct:,} (Sep-Oct backfilled, November streamed live); "
        f"{truth.estimates:,} running estimates not billed; {truth.redelivered:,} redeliveries ignored; "
        f"{len(dead_letters)} invalid events dead-lettered with a reason"
    )
    exact = stored == (truth.distinct, truth.nanos)
    print(f"store total {format_money(stored[1], 'USD', 9)} == ground truth: {exact}")
    print("\nbudget timeline (thresholds once per period; breakers for the gateways):")
    thresholds = [t for t in thresholds if not t["budget_id"].startswith("probe-")]
    breakers = [b for b in breakers if not b["budget_id"].startswith("probe-")]  # shown as latency below
    lines: list[tuple[str, int, str]] = []  # (event time, order, text): one timeline, in time order
    for t in thresholds:
        lines.append((t["at"][:19], 0, f"{t['budget_id']:<22} crossed {t['level']:<9} at {_usd(t['spent_nanos'])}"))
    previous: dict[str, str] = {}
    for b in breakers:
        before = previous.get(b["budget_id"], "normal")
        previous[b["budget_id"]] = b["state"]
        if b["state"] == before:
            continue  # only transitions (the topic also carries each new period's state)
        text = f"{b['budget_id']:<22} breaker {b['state']:<9} remaining {format_money(b['remaining_nanos'], 'USD')}" + (
            f", downgrade to {b['downgrade_model']}" if b["state"] == "throttled" and b["downgrade_model"] else ""
        )
        lines.append((b["updated_at"][:19], 1, text))
    for at, _, text in sorted(lines):
        print(f"  {at}  {text}")
    d, lat, run = gateway["decisions"], gateway["crossing_to_deny_ms"], gateway["runaway"]
    print("\ngateway (OpenAI-compatible proxy in front of the mock upstream):")
    print(
        f"  decisions: {d.get('allow', 0):,} allowed, {d.get('downgrade', 0):,} downgraded, "
        f"{d.get('throttle', 0):,} throttled (429), {d.get('deny', 0):,} denied (429)\n  decision latency "
        f"in the demo process (shares its GIL with the driver, mock upstream and consumer threads): "
        f"p50 {gateway['decision_latency_us']['p50']} us, p99 {gateway['decision_latency_us']['p99']} us; "
        "alone: make bench"
    )
    print(
        f"  runaway agent loop on {run['day']}: {run['calls']} by HTTP status; budget {run['budget_id']} spent "
        f"{_usd(run['spent_nanos'])} of {_usd(run['limit_nanos'])} -> overshoot {run['overshoot_usd']} USD"
    )
    print(
        f"  crossing 100 % -> gateway denies: p50 {lat['p50']} ms, p99 {lat['p99']} ms over {lat['samples']} "
        f"budgets crossed by one event each ({lat['denied_after']}/{lat['samples']} then denied)"
    )
    print("\nOctober 2026 (Asia/Shanghai) by department:")
    depts = sorted(
        (w.bill for w in written if w.bill.scope.dimension == "department"),
        key=lambda b: -b.summary.cost_nanos,
    )
    for bill in depts:
        m = bill.summary
        print(
            f"  {bill.scope.value:<12} {_usd(m.cost_nanos):>12} {format_money(m.cost_nanos_local, 'CNY'):>14} "
            f"{m.requests:>6,} req  cache {m.cached_ratio:>6.1%}  best advice saves ~{_usd(bill.best_saving_nanos)}"
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
    print(
        f"\nfiles in {out}/: bills/acme/2026-10/*.{{json,csv,pdf}}, forecasts.json, allocations/*.csv, "
        "breaker_timeline.json, gateway.json"
    )
    print(
        f"download over HTTP: .venv/bin/python -m billing --store chdb://{out.resolve()}/chdb serve, then\n"
        "  curl -f -H 'Authorization: Bearer demo-acme-token' -o /tmp/research.pdf "
        "localhost:8088/v1/tenants/acme/bills/2026-10/department/research.pdf\n"
        "  or open http://localhost:8088/console and sign in with demo-acme-token"
    )


def main() -> int:  # noqa: PLR0915 - a linear script
    """Run the demo."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out"))
    args = ap.parse_args()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    say("starting the embedded Kafka broker (Apache Kafka 3.9, KRaft) and ClickHouse (chdb)")
    broker = start_broker(out / "kafka")
    store = ChdbStore(out / "chdb")
    procs: list[Proc] = []
    rig: GatewayRig | None = None
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings, retention_ms=SIMULATION_RETENTION_MS)  # a simulated season: records stamped then
        migrate(store)
        table = CachedPriceTable(LayeredPriceTable.from_path())
        truth = Truth()
        backfill(store, table, truth)
        store.close()  # the sink process owns the embedded store while it runs
        # The control plane's seed: the shipped control file plus the latency probe tenant's
        # budgets (one tiny daily budget per probe); the workers write it to the empty control topic.
        (out / "control.yaml").write_text(DEFAULT_CONTROL.read_text() + probe_budgets_yaml())
        say("starting the pricing worker, the spend worker and the store sink, one process each")
        procs = start_processes(settings, out)
        say("starting the mock upstream and the gateway (bootstraps the breakers topic)")
        rig = GatewayRig(settings, table, Path("data/spool"))
        publish_live(settings, table, truth, rig).close()
        drain(settings, procs)
        say(f"measuring crossing -> deny: {PROBES} probe budgets crossed by one event each")
        latency, probe_events = probe_latency(rig, settings, TODAY.replace(hour=1))
        truth.distinct += len(probe_events)
        truth.nanos += sum(price(e.data, e.time, table).total_nanos for e in probe_events)
        drain(settings, procs)
        say("stopping the store sink (SIGTERM) to read the embedded store from here")
        if procs[-1].stop() != 0:
            raise RuntimeError("the store sink did not stop cleanly: see out/logs/sink.log")
        store = ChdbStore(out / "chdb")
        rows, stored = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
        check = "equals" if (rows, stored) == (truth.distinct, truth.nanos) else "DIFFERS FROM"
        say(f"store: {rows:,} requests, {format_money(stored, 'USD', 9)} {check} ground truth")
        gateway_doc = gateway_report(store, rig, latency)
        (out / "gateway.json").write_bytes(report_json(gateway_doc))
        thresholds = read_topic(settings, settings.topics.thresholds)
        breakers = read_topic(settings, settings.topics.breakers)
        dead_letters = read_topic(settings, settings.topics.dead_letter)
        anomalies = read_topic(settings, settings.topics.anomalies)
        timeline = {
            "thresholds": thresholds,
            "breakers": breakers,
            "anomalies": anomalies,
            "dead_letters": dead_letters,
        }
        (out / "breaker_timeline.json").write_bytes(orjson.dumps(timeline, option=orjson.OPT_INDENT_2))

        ctx = replace(BillingContext.default(clock=lambda: TODAY), table=table)
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
        cut = {"provider": "deepseek", "model": "deepseek-chat", "valid_from": "2026-10-15T00:00:00+08:00"}
        doc["models"].append(
            {**cut, "input_per_mtok": "0.14", "cached_read_per_mtok": "0.014", "output_per_mtok": "0.21"}
        )
        new_table = LayeredPriceTable(OverrideBook.from_model(OverrideFile.model_validate(doc)))
        october = month_period("2026-10", TZ)
        rerate = rerate_period(store, "acme", october, new_table, "2026-10-deepseek-cut")
        engineering = Scope("acme", "department", "engineering")
        write_bill(build_bill(store, engineering, october, ctx, rating="rerated:2026-10-deepseek-cut"), out / "bills")

        print_summary(
            truth,
            (rows, stored),
            dead_letters=dead_letters,
            breakers=breakers,
            thresholds=thresholds,
            written=written,
            forecasts=forecasts,
            rerate=rerate,
            out=out,
            gateway=gateway_doc,
        )
        say("done; stopping the pricing and spend workers, the sink and the broker")
        return 0 if (rows, stored) == (truth.distinct, truth.nanos) else 1
    finally:
        if rig is not None:
            rig.stop()
        for proc in procs:
            proc.stop()
        store.close()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
