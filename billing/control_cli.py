"""``python -m billing control apply|export`` and ``python -m billing fx import``: the control plane from files.

``control apply FILE`` makes the control topic hold what a control file (or an older budgets
file) says: it prints the diff (``+`` create, ``~`` update with the fields that change, ``-``
delete) and writes it in one transaction with its audit records (actor ``$USER@apply``);
applying the same file again prints ``no changes``. ``--dry-run`` prints the diff only;
``--prune`` also deletes tenants, budgets and keys the file does not list. A budget new to the
control plane counts its period's spend so far from the store when the store can be opened here
(a ClickHouse server, or an embedded store no service holds); otherwise it counts from now and
the command says so (the admin API of the running service computes it in that case).

``fx import FILE`` stores an ECB reference-rate CSV as daily rates (one record per USD pair
and year) that bills use from then on.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

from billing.opening import opening_for
from tokenledger.control.files import ControlFile, Record, describe, export, plan
from tokenledger.control.follow import follow
from tokenledger.control.log import ControlLog, ControlWriter
from tokenledger.control.records import ControlBudget, FxDay
from tokenledger.errors import ConfigError, PermanentError, TransientError
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing.fx_import import parse_ecb, usd_records
from tokenledger.store import open_store


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``control`` and ``fx``."""
    c = sub.add_parser("control", help="the control plane (tenants, budgets, keys) from and to YAML")
    csub = c.add_subparsers(dest="control_cmd", required=True)
    ap = csub.add_parser("apply", help="make the control plane hold what FILE says (prints the diff)")
    ap.add_argument("file", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    ap.add_argument("--prune", action="store_true", help="also delete tenants, budgets and keys FILE does not list")
    csub.add_parser("export", help="print the control plane as a control file (YAML)")
    fx = sub.add_parser("fx", help="exchange rates as data")
    fsub = fx.add_subparsers(dest="fx_cmd", required=True)
    fi = fsub.add_parser("import", help="import an ECB reference-rate CSV (history or daily file)")
    fi.add_argument("file", type=Path)


def run(args: argparse.Namespace) -> int:
    """Run ``control ...`` or ``fx ...``."""
    settings = KafkaSettings.from_env()
    control = follow(settings, seed=None)
    try:
        if args.cmd == "control" and args.control_cmd == "export":
            sys.stdout.write(export(control.state))
            return 0
        if args.cmd == "control":
            return _apply(settings, control, args)
        return _fx_import(settings, control, args.file)
    finally:
        control.close()


def _apply(settings: KafkaSettings, control: ControlLog, args: argparse.Namespace) -> int:
    doc = ControlFile.load(args.file)
    changes = plan(control.state, doc.records(), prune=args.prune)
    lines = describe(control.state, changes)
    if not changes:
        print("no changes")
        return 0
    print("\n".join(lines))
    if args.dry_run:
        print(f"{len(changes)} change(s), not applied (--dry-run)")
        return 0
    changes, note = _with_openings(control, changes, args.store)
    writer = ControlWriter(settings, control)
    try:
        writer.write(changes, actor=f"{getpass.getuser()}@apply", action="apply")
    finally:
        writer.close()
    print(f"{len(changes)} change(s) applied")
    if note:
        print(note)
    return 0


def _with_openings(control: ControlLog, changes: list[Record], store_url: str | None) -> tuple[list[Record], str]:
    """New budgets with their opening spend from the store (or counting from now, with a note)."""
    new = [
        i
        for i, (k, rid, r) in enumerate(changes)
        if k == "budget" and r is not None and rid not in control.state.budgets
    ]
    if not new:
        return changes, ""
    now = datetime.now(UTC)
    out = list(changes)
    try:
        store = open_store(store_url)
        try:
            for i in new:
                k, rid, r = out[i]
                assert isinstance(r, ControlBudget)
                out[i] = (k, rid, opening_for(store, r, control.state.zone(r.tenant), now))
        finally:
            store.close()
    except (PermanentError, TransientError) as exc:  # held by the service, not migrated, away
        out = list(changes)
        for i in new:
            k, rid, r = out[i]
            assert isinstance(r, ControlBudget)
            out[i] = (k, rid, r.model_copy(update={"counts_from": now}))
        return out, f"note: {len(new)} new budget(s) count from now, without their period's spend so far ({exc})"
    return out, f"{len(new)} new budget(s) start from their period's spend in the store"


def _fx_import(settings: KafkaSettings, control: ControlLog, path: Path) -> int:
    try:
        records = usd_records(parse_ecb(path.read_text()), source=f"ECB {path.name}")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    changes: list[Record] = []
    for rec in records:
        rid = f"{rec.base}-{rec.quote}-{rec.year}"
        before = control.state.fx.get(rid)
        merged = rec if before is None else FxDay(**{**rec.model_dump(), "rates": {**before.rates, **rec.rates}})
        if merged != before:
            changes.append(("fx", rid, merged))
    days = {d for r in records for d in r.rates}
    if changes:
        writer = ControlWriter(settings, control)
        try:
            writer.write(changes, actor=f"{getpass.getuser()}@fx-import", action="fx-import")
        finally:
            writer.close()
    pairs = sorted({f"USD/{r.quote}" for r in records})
    first, last = (min(days), max(days)) if days else ("-", "-")
    print(
        f"{len(days)} day(s) {first} .. {last}, {len(pairs)} pair(s) ({', '.join(pairs[:8])}"
        f"{', ...' if len(pairs) > 8 else ''}); {len(changes)} record(s) written"
    )
    return 0
