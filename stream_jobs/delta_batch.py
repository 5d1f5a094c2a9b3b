"""Group one batch's priced requests into per-key spend deltas (the first phase of the aggregation). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream_jobs.spend_state import DIMENSIONS, labels_of_event, state_key
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
        self._append(_targets(self._budgets, labels), (partition, offset, at_us, nanos))

    def add_event(self, partition: int, offset: int, at_us: int, nanos: int, event: Any) -> None:
        """:meth:`add` for a decoded usage event (its keys memoised per labels and model)."""
        data = event.data
        cache_key = (id(self._budgets), data.labels, data.model)
        found = _EVENT_TARGETS.get(cache_key)
        if found is None or found[0] is not self._budgets:
            found = (self._budgets, _targets(self._budgets, labels_of_event(event)))
            if len(_EVENT_TARGETS) >= 100_000:
                _EVENT_TARGETS.clear()
            _EVENT_TARGETS[cache_key] = found  # holding the budgets keeps their id unique
        self._append(found[1], (partition, offset, at_us, nanos))

    def _append(self, keys: tuple[str, ...], entry: Entry) -> None:
        entries = self._entries
        for key in keys:
            found = entries.get(key)
            if found is None:
                entries[key] = [entry]
            else:
                found.append(entry)

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


def _targets(budgets: Sequence[Any], labels: Mapping[str, str]) -> tuple[str, ...]:
    """Keys a request with these labels counts in: its non-empty dimension values, then its budgets."""
    tenant = labels["tenant"]
    dims = tuple(state_key(tenant, dim, labels[dim]) for dim in DIMENSIONS if labels[dim])
    return dims + tuple(BUDGET_PREFIX + budget_id for budget_id in _matching(budgets, labels))


# Per budget list, labels struct and model (a decoded event's labels are hashable).
_EVENT_TARGETS: dict[tuple[int, Any, str], tuple[Sequence[Any], tuple[str, ...]]] = {}
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
