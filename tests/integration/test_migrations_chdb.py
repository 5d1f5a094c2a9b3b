from __future__ import annotations

from pathlib import Path

import pytest

from tests.billing_fixture import DUPLICATE, EVENTS
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw
from tokenledger.store.migrations import Migration, MigrationDrift, discover, migrate
from tokenledger.store.records import USAGE_COLUMNS


def test_migrations_apply_once_and_record(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "db")
    try:
        assert migrate(store) == [m.version for m in discover()] == [1, 2, 3, 4]
        assert migrate(store) == []
        rows = store.query("SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version").rows
        assert [(r[0], r[1]) for r in rows] == [
            (1, "usage_events"),
            (2, "daily_spend"),
            (3, "usage_rerated"),
            (4, "console_rollups"),
        ]
        assert rows[0][2] == discover()[0].checksum
        edited = [Migration(1, "usage_events", discover()[0].sql + "\n-- edited")]
        with pytest.raises(MigrationDrift):
            migrate(store, edited)
    finally:
        store.close()
    reopened = ChdbStore(tmp_path / "db")  # persistent directory: state survives a restart
    try:
        assert migrate(reopened) == []
    finally:
        reopened.close()


def test_rerated_table_mirrors_usage_table(store: ChdbStore) -> None:
    usage = [r[0] for r in store.query("DESCRIBE TABLE usage_events").rows]
    rerated = [r[0] for r in store.query("DESCRIBE TABLE usage_rerated").rows]
    assert rerated == ["rating_run", *usage]
    assert usage == [*USAGE_COLUMNS, "ingested_at"]


def test_daily_spend_view_counts_duplicates_once(store: ChdbStore) -> None:
    table = LayeredPriceTable.from_path()
    ingest_raw(store, EVENTS, table)
    ingest_raw(store, [DUPLICATE, DUPLICATE], table)
    raw_count = store.query("SELECT count() FROM usage_events").scalar()
    assert raw_count >= 9  # the duplicate block is physically there until a merge
    total = store.query("SELECT sum(requests), sum(cost_nanos) FROM daily_spend WHERE tenant = 'acme'").rows[0]
    assert total == (8, 1_337_972_500 + 7_500_000 + 7_500_000)


def test_console_rollups_count_the_rows_stored_before_them(tmp_path: Path) -> None:
    """0004 on a store with data: its insert counts start from the rows already there, then follow inserts."""
    store = ChdbStore(tmp_path / "db")
    try:
        migrate(store, discover()[:3])
        ingest_raw(store, EVENTS, LayeredPriceTable.from_path())
        assert migrate(store) == [4]
        counted = "SELECT sum(rows) FROM usage_day_inserts"
        stored = "SELECT count() FROM usage_events"
        assert store.query(counted).scalar() == store.query(stored).scalar() == len(EVENTS)
        ingest_raw(store, [DUPLICATE], LayeredPriceTable.from_path())  # a redelivery is an insert too
        assert store.query(counted).scalar() == store.query(stored).scalar()
    finally:
        store.close()
