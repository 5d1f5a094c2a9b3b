"""The HTTP ingest as outside clients meet it: slow and chunked bodies, the real OTLP exporter
behind a slow relay, CloudEvents' three modes, wrong media types, hostile input, JSON errors.

Every valid event sent is on ``usage-raw`` exactly once; nothing invalid is; no answer is a
5xx, an HTML page or a dropped connection.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import raw_events, wait_for
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable

KEY = "ti-demo-acme"


def fresh(tag: str, **labels: Any) -> dict[str, Any]:
    """A valid event dated now (inside the ingest's time window)."""
    doc = event_dict(request_id=f"req-{tag}")
    doc["id"] = f"evt-{tag}"
    doc["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["data"]["labels"] = {**doc["data"]["labels"], **labels}
    return doc


def http(
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    piece: int = 1 << 20,
    pause_s: float = 0.0,
    chunked: bool = False,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket, the body in ``piece``-byte writes ``pause_s`` apart; the full answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = [f"{method} {path} HTTP/1.1", "Host: ingest", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
        try:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for i in range(0, len(body), piece):
                part = body[i : i + piece]
                s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                if pause_s:
                    time.sleep(pause_s)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (413): read what it said
        data = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
    assert data, "the connection was dropped without an answer"
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if hdrs.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return status, hdrs, payload


def _dechunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size_line, _, rest = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        payload = rest[size + 2 :]
    return out


@pytest.fixture
def ingest(kafka: KafkaSettings, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "producers.ingest", "serve", "--port", str(port)]
    proc = Proc(command, kafka_env(kafka), tmp_path / "ingest.log").start()
    proc.wait_log("ingest on ")
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200, 60, "ready")
    yield port
    assert proc.stop() == 0
    assert "Traceback" not in (tmp_path / "ingest.log").read_text()


def auth(ctype: str = "application/cloudevents+json", scheme: str = "Bearer") -> dict[str, str]:
    return {"Content-Type": ctype, "Authorization": f"{scheme} {KEY}"}


def test_paced_bodies_modes_and_errors(kafka: KafkaSettings, ingest: int) -> None:
    port = ingest
    sent: list[str] = []
    # A 348-byte-class event at ~200 B/s (curl --limit-rate 200), with Content-Length, then chunked.
    one = fresh("slow-1")
    status, _, body = http(port, "/v1/events", orjson.dumps(one), auth(), piece=20, pause_s=0.1)
    assert (status, orjson.loads(body)) == (202, {"accepted": 1})
    sent.append(one["id"])
    two = fresh("slow-2")
    status, _, body = http(port, "/v1/events", orjson.dumps(two), auth(), piece=7, pause_s=0.02, chunked=True)
    assert (status, orjson.loads(body)) == (202, {"accepted": 1})
    sent.append(two["id"])
    # An empty batch is refused, in either JSON media type (the hostile-input test found 202 {"accepted": 0}).
    for ctype in ("application/cloudevents-batch+json", "application/json"):
        status, _, body = http(port, "/v1/events", b"[]", auth(ctype))
        assert (status, orjson.loads(body)["error"]["message"]) == (400, "an empty batch: no event to ingest")
    # 1,000 events in 8 KiB pieces 2 ms apart.
    batch = [fresh(f"b-{i}") for i in range(1000)]
    blob = orjson.dumps(batch)
    status, _, body = http(
        port, "/v1/events", blob, auth("application/cloudevents-batch+json"), piece=8192, pause_s=0.002
    )
    assert (status, orjson.loads(body)) == (202, {"accepted": 1000})
    sent += [d["id"] for d in batch]
    # Over the limit, chunked (no Content-Length to refuse up front): 413 JSON, not 400.
    status, hdrs, body = http(port, "/v1/events", b"[" + b" " * (2 << 20) + b"]", auth(), piece=65536, chunked=True)
    assert status == 413 and hdrs["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]["message"] == "body over 1048576 bytes"
    # Binary mode: attributes in ce-* headers, the data as the body; lower-case bearer.
    three = fresh("bin-1")
    ce = {f"ce-{k}": str(three[k]) for k in ("specversion", "id", "source", "type", "time")}
    status, _, body = http(
        port, "/v1/events", orjson.dumps(three["data"]), {**auth("application/json", "bearer"), **ce}
    )
    assert (status, orjson.loads(body)) == (202, {"accepted": 1})
    sent.append(three["id"])
    # Other media types: 415, whatever the body.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        status, _, body = http(port, "/v1/events", orjson.dumps(fresh("never")), auth(ctype))
        assert status == 415 and "cloudevents" in orjson.loads(body)["error"]["message"]
    # Structured mode is one event; a batch must say so.
    status, _, body = http(port, "/v1/events", orjson.dumps([fresh("never")]), auth())
    assert status == 400 and "one JSON object" in orjson.loads(body)["error"]["message"]
    # Out of the time window: refused per event, naming the rule.
    old, ahead = fresh("never-1971"), fresh("never-2099")
    old["time"], ahead["time"] = "1971-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
    status, _, body = http(port, "/v1/events", orjson.dumps([old, ahead]), auth("application/cloudevents-batch+json"))
    reasons = [r["reason"] for r in orjson.loads(body)["rejected"]]
    assert status == 400 and "backfill" in reasons[0] and "5 minutes after arrival" in reasons[1]
    # JSON errors everywhere: unknown route, wrong method, missing key.
    for method, path, want in (("GET", "/v1/nowhere", 404), ("GET", "/v1/events", 405), ("PUT", "/v1/traces", 405)):
        status, hdrs, body = http(port, path, b"", auth(), method=method)
        assert status == want and orjson.loads(body)["error"]["code"] == want
    status, hdrs, body = http(port, "/v1/events", b"{}", {"Content-Type": "application/json"})
    assert status == 401 and hdrs["www-authenticate"] == "Bearer"
    raw = raw_events(kafka)
    assert sorted(d["id"] for d in raw) == sorted(sent)
    stats = BatchStats()
    billed = list(priced_events([orjson.dumps(d) for d in raw], LayeredPriceTable.from_path(), stats))
    assert (len(billed), stats.duplicates) == (len(sent), 0)  # each valid event billed once


class SlowRelay:
    """A TCP relay that forwards the client's bytes 8 KiB every 2 ms (a proxy or a slow network)."""

    def __init__(self, target: int, piece: int = 8192, pause_s: float = 0.002) -> None:
        self.target, self.piece, self.pause_s = target, piece, pause_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(self.piece if slow else 65536):
                dst.sendall(data)
                if slow:
                    time.sleep(self.pause_s)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def test_otlp_exporter_behind_a_slow_relay(kafka: KafkaSettings, ingest: int) -> None:
    relay = SlowRelay(ingest)
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "rag-api"}))
        collected = Collect()
        provider.add_span_processor(SimpleSpanProcessor(collected))
        tracer = provider.get_tracer("test")
        for i in range(512):  # one export of the BatchSpanProcessor's default size
            with tracer.start_as_current_span(f"chat {i}") as span:
                span.set_attributes(
                    {
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.response.id": f"chatcmpl-relay-{i}",
                        "gen_ai.usage.input_tokens": 1000 + i,
                        "gen_ai.usage.output_tokens": 100,
                    }
                )
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{relay.port}/v1/traces", headers={"Authorization": f"Bearer {KEY}"}
        )
        for _ in range(3):
            assert exporter.export(collected.spans) == SpanExportResult.SUCCESS
    finally:
        relay.close()
    raw = raw_events(kafka)
    assert len(raw) == 3 * 512  # three exports, each whole
    assert {d["data"]["request_id"] for d in raw} == {f"chatcmpl-relay-{i}" for i in range(512)}
    stats = BatchStats()  # billed by the pipeline's rule: each request once
    billed = list(priced_events([orjson.dumps(d) for d in raw], LayeredPriceTable.from_path(), stats))
    assert (len(billed), stats.duplicates, stats.invalid) == (512, 1024, [])


CTYPES = st.sampled_from(
    [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
        "text/plain",
        "",
        "application/x-protobuf",
    ]
)
JUNK = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"1" * 400, b"[" * 5000, b'{"data": 1e999}', b"\xff\xfe", b'"\\ud800"', b"null"]),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    ).map(orjson.dumps),
)


INVALID = [  # (data member, a value the schema refuses)
    ("input_tokens", -1),
    ("input_tokens", "12"),
    ("input_tokens", 1.5),
    ("model", None),
    ("model", ""),
    ("model", "has space"),
    ("request_id", ""),
    ("request_id", "a b"),
    ("labels", "x"),
    ("labels", {"department": "\u0000"}),
    ("provider", "Not A Provider!"),
    ("usage_source", "guess"),
]
STRUCTURED, BATCH = "application/cloudevents+json", "application/cloudevents-batch+json"


def test_hostile_input(kafka: KafkaSettings, ingest: int) -> None:
    """Random bodies, pacing, chunking, headers and media types against the live ingest."""
    sent: list[str] = []
    serial = itertools.count()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        kind=st.sampled_from(["valid", "valid-batch", "junk", "mutated"]),
        ctype=CTYPES,
        piece=st.integers(1, 400),
        chunked=st.booleans(),
        extra=st.dictionaries(
            st.sampled_from(["ce-id", "ce-source", "X-Junk", "ce-specversion", "Accept"]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
            max_size=2,
        ),
        data=st.data(),
    )
    def one(kind: str, ctype: str, piece: int, chunked: bool, extra: dict[str, str], data: st.DataObject) -> None:
        n = next(serial)
        docs: list[dict[str, Any]] = []
        if kind == "valid":
            docs = [fresh(f"h{n}")]
            body = orjson.dumps(docs[0])
        elif kind == "valid-batch":
            docs = [fresh(f"h{n}-{i}") for i in range(data.draw(st.integers(1, 20)))]
            body = orjson.dumps(docs)
        elif kind == "junk":
            body = data.draw(JUNK)
        else:
            doc = fresh(f"h{n}")
            field, bad = data.draw(st.sampled_from(INVALID))
            doc["data"][field] = bad
            body = orjson.dumps(doc)
        headers = {"Authorization": f"Bearer {KEY}", **extra}
        if ctype:
            headers["Content-Type"] = ctype
        status, hdrs, payload = http(ingest, "/v1/events", body, headers, piece=piece, chunked=chunked)
        assert status < 500, payload
        assert hdrs["content-type"].startswith("application/json")
        answer = orjson.loads(payload)  # always JSON
        binary = any(k.startswith("ce-") for k in extra)
        fits = ctype == "application/json" or (ctype, kind) in ((STRUCTURED, "valid"), (BATCH, "valid-batch"))
        if docs and fits and not binary:
            assert (status, answer) == (202, {"accepted": len(docs)})
            sent.extend(d["id"] for d in docs)
        else:
            assert status in (400, 415), (status, answer)

    one()
    raw = raw_events(kafka)
    assert sorted(d["id"] for d in raw) == sorted(sent)  # every valid event once; nothing invalid
