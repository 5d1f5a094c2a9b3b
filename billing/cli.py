"""``python -m billing``: run any billing job on demand, serve downloads, or run the scheduler."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path

from billing.bill import AS_BILLED, DIMENSIONS, build_bill
from billing.context import BillingContext
from billing.control_cli import add_commands
from billing.control_cli import run as run_control
from billing.forecast_job import forecast_budgets
from billing.jobs import (
    BillsIncomplete,
    WrittenBill,
    allocation_csv,
    allocation_for_month,
    generate_monthly_bills,
    run_forecasts,
    write_bill,
)
from billing.model import Scope
from billing.periods import month_period
from billing.rerate import rerate_period
from billing.scheduler import run_blocking
from billing.service import SinkOptions, run_service
from stream_jobs.store_sink import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_WAIT_S
from tokenledger import quiet
from tokenledger.budgets import DEFAULT_BUDGETS, BudgetFile
from tokenledger.control.follow import follow, load_seed
from tokenledger.errors import cli_errors
from tokenledger.kafka_config import KafkaSettings
from tokenledger.money import format_money
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.pricing.table import DEFAULT_OVERRIDES
from tokenledger.store import open_store
from tokenledger.store.base import Store
from tokenledger.store.ingest import ingest_raw
from tokenledger.store.migrations import migrate

KEYS = frozenset({"key"})  # the service seeds billing tokens; workers seed tenants and budgets


@cli_errors("python -m billing")
def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0912, PLR0915 - one flat command table
    """Entry point."""
    p = argparse.ArgumentParser(prog="billing", description=__doc__)
    p.add_argument(
        "--store", help="chdb:///dir or clickhouse://user:pass@host:8123/db (env TOKENLEDGER_CLICKHOUSE_URL)"
    )
    p.add_argument("--budgets", type=Path, default=DEFAULT_BUDGETS)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply pending sql/migrations")
    bf = sub.add_parser(
        "backfill",
        help="price usage events from a JSONL file straight into the store (usage older than the stream's "
        "30-day window); requests the store already holds are left out",
    )
    bf.add_argument("file", type=Path, help="JSON lines: one v1 event or a JSON array of them per line")
    b = sub.add_parser("bills", help="bills per department and project for a month")
    b.add_argument("--month", required=True)
    b.add_argument("--tenant")
    b.add_argument("--out", type=Path, default=Path("out/bills"))
    one = sub.add_parser("bill", help="one bill")
    one.add_argument("--tenant", required=True)
    one.add_argument("--month", required=True)
    one.add_argument("--dimension", choices=DIMENSIONS, default="department")
    one.add_argument("--value", required=True)
    one.add_argument("--rating", default=AS_BILLED)
    one.add_argument("--out", type=Path, default=Path("out/bills"))
    f = sub.add_parser("forecast", help="month-end forecast of every monthly budget")
    f.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="last complete day to forecast from, YYYY-MM-DD in the budgets' timezone (default: yesterday)",
    )
    f.add_argument("--out", type=Path, help="also write forecasts.json into this directory")
    a = sub.add_parser("allocate", help="split a month's traced spend")
    a.add_argument("--tenant", required=True)
    a.add_argument("--month", required=True)
    a.add_argument("--method", choices=["direct", "proportional", "weighted", "hybrid"], default="hybrid")
    a.add_argument("--party", choices=["project", "department", "source"], default="project")
    r = sub.add_parser("rerate", help="re-price a month at the prices in force at each event's time")
    r.add_argument("--tenant", required=True)
    r.add_argument("--month", required=True)
    r.add_argument("--run", required=True, help="rating run id")
    r.add_argument("--overrides", type=Path, default=DEFAULT_OVERRIDES)
    s = sub.add_parser(
        "serve",
        help="HTTP downloads with per-tenant access control (with --sink: the process that owns an embedded store)",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8088)
    s.add_argument("--sink", action="store_true", help="also consume usage-priced into the store (embedded default)")
    s.add_argument("--schedule", action="store_true", help="also run the scheduled bill and forecast jobs")
    s.add_argument("--group", default=os.environ.get("TOKENLEDGER_SINK_GROUP", "tokenledger-sink"))
    s.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_ROWS, help="sink: priced events per insert")
    s.add_argument(
        "--batch-wait-s", type=float, default=DEFAULT_BATCH_WAIT_S, help="sink: longest wait to fill a batch"
    )
    s.add_argument("--out", type=Path, default=Path("out"), help="where scheduled jobs write")
    s.add_argument("-l", "--log-level", default="info")
    sc = sub.add_parser("schedule", help="run the apscheduler jobs in the foreground")
    sc.add_argument("--out", type=Path, default=Path("out"))
    add_commands(sub)
    args = p.parse_args(argv)
    # Store clients log the failure they raise; the one line this command prints says it once.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    if args.cmd in ("control", "fx"):  # the control topic; the store only for new budgets' opening spend
        return run_control(args)

    store = open_store(args.store)
    migrate(store)
    ctx = BillingContext.default()
    budgets = BudgetFile.load(args.budgets)
    try:
        if args.cmd == "migrate":
            print("migrations applied")
        elif args.cmd == "backfill":
            with args.file.open("rb") as src:
                lines = (line.rstrip(b"\n") for line in src if line.strip())
                st = ingest_raw(store, lines, CachedPriceTable(LayeredPriceTable.from_path()), skip_stored=True)
            print(
                f"{st.inserted:,} requests stored ({format_money(st.total_nanos, 'USD', 9)} priced in the file); "
                f"{st.already_stored:,} already stored, {st.duplicates:,} duplicates, {st.estimates:,} stream "
                f"estimates, {len(st.invalid):,} invalid"
            )
            for raw, reason in st.invalid[:10]:
                print(f"  invalid: {reason}: {raw[:120]}")
        elif args.cmd == "bills":
            try:
                written = generate_monthly_bills(store, ctx, args.month, args.out, args.tenant)
            except BillsIncomplete as exc:  # print what was written, then fail with the reason
                _print_bills(exc.written)
                raise
            _print_bills(written)
        elif args.cmd == "bill":
            scope = Scope(args.tenant, args.dimension, args.value)
            bill = build_bill(store, scope, month_period(args.month, ctx.config.tz), ctx, args.rating)
            for path in write_bill(bill, args.out).paths:
                print(path)
        elif args.cmd == "forecast":
            return _forecast(store, budgets, ctx, args.as_of, args.out)
        elif args.cmd == "allocate":
            amount, split = allocation_for_month(
                store, ctx, args.tenant, args.month, method=args.method, party=args.party
            )
            sys.stdout.write(allocation_csv(amount, split, args.method, args.party).decode())
        elif args.cmd == "rerate":
            table = CachedPriceTable(LayeredPriceTable.from_path(args.overrides))
            rep = rerate_period(store, args.tenant, month_period(args.month, ctx.config.tz), table, args.run)
            old, new = (
                format_money(rep.old_total_nanos, "USD", 9),
                format_money(rep.new_total_nanos, "USD", 9),
            )
            print(f"run {rep.run_id}: {rep.rows} rows, {rep.changed_rows} changed, {old} -> {new}")
            print(f"bill it with: python -m billing bill ... --rating rerated:{rep.run_id}")
        elif args.cmd == "serve":
            logging.basicConfig(
                level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
            )
            quiet.install(KafkaSettings.from_env(), "billing")
            sink = SinkOptions(args.group, args.batch_size, args.batch_wait_s) if args.sink else None
            control = follow(KafkaSettings.from_env(), seed=load_seed(KEYS), kinds=KEYS, actor="billing-serve")
            return run_service(
                store, ctx, control, host=args.host, port=args.port, out_dir=args.out, sink=sink, schedule=args.schedule
            )
        elif args.cmd == "schedule":
            run_blocking(store, budgets, ctx, args.out)
    finally:
        store.close()
    return 0


def _forecast(store: Store, budgets: BudgetFile, ctx: BillingContext, as_of: date | None, out: Path | None) -> int:
    """Print (and with ``out`` write) the month-end forecasts as of a day, saying which month and day."""
    tz = budgets.tz
    if as_of is not None:  # the clock of the morning after: forecasts use the last complete day
        morning = datetime.combine(as_of + timedelta(days=1), time(1), tz)
        ctx = replace(ctx, clock=lambda: morning)
    results = run_forecasts(store, budgets, ctx, out) if out is not None else forecast_budgets(store, budgets, ctx)
    if not results:
        print("no monthly budgets to forecast")
        return 0
    first = results[0].forecast
    print(f"month {results[0].month}, as of {first.as_of} ({budgets.timezone}); amounts in USD")
    for fc in results:
        fo = fc.forecast
        low, high = format_money(fo.low_nanos, "USD"), format_money(fo.high_nanos, "USD")
        print(
            f"  {fc.budget_id}: month to date {format_money(fo.month_to_date_nanos, 'USD')}, projected "
            f"{format_money(fo.projected_nanos, 'USD')} [{low} .. {high}], exhausted "
            f"{fo.exhausted_on or 'not this month'}"
        )
    if all(fc.forecast.month_to_date_nanos == 0 for fc in results):
        latest = store.query("SELECT max(event_time) FROM usage_events").rows[0][0]
        hint = f"; the latest usage stored is {latest.astimezone(tz).date()}: try --as-of" if latest else ""
        print(f"note: no usage stored in {results[0].month} up to {first.as_of}{hint}")
    if out is not None:
        print(f"written: {out / 'forecasts.json'}")
    return 0


def _print_bills(written: Sequence[WrittenBill]) -> None:
    for w in written:
        print(
            f"{w.bill.scope.tenant} {w.bill.scope.dimension}={w.bill.scope.value}: "
            f"{format_money(w.bill.summary.cost_nanos, 'USD')} "
            f"(exact {format_money(w.bill.summary.cost_nanos, 'USD', 9)}) -> {w.paths[0].parent}"
        )
