"""ClickHouse access behind one narrow interface: embedded chdb or a real server."""

from tokenledger.store.base import QueryResult, Store, StoreUnavailable
from tokenledger.store.factory import open_store

__all__ = ["QueryResult", "Store", "StoreUnavailable", "open_store"]
