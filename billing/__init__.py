"""hwmarket billing: price books, exact rating, invoices and Stripe sync.

The public face of the package::

    from billing import build, finalize, price_book_from_catalogue, render_html

    book = price_book_from_catalogue(store)       # or load_price_book("prices.yaml")
    build(store, "2026-11", book)                 # drafts from the usage ledger, all or nothing
    invoices = finalize(store, "2026-11")         # numbered, frozen, queued for Stripe
    html = render_html(invoices[0])

Money is ``Decimal``; every line is rounded once, to the currency's minor unit, half to even
(:func:`billing.money.round_amount`). Other modules are importable but not promised.
"""

from billing.errors import BillingError, CurrencyMismatch, PriceMissing
from billing.invoices import (
    Invoice,
    adjustment_lines,
    build_invoices,
    invoices_frame,
    lines_frame,
    render_html,
    to_csv,
    to_json,
)
from billing.invoicing import (
    build,
    finalize,
    get_invoice,
    list_invoices,
    price_book_from_catalogue,
)
from billing.money import round_amount, to_minor
from billing.prices import EnergyTariff, EnergyTier, MachinePrice, PriceBook, load_price_book
from billing.rating import RatedLine, rate

__all__ = [
    "BillingError",
    "CurrencyMismatch",
    "EnergyTariff",
    "EnergyTier",
    "Invoice",
    "MachinePrice",
    "PriceBook",
    "PriceMissing",
    "RatedLine",
    "adjustment_lines",
    "build",
    "build_invoices",
    "finalize",
    "get_invoice",
    "invoices_frame",
    "lines_frame",
    "list_invoices",
    "load_price_book",
    "price_book_from_catalogue",
    "rate",
    "render_html",
    "round_amount",
    "to_csv",
    "to_json",
    "to_minor",
]
