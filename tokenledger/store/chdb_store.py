"""Embedded ClickHouse (chdb) with a persistent directory."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from chdb import session as chdb_session

from tokenledger.store.base import QueryResult, StoreLocked, StoreRejected, store_error

if TYPE_CHECKING:
    import pyarrow as pa


class ChdbStore:
    """A :class:`~tokenledger.store.base.Store` on chdb. One per process (chdb's own rule)."""

    def __init__(self, path: Path, database: str = "tokenledger") -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._owner = path / OWNER_FILE
        with _stderr_held() as held:
            try:
                self._session = chdb_session.Session(str(path))
            except Exception as exc:
                held["drop"] = True  # the engine's own copy of the message: ours replaces it
                raise _locked(path, exc) from exc
        self._owner.write_text(orjson.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)}).decode())
        self.database = database
        self._raw(f"CREATE DATABASE IF NOT EXISTS {database}")
        self._raw(f"USE {database}")

    def _raw(self, sql: str, fmt: str = "CSV", params: Mapping[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                bound = {k: _param_text(v) for k, v in params.items()} if params else None
                return self._session.query(sql, fmt, params=bound)
            except Exception as exc:  # chdb raises bare RuntimeError for engine errors
                raise store_error(exc) from exc

    def advertise(self, url: str) -> None:
        """Record the URL of the service holding this store: a one-shot command refused the store names it."""
        owner = orjson.loads(self._owner.read_bytes())
        self._owner.write_bytes(orjson.dumps({**owner, "url": url}))

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement."""
        self._raw(sql, "CSV", params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT; values converted to Python types from the result's column types."""
        res = self._raw(sql + "\nSETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompact", params)
        text = res.bytes() if hasattr(res, "bytes") else bytes(res)
        if not text.strip():
            return QueryResult((), [])
        doc = orjson.loads(text)
        meta = [(m["name"], m["type"]) for m in doc["meta"]]
        rows = [tuple(_convert(t, v) for (_, t), v in zip(meta, row, strict=True)) for row in doc["data"]]
        return QueryResult(tuple(name for name, _ in meta), rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert as one JSONCompactEachRow block (identical retried blocks are de-duplicated).

        A row is a JSON array in column order: no per-row dict and no repeated column names
        (the sink's insert cost per row fell ~3x against JSONEachRow objects).
        """
        dumps, opt = orjson.dumps, orjson.OPT_PASSTHROUGH_DATETIME
        self.insert_lines(table, columns, [dumps(row, default=_wire_default, option=opt) for row in rows])

    def insert_lines(self, table: str, columns: Sequence[str], lines: Sequence[bytes]) -> None:
        """Insert ``JSONCompactEachRow`` lines as they are, in one block."""
        if not lines:
            return
        cols = ", ".join(columns)
        head = f"INSERT INTO {table} ({cols}) SETTINGS {LINES_SETTINGS} FORMAT JSONCompactEachRow\n"
        self._raw(head + b"\n".join(lines).decode())

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert Arrow columns (named as ``table``'s) in one block, read in place by chdb's ``Python()`` function.

        chdb finds ``data`` by its name among this frame's locals.
        """
        if not data.num_rows:
            return
        bad = [name for name in (table, *data.column_names) if not _IDENTIFIER.fullmatch(name)]
        if bad:
            raise StoreRejected(f"not a plain column or table name: {bad[0]!r}")
        cols = ", ".join(data.column_names)
        sql = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(data)"  # noqa: S608 - names checked above
        with self._lock:
            try:
                self._session.query(sql, "CSV")
            except Exception as exc:  # chdb raises bare RuntimeError for engine errors
                raise store_error(exc) from exc

    def close(self) -> None:
        """Close the session."""
        with self._lock:
            self._session.close()
        self._owner.unlink(missing_ok=True)


OWNER_FILE = "tokenledger-owner.json"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LINES_SETTINGS = "date_time_input_format = 'best_effort'"  # RFC 3339 times with their offset


@contextlib.contextmanager
def _stderr_held() -> Iterator[dict[str, bool]]:
    """Hold what the engine writes to fd 2 while it starts; pass it on unless ``drop`` was set."""
    flags = {"drop": False}
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield flags
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            held = tmp.read()
            if held and not flags["drop"]:
                os.write(2, held)


def _locked(path: Path, exc: Exception) -> Exception:
    """Name the holder when chdb says "Error initializing EmbeddedServer" (another process has ``path``)."""
    if "EmbeddedServer" not in str(exc):
        return store_error(exc)
    holder, url = "another process", None
    try:
        owner = orjson.loads((path / OWNER_FILE).read_bytes())
        holder = f"pid {owner['pid']} ({owner['command']})"
        url = owner.get("url")
    except (OSError, ValueError, KeyError):
        pass
    ask = (
        f"the billing service at {url} answers the same questions: {url}/v1/tenants/<tenant>/bills/<YYYY-MM>/"
        "<dimension>/<value>.json|csv|pdf, .../allocations/<YYYY-MM>.json, .../forecasts.json"
        if url
        else "ask that process (python -m billing serve answers bills over HTTP) or stop it first"
    )
    return StoreLocked(f"the embedded store {path} is held by {holder}; chdb allows one process per directory: {ask}")


def _param_text(v: Any) -> Any:
    """Query parameter in ClickHouse's text form (chdb passes ``str(value)`` through)."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_quote(x) for x in v) + "]"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, date):
        return v.isoformat()
    return v


def _quote(x: Any) -> str:
    if isinstance(x, str):
        return "'" + x.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(x)


def _wire(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, date):
        return v.isoformat()
    return v


def _wire_default(v: Any) -> Any:
    """Orjson's fallback: dates and datetimes in the text the engine parses (see :func:`_wire`)."""
    if isinstance(v, date):
        return _wire(v)
    raise TypeError(f"cannot store a {type(v).__name__}")


def _convert(ch_type: str, v: Any) -> Any:
    if v is None:
        return None
    base = ch_type.removeprefix("LowCardinality(").removeprefix("Nullable(")
    if base.startswith("Date32") or base == "Date":
        return date.fromisoformat(v)
    if base.startswith("DateTime"):
        return datetime.fromisoformat(v).replace(tzinfo=UTC)
    if base.startswith("Decimal"):
        raise TypeError("Decimal columns lose precision in JSON: select toString(x) or Int64 nanos")
    return v
