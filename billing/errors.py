"""Errors of hwmarket's billing, below the one hierarchy in :mod:`marketplace.errors`."""

from __future__ import annotations

from marketplace.errors import HwmarketError, InvalidInput, Problem


class PriceMissing(InvalidInput):
    """Usage was found for a SKU, site, term or time that the price book does not price.

    ``problems`` lists every missing combination at once; rating returns nothing partial.
    """


class CurrencyMismatch(InvalidInput):
    """Amounts in different currencies were combined (lines of one invoice, adjustments ...)."""


class BillingError(HwmarketError):
    """Base of billing errors that are not about a wrong input."""


__all__ = ["BillingError", "CurrencyMismatch", "InvalidInput", "PriceMissing", "Problem"]
