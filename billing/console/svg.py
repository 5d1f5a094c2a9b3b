"""Server-side SVG charts: no script, no network, text in the page's own fonts (CJK included).

The SVG scales to its container (``viewBox`` with ``width=100%``), so one drawing serves a
1280 px screen and a phone. Bars are never wider than ``MAX_BAR`` units, so a one-day chart
draws one bar of normal width beside its label, not a block over it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from html import escape

from tokenledger.money import NANOS_PER_UNIT

PALETTE = ("#2f6db5", "#e0803a", "#3f9d5a", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")
WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 36
MAX_BAR = 48


def colour(i: int) -> str:
    """The i-th series colour."""
    return PALETTE[i % len(PALETTE)]


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` nano-USD (1, 2 or 5 x 10^n of a cent or more)."""
    if value <= 0:
        return NANOS_PER_UNIT // 100
    step = 10_000_000  # one cent
    while True:
        for m in (1, 2, 5):
            if step * m >= value:
                return step * m
        step *= 10


def _usd_tick(nanos: int) -> str:
    units = nanos / NANOS_PER_UNIT  # a tick label, never an amount anyone adds up
    return f"{units:,.0f}" if units >= 10 else f"{units:,.2f}"


def stacked_bars(
    days: Sequence[date],
    keys: Sequence[str],
    grid: Mapping[date, Mapping[str, int]],
    *,
    faded: frozenset[date] = frozenset(),
    title: str = "",
) -> str:
    """Daily bars stacked by ``keys`` (nano-USD); days in ``faded`` (a forecast) are drawn lighter."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(grid.get(d, {}).values()) for d in days]
    top = _nice_max(max(totals, default=0))
    n = max(len(days), 1)
    slot = plot_w / n
    bar = min(MAX_BAR, max(slot * 0.7, 1.0))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # grid lines and USD ticks
        v = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_usd_tick(v)}</text>')
    label_every = max(1, -(-n * 40 // plot_w))  # labels at least 40 units apart
    for i, d in enumerate(days):
        x = LEFT + slot * i + (slot - bar) / 2
        y = TOP + plot_h
        opacity = ' fill-opacity="0.35"' if d in faded else ""
        for k, key in enumerate(keys):
            v = grid.get(d, {}).get(key, 0)
            if v <= 0:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour(k)}"{opacity}>'
                f"<title>{d.isoformat()} {escape(key)}: {v / NANOS_PER_UNIT:,.2f} USD</title></rect>"
            )
        if i % label_every == 0:
            cx = LEFT + slot * i + slot / 2
            parts.append(
                f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">{d.day}</text>'
            )
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 4}" class="tick">USD per day</text>')
    parts.append("</svg>")
    return "".join(parts)


def legend(keys: Sequence[str]) -> str:
    """An HTML legend for ``stacked_bars`` (text in the page's fonts)."""
    items = "".join(
        f'<li><span class="swatch" style="background:{colour(i)}"></span>{escape(k)}</li>' for i, k in enumerate(keys)
    )
    return f'<ul class="legend">{items}</ul>'


def meter(spent: int, limit: int, state: str) -> str:
    """A horizontal bar of spend against a limit (capped at the bar's end)."""
    share = min(spent / limit, 1.0) if limit > 0 else 0.0
    return (
        f'<svg class="meter" viewBox="0 0 200 12" width="200" height="12" role="img" '
        f'aria-label="{share:.0%} of the limit" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="200" height="12" rx="3" class="meter-bg"/>'
        f'<rect width="{200 * share:.1f}" height="12" rx="3" class="meter-{escape(state)}"/></svg>'
    )
