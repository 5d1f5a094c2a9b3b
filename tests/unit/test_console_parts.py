"""Pure parts of the console: rollup read plans, money display, stacking, SVG, self-hosting break-even."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from billing.console.data import stacked
from billing.console.svg import MAX_BAR, stacked_bars
from billing.rollups import merge_rows, plan_days, runs, utc_days
from billing.selfhost import SelfHostTable, break_even
from tokenledger.money import display_money

BERLIN = ZoneInfo("Europe/Berlin")
D = date(2026, 10, 10)


def test_a_local_day_overlaps_the_utc_days_of_its_offset() -> None:
    assert utc_days(D, BERLIN) == [date(2026, 10, 9), date(2026, 10, 10)]  # 22:00 UTC the day before
    assert utc_days(D, ZoneInfo("UTC")) == [D]
    assert utc_days(D, ZoneInfo("Pacific/Kiritimati")) == [date(2026, 10, 9), date(2026, 10, 10)]  # UTC+14


def test_plan_reads_a_day_from_its_rollup_only_while_nothing_was_inserted_since() -> None:
    inserts = {date(2026, 10, 9): 5, D: 7, date(2026, 10, 11): 3}
    built = {D: 12}  # built after seeing 5 + 7 rows of the two UTC days Berlin's Oct 10 spans
    plan = plan_days(inserts, built, [D], today=date(2026, 10, 20), tz=BERLIN)
    assert (plan.clean, plan.raw, plan.seen) == ((D,), (), {D: 12})
    # A late event or a redelivered duplicate on the 9th (UTC) moves the count: raw again.
    plan = plan_days({**inserts, date(2026, 10, 9): 6}, built, [D], today=date(2026, 10, 20), tz=BERLIN)
    assert (plan.clean, plan.raw) == ((), (D,))
    # Today is always raw, however fresh its rollup; a day without any insert is a true zero.
    plan = plan_days(inserts, {D: 12}, [D, date(2026, 10, 13)], today=D, tz=BERLIN)
    assert (plan.clean, plan.raw) == ((), (D,))


def test_runs_and_merge() -> None:
    days = [D, D + timedelta(days=1), D + timedelta(days=3)]
    assert runs(days) == [(D, D + timedelta(days=1)), (D + timedelta(days=3), D + timedelta(days=3))]
    merged = merge_rows(
        [[{"day": D, "cost_nanos": 5, "requests": 1}], [{"day": D, "cost_nanos": 7, "requests": 2}]], ["day"]
    )
    assert merged == [{"day": D, "cost_nanos": 12, "requests": 3}]


def test_display_money_never_shows_a_non_zero_amount_as_zero() -> None:
    assert display_money(313_000) == "0.000313 USD"  # a sub-cent month beside its per-request figure
    assert display_money(1_234_567_890_000) == "1,234.57 USD"
    assert display_money(9_999_999) == "0.01 USD"
    assert display_money(9_994_999) == "0.00999 USD"
    assert display_money(10_000_000) == "0.01 USD"
    assert display_money(7, "EUR") == "0.000000007 EUR"
    assert display_money(0) == "0.00 USD"
    assert display_money(-313_000) == "-0.000313 USD"


def test_stacked_keeps_the_largest_values_and_sums_the_rest() -> None:
    rows: list[dict[str, Any]] = [{"day": D, "model": f"m{i}", "cost_nanos": 100 - i} for i in range(9)]
    keys, grid = stacked(rows, "model", [D])
    assert keys == ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "(other)"]
    assert grid[D]["(other)"] == (100 - 7) + (100 - 8)
    assert sum(grid[D].values()) == sum(int(r["cost_nanos"]) for r in rows)


def test_a_one_day_chart_draws_one_ordinary_bar() -> None:
    svg = stacked_bars([D], ["spend"], {D: {"spend": 5_000_000_000}}, title="研发中心")
    assert f'width="{MAX_BAR:.1f}"' in svg and "<title>研发中心</title>" in svg


def test_break_even_per_family() -> None:
    table = SelfHostTable.load()
    assert table.gpu_hour_nanos == 2_990_000_000 and table.utilisation == Decimal("0.5")
    rows = [
        # 2e9 output tokens of gpt-4o-mini a month cost 2,400 USD: 1.20 USD per 1M output tokens.
        {
            "model": "gpt-4o-mini",
            "input_tokens": 8_000_000_000,
            "output_tokens": 2_000_000_000,
            "cost_nanos": 2_400 * 10**9,
        },
        {"model": "deepseek-chat", "input_tokens": 10, "output_tokens": 1_000_000, "cost_nanos": 700_000_000},
        {"model": "my-finetune", "input_tokens": 1, "output_tokens": 1, "cost_nanos": 1},
    ]
    small, deepseek = break_even(rows, table)
    assert small.family == "OpenAI mini" and small.gpu_class.gpus == 1
    replica = 2_990_000_000 * 730  # one H100 for a month: 2,182.70 USD
    assert small.replica_month_nanos == replica
    assert small.api_nanos_per_million == 1_200_000_000
    # break-even = replica / (1.2e-6 USD per token) = 1,818,916,667 tokens (rounded up)
    assert small.at.break_even_tokens == 1_818_916_667
    capacity = 5367 * 3600 * 730 * 5 // 10  # at 50 %: 7,052,238,000 tokens a month
    assert small.at.capacity_tokens == capacity
    assert small.at.self_hosted_nanos == replica and small.saving_nanos == 2_400 * 10**9 - replica
    assert small.recommendation == "self-hosting would be cheaper at this volume"
    # At 25 % busy one replica serves 3.5e9 tokens at 0.62 USD per 1M (replica / capacity, rounded up): below 1.20.
    assert [s.nanos_per_million for s in small.sensitivity] == [619_009_172, 309_504_586, 206_336_391, 154_752_293]
    # DeepSeek at 0.70 USD per 1M never pays for four H100 at any listed utilisation.
    assert deepseek.at.break_even_tokens is None and all(s.break_even_tokens is None for s in deepseek.sensitivity)
    assert deepseek.recommendation == "stay on the API: a replica never pays for itself at this utilisation"
