"""The store interface the sink and billing jobs use; SQL text is the same on every engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tokenledger.errors import PermanentError, TransientError

if TYPE_CHECKING:
    import pyarrow as pa

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


class StoreUnavailable(TransientError, RuntimeError):
    """The store could not be reached or could not take the write now; the caller should retry later."""


class StoreRejected(PermanentError):
    """The store refused for a reason retrying cannot fix: schema missing, bad credentials, bad SQL."""


class StoreFailed(StoreRejected):
    """The embedded engine hit a fatal error: no query succeeds again until the process restarts.

    chdb answers ``Code: 236 ... The server is shutting down due to a fatal error (ABORTED)``
    once its signal handler caught an abort anywhere in the process (a native library's assert).
    """


class StoreLocked(PermanentError):
    """The embedded store's directory is held by another process (chdb allows one per directory)."""


# ClickHouse error names that no retry can fix (the message carries the name in parentheses).
_PERMANENT = (
    "UNKNOWN_TABLE",
    "UNKNOWN_DATABASE",
    "NO_SUCH_COLUMN_IN_TABLE",
    "UNKNOWN_IDENTIFIER",
    "SYNTAX_ERROR",
    "AUTHENTICATION_FAILED",
    "REQUIRED_PASSWORD",
    "WRONG_PASSWORD",
    "UNKNOWN_USER",
    "ACCESS_DENIED",
    "NOT_ENOUGH_PRIVILEGES",
    "READONLY",
    "ILLEGAL_TYPE_OF_ARGUMENT",
    "TYPE_MISMATCH",
)


def store_error(exc: BaseException) -> StoreUnavailable | StoreRejected:
    """Classify an engine or client error: permanent when ClickHouse names a cause retrying cannot fix."""
    text = str(exc)
    if "(ABORTED)" in text and "fatal error" in text:
        return StoreFailed(text)
    if any(name in text for name in _PERMANENT):
        return StoreRejected(text)
    return StoreUnavailable(text)


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query with their column names."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        return self.rows[0][0]


class Store(Protocol):
    """A ClickHouse database. Parameters use ClickHouse's ``{name:Type}`` binding."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT and return typed rows (ints, str, date, aware datetime, list)."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows in one block; raises :class:`StoreUnavailable` when not acknowledged."""
        ...

    def insert_lines(self, table: str, columns: Sequence[str], lines: Sequence[bytes]) -> None:
        """:meth:`insert` of rows given as JSON arrays (``JSONCompactEachRow`` lines), passed as they are.

        Times may carry any UTC offset (RFC 3339): they are parsed best-effort.
        """
        ...

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """:meth:`insert` of rows given as Arrow columns, named as ``table``'s, passed as they are."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def load_query(name: str) -> str:
    """Text of ``sql/queries/<name>.sql``."""
    return (SQL_DIR / "queries" / f"{name}.sql").read_text()


def split_statements(text: str) -> list[str]:
    """Split a SQL file on statement-ending semicolons (our files keep ``;`` out of strings)."""
    return [s.strip() for s in text.split(";\n") if s.strip() and not _only_comments(s)]


def _only_comments(stmt: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in stmt.splitlines())
