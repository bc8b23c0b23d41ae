"""The one rounding rule: per line, to the currency's minor unit, half to even."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import (
    from_minor,
    minor_units,
    normalise_currency,
    quantum,
    round_amount,
    to_minor,
)
from marketplace.errors import InvalidInput


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("0.125", "USD", "0.12"),
        ("0.135", "USD", "0.14"),
        ("-0.125", "EUR", "-0.12"),
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1.0005", "KWD", "1.000"),
        ("1.0015", "kwd", "1.002"),
    ],
)
def test_half_to_even_in_the_minor_unit(amount: str, currency: str, rounded: str) -> None:
    result = round_amount(Decimal(amount), currency)
    assert result == Decimal(rounded)
    assert result.as_tuple().exponent == -minor_units(currency)


def test_minor_units_and_conversions() -> None:
    assert (minor_units("USD"), minor_units("JPY"), minor_units("BHD")) == (2, 0, 3)
    assert quantum("usd") == Decimal("0.01")
    assert to_minor(Decimal("12.34"), "USD") == 1234
    assert to_minor(Decimal("-5"), "JPY") == -5
    assert from_minor(1234, "USD") == Decimal("12.34")
    with pytest.raises(ValueError, match="not rounded"):
        to_minor(Decimal("0.125"), "USD")
    with pytest.raises(InvalidInput, match="unknown currency"):
        normalise_currency("XYZ")


@given(
    st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False),
    st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_rounding_is_idempotent_and_within_half_a_minor_unit(
    amount: Decimal, currency: str
) -> None:
    once = round_amount(amount, currency)
    assert round_amount(once, currency) == once
    assert abs(once - amount) <= quantum(currency) / 2
    assert from_minor(to_minor(once, currency), currency) == once
