"""Group one batch's priced requests into per-key spend deltas (the first phase of the aggregation). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stream_jobs.spend_state import DIMENSIONS, labels_of_event, state_key
from tokenledger.control.state import ControlState, TenantBudgets
from tokenledger.schema.deltas import BUDGET_PREFIX, encode_deltas
from tokenledger.schema.raw_batch import partition_for

MAX_ENTRIES = 5_000  # per delta message: ~250 KB, well under the broker's 1 MB default message limit
_LABEL_ORDER = ("tenant", "user", "department", "project", "feature", "environment", "api_key", "model")


class DeltaBatch:
    """Entries per key for one batch, in offset order within each source partition.

    Budgets come from the live control state (:class:`tokenledger.control.state.ControlState`):
    a request counts in the budgets of its tenant whose scope it falls in and whose
    ``counts_from`` (if any) is not after its event time.
    """

    def __init__(self, control: ControlState) -> None:
        self._control = control
        self._entries: dict[str, list[Entry]] = {}

    def add(self, partition: int, offset: int, at_us: int, nanos: int, labels: Mapping[str, str]) -> None:
        """One priced request: its cost goes to each of its dimension values and matching budgets."""
        dims, budgets = _targets(self._control, labels)
        self._append(dims + _counted(budgets, at_us), (partition, offset, at_us, nanos))

    def add_event(self, partition: int, offset: int, at_us: int, nanos: int, event: Any) -> None:
        """:meth:`add` for a decoded usage event (its keys memoised per labels and model)."""
        data = event.data
        cache_key = (data.labels, data.model)
        found = _EVENT_TARGETS.get(cache_key)
        index = self._control.tenant_budgets(data.labels.tenant)
        if found is None or found[0] is not index:
            found = (index, *_targets(self._control, labels_of_event(event)))
            if len(_EVENT_TARGETS) >= 100_000:
                _EVENT_TARGETS.clear()
            _EVENT_TARGETS[cache_key] = found  # holding the index: a changed tenant's entries are stale
        self._append(found[1] + _counted(found[2], at_us) if found[2] else found[1], (partition, offset, at_us, nanos))

    def _append(self, keys: tuple[str, ...], entry: Entry) -> None:
        entries = self._entries
        for key in keys:
            found = entries.get(key)
            if found is None:
                entries[key] = [entry]
            else:
                found.append(entry)

    def partition_messages(self, partitions: int, max_entries: int = MAX_ENTRIES) -> list[tuple[int, bytes]]:
        """``(partition, value)``: per partition of ``spend-deltas``, its keys' deltas in v2 messages.

        A message holds at most about ``max_entries`` entries; a key with more is split into
        consecutive parts, in order, on its one partition.
        """
        open_: dict[int, list[tuple[str, list[Entry]]]] = {}
        sizes: dict[int, int] = {}
        out: list[tuple[int, bytes]] = []
        for key, entries in self._entries.items():
            p = partition_for(key.encode(), partitions)
            for i in range(0, len(entries), max_entries):
                part = entries[i : i + max_entries]
                if sizes.get(p, 0) + len(part) > max_entries and open_.get(p):
                    out.append((p, encode_deltas(open_.pop(p))))
                    sizes[p] = 0
                open_.setdefault(p, []).append((key, part))
                sizes[p] = sizes.get(p, 0) + len(part)
        out += [(p, encode_deltas(parts)) for p, parts in open_.items()]
        return out

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


Candidates = tuple[tuple[str, int | None], ...]  # (budget key, counts_from epoch µs or None)


def _targets(control: ControlState, labels: Mapping[str, str]) -> tuple[tuple[str, ...], Candidates]:
    """Keys a request with these labels counts in: its non-empty dimension values; and its budgets."""
    tenant = labels["tenant"]
    dims = tuple(state_key(tenant, dim, labels[dim]) for dim in DIMENSIONS if labels[dim])
    return dims, _matching(control.tenant_budgets(tenant), labels)


def _counted(candidates: Candidates, at_us: int) -> tuple[str, ...]:
    return tuple(key for key, since in candidates if since is None or at_us >= since)


# Per (labels struct, model) of a decoded event: (the tenant's budget index, dimension keys, budgets).
_EVENT_TARGETS: dict[tuple[Any, str], tuple[TenantBudgets, tuple[str, ...], Candidates]] = {}
_MATCHES: dict[tuple[int, tuple[str, ...]], tuple[TenantBudgets, Candidates]] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _matching(index: TenantBudgets, labels: Mapping[str, str]) -> Candidates:
    """The budgets whose scope the labels fall in (memoised per tenant index and label combination)."""
    if not index.by_id:
        return ()
    sig = tuple(labels[k] for k in _LABEL_ORDER)
    cache_key = (id(index), sig)
    found = _MATCHES.get(cache_key)
    if found is None or found[0] is not index:
        candidates = tuple(
            (BUDGET_PREFIX + b.id, None if b.counts_from is None else (b.counts_from - _EPOCH) // _MICROSECOND)
            for b in index.matching(labels, labels["model"])
        )
        if len(_MATCHES) >= 100_000:
            _MATCHES.clear()
        found = _MATCHES[cache_key] = (index, candidates)
    return found[1]


_MICROSECOND = timedelta(microseconds=1)
