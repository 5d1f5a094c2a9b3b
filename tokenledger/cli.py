"""Command line: ``python -m tokenledger {price,count}`` (the demo is ``make demo``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.money import format_money
from tokenledger.pricing import CachedPriceTable, FxTable, LayeredPriceTable
from tokenledger.tokens import count_chat_tokens, get_encoding
from tokenledger.tokens.models import estimation_encoding_for_model


def price_lines(lines: Iterable[bytes], out_dir: Path, currency: str) -> dict[str, int]:
    """Decode, de-duplicate and price JSON lines; write priced and dead-letter JSONL.

    Returns:
        Counters: events read, priced, stream estimates (not billed), duplicates, dead-lettered, total nano-USD.
    """
    table = CachedPriceTable(LayeredPriceTable.from_path())
    fx = FxTable.from_path()
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = BatchStats()
    total_local = 0
    by_model: dict[str, int] = defaultdict(int)
    by_dept: dict[str, int] = defaultdict(int)
    flagged: dict[str, int] = defaultdict(int)
    with (
        (out_dir / "priced_events.jsonl").open("w") as priced_f,
        (out_dir / "dead_letter.jsonl").open("w") as dlq_f,
    ):
        for ev, cost in priced_events(lines, table, batch):
            local = fx.convert(cost.total_nanos, "USD", currency, ev.time)
            total_local += local.nanos  # each event at the rate of its own time
            by_model[f"{ev.data.provider}/{ev.data.model}"] += cost.total_nanos
            by_dept[ev.data.labels.department or "(none)"] += cost.total_nanos
            for flag in cost.flags:
                flagged[flag] += 1
            priced_f.write(
                json.dumps(
                    {
                        "source": ev.source,
                        "id": ev.id,
                        "time": ev.time.isoformat(),
                        "model": ev.data.model,
                        "cost_nanos_usd": cost.total_nanos,
                        "input_nanos_usd": cost.input_nanos,
                        "cached_read_nanos_usd": cost.cached_read_nanos,
                        "cache_write_nanos_usd": cost.cache_write_nanos,
                        "output_nanos_usd": cost.output_nanos,
                        "reasoning_nanos_usd": cost.reasoning_nanos,
                        f"cost_nanos_{currency.lower()}": local.nanos,
                        "fx_rate": str(local.rate),
                        "price_version": cost.price_version,
                        "flags": sorted(cost.flags),
                    }
                )
                + "\n"
            )
        for raw_text, reason in batch.invalid:
            dlq_f.write(json.dumps({"reason": reason, "raw": raw_text}) + "\n")
    _print_table("Cost by model (USD)", by_model)
    _print_table("Cost by department (USD)", by_dept)
    if flagged:
        print("Flags:", ", ".join(f"{k}={v}" for k, v in sorted(flagged.items())))
    return {
        "read": batch.read,
        "priced": batch.priced,
        "estimates": batch.estimates,
        "duplicates": batch.duplicates,
        "dead_lettered": len(batch.invalid),
        "total_nanos_usd": batch.total_nanos,
        "total_nanos_local": total_local,
    }


def _print_table(title: str, rows: dict[str, int]) -> None:
    print(f"\n{title}")
    for key, nanos in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<40} {format_money(nanos, 'USD', 4):>18}")


def cmd_price(args: argparse.Namespace) -> int:
    """Price a JSONL file (or stdin) of v1 usage events."""
    src = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    with src:
        stats = price_lines((line.rstrip(b"\n") for line in src if line.strip()), Path(args.out), args.currency)
    print(json.dumps(stats))
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    """Count tokens of stdin text, or of a JSON list of chat messages with ``--chat``."""
    text = sys.stdin.read()
    if args.chat:
        print(count_chat_tokens(json.loads(text), args.model))
    else:
        name, exact = estimation_encoding_for_model(args.model)
        n = len(get_encoding(name).encode_ordinary(text))
        print(n if exact else f"{n} (estimate, {name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="tokenledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("price", help="price a JSONL file of usage events")
    pr.add_argument("file")
    pr.add_argument("--out", default="out")
    pr.add_argument("--currency", default="CNY")
    pr.set_defaults(func=cmd_price)
    ct = sub.add_parser("count", help="count tokens of stdin")
    ct.add_argument("--model", default="gpt-4o")
    ct.add_argument("--chat", action="store_true")
    ct.set_defaults(func=cmd_count)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
