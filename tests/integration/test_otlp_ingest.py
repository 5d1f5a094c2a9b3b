"""OpenTelemetry GenAI spans, exported by the real SDK over OTLP/HTTP, become usage events on the real broker."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from tests.integration.test_stream_pipeline import raw_events, wait_for
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable


def test_sdk_spans_become_usage_events(kafka: KafkaSettings, tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "producers.ingest", "serve", "--port", str(port), "--map", "department=team.name",
    ]  # fmt: skip
    proc = Proc(command, kafka_env(kafka), tmp_path / "ingest.log").start()
    try:
        proc.wait_log("ingest on ")
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200, 60, "ready"
        )
        resource = Resource.create(
            {"service.name": "rag-api", "deployment.environment.name": "prod", "team.name": "research"}
        )
        provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{port}/v1/traces", headers={"Authorization": "Bearer ti-demo-acme"}
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("handle request") as root:  # no GenAI usage: ignored
            with tracer.start_as_current_span("chat gpt-4o") as chat:
                chat.set_attributes(
                    {
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.response.model": "gpt-4o-2024-08-06",
                        "gen_ai.response.id": "chatcmpl-abc",
                        "gen_ai.usage.input_tokens": 1200,
                        "gen_ai.usage.output_tokens": 300,
                        "gen_ai.usage.cache_read.input_tokens": 200,
                        "user.id": "u-42",
                    }
                )
            with tracer.start_as_current_span("chat claude") as claude:
                claude.set_attributes(
                    {
                        "gen_ai.system": "anthropic",  # the older attribute name
                        "gen_ai.request.model": "claude-sonnet-4-20250514",
                        "gen_ai.usage.input_tokens": 2000,  # Anthropic's count, without its cached part
                        "gen_ai.usage.cache_read.input_tokens": 6000,
                        "gen_ai.usage.cache_creation.input_tokens": 2000,
                        "gen_ai.usage.output_tokens": 800,
                    }
                )
        provider.force_flush()
        provider.shutdown()
        trace_id = format(root.get_span_context().trace_id, "032x")
        root_id = format(root.get_span_context().span_id, "016x")
        chat_id = format(chat.get_span_context().span_id, "016x")
        claude_id = format(claude.get_span_context().span_id, "016x")
    finally:
        assert proc.stop() == 0
    raw = {d["id"]: d for d in raw_events(kafka)}
    assert sorted(raw) == sorted([f"{trace_id}-{chat_id}", f"{trace_id}-{claude_id}"])
    gpt = raw[f"{trace_id}-{chat_id}"]
    assert gpt["source"] == "//otel/rag-api"
    assert gpt["data"]["model"] == "gpt-4o-2024-08-06" and gpt["data"]["request_id"] == "chatcmpl-abc"
    assert (gpt["data"]["input_tokens"], gpt["data"]["cached_read_tokens"], gpt["data"]["output_tokens"]) == (
        1200,
        200,
        300,
    )
    assert (gpt["data"]["trace_id"], gpt["data"]["span_id"], gpt["data"]["parent_span_id"]) == (
        trace_id,
        chat_id,
        root_id,
    )
    assert gpt["data"]["labels"] == {
        "tenant": "acme",
        "department": "research",
        "user": "u-42",
        "environment": "prod",
    }
    claude_doc = raw[f"{trace_id}-{claude_id}"]["data"]
    assert (claude_doc["provider"], claude_doc["input_tokens"], claude_doc["cache_write_tokens"]) == (
        "anthropic",
        10_000,
        2000,
    )
    # Priced as the Python producer's equivalent events would be (hand-priced: see tests/billing_fixture.py).
    stats = BatchStats()
    costs = {
        ev.id: cost.total_nanos
        for ev, cost in priced_events([orjson.dumps(d) for d in raw.values()], LayeredPriceTable.from_path(), stats)
    }
    assert costs[f"{trace_id}-{claude_id}"] == 27_300_000  # 2000 x 3 + 6000 x 0.30 + 2000 x 3.75 + 800 x 15
    assert stats.priced == 2


def test_otlp_json_with_hex_ids(kafka: KafkaSettings, tmp_path: Path) -> None:
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "producers.ingest", "serve", "--port", str(port)],
        kafka_env(kafka),
        tmp_path / "ingest.log",
    ).start()
    doc: dict[str, Any] = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "go-svc"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "endTimeUnixNano": "1795400000000000000",
                                "attributes": [
                                    {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "20"}},
                                ],
                            },
                            {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "AAA19B7EC3C1B174"},
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "BBB19B7EC3C1B174",
                                "attributes": [{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "5"}}],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    try:
        proc.wait_log("ingest on ")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/traces",
            data=orjson.dumps(doc),
            headers={"Content-Type": "application/json", "Authorization": "Bearer ti-demo-acme"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply = orjson.loads(resp.read())
    finally:
        assert proc.stop() == 0
    assert reply["partialSuccess"]["rejectedSpans"] == 1  # usage without provider or model
    raw = raw_events(kafka)
    assert [(d["id"], d["time"], d["data"]["labels"]) for d in raw] == [
        ("5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174", "2026-11-23T02:13:20Z", {"tenant": "acme"})
    ]
