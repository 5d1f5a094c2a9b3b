"""Build a monthly bill for one scope from the store (as billed, or from a re-rating run)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from billing.advice import batch_suggestions, cache_suggestions, downgrade_suggestions
from billing.context import BillingContext
from billing.model import Bill, DayLine, FeatureLine, ModelLine, Scope, Summary, TopRequest
from billing.periods import Period, day_start
from tokenledger.store.base import Store, load_query

AS_BILLED = "as-billed"
DIMENSIONS = ("department", "project", "user_id", "feature", "model", "api_key", "environment", "tenant")

# The rows one bill covers: a tenant, one dimension value, a half-open period.
_BILL_SCOPE = """tenant = {tenant:String}
  AND {dim:Identifier} = {value:String}
  AND event_time >= {start:DateTime64(6, 'UTC')}
  AND event_time < {end:DateTime64(6, 'UTC')}"""

_SOURCES = {
    AS_BILLED: "(SELECT * FROM usage_events FINAL)",
    "rerated": "(SELECT * FROM usage_rerated FINAL WHERE rating_run = {rating_run:String})",
}


def scoped_query(
    store: Store,
    name: str,
    rating: str,
    params: dict[str, Any],
    scope: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``sql/queries/<name>.sql`` against the as-billed rows or a re-rating run's rows.

    ``rating`` is ``as-billed`` or ``rerated:<run id>``; the source is one of two fixed
    subqueries, never user text. ``__BILL_SCOPE__`` becomes the bound tenant, dimension and
    period filter of a bill; ``scope`` fills ``__SCOPE__`` with bound conditions on
    allowlisted dimensions (``1`` when empty).
    """
    kind, _, run = rating.partition(":")
    sql = load_query(name).replace("__SOURCE__", _SOURCES[kind]).replace("__BILL_SCOPE__", _BILL_SCOPE)
    bound = {**params, "rating_run": run} if kind == "rerated" else dict(params)
    conditions = []
    for i, (dim, value) in enumerate(sorted((scope or {}).items())):
        if dim not in DIMENSIONS:
            raise ValueError(f"unknown scope dimension {dim!r}")
        conditions.append(f"{{d{i}:Identifier}} = {{v{i}:String}}")
        bound[f"d{i}"], bound[f"v{i}"] = dim, value
    sql = sql.replace("__SCOPE__", " AND ".join(conditions) or "1")
    return list(store.query(sql, bound).dicts())


def _ratio(part: int, whole: int, places: int = 4) -> Decimal:
    if whole == 0:
        return Decimal(0)
    return (Decimal(part) / whole).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def build_bill(store: Store, scope: Scope, period: Period, ctx: BillingContext, rating: str = AS_BILLED) -> Bill:
    """Query the store and assemble the bill.

    Args:
        store: Where the atomic records are.
        scope: Tenant and dimension value billed.
        period: Calendar month in the billing timezone.
        ctx: Configuration (currency, timezone, advice), prices for savings estimates (at the
            period's last instant), FX (each day at its own rate) and the clock.
        rating: ``as-billed`` or ``rerated:<run id>``.
    """
    config = ctx.config
    if scope.dimension not in DIMENSIONS:
        raise ValueError(f"unknown bill dimension {scope.dimension!r}")
    p = {
        "tenant": scope.tenant,
        "dim": scope.dimension,
        "value": scope.value,
        "start": period.start,
        "end": period.end,
    }
    q = {
        "summary": scoped_query(store, "bill_summary", rating, p)[0],
        "models": scoped_query(store, "bill_by_model", rating, p),
        "features": scoped_query(store, "bill_by_feature", rating, p),
        "daily": scoped_query(store, "bill_daily", rating, {**p, "tz": config.timezone}),
        "top": scoped_query(store, "bill_top_requests", rating, {**p, "limit": 10}),
        "short": scoped_query(
            store, "advice_short_outputs", rating, {**p, "short_output": config.advice.short_output_tokens}
        ),
        "offline": scoped_query(
            store, "advice_offline_features", rating, {**p, "features": list(config.advice.offline_features)}
        ),
    }
    return assemble_bill(q, scope, period, ctx, rating)


def assemble_bill(q: dict[str, Any], scope: Scope, period: Period, ctx: BillingContext, rating: str) -> Bill:
    """Pure assembly of a bill from query results."""
    config, table, fx = ctx.config, ctx.table, ctx.fx
    s = q["summary"]
    total = int(s["cost_nanos"] or 0)
    requests = int(s["requests"])
    daily = []
    for d in q["daily"]:
        conv = fx.convert(int(d["cost_nanos"]), "USD", config.currency, day_start(d["day"], period.tz))
        daily.append(
            DayLine(
                d["day"],
                int(d["requests"]),
                int(d["tokens"]),
                int(d["cost_nanos"]),
                conv.nanos,
                conv.rate,
                None if conv.rate_valid_from is None else conv.rate_valid_from.astimezone(UTC).date(),
            )
        )
    summary = Summary(
        requests=requests,
        input_tokens=int(s["input_tokens"]),
        output_tokens=int(s["output_tokens"]),
        cached_read_tokens=int(s["cached_read_tokens"]),
        cache_write_tokens=int(s["cache_write_tokens"]),
        reasoning_tokens=int(s["reasoning_tokens"]),
        cost_nanos=total,
        input_nanos=int(s["input_nanos"]),
        cached_read_nanos=int(s["cached_read_nanos"]),
        cache_write_nanos=int(s["cache_write_nanos"]),
        output_nanos=int(s["output_nanos"]),
        reasoning_nanos=int(s["reasoning_nanos"]),
        cached_ratio=_ratio(int(s["cached_read_tokens"]), int(s["input_tokens"])),
        avg_cost_nanos_per_request=int(
            (Decimal(total) / requests).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) if requests else 0
        ),
        cost_nanos_local=sum(d.cost_nanos_local for d in daily),
        currency=config.currency,
        unknown_model_requests=int(s["unknown_model_requests"]),
        price_versions=int(s["price_versions"]),
    )
    models = tuple(
        ModelLine(
            str(m["provider"]),
            str(m["model"]),
            int(m["requests"]),
            int(m["input_tokens"]),
            int(m["output_tokens"]),
            int(m["cached_read_tokens"]),
            int(m["cache_write_tokens"]),
            int(m["reasoning_tokens"]),
            int(m["cost_nanos"]),
            _ratio(int(m["cost_nanos"]), total),
        )
        for m in q["models"]
    )
    features = tuple(
        FeatureLine(
            str(f["feature"]) or "(none)",
            int(f["requests"]),
            int(f["input_tokens"]),
            int(f["output_tokens"]),
            int(f["cost_nanos"]),
            _ratio(int(f["cost_nanos"]), total),
        )
        for f in q["features"]
    )
    top = tuple(
        TopRequest(
            t["event_time"],
            str(t["source"]),
            str(t["event_id"]),
            str(t["request_id"]),
            str(t["user_id"]),
            str(t["provider"]),
            str(t["model"]),
            str(t["feature"]),
            int(t["input_tokens"]),
            int(t["output_tokens"]),
            int(t["cost_nanos"]),
        )
        for t in q["top"]
    )
    at = period.end - timedelta(microseconds=1)  # prices in force at the period's last instant
    advice = [
        *cache_suggestions(models, table, at, config.advice),
        *downgrade_suggestions(q["short"], table, at, config.advice),
        *batch_suggestions(q["offline"], table, at, config.advice),
    ]
    advice.sort(key=lambda a: (-a.saving_nanos, a.kind, a.title))
    return Bill(
        scope=scope,
        period=period.label,
        period_start=period.start,
        period_end=period.end,
        timezone=config.timezone,
        currency=config.currency,
        rating=rating,
        generated_at=ctx.clock(),
        summary=summary,
        by_model=models,
        by_feature=features,
        daily=tuple(daily),
        top_requests=top,
        suggestions=tuple(advice),
    )
