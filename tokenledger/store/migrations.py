"""Apply ``sql/migrations/NNNN_name.sql`` in order, once each, and record what was applied."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tokenledger.store.base import SQL_DIR, Store, split_statements

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class MigrationDrift(RuntimeError):
    """An applied migration file was edited afterwards; add a new migration instead."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = SQL_DIR / "migrations") -> list[Migration]:
    """Migration files sorted by their numeric prefix."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        found.append(Migration(int(version), name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return sorted(found, key=lambda m: m.version)


def migrate(store: Store, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations in order.

    Returns:
        Versions applied by this call.

    Raises:
        MigrationDrift: An applied file's checksum changed.
    """
    store.execute(_LEDGER_DDL)
    applied = {int(r[0]): str(r[1]) for r in store.query("SELECT version, checksum FROM schema_migrations FINAL").rows}
    done = []
    for m in migrations if migrations is not None else discover():
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationDrift(f"migration {m.version:04d}_{m.name} changed after it was applied")
            continue
        for stmt in split_statements(m.sql):
            store.execute(stmt)
        store.insert(
            "schema_migrations",
            ("version", "name", "checksum", "applied_at"),
            [(m.version, m.name, m.checksum, datetime.now(UTC))],
        )
        done.append(m.version)
    return done
