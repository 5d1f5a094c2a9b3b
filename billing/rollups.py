"""Daily rollups for the console: exact with duplicates and late events (see 0004_console_rollups.sql).

A tenant-local day is *clean* when it is closed (before today in the tenant's timezone), has
a rollup, and the insert counts of the UTC days it overlaps still sum to what the build saw.
Readers take clean days from the rollup tables and every other day with data from
``usage_events FINAL``, so a figure never depends on whether the builder has run; the builder
only moves days from the slow path to the fast one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from billing.periods import day_start
from tokenledger.store.base import Store, load_query

log = logging.getLogger("tokenledger.rollups")

TOP_PER_DAY = 10
DIMS = ("department", "project", "provider", "model", "feature", "environment", "api_key")
SPEND_COLUMNS = (
    "tenant", "tz", "day", "department", "project", "provider", "model", "feature", "environment",
    "api_key", "traced", "requests", "input_tokens", "output_tokens", "cached_read_tokens", "cost_nanos",
    "built_at",
)  # fmt: skip
TOP_COLUMNS = (
    "tenant", "tz", "day", "rank", "event_time", "source", "event_id", "request_id", "user_id",
    "department", "project", "model", "feature", "input_tokens", "output_tokens", "cost_nanos", "built_at",
)  # fmt: skip


def utc_days(day: date, tz: ZoneInfo) -> list[date]:
    """The UTC calendar days that the local ``day`` in ``tz`` overlaps (one to three)."""
    start = day_start(day, tz)
    last = (day_start(day + timedelta(days=1), tz) - timedelta(microseconds=1)).date()
    return [start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1)]


@dataclass(frozen=True)
class DayPlan:
    """How each local day of a range is read: from the rollup, from the raw table, or not at all."""

    clean: tuple[date, ...]
    raw: tuple[date, ...]
    seen: dict[date, int]  # local day -> insert count of its UTC days now


def plan_days(
    inserts: dict[date, int], built: dict[date, int], days: Sequence[date], today: date, tz: ZoneInfo
) -> DayPlan:
    """Pure: which of ``days`` (local, in ``tz``) the rollup answers exactly.

    ``inserts`` is rows ever inserted per UTC day, ``built`` the count each built local day saw.
    """
    clean, raw, seen = [], [], {}
    for d in days:
        n = sum(inserts.get(u, 0) for u in utc_days(d, tz))
        seen[d] = n
        if n == 0:
            continue  # nothing ever inserted: a true zero
        if d < today and built.get(d) == n:
            clean.append(d)
        else:
            raw.append(d)
    return DayPlan(tuple(clean), tuple(raw), seen)


def runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as inclusive ``(first, last)`` runs."""
    out: list[tuple[date, date]] = []
    for d in sorted(days):
        if out and out[-1][1] + timedelta(days=1) == d:
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def day_params(tenant: str, tz: ZoneInfo, first: date, last: date, built_at: datetime, **extra: Any) -> dict[str, Any]:
    """Bound parameters of the per-local-day queries over local days ``first`` to ``last``."""
    return {
        "tenant": tenant,
        "tz": tz.key,
        "start": day_start(first, tz),
        "end": day_start(last + timedelta(days=1), tz),
        "built_at": built_at,
        **extra,
    }


def merge_rows(parts: Sequence[Sequence[Mapping[str, Any]]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Pure: add up rows of several sources that share the same key values."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rows in parts:
        for r in rows:
            k = tuple(r[c] for c in keys)
            found = out.get(k)
            if found is None:
                out[k] = dict(r)
            else:
                for col, v in r.items():
                    if col not in keys:
                        found[col] = int(found[col]) + int(v)
    return list(out.values())


class Rollups:
    """Reads and builds the rollups of one store (``clock`` gives the build stamp)."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.clock = store, clock

    def plan(self, tenant: str, tz: ZoneInfo, days: Sequence[date], today: date) -> DayPlan:
        """The read plan of ``days`` as of local ``today``."""
        if not days:
            return DayPlan((), (), {})
        params = {
            "tenant": tenant,
            "tz": tz.key,
            "first": min(days) - timedelta(days=1),
            "last": max(days) + timedelta(days=1),
        }
        inserts: dict[date, int] = {}
        built: dict[date, int] = {}
        for kind, day, n in self.store.query(load_query("rollup_state"), params).rows:
            (inserts if kind == "inserts" else built)[day] = int(n)
        return plan_days(inserts, built, days, today, tz)

    def _built(self, name: str, tenant: str, tz: ZoneInfo, clean: Sequence[date]) -> list[dict[str, Any]]:
        # One range query; rows of days in between that are not clean (stale builds) are dropped.
        params = {"tenant": tenant, "tz": tz.key, "first": min(clean), "last": max(clean)}
        keep = set(clean)
        return [r for r in self.store.query(load_query(name), params).dicts() if r["day"] in keep]

    def _raw(self, name: str, tenant: str, tz: ZoneInfo, first: date, last: date, **extra: Any) -> list[dict[str, Any]]:
        params = day_params(tenant, tz, first, last, self.clock(), **extra)
        return list(self.store.query(load_query(name), params).dicts())

    def spend(
        self,
        tenant: str,
        tz: ZoneInfo,
        days: Sequence[date],
        today: date,
        keys: Sequence[str] = ("day",),
        *,
        series: Sequence[Mapping[str, str]] = (),
    ) -> list[dict[str, Any]]:
        """Spend of ``days`` grouped by ``keys`` (``day`` and/or dimensions), exact as of now.

        Each row has the keys, ``requests``, token sums, ``cost_nanos``, ``traced_nanos`` and,
        per scope in ``series``, ``s<i>``: the cost inside that scope (its dimensions all in
        :data:`DIMS`). Clean days are summed from the rollup, others from ``usage_events FINAL``,
        in the store; rows of the two paths for the same key are added here.
        """
        for k in keys:
            if k != "day" and k not in DIMS:
                raise ValueError(f"unknown rollup key {k!r}")
        plan = self.plan(tenant, tz, days, today)
        params: dict[str, Any] = {"tenant": tenant, "tz": tz.key}
        series_sql = ""
        for i, scope in enumerate(series):
            conds = []
            for j, (dim, value) in enumerate(sorted(scope.items())):
                if dim not in DIMS:
                    raise ValueError(f"scope dimension {dim!r} is not in the rollup")
                conds.append(f"src.{dim} = {{s{i}_{j}:String}}")
                params[f"s{i}_{j}"] = value
            series_sql += f",\n    sumIf(src.cost_nanos, {' AND '.join(conds) or '1'}) AS s{i}"
        key_sql = ", ".join(keys) or "tenant"
        text = load_query("rollup_read").replace("__KEYS__", key_sql).replace("__SERIES__", series_sql)
        parts: list[list[dict[str, Any]]] = []
        if plan.clean:
            ranges = runs(plan.clean)
            where = " OR ".join(f"day BETWEEN {{f{i}:Date}} AND {{l{i}:Date}}" for i in range(len(ranges)))
            bound = {**params, **{f"f{i}": a for i, (a, _) in enumerate(ranges)}}
            bound |= {f"l{i}": b for i, (_, b) in enumerate(ranges)}
            source = load_query("rollup_days").replace("__RANGES__", where)
            parts.append(list(self.store.query(text.replace("__SOURCE__", f"({source})"), bound).dicts()))
        raw = runs(plan.raw)
        if raw:
            where = " OR ".join(
                f"(event_time >= {{a{i}:DateTime64(6, 'UTC')}} AND event_time < {{b{i}:DateTime64(6, 'UTC')}})"
                for i in range(len(raw))
            )
            bound = {**params, **{f"a{i}": day_start(a, tz) for i, (a, _) in enumerate(raw)}}
            bound |= {f"b{i}": day_start(b + timedelta(days=1), tz) for i, (_, b) in enumerate(raw)}
            source = load_query("raw_as_rollup").replace("__RANGES__", where)
            parts.append(list(self.store.query(text.replace("__SOURCE__", f"({source})"), bound).dicts()))
        if len(parts) == 1:
            return parts[0]
        return merge_rows(parts, list(keys) or ["tenant"])

    def top_requests(
        self, tenant: str, tz: ZoneInfo, days: Sequence[date], today: date, limit: int = TOP_PER_DAY
    ) -> list[dict[str, Any]]:
        """The ``limit`` (at most 10) costliest requests over ``days``: the top of each day's top ten."""
        limit = min(limit, TOP_PER_DAY)
        plan = self.plan(tenant, tz, days, today)
        rows: list[dict[str, Any]] = []
        if plan.clean:
            rows += self._built("rollup_top_requests", tenant, tz, plan.clean)
        for first, last in runs(plan.raw):
            rows += self._raw("top_requests_by_local_day", tenant, tz, first, last, limit=TOP_PER_DAY)
        rows.sort(key=lambda r: (-int(r["cost_nanos"]), r["source"], r["event_id"]))
        return rows[:limit]

    def build(self, tenant: str, tz: ZoneInfo, days: Sequence[date], today: date) -> int:
        """Build the rollup of each closed day of ``days`` that has data and none fresh; returns days built."""
        plan = self.plan(tenant, tz, [d for d in days if d < today], today)
        for d in plan.raw:
            self._build_day(tenant, tz, d, plan.seen[d])
        return len(plan.raw)

    def _build_day(self, tenant: str, tz: ZoneInfo, day: date, seen: int) -> None:
        # The counts were read before these queries: rows inserted meanwhile raise the count
        # above ``seen``, so such a day is read raw again until the next build.
        built_at = self.clock()
        for table, name, columns, extra in (
            ("spend_rollup", "spend_by_local_day", SPEND_COLUMNS, {}),
            ("top_requests_rollup", "top_requests_by_local_day", TOP_COLUMNS, {"limit": TOP_PER_DAY}),
        ):
            params = day_params(tenant, tz, day, day, built_at, **extra)
            self.store.execute(f"INSERT INTO {table} ({', '.join(columns)}) " + load_query(name), params)
        self.store.insert(
            "rollup_days", ("tenant", "tz", "day", "inserts_seen", "built_at"), [(tenant, tz.key, day, seen, built_at)]
        )

    def tenants_with_data(self) -> list[str]:
        """Tenants that ever had a row inserted."""
        return [str(r[0]) for r in self.store.query("SELECT DISTINCT tenant FROM usage_day_inserts").rows]

    def data_days(self, tenant: str) -> tuple[date, date] | None:
        """First and last UTC day with inserted rows of ``tenant``."""
        rows = self.store.query(
            "SELECT min(day), max(day), count() FROM usage_day_inserts WHERE tenant = {tenant:String}",
            {"tenant": tenant},
        ).rows
        if not rows or not rows[0][2]:
            return None
        return rows[0][0], rows[0][1]

    def refresh(self, tenant: str, tz: ZoneInfo, now: datetime) -> int:
        """Build every stale closed day of ``tenant`` in ``tz``; returns days built."""
        span = self.data_days(tenant)
        if span is None:
            return 0
        today = now.astimezone(tz).date()
        first, last = span[0] - timedelta(days=1), min(span[1] + timedelta(days=1), today - timedelta(days=1))
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        built = 0
        for chunk in range(0, len(days), 62):
            built += self.build(tenant, tz, days[chunk : chunk + 62], today)
        return built
