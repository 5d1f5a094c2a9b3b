"""In-memory stand-ins for the sink's narrow interfaces (unit tests only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

from stream_jobs.store_sink import Message
from tokenledger.store.base import QueryResult, StoreUnavailable


class FakeConsumer:
    def __init__(self, messages: list[Message]) -> None:
        self.pending = list(messages)
        self.committed: dict[tuple[str, int], int] = {}
        self.paused = False
        self.keepalives = 0
        self.events: list[str] = []

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        batch, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        return batch

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.events.append("commit")
        self.committed.update(offsets)

    def pause(self) -> None:
        self.paused = True
        self.events.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.events.append("resume")

    def keepalive(self) -> None:
        self.keepalives += 1


class FlakyStore:
    """Refuses the first ``failures`` inserts, then records rows."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.rows: list[tuple[Any, ...]] = []
        self.attempts = 0

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        pass

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        return QueryResult((), [])

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreUnavailable("connection refused")
        self.rows.extend(tuple(r) for r in rows)

    def insert_lines(self, table: str, columns: Sequence[str], lines: Sequence[bytes]) -> None:
        self.insert(table, columns, [orjson.loads(line) for line in lines])

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        # event_time as the JSON lines carry it (RFC 3339), so rows compare whichever form came in
        rows = [
            tuple(v.isoformat() if name == "event_time" else v for name, v in row.items()) for row in data.to_pylist()
        ]
        self.insert(table, data.column_names, rows)

    def close(self) -> None:
        pass


class ListDeadLetter:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, str]] = []

    def send(self, value: bytes | None, reason: str, origin: Message) -> None:
        self.sent.append((value, reason))
