"""The gateway half of ``make demo``: mock upstream + reference gateway + breaker client, in-process.

Interactive research traffic (copilot chat, half of it streamed) and a runaway agent loop go
through the OpenAI-compatible gateway; the gateway publishes their usage and enforces the
budgets the spend agent publishes. Two measurements are taken: the crossing -> deny latency
(a probe tenant's daily budgets are crossed by single directly-published events; the time
until the gateway's breaker state turns ``broken``) and the overshoot past the runaway's
daily budget.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson

from producers.breaker_client import BreakerClient
from producers.events import Attribution, EventFactory, TokenUsage
from producers.gateway.config import GatewayConfig
from producers.gateway.mock_upstream import MockUpstream
from producers.gateway.proxy import SIM_TIME_HEADER, Gateway
from producers.gateway.reservations import worst_case_pricer
from producers.gateway.server import ServerThread
from producers.publisher import UsagePublisher
from tokenledger.guard import BreakerView, Guard, GuardRequest
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import PriceTable
from tokenledger.schema import UsageEventV1

COPILOT_KEY = "sk-demo-research-copilot"
AGENTS_KEY = "sk-demo-research-agents"
PROBE_TENANT = "latency-probe"
PROBES = 30
# A shared system prompt long enough (>= 1,024 tokens) for the upstream's prompt cache.
SYSTEM_PROMPT = "You are the research copilot. Cite sources. " + " policy" * 1_100


def probe_budgets_yaml() -> str:
    """Budgets of the latency probe tenant (appended to the demo's budget file)."""
    return "".join(
        f"  - id: probe-{i:02d}\n    tenant: {PROBE_TENANT}\n    scope: {{user_id: probe-{i:02d}}}\n"
        f'    period: day\n    limit_usd: "1"\n'
        for i in range(PROBES)
    )


@dataclass
class BreakerWatch:
    """When (monotonic) each budget's breaker was first seen in each state."""

    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def __call__(self, view: BreakerView | None, mono: float) -> None:
        """Listener for :class:`BreakerClient`."""
        if view is None:
            return
        with self.changed:
            self.first_seen.setdefault((view.budget_id, view.state), mono)
            self.changed.notify_all()

    def wait(self, budget_id: str, state: str, timeout_s: float) -> float | None:
        """Block until ``budget_id`` was seen in ``state``; its monotonic time, or None."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while (budget_id, state) not in self.first_seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
            return self.first_seen[(budget_id, state)]


class GatewayRig:
    """Mock upstream, gateway and breaker client for the demo."""

    def __init__(self, settings: KafkaSettings, table: PriceTable, spool_dir: Any) -> None:
        """Start everything (in threads of this process)."""
        self.upstream = ServerThread(MockUpstream().app()).start()
        self.guard = Guard(worst_case_pricer(table), stale_after_s=30, hold_s=1.0)
        self.watch = BreakerWatch()
        self.client = BreakerClient(settings, self.guard, listener=self.watch).start()
        self.publisher = UsagePublisher(settings, spool=spool_dir / "gateway-usage-raw.jsonl", record_time="event")
        config = GatewayConfig.load().model_copy(update={"upstream": self.upstream.url})
        # Seeded throttle draws: the same calls are admitted in every run (timing still varies, README).
        self.gateway = Gateway(config, self.guard, self.publisher, table, trust_sim_time=True, rng=random.Random(20))
        self.gateway.stats.keep_events = True
        self.server = ServerThread(self.gateway.app()).start()
        self.statuses: dict[str, dict[int, int]] = {}

    def stop(self) -> None:
        """Stop serving and flush what the gateway published."""
        self.server.stop()
        self.publisher.close()
        self.client.close()
        self.upstream.stop()

    async def call(
        self, session: aiohttp.ClientSession, kind: str, key: str, body: dict[str, Any], *, at: datetime, feature: str
    ) -> int:
        """One request through the gateway (streams are read to the end); returns the HTTP status."""
        headers = {
            "Authorization": f"Bearer {key}",
            SIM_TIME_HEADER: at.isoformat(),
            "X-Tokenledger-Feature": feature,
        }
        async with session.post(f"{self.server.url}/v1/chat/completions", json=body, headers=headers) as resp:
            if body.get("stream"):
                async for _ in resp.content:
                    pass
            else:
                await resp.read()
            by_status = self.statuses.setdefault(kind, {})
            by_status[resp.status] = by_status.get(resp.status, 0) + 1
            return resp.status


def copilot_body(raw: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    """A chat request shaped like the simulated one (prompt size, answer length, user)."""
    data = raw["data"]
    user_tokens = max(1, int(data["input_tokens"]) - 1_110)
    body: dict[str, Any] = {
        "model": data["model"],
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Summarise:" + " budget" * user_tokens},
        ],
        "max_tokens": 1_500,
        "user": data["labels"]["user"],
        "metadata": {"mock_output_tokens": str(data["output_tokens"])},
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def runaway_body(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One iteration of the runaway agent loop (large prompt, fixed answer budget)."""
    data = raw["data"]
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are an autonomous research agent."},
            {"role": "user", "content": "Continue the plan." + " step" * int(data["input_tokens"])},
        ],
        "max_tokens": 1_200,
        "user": data["labels"]["user"],
        "metadata": {"mock_output_tokens": str(data["output_tokens"])},
    }


async def drive(rig: GatewayRig, requests: list[tuple[str, dict[str, Any]]], concurrency: int = 8) -> None:
    """Send ``(kind, simulated event)`` through the gateway, ``concurrency`` at a time, in time order."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int, kind: str, raw: dict[str, Any]) -> None:
            at = datetime.fromisoformat(raw["time"])
            async with sem:
                if kind == "runaway":
                    await rig.call(session, kind, AGENTS_KEY, runaway_body(raw), at=at, feature="agent-loop")
                else:
                    await rig.call(
                        session, kind, COPILOT_KEY, copilot_body(raw, stream=i % 2 == 0), at=at, feature="chat"
                    )

        # Runaway iterations are sequential in a real loop: one at a time, in order.
        loop = [raw for kind, raw in requests if kind == "runaway"]
        rest = [(i, kind, raw) for i, (kind, raw) in enumerate(requests) if kind != "runaway"]
        await asyncio.gather(*(one(i, kind, raw) for i, kind, raw in rest))
        for raw in loop:
            await one(0, "runaway", raw)


@dataclass(frozen=True)
class LatencyReport:
    """Crossing -> breaker at the gateway, in milliseconds, and whether the next request was denied."""

    samples_ms: list[float]
    denied_after: int

    @property
    def p50(self) -> float:
        """Median (ms)."""
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def p99(self) -> float:
        """99th percentile (ms; the maximum below 100 samples)."""
        if not self.samples_ms:
            return float("nan")
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def probe_latency(rig: GatewayRig, settings: KafkaSettings, at: datetime) -> tuple[LatencyReport, list[UsageEventV1]]:
    """Cross each probe budget with one directly-published event; time until the gateway denies.

    Each probe's event costs 1.25 USD against a 1 USD daily budget, so that single event is
    the crossing. The clock starts when the event was handed to the producer and stops when
    the gateway's breaker client holds the ``broken`` state (from then on every decision is a
    dictionary lookup of a few microseconds).
    """
    publisher = UsagePublisher(settings, spool=None, record_time="event")
    factory = EventFactory(clock=lambda: at)
    samples: list[float] = []
    events: list[UsageEventV1] = []
    for i in range(PROBES):
        budget = f"probe-{i:02d}"
        who = Attribution("//svc/latency-probe", {"tenant": PROBE_TENANT, "user": budget, "feature": "probe"})
        # gpt-4o: 100,000 input x $2.50/M + 100,000 output x $10/M = 1.25 USD in one event.
        event = factory.make(
            who, provider="openai", model="gpt-4o", request_id=f"probe-{i}", usage=TokenUsage(100_000, 100_000)
        )
        events.append(event)
        t0 = time.monotonic()
        publisher.publish(event)
        publisher.flush(10)
        seen = rig.watch.wait(budget, "broken", 60)
        if seen is not None:
            samples.append((seen - t0) * 1000)
    publisher.close()
    denied = 0
    for i in range(PROBES):
        req = GuardRequest(PROBE_TENANT, {"user": f"probe-{i:02d}"}, "gpt-4o", 10, 10)
        denied += rig.guard.decide(req, at + timedelta(seconds=1), time.monotonic(), 0.0).action == "deny"
    return LatencyReport(samples, denied), events


def percentile_us(samples_ns: list[int], q: float) -> float:
    """A percentile of nanosecond samples, in microseconds."""
    if not samples_ns:
        return float("nan")
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


def report_json(doc: dict[str, Any]) -> bytes:
    """Indented JSON for ``out/gateway.json``."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
