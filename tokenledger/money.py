"""Integer money: every amount is an ``int`` of nano-units (1e-9) of a named currency.

Floats never touch money. Rates are ``Decimal``; a computed amount is rounded once,
half-to-even, at the point it becomes nanos.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_UNIT = 1_000_000_000
"""Nano-units in one currency unit (1 USD = 1e9 nano-USD)."""

_NANOS = Decimal(NANOS_PER_UNIT)


def to_nanos(amount: Decimal) -> int:
    """Round a Decimal amount in nano-units to an integer, half-to-even.

    Args:
        amount: Exact amount expressed in nano-units.

    Returns:
        The integer number of nano-units.
    """
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def units_to_nanos(units: Decimal) -> int:
    """Convert whole currency units (e.g. ``Decimal("1.25")`` USD) to integer nanos."""
    return to_nanos(units * _NANOS)


def nanos_to_units(nanos: int) -> Decimal:
    """Exact Decimal value in currency units of an integer nano amount."""
    return Decimal(nanos).scaleb(-9)


def units_text(nanos: int) -> str:
    """Exact fixed-point text of a nano amount (``"0.000000000"``, never ``"0E-9"``)."""
    return f"{nanos_to_units(nanos):f}"


def format_money(nanos: int, currency: str = "USD", places: int = 2) -> str:
    """Human display of a nano amount, rounded half-to-even to ``places`` decimals.

    Args:
        nanos: Amount in nano-units.
        currency: ISO 4217 code shown after the number.
        places: Decimal places to show (2 for invoices, 9 for exact).

    Returns:
        Text like ``"1,234.57 USD"``.
    """
    value = nanos_to_units(nanos).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{value:,f} {currency}"


def display_money(nanos: int, currency: str = "USD") -> str:
    """Money for people: thousands separators, and never a non-zero amount shown as zero.

    Two decimals from one cent up; below a cent, three significant digits (at most nine
    decimals), so a 0.000313 USD month does not read ``0.00 USD``.

    Example:
        >>> display_money(313_000)
        '0.000313 USD'
        >>> display_money(1_234_567_890_000)
        '1,234.57 USD'
    """
    places = 2
    if nanos and abs(nanos) < 9_995_000:  # from here on two decimals say at least 0.01
        places = min(9, 9 - len(str(abs(nanos))) + 3)
    value = nanos_to_units(nanos).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return f"{value:,f} {currency}"
