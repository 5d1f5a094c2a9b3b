"""ECB reference-rate files as daily FX records; a day without a rate uses the last one before it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tokenledger.pricing import FxTable
from tokenledger.pricing.fx_import import entries_of, parse_ecb, usd_records

HISTORY = "Date,USD,JPY,CNY,\n2026-11-27,1.0500,160.00,7.5600,\n2026-11-26,1.0400,N/A,7.5000,\n"
DAILY = "Date, USD, JPY, CNY, \n27 November 2026, 1.0500, 160.00, 7.5600, \n"


def test_both_ecb_forms_give_the_same_rates() -> None:
    assert parse_ecb(DAILY)["CNY"] == {date(2026, 11, 27): Decimal("7.5600")}
    assert parse_ecb(HISTORY)["JPY"] == {date(2026, 11, 27): Decimal("160.00")}  # N/A left out


def test_usd_cross_rates_rounded_half_even_to_ten_places() -> None:
    records = {(r.quote, r.year): r.rates for r in usd_records(parse_ecb(HISTORY))}
    assert records[("CNY", 2026)] == {"2026-11-26": "7.2115384615", "2026-11-27": "7.2000000000"}
    assert records[("JPY", 2026)] == {"2026-11-27": "152.3809523810"}
    assert records[("EUR", 2026)] == {"2026-11-26": "0.9615384615", "2026-11-27": "0.9523809524"}


def test_a_weekend_day_uses_fridays_rate_and_names_it() -> None:
    table = FxTable.from_path().with_entries(entries_of(usd_records(parse_ecb(HISTORY))), "test")
    sunday = datetime(2026, 11, 29, 12, tzinfo=UTC)
    conv = table.convert(1_000_000_000, "USD", "CNY", sunday)
    assert (conv.nanos, conv.rate, conv.rate_valid_from) == (
        7_200_000_000,
        Decimal("7.2000000000"),
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    earlier = table.convert(1_000_000_000, "USD", "CNY", datetime(2026, 11, 26, 23, tzinfo=UTC))
    assert earlier.nanos == 7_211_538_462  # 7.2115384615 x 1 USD, rounded once half-to-even
    assert earlier.rate_valid_from == datetime(2026, 11, 26, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Day,USD\n", "first column must be Date"),
        ("Date,JPY\n2026-11-27,160\n", "no USD column"),
        ("Date,USD\n2026-13-01,1.0\n", "neither YYYY-MM-DD"),
        ("Date,USD\n2026-11-27,-1\n", "must be positive"),
        ("Date,USD\n2026-11-27,abc\n", "is not a number"),
    ],
)
def test_bad_files_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ecb(text)
