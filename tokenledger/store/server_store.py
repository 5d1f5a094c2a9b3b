"""A real ClickHouse server through clickhouse-connect (HTTP, port 8123/8443)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import clickhouse_connect

from tokenledger.store.base import QueryResult, store_error

if TYPE_CHECKING:
    import pyarrow as pa


class ServerStore:
    """A :class:`~tokenledger.store.base.Store` on a ClickHouse server or cluster endpoint."""

    def __init__(
        self,
        host: str,
        *,
        port: int = 8123,
        username: str = "default",
        password: str = "",
        database: str = "tokenledger",
        secure: bool = False,
    ) -> None:
        try:
            boot = clickhouse_connect.get_client(
                host=host, port=port, username=username, password=password, secure=secure
            )
            boot.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            boot.close()
            self._client = clickhouse_connect.get_client(
                host=host, port=port, username=username, password=password, secure=secure, database=database
            )
        except Exception as exc:
            raise store_error(exc) from exc
        self.database = database

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement (server-side parameter binding)."""
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise store_error(exc) from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT."""
        try:
            res = self._client.query(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise store_error(exc) from exc
        rows = [tuple(_aware(v) for v in row) for row in res.result_rows]
        return QueryResult(tuple(res.column_names), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert one block; an identical retried block is de-duplicated by the server."""
        if not rows:
            return
        try:
            self._client.insert(table, [list(r) for r in rows], column_names=list(columns))
        except Exception as exc:
            raise store_error(exc) from exc

    def insert_lines(self, table: str, columns: Sequence[str], lines: Sequence[bytes]) -> None:
        """Insert ``JSONCompactEachRow`` lines as they are, in one block."""
        if not lines:
            return
        try:
            self._client.raw_insert(
                table,
                list(columns),
                insert_block=b"\n".join(lines),
                settings={"date_time_input_format": "best_effort"},
                fmt="JSONCompactEachRow",
            )
        except Exception as exc:
            raise store_error(exc) from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert Arrow columns (named as ``table``'s) in one block (the server reads them as ``Arrow``)."""
        if not data.num_rows:
            return
        try:
            self._client.insert_arrow(table, data)
        except Exception as exc:
            raise store_error(exc) from exc

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


def _aware(v: Any) -> Any:
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v
