"""The finance console's pages, served by the billing service (aiohttp, server-rendered HTML + SVG).

Routes (``/console/t/{tenant}/...`` needs a session of that tenant or its bearer token; another
tenant's gets a JSON 403, none a redirect to the sign-in page):

* ``GET/POST /console/login``, ``POST /console/logout``, ``GET /console`` (to the tenant's overview)
* ``GET /console/t/{tenant}/overview?month=YYYY-MM``, ``spend?month&by=department|project|model|feature``,
  ``budgets``, ``bills?month``, ``allocation?month&party=project|department|source``, ``advice?month``
* ``GET /console/static/console.css``
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import date
from html import escape
from pathlib import Path
from urllib.parse import quote, urlencode

from aiohttp import web

from billing.allocation import METHODS
from billing.console.data import PARTIES, STACK_DIMS, AllocationView, Cached, ConsoleData, Money, previous_month
from billing.console.session import COOKIE, TTL_S, Sessions
from billing.console.svg import legend, meter, stacked_bars
from billing.jobs import file_part
from billing.model import Bill
from billing.selfhost import share
from tokenledger.http_edge import bearer_token, error_response
from tokenledger.money import display_money
from tokenledger.store.base import StoreRejected, StoreUnavailable

STATIC = Path(__file__).resolve().parent / "static"
_MONTH = re.compile(r"^\d{4}-(?:0[1-9]|1[0-2])$")
PAGES = ("overview", "spend", "budgets", "bills", "allocation", "advice")


class BadQuery(ValueError):
    """A query value the page refuses (400), named in the message."""


def usd(nanos: int) -> str:
    """USD for people."""
    return display_money(nanos, "USD")


def pct(part: int, whole: int) -> str:
    """A share in percent, one decimal."""
    return f"{share(part, whole) * 100:.1f} %" if whole else "–"


def _layout(title: str, body: str, tenant: str | None = None, page: str = "", month: str | None = None) -> str:
    nav = ""
    if tenant is not None:
        q = f"?month={month}" if month and page != "budgets" else ""
        links = "".join(
            f'<a href="/console/t/{quote(tenant)}/{p}{q if p != "budgets" else ""}"'
            f"{' class=on' if p == page else ''}>{p.capitalize()}</a>"
            for p in PAGES
        )
        nav = (
            f'<nav aria-label="pages">{links}</nav><span class="muted">{escape(tenant)}</span>'
            '<form method="post" action="/console/logout"><button type="submit">Sign out</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · tokenledger</title>"
        '<link rel="stylesheet" href="/console/static/console.css"></head><body>'
        f'<header><span class="brand">tokenledger</span>{nav}</header><main>{body}</main></body></html>'
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        },
    )


def _card(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="muted">{sub}</div>' if sub else ""
    return f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{value}</div>{sub_html}</div>'


def _table(
    head: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int] = frozenset(), tid: str = ""
) -> str:
    th = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    ident = f' id="{tid}"' if tid else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _tabs(base: str, name: str, values: Sequence[str], on: str, extra: dict[str, str]) -> str:
    links = "".join(
        f'<a href="{base}?{urlencode({**extra, name: v})}"{" class=on" if v == on else ""}>{escape(v)}</a>'
        for v in values
    )
    return f'<div class="tabs" role="tablist" aria-label="{escape(name)}">{links}</div>'


def _money(m: Money) -> tuple[str, str]:
    return usd(m.usd_nanos), display_money(m.local_nanos, m.currency)


def _as_of(cached: Cached) -> str:
    at = cached.computed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if cached.fresh:
        return f"Computed {at} over every stored request of the month."
    return f"As of {at}: requests stored since then are being added (reload in a moment)."


class ConsolePages:
    """Handlers over one :class:`ConsoleData`."""

    def __init__(self, data: ConsoleData, sessions: Sessions) -> None:
        self.data, self.sessions = data, sessions

    def routes(self, app: web.Application) -> None:
        """Register the console's routes."""
        app.router.add_get("/console", self.home)
        app.router.add_get("/console/login", self.login_form)
        app.router.add_post("/console/login", self.login)
        app.router.add_post("/console/logout", self.logout)
        app.router.add_get("/console/static/console.css", self.css)
        app.router.add_get("/console/t/{tenant}/{page}", self.page)

    def signed_in(self, request: web.Request) -> str | None:
        """The tenant of the request's session cookie or bearer token."""
        tenant = self.sessions.tenant(request.cookies.get(COOKIE))
        if tenant is not None:
            return tenant
        token = bearer_token(request.headers.get("Authorization"))
        found = self.sessions.tenant_of_token(token) if token else None
        return None if found is None else found[0]

    async def css(self, _request: web.Request) -> web.Response:
        """The stylesheet (cached for an hour: it changes only with a release)."""
        return web.Response(
            body=(STATIC / "console.css").read_bytes(),
            content_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def home(self, request: web.Request) -> web.Response:
        """To the signed-in tenant's overview, or to the sign-in page."""
        tenant = self.signed_in(request)
        raise web.HTTPSeeOther(f"/console/t/{quote(tenant)}/overview" if tenant else "/console/login")

    async def login_form(self, _request: web.Request, error: str = "") -> web.Response:
        """The sign-in form."""
        msg = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
        body = (
            '<form class="login" method="post" action="/console/login"><h1>Sign in</h1>'
            '<p class="muted">With your tenant\'s billing token.</p>'
            f'{msg}<label for="token">Billing token</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password" required>'
            '<button type="submit">Sign in</button></form>'
        )
        return _html(_layout("Sign in", body), 401 if error else 200)

    async def login(self, request: web.Request) -> web.Response:
        """Open a session for a valid billing token."""
        form = await request.post()
        token = str(form.get("token", "")).strip()
        opened = self.sessions.open(token) if token else None
        if opened is None:
            return await self.login_form(request, "That token is not a billing token of any tenant.")
        sid, tenant = opened
        resp = web.HTTPSeeOther(f"/console/t/{quote(tenant)}/overview")
        resp.set_cookie(COOKIE, sid, max_age=TTL_S, path="/", httponly=True, samesite="Strict", secure=request.secure)
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        """End the session."""
        self.sessions.close(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/console/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    async def page(self, request: web.Request) -> web.Response:
        """One console page of one tenant."""
        tenant, page = request.match_info["tenant"], request.match_info["page"]
        if page not in PAGES:
            return error_response(404, f"no console page {page!r}; pages: {', '.join(PAGES)}")
        who = self.signed_in(request)
        if who is None:
            if "Authorization" in request.headers:
                return error_response(401, "Unauthorized", {"WWW-Authenticate": "Bearer"})
            raise web.HTTPSeeOther("/console/login")
        if who != tenant:
            return error_response(403, "Forbidden")
        return await self._render(getattr(self, f"_{page}"), tenant, request)

    async def _render(
        self, render: Callable[[str, web.Request], str], tenant: str, request: web.Request
    ) -> web.Response:
        try:
            text = await asyncio.get_running_loop().run_in_executor(None, render, tenant, request)
        except BadQuery as exc:
            return error_response(400, str(exc))
        except LookupError as exc:  # an exchange rate the configuration lacks
            return error_response(422, str(exc))
        except (StoreUnavailable, StoreRejected) as exc:
            return error_response(503, f"store unavailable: {exc}", {"Retry-After": "5"})
        return _html(text)

    # -- query values --------------------------------------------------------------------------
    def _month(self, tenant: str, request: web.Request) -> str:
        month = request.query.get("month") or self.data.current_month(tenant)
        if not _MONTH.match(month):
            raise BadQuery(f"month {month!r} is not YYYY-MM (01-12)")
        return month

    def _choice(self, request: web.Request, name: str, values: Sequence[str]) -> str:
        value = request.query.get(name, values[0])
        if value not in values:
            raise BadQuery(f"{name} {value!r} must be one of {', '.join(values)}")
        return value

    def _months_nav(self, tenant: str, page: str, month: str, extra: dict[str, str] | None = None) -> str:
        months = self.data.months_with_data(tenant)
        if month not in months:
            months = sorted({*months, month}, reverse=True)
        base = f"/console/t/{quote(tenant)}/{page}"
        return _tabs(base, "month", months, month, extra or {})

    # -- pages ---------------------------------------------------------------------------------
    def _overview(self, tenant: str, request: web.Request) -> str:
        month = self._month(tenant, request)
        o = self.data.overview(tenant, month)
        total_usd, total_local = _money(o.total)
        prev_usd, _ = _money(o.previous)
        # Mid-month, compare where the month is heading (the forecast), not the days so far.
        heading = o.forecast.projected_nanos if o.forecast is not None else o.total.usd_nanos
        delta = heading - o.previous.usd_nanos
        sign = "+" if delta >= 0 else "−"
        what = "forecast " if o.forecast is not None else ""
        change = (
            f"{what}{sign}{usd(abs(delta))} ({sign}{pct(abs(delta), o.previous.usd_nanos)})"
            if o.previous.usd_nanos
            else "no spend that month"
        )
        cards = [
            _card(f"Spend {month} (USD)", f'<span id="total-usd">{total_usd}</span>', f"{o.requests:,} requests"),
            _card(
                f"In {o.total.currency}",
                f'<span id="total-local">{total_local}</span>',
                "converted per day at that day's rate",
            ),
            _card(f"Versus {previous_month(month)}", f'<span id="vs-last">{prev_usd}</span>', change),
        ]
        chart_days = self.data.period(tenant, month).days
        grid = {d: {"spend": o.daily.get(d, 0)} for d in chart_days}
        faded: frozenset[date] = frozenset()
        if o.forecast is not None:
            f = o.forecast
            cards.append(
                _card(
                    "Month-end forecast",
                    f'<span id="forecast">{usd(f.projected_nanos)}</span>',
                    f"80 % interval {usd(f.low_nanos)} – {usd(f.high_nanos)}",
                )
            )
            for d, n in f.daily_forecast:
                grid[d] = {"spend": n}
            faded = frozenset(d for d, _ in f.daily_forecast)
        chart = stacked_bars(chart_days, ["spend"], grid, faded=faded, title=f"Daily spend {month}")
        note = "Lighter bars: forecast." if faded else ""
        budget_rows = [
            [
                escape(b.budget.id),
                escape(", ".join(f"{k}={v}" for k, v in sorted(b.budget.scope.items())) or "(whole tenant)"),
                usd(b.budget.limit_nanos),
                f'<span class="state state-{b.state}">{b.state}</span>',
                b.exhausted_on.isoformat() if b.exhausted_on else "not this month",
            ]
            for b in o.budgets
        ]
        budgets = _table(
            ["Budget", "Scope", "Limit", "State", "Forecast exhaustion"],
            budget_rows,
            frozenset({2}),
            "overview-budgets",
        )
        return _layout(
            "Overview",
            f"<h1>{escape(tenant)} · {month}</h1>{self._months_nav(tenant, 'overview', month)}"
            f'<div class="cards">{"".join(cards)}</div>'
            f'<div class="panel">{chart}<p class="muted">{note} Timezone {escape(o.timezone)}.</p></div>'
            f"<h2>Budgets</h2>{budgets}",
            tenant,
            "overview",
            month,
        )

    def _spend(self, tenant: str, request: web.Request) -> str:
        month = self._month(tenant, request)
        by = self._choice(request, "by", STACK_DIMS)
        keys, grid, top, total = self.data.spend_page(tenant, month, by)
        days = self.data.period(tenant, month).days
        chart = stacked_bars(days, keys, grid, title=f"Daily spend by {by}")
        sums = {k: sum(g.get(k, 0) for g in grid.values()) for k in keys}
        value_rows = [[escape(k), usd(sums[k]), pct(sums[k], total.usd_nanos)] for k in keys]
        top_rows = [
            [
                escape(t["event_time"].strftime("%Y-%m-%d %H:%M:%S")),
                escape(str(t["request_id"])),
                escape(str(t["user_id"])),
                escape(str(t["department"])),
                escape(str(t["project"])),
                escape(str(t["model"])),
                f"{int(t['input_tokens']):,}",
                f"{int(t['output_tokens']):,}",
                usd(int(t["cost_nanos"])),
            ]
            for t in top
        ]
        base = f"/console/t/{quote(tenant)}/spend"
        return _layout(
            "Spend",
            f"<h1>Spend · {month}</h1>{self._months_nav(tenant, 'spend', month, {'by': by})}"
            f"{_tabs(base, 'by', STACK_DIMS, by, {'month': month})}"
            f'<div class="panel" id="spend-chart" data-by="{by}">{chart}{legend(keys)}</div>'
            f"<h2>By {by}</h2>"
            + _table([by, "USD", "Share"], value_rows, frozenset({1, 2}), "spend-by")
            + f'<p class="muted">Total <span id="spend-total">{usd(total.usd_nanos)}</span>.</p>'
            f"<h2>Top requests</h2>"
            + _table(
                ["Time (UTC)", "Request", "User", "Department", "Project", "Model", "Input", "Output", "USD"],
                top_rows,
                frozenset({6, 7, 8}),
                "top-requests",
            ),
            tenant,
            "spend",
            month,
        )

    def _budgets(self, tenant: str, _request: web.Request) -> str:
        o = self.data.budgets(tenant)
        now = self.data.now(tenant)
        rows = []
        for b in o.budgets:
            left = "–"
            if b.period_end is not None:
                secs = max(0, int((b.period_end - now).total_seconds()))
                left = f"{secs // 86400} d {secs % 86400 // 3600} h"
            spent = usd(b.spent_nanos) if b.live else "no crossing yet"
            rows.append(
                [
                    escape(b.budget.id),
                    escape(", ".join(f"{k}={v}" for k, v in sorted(b.budget.scope.items())) or "(whole tenant)"),
                    escape(b.budget.period),
                    f'<span class="state state-{b.state}">{b.state}</span>',
                    spent,
                    usd(b.budget.limit_nanos),
                    meter(b.spent_nanos, b.budget.limit_nanos, b.state)
                    + f" {pct(b.spent_nanos, b.budget.limit_nanos)}",
                    left,
                ]
            )
        body = (
            "<h1>Budgets</h1><p class=muted>Live from the breakers topic: each budget's state and spend as "
            "its spend worker last published them.</p>"
            + _table(
                ["Budget", "Scope", "Period", "State", "Spent", "Limit", "Used", "Period ends in"],
                rows,
                frozenset({4, 5}),
                "budgets",
            )
        )
        return _layout("Budgets", body, tenant, "budgets")

    def _bills(self, tenant: str, request: web.Request) -> str:
        month = self._month(tenant, request)
        lines = self.data.bills(tenant, month)
        runs = sorted({run for line in lines for run in line.rerated})
        rows = []
        for line in lines:
            base = f"/v1/tenants/{quote(tenant)}/bills/{month}/{line.dimension}/{quote(line.value, safe='')}"
            links = " ".join(f'<a href="{base}.{fmt}" download>{fmt.upper()}</a>' for fmt in ("pdf", "csv", "json"))
            rerated = [
                (usd(line.rerated[r]) + f' <a href="{base}.pdf?rating=rerated:{quote(r)}">PDF</a>')
                if r in line.rerated
                else "–"
                for r in runs
            ]
            rows.append(
                [
                    escape(line.dimension),
                    escape(line.value),
                    f"{line.requests:,}",
                    usd(line.cost_nanos),
                    *rerated,
                    links,
                ]
            )
        head = ["Scope", "Value", "Requests", "As billed (USD)", *[f"Re-rated {escape(r)}" for r in runs], "Download"]
        numeric = frozenset({2, 3, *range(4, 4 + len(runs))})
        return _layout(
            "Bills",
            f"<h1>Bills · {month}</h1>{self._months_nav(tenant, 'bills', month)}"
            + _table(head, rows, numeric, "bills")
            + f'<p class="muted">Every scope with usage in {month}; file names as '
            f"bill-{escape(file_part(tenant))}-{month}-&lt;scope&gt;-&lt;value&gt;.&lt;format&gt;.</p>",
            tenant,
            "bills",
            month,
        )

    def _allocation(self, tenant: str, request: web.Request) -> str:
        month = self._month(tenant, request)
        party = self._choice(request, "party", PARTIES)
        cached = self.data.allocation(tenant, month, party)
        a: AllocationView = cached.value
        names = sorted({n for s in a.splits.values() for n in s}, key=lambda n: (-a.splits["hybrid"].get(n, 0), n))
        rows = [[escape(n), *(usd(a.splits[m].get(n, 0)) for m in METHODS)] for n in names]
        rows.append(["<b>Total</b>", *(f"<b>{usd(sum(a.splits[m].values()))}</b>" for m in METHODS)])
        base = f"/console/t/{quote(tenant)}/allocation"
        csv_links = " ".join(
            f'<a href="/v1/tenants/{quote(tenant)}/allocations/{month}.csv?method={m}&amp;party={party}">{m}</a>'
            for m in METHODS
        )
        return _layout(
            "Allocation",
            f"<h1>Allocation · {month}</h1>{self._months_nav(tenant, 'allocation', month, {'party': party})}"
            f"{_tabs(base, 'party', PARTIES, party, {'month': month})}"
            f'<p id="traced-share">Traced spend to split: <b>{usd(a.traced_nanos)}</b> of {usd(a.total_nanos)} '
            f"({pct(a.traced_nanos, a.total_nanos)}). Spend without a trace stays with its own attribution "
            "and is not in these columns.</p>"
            + _table([party, *METHODS], rows, frozenset(range(1, 1 + len(METHODS))), "allocation")
            + f'<p class="muted">CSV: {csv_links}. {_as_of(cached)}</p>',
            tenant,
            "allocation",
            month,
        )

    def _advice(self, tenant: str, request: web.Request) -> str:
        month = self._month(tenant, request)
        cached = self.data.tenant_bill(tenant, month)
        bill: Bill = cached.value
        sugg = [[escape(s.kind), escape(s.title), usd(s.saving_nanos)] for s in bill.suggestions]
        table = self.data.selfhost
        be_rows = []
        sens_rows = []
        for b in self.data.break_even(tenant, month):
            be_rows.append(
                [
                    escape(b.family),
                    escape(b.gpu_class.label),
                    f"{b.output_tokens:,}",
                    usd(b.api_nanos),
                    usd(b.api_nanos_per_million),
                    usd(b.replica_month_nanos),
                    f"{b.at.break_even_tokens:,}" if b.at.break_even_tokens is not None else "never",
                    usd(b.at.self_hosted_nanos),
                    escape(b.recommendation),
                ]
            )
            sens_rows.append(
                [escape(b.family), usd(b.api_nanos_per_million)]
                + [
                    usd(s.nanos_per_million)
                    + (f" · pays from {s.break_even_tokens:,}" if s.break_even_tokens is not None else " · never pays")
                    for s in b.sensitivity
                ]
            )
        body = (
            f"<h1>Advice · {month}</h1>{self._months_nav(tenant, 'advice', month)}"
            f"<h2>Savings</h2><p class=muted>{_as_of(cached)}</p>"
            + (
                _table(["Kind", "Suggestion", "Saving (USD/month)"], sugg, frozenset({2}), "suggestions")
                if sugg
                else "<p>No suggestions this month.</p>"
            )
            + "<h2>Self-hosting break-even</h2>"
            f"<p class=muted>GPU {usd(table.gpu_hour_nanos)} per hour, {table.hours_per_month} hours a month, "
            f"utilisation {table.utilisation * 100:.0f} % of the published throughput "
            "(tokenledger/data/self_hosting.yaml cites its sources). Volumes are output tokens per month.</p>"
            + _table(
                [
                    "Family",
                    "Self-hosted as",
                    "Output tokens",
                    "API cost",
                    "API per 1M out",
                    "Replica per month",
                    "Break-even",
                    "Self-hosted cost",
                    "Recommendation",
                ],
                be_rows,
                frozenset({2, 3, 4, 5, 6, 7}),
                "break-even",
            )
            + "<h2>Self-hosted cost per 1M output tokens by utilisation</h2>"
            + _table(
                ["Family", "API", *(f"{u * 100:.0f} % busy" for u in table.sensitivity)],
                sens_rows,
                frozenset(range(1, 2 + len(table.sensitivity))),
                "sensitivity",
            )
        )
        return _layout("Advice", body, tenant, "advice", month)
