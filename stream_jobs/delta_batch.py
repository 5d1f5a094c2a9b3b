"""Group one batch's priced requests into per-key spend deltas (the first phase of the aggregation). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream_jobs.spend_state import DIMENSIONS, state_key
from tokenledger.budget_eval import matches
from tokenledger.schema.deltas import BUDGET_PREFIX, encode_delta

MAX_ENTRIES = 5_000  # per delta message: ~250 KB, well under the broker's 1 MB default message limit
_LABEL_ORDER = ("tenant", "user", "department", "project", "feature", "environment", "api_key", "model")


class DeltaBatch:
    """Entries per key for one batch, in offset order within each source partition."""

    def __init__(self, budgets: Sequence[Any]) -> None:
        self._budgets = budgets
        self._entries: dict[str, list[Entry]] = {}

    def add(self, partition: int, offset: int, at_us: int, nanos: int, labels: Mapping[str, str]) -> None:
        """One priced request: its cost goes to each of its dimension values and matching budgets."""
        entry = (partition, offset, at_us, nanos)
        tenant = labels["tenant"]
        entries = self._entries
        for dim in DIMENSIONS:
            value = labels[dim]
            if value:
                entries.setdefault(state_key(tenant, dim, value), []).append(entry)
        for budget_id in _matching(self._budgets, labels):
            entries.setdefault(BUDGET_PREFIX + budget_id, []).append(entry)

    def messages(self, max_entries: int = MAX_ENTRIES) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` of each touched key's delta; a long one in consecutive parts (same key, in order)."""
        return [
            (key.encode(), encode_delta(key, e[i : i + max_entries]))
            for key, e in self._entries.items()
            for i in range(0, len(e), max_entries)
        ]

    def __len__(self) -> int:
        return len(self._entries)


Entry = tuple[int, int, int, int]  # (raw partition, position, event time epoch µs, cost nano-USD)


def fresh_entries(applied: Mapping[str, int], entries: Sequence[Entry]) -> tuple[list[Entry], dict[str, int]]:
    """The entries past the last position of their raw partition a record already holds.

    ``applied`` is the record's ``{raw partition: last position folded in}``. Also returns the
    last position per partition among the fresh entries: what the record holds afterwards.
    """
    fresh: list[Entry] = []
    last: dict[str, int] = {}
    for entry in entries:
        p = str(entry[0])
        if entry[1] > applied.get(p, -1):
            fresh.append(entry)
            last[p] = entry[1]
    return fresh, last


_MATCHES: dict[tuple[int, tuple[str, ...]], tuple[str, ...]] = {}


def _matching(budgets: Sequence[Any], labels: Mapping[str, str]) -> tuple[str, ...]:
    """Ids of the budgets whose scope the labels fall in (memoised per label combination)."""
    sig = tuple(labels[k] for k in _LABEL_ORDER)
    cache_key = (id(budgets), sig)
    found = _MATCHES.get(cache_key)
    if found is None:
        found = tuple(b.id for b in budgets if matches(b, labels["tenant"], labels, labels["model"]))
        if len(_MATCHES) >= 100_000:
            _MATCHES.clear()
        _MATCHES[cache_key] = found
    return found
