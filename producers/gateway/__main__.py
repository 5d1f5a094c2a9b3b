"""``python -m producers.gateway serve|mock-upstream``: the reference gateway and the mock upstream.

Kafka settings (bootstrap servers, SASL, topic names) come from the ``TOKENLEDGER_*``
environment, as for every other component (see ``tokenledger.kafka_config``).
"""

from __future__ import annotations

import argparse
import logging
import os
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from producers.breaker_client import BreakerClient
from producers.gateway.config import DEFAULT_GATEWAY_CONFIG, GatewayConfig
from producers.gateway.mock_upstream import MockUpstream
from producers.gateway.proxy import Gateway
from producers.gateway.redis_limits import LocalLimits, RedisLimits
from producers.gateway.reservations import worst_case_pricer
from producers.gateway.shared_budgets import SharedBudgets
from producers.publisher import UsagePublisher
from tokenledger import quiet
from tokenledger.control.follow import follow
from tokenledger.errors import cli_errors
from tokenledger.guard import Guard
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable


@cli_errors("python -m producers.gateway")
def main() -> int:
    """Parse the command line and serve until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m producers.gateway", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="the OpenAI-compatible budget-enforcing proxy")
    serve.add_argument("--config", type=Path, default=DEFAULT_GATEWAY_CONFIG)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--spool", type=Path, default=Path("data/spool/gateway-usage-raw.jsonl"))
    serve.add_argument("--upstream", help="OpenAI-compatible base URL (overrides the config file's upstream)")
    serve.add_argument(
        "--redis",
        default=os.environ.get("TOKENLEDGER_REDIS_URL"),
        help="redis://host:port/db shared by a fleet of gateways for rate limits (env TOKENLEDGER_REDIS_URL; "
        "default: limits kept in this process)",
    )
    mock = sub.add_parser("mock-upstream", help="a local OpenAI-compatible upstream that streams")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8090)
    mock.add_argument("--chunk-delay-ms", type=float, default=20.0)
    args = ap.parse_args()
    if args.cmd == "mock-upstream":
        web.run_app(MockUpstream(chunk_delay_s=args.chunk_delay_ms / 1000).app(), host=args.host, port=args.port)
        return 0
    config = GatewayConfig.load(args.config)
    if args.upstream:
        config = config.model_copy(update={"upstream": args.upstream})
    settings = KafkaSettings.from_env()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    quiet.install(settings, "gateway")
    table = CachedPriceTable(LayeredPriceTable.from_path())
    guard = Guard(
        worst_case_pricer(table),
        stale_after_s=config.stale_after_s,
        hold_s=config.hold_s,
        headroom_share=Decimal(config.headroom_share),
        reservations=not args.redis,  # a fleet reserves budgets in Redis, every gateway seeing every other's
    )
    client = BreakerClient(settings, guard).start()
    control = follow(
        settings, hold=frozenset({"limit", "key"}), kinds=frozenset(), actor="gateway"
    )  # limits, keys: live
    publisher = UsagePublisher(settings, spool=args.spool)
    ttl = float(os.environ.get("TOKENLEDGER_GATEWAY_SLOT_TTL_S", "600"))  # a dead gateway's slots lapse after it
    timeout = float(os.environ.get("TOKENLEDGER_REDIS_TIMEOUT_S", "1.0"))  # then each limit fails open or closed
    limits = RedisLimits(args.redis, timeout_s=timeout, slot_ttl_s=ttl) if args.redis else LocalLimits(slot_ttl_s=ttl)
    shared = SharedBudgets(args.redis, timeout_s=timeout, ttl_s=ttl, hold_s=config.hold_s) if args.redis else None
    gateway = Gateway(
        config,
        guard,
        publisher,
        table,
        upstream_api_key=os.environ.get(config.upstream_api_key_env, ""),
        limits=limits,
        control=control.state,
        shared=shared,
    )
    fleet = f", rate limits and budget reservations shared through {args.redis}" if args.redis else ""
    try:
        web.run_app(
            gateway.app(),
            host=args.host,
            port=args.port,
            print=lambda _: print(f"gateway on http://{args.host}:{args.port}{fleet}", flush=True),
        )
    finally:
        client.close()
        control.close()
        publisher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
