"""The control state every process holds: records applied in topic order, and the budget index. Pure.

A process applies the control topic's records in offset order (:mod:`tokenledger.control.log`);
restarting replays the topic from its start, so a restarted process holds the same state.

Matching a request to its budgets goes through :class:`TenantBudgets`, one per tenant, filed
by :mod:`tokenledger.scope_index`: the cost does not grow with the number of budgets. A
tenant's index is rebuilt (copy on write) when one of its budgets changes: readers on other
threads always see a whole index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel

from tokenledger.budget_eval import scope_matches
from tokenledger.control.records import (
    ApiKey,
    ControlBudget,
    Defaults,
    FxDay,
    RateLimit,
    Tenant,
    encode,
    parse,
    split_key,
)
from tokenledger.scope_index import anchor_of, probes


@dataclass(frozen=True)
class Change:
    """One applied record: ``before``/``after`` are None for a create/delete."""

    kind: str
    id: str
    before: BaseModel | None
    after: BaseModel | None
    offset: int


class TenantBudgets:
    """One tenant's budgets, filed for matching (immutable once built)."""

    __slots__ = ("anchored", "by_id", "unscoped")

    def __init__(self, budgets: Mapping[str, ControlBudget]) -> None:
        self.by_id = dict(budgets)
        self.unscoped: tuple[ControlBudget, ...] = tuple(b for b in budgets.values() if not b.scope)
        anchored: dict[tuple[str, str], list[ControlBudget]] = {}
        for b in budgets.values():
            where = anchor_of(b.scope)
            if where is not None:
                anchored.setdefault(where, []).append(b)
        self.anchored = {k: tuple(v) for k, v in anchored.items()}

    def matching(self, labels: Mapping[str, str], model: str) -> list[ControlBudget]:
        """The budgets whose scope the request's labels and model fall in, in id order."""
        found = list(self.unscoped)
        if self.anchored:
            for probe in probes(labels, model):
                for b in self.anchored.get(probe, ()):
                    if scope_matches(b.scope, labels, model):
                        found.append(b)
        found.sort(key=lambda b: b.id)
        return found


_EMPTY = TenantBudgets({})


@dataclass
class ControlState:
    """Tenants, budgets, keys, defaults and FX rates as of ``offset`` (the last record applied)."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    budgets: dict[str, ControlBudget] = field(default_factory=dict)
    keys: dict[str, ApiKey] = field(default_factory=dict)
    fx: dict[str, FxDay] = field(default_factory=dict)
    limits: dict[str, RateLimit] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    offset: int = -1
    invalid: int = 0  # records that did not validate (counted, skipped)
    seen: set[str] = field(default_factory=set)  # every key ever written, deleted ones included
    fx_version: int = 0  # changes whenever an FX record does
    kinds: frozenset[str] | None = None  # the kinds this process holds (None: all); others are skipped
    _by_tenant: dict[str, TenantBudgets] = field(default_factory=dict)
    _by_digest: dict[str, ApiKey] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _touched: tuple[str, ...] = ()
    _limits_by_tenant: dict[str, tuple[RateLimit, ...]] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None, offset: int) -> Change | None:
        """Apply one record (``value`` None: a tombstone). Returns what changed, or None."""
        with self._lock:
            self.offset = max(self.offset, offset)
            if self.kinds is not None and key.partition("/")[0] not in self.kinds:
                return None  # e.g. a worker does not hold a million ingest keys
            self.seen.add(key)
            try:
                kind, rid = split_key(key)
                after = None if value is None else parse(kind, orjson.loads(value))
            except (ValueError, orjson.JSONDecodeError):  # pydantic's ValidationError is a ValueError
                self.invalid += 1
                return None
            if after is not None and getattr(after, "id", rid) != rid and kind not in ("defaults", "fx"):
                self.invalid += 1
                return None
            before = self._set(kind, rid, after)
            if before == after:
                return None
            return Change(kind, rid, before, after, offset)

    def _set(self, kind: str, rid: str, after: BaseModel | None) -> BaseModel | None:
        if kind == "defaults":
            before_d = self.defaults
            self.defaults = after if isinstance(after, Defaults) else Defaults()
            return before_d
        table = self.table(kind)
        before = table.pop(rid, None)
        if after is not None:
            table[rid] = after
        if kind == "budget":
            self._touched = (rid,)
            for b in (before, after):
                if isinstance(b, ControlBudget):
                    self._reindex(b.tenant)
        elif kind == "fx":
            self.fx_version += 1
        elif kind == "limit":
            for lim in (before, after):
                if isinstance(lim, RateLimit):
                    mine = [x for x in self.limits.values() if x.tenant == lim.tenant]
                    self._limits_by_tenant[lim.tenant] = tuple(sorted(mine, key=lambda x: x.id))
        elif kind == "key":
            if before is not None:
                self._by_digest.pop(before.sha256, None)
            if isinstance(after, ApiKey):
                self._by_digest[after.sha256] = after
        return before  # type: ignore[no-any-return]

    def _reindex(self, tenant: str) -> None:
        ids = {b.id for b in self._by_tenant.get(tenant, _EMPTY).by_id.values()}
        ids |= set(self._touched)
        mine = {i: self.budgets[i] for i in ids if i in self.budgets and self.budgets[i].tenant == tenant}
        if mine:
            self._by_tenant[tenant] = TenantBudgets(mine)
        else:
            self._by_tenant.pop(tenant, None)

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, str, BaseModel | None]], kinds: frozenset[str] | None = None
    ) -> ControlState:
        """A state holding ``(kind, id, record)`` records applied in order (tests, benches, offline use)."""
        state = cls(kinds=kinds)
        for offset, (kind, rid, record) in enumerate(records):
            state.apply(f"{kind}/{rid}", None if record is None else encode(record), offset)
        return state

    # Readers (any thread).

    def table(self, kind: str) -> dict[str, Any]:
        """The records of one kind by id (``tenant``, ``budget``, ``key``, ``fx``)."""
        tables: dict[str, dict[str, Any]] = {
            "tenant": self.tenants,
            "budget": self.budgets,
            "key": self.keys,
            "fx": self.fx,
            "limit": self.limits,
        }
        return tables[kind]

    def tenant_limits(self, tenant: str) -> tuple[RateLimit, ...]:
        """The tenant's rate limits, in id order."""
        return self._limits_by_tenant.get(tenant, ())

    def tenant_budgets(self, tenant: str) -> TenantBudgets:
        """The tenant's budget index (a whole, immutable one)."""
        return self._by_tenant.get(tenant, _EMPTY)

    def key_for(self, sha256_hex: str, kind: str) -> ApiKey | None:
        """The live key of this kind with this digest (revoked keys are gone)."""
        key = self._by_digest.get(sha256_hex)
        return key if key is not None and key.kind == kind else None

    def tenant(self, tenant: str) -> Tenant:
        """The tenant's record, or one from the defaults."""
        found = self.tenants.get(tenant)
        if found is not None:
            return found
        d = self.defaults
        return Tenant(id=tenant if _valid_id(tenant) else "unknown", timezone=d.timezone, currency=d.currency)

    def zone(self, tenant: str) -> ZoneInfo:
        """Timezone of the tenant's calendar periods."""
        return _zone_of(self.tenant(tenant).timezone)


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= 64 and value[0].isalnum() and all(c.isalnum() or c in "._-" for c in value)


_ZONES: dict[str, ZoneInfo] = {}


def _zone_of(name: str) -> ZoneInfo:
    found = _ZONES.get(name)
    if found is None:
        found = _ZONES[name] = ZoneInfo(name)
    return found


Listener = Callable[[Change], None]
