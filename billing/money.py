"""Money: ISO 4217 currencies, their minor units, and the ONE rounding rule of hwmarket.

The rule: an amount is computed exactly in :class:`~decimal.Decimal` and rounded once, per
invoice line, to the currency's minor unit (USD cents, JPY whole yen, BHD fils ...), rounding
half to even (``ROUND_HALF_EVEN``, "banker's rounding", which does not drift upwards over many
lines). Totals are sums of rounded lines and are never rounded again, so an invoice total is
exactly the sum of its lines. Unit prices and quantities are not rounded by this rule.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

from marketplace.errors import InvalidInput, Problem

#: Digits after the decimal point per currency (ISO 4217); two unless listed otherwise.
# Written as words for readability; ruff's SIM905 would spell each code on its own line.
_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
_THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())  # noqa: SIM905
_TWO_DECIMAL = frozenset(
    "AED AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD HUF IDR ILS INR MXN MYR NOK NZD PHP PLN "  # noqa: SIM905
    "RON SEK SGD THB TRY TWD USD ZAR".split()
)
KNOWN_CURRENCIES = _ZERO_DECIMAL | _THREE_DECIMAL | _TWO_DECIMAL

#: Exact arithmetic before the one rounding: wide enough for a year of a fleet's seconds x rates.
EXACT = Context(prec=40, rounding=ROUND_HALF_EVEN)


def normalise_currency(currency: str) -> str:
    """Return the upper-case ISO code, or raise :class:`InvalidInput` for an unknown one."""
    code = currency.strip().upper() if isinstance(currency, str) else currency
    if code not in KNOWN_CURRENCIES:
        raise InvalidInput(
            [
                Problem(
                    path="currency",
                    message="unknown currency; accepted: an ISO 4217 code such as USD, EUR, JPY",
                    value=currency,
                )
            ]
        )
    return str(code)


def minor_units(currency: str) -> int:
    """Digits after the decimal point of ``currency``: 2 for USD, 0 for JPY, 3 for KWD."""
    code = normalise_currency(currency)
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def quantum(currency: str) -> Decimal:
    """The smallest amount of ``currency`` as a Decimal exponent: ``Decimal('0.01')`` for USD."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_amount(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` once to the minor unit of ``currency``, half to even.

    >>> round_amount(Decimal("0.125"), "USD")
    Decimal('0.12')
    >>> round_amount(Decimal("2.5"), "JPY")
    Decimal('2')
    """
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_EVEN, context=EXACT)


def to_minor(amount: Decimal, currency: str) -> int:
    """An already rounded amount in minor units (cents), as Stripe's ``amount`` wants it."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not rounded to the minor unit")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """An amount given in minor units (cents) as a Decimal in major units."""
    return Decimal(minor).scaleb(-minor_units(currency))


__all__ = [
    "EXACT",
    "KNOWN_CURRENCIES",
    "from_minor",
    "minor_units",
    "normalise_currency",
    "quantum",
    "round_amount",
    "to_minor",
]
