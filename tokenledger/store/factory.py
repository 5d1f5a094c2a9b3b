"""Pick the store from configuration: embedded chdb by default, a server when a URL is set."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from tokenledger.store.base import Store


def open_store(url: str | None = None) -> Store:
    """Open the configured store.

    Args:
        url: ``chdb:///path/to/dir`` (default ``chdb://./data/chdb``) or
            ``clickhouse://user:pass@host:8123/db`` / ``clickhouses://...`` for TLS.
            Defaults to ``$TOKENLEDGER_CLICKHOUSE_URL``.
    """
    url = url or os.environ.get("TOKENLEDGER_CLICKHOUSE_URL", "chdb://./data/chdb")
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        from tokenledger.store.chdb_store import ChdbStore  # noqa: PLC0415 - load only the engine in use

        path = (parsed.netloc + parsed.path) or "./data/chdb"
        return ChdbStore(Path(path))
    if parsed.scheme in ("clickhouse", "clickhouses"):
        from tokenledger.store.server_store import ServerStore  # noqa: PLC0415 - load only the engine in use

        return ServerStore(
            host=parsed.hostname or "localhost",
            port=parsed.port or (8443 if parsed.scheme == "clickhouses" else 8123),
            username=parsed.username or "default",
            password=parsed.password or "",
            database=parsed.path.strip("/") or "tokenledger",
            secure=parsed.scheme == "clickhouses",
        )
    raise ValueError(f"unsupported store URL scheme: {parsed.scheme!r}")
