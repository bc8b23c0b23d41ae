"""Invoices in the store: build a period's drafts from the usage ledger, finalize them, and put
what Stripe must receive in the outbox in the same transaction.

The decisions are pure (:mod:`billing.rating`, :mod:`billing.invoices`); this module reads the
ledger, the catalogue's list prices and the stored invoices, and writes invoices atomically: a
missing price stores nothing, a finalized invoice is never changed, and usage that changed after
finalization (a newer ledger version) becomes adjustment lines on the next invoice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd
from sqlalchemy import delete, func, select

from billing.invoices import Invoice, adjustment_lines, build_invoices
from billing.money import to_minor
from billing.prices import EnergyTariff, MachinePrice, PriceBook
from billing.rating import RatedLine, rate
from billing.schema import InvoiceLineRow, InvoiceRow, StripeOutboxRow
from marketplace.errors import InvalidInput, InvalidState, NotFound, Problem
from marketplace.store import Store
from metering.ledger import usage

#: How the marketplace names reservation terms -> how price books name them.
PRICING_TERMS = {"on-demand": "on-demand", "1y": "reserved-1y", "3y": "reserved-3y"}
LIST_PRICES_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def month_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """``2026-11`` -> ``[2026-11-01, 2026-12-01)`` in UTC."""
    try:
        start = dt.datetime.strptime(period, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidInput([Problem("period", "expected YYYY-MM", period)]) from None
    return start, (start + dt.timedelta(days=32)).replace(day=1)


def price_book_from_catalogue(store: Store, currency: str = "USD") -> PriceBook:
    """The list prices as a price book: every SKU revision's hourly prices at every site (with
    the listing's per-site overrides), per started hour, and each site's energy tariff."""
    prices = []
    sites = store.sites()
    for sku in store.skus(all_revisions=True):
        if sku.pricing is None or sku.pricing.currency != currency:
            continue
        for site in sites:
            reserved = {f"reserved-{k}": v for k, v in sku.pricing.reserved_hourly.items()}
            override = sku.pricing.sites.get(site.code)
            if override is not None:
                reserved.update({f"reserved-{k}": v for k, v in override.reserved_hourly.items()})
            prices.append(
                MachinePrice(
                    id=f"list-{sku.slug}@{sku.revision}-{site.code}",
                    sku=sku.slug,
                    sku_revision=sku.revision,
                    site=site.code,
                    valid_from=LIST_PRICES_FROM,
                    on_demand_hourly=sku.pricing.on_demand_at(site.code),
                    reserved_hourly=reserved,
                    unit="hour",
                    description=f"{sku.name} at {site.name}",
                )
            )
    energy = [
        EnergyTariff(
            id=f"energy-{s.code}",
            site=s.code,
            valid_from=LIST_PRICES_FROM,
            per_kwh=s.energy_price_kwh,
            description=f"energy at {s.name}",
        )
        for s in sites
    ]
    return PriceBook(currency=currency, prices=tuple(prices), energy=tuple(energy))


def _billable(frame: pd.DataFrame) -> pd.DataFrame:
    billable = frame[frame["reservation_id"] != ""].copy()
    billable["pricing_term"] = billable["term"].map(PRICING_TERMS).fillna("on-demand")
    return billable


@dataclass
class BuildReport:
    """What ``build`` did for a period."""

    drafts: list[Invoice] = field(default_factory=list)
    replaced_drafts: int = 0
    already_final: list[str] = field(default_factory=list)
    adjustment_lines: int = 0


def build(
    store: Store,
    period: str,
    book: PriceBook,
    *,
    now: dt.datetime | None = None,
    customer_timezones: Mapping[str, str] | None = None,
) -> BuildReport:
    """Draft every customer's invoice of ``period`` (``YYYY-MM``) from the ledger as known now.

    Drafts of the period are rebuilt; finalized invoices are left alone. Finalized invoices of
    earlier periods whose usage has changed since get adjustment lines on this period's draft.
    A missing price raises :class:`billing.errors.PriceMissing` listing every gap; nothing is
    stored then.
    """
    now = now or dt.datetime.now(dt.UTC)
    start, end = month_bounds(period)
    margin = dt.timedelta(days=1)  # customers' own time zones shift their months
    ledger = _billable(usage(store, start - margin, end + margin, include_idle=False))
    lines = [
        ln
        for ln in rate(ledger, book, customer_timezones=customer_timezones)
        if abs(ln.period_start - start) < margin
    ]
    report = BuildReport()
    with store.reading() as s:
        finals = s.scalars(select(InvoiceRow).where(InvoiceRow.status == "finalized")).all()
        final_now = {
            (r.customer, r.currency) for r in finals if abs(r.period_start - start) < margin
        }
        report.already_final = sorted(r.id for r in finals if abs(r.period_start - start) < margin)
        earlier = [r for r in finals if r.period_start < start - margin]
        invoiced: dict[tuple[str, dt.datetime], list[RatedLine]] = {}
        for r in earlier:
            for ln in _lines_of(s, r.id):
                key = (r.customer, ln.corrects_period_start or ln.period_start)
                invoiced.setdefault(key, []).append(ln)
        credit = _credit_balances(s)
    lines = [ln for ln in lines if (ln.customer, ln.currency) not in final_now]
    lines += _adjustments(store, book, invoiced, start, end, customer_timezones, final_now)
    report.adjustment_lines = sum(1 for ln in lines if ln.kind == "adjustment")
    drafts = build_invoices(lines, credit)
    with store.writing() as s:
        old = s.scalars(
            select(InvoiceRow.id).where(
                InvoiceRow.status == "draft",
                InvoiceRow.period_start >= start - margin,
                InvoiceRow.period_start < start + margin,
            )
        ).all()
        if old:
            s.execute(delete(InvoiceLineRow).where(InvoiceLineRow.invoice_id.in_(old)))
            s.execute(delete(InvoiceRow).where(InvoiceRow.id.in_(old)))
            report.replaced_drafts = len(old)
        s.flush()
        s.add_all(_invoice_row(inv, now) for inv in drafts)
        s.flush()  # the invoices first: their lines refer to them
        s.add_all(
            _line_row(inv.invoice_id, i, ln) for inv in drafts for i, ln in enumerate(inv.lines)
        )
    report.drafts = drafts
    return report


def _adjustments(
    store: Store,
    book: PriceBook,
    invoiced: dict[tuple[str, dt.datetime], list[RatedLine]],
    start: dt.datetime,
    end: dt.datetime,
    customer_timezones: Mapping[str, str] | None,
    final_now: set[tuple[str, str]],
) -> list[RatedLine]:
    """Adjustment lines for this period correcting finalized earlier periods whose usage moved."""
    out: list[RatedLine] = []
    periods = sorted({p for _, p in invoiced})
    for p_start in periods:
        p_end = (p_start + dt.timedelta(days=32)).replace(day=1)
        margin = dt.timedelta(days=1)
        ledger = _billable(usage(store, p_start - margin, p_end + margin, include_idle=False))
        rerated = [
            ln
            for ln in rate(ledger, book, customer_timezones=customer_timezones)
            if abs(ln.period_start - p_start) < margin
        ]
        for (customer, period_start), lines in invoiced.items():
            if period_start != p_start:
                continue
            fresh = [ln for ln in rerated if ln.customer == customer]
            adj = adjustment_lines(lines, fresh, start, end)
            out += [ln for ln in adj if (ln.customer, ln.currency) not in final_now]
    return out


def _credit_balances(s: object) -> dict[str, Decimal]:
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    rows = s.execute(
        select(
            InvoiceRow.customer,
            func.sum(InvoiceRow.credit_issued),
            func.sum(InvoiceRow.credit_applied),
        )
        .where(InvoiceRow.status == "finalized")
        .group_by(InvoiceRow.customer)
    ).all()
    return {c: Decimal(issued or 0) - Decimal(applied or 0) for c, issued, applied in rows}


def finalize(
    store: Store,
    period: str,
    *,
    now: dt.datetime | None = None,
    customers: Sequence[str] | None = None,
) -> list[Invoice]:
    """Finalize the period's drafts: number them, freeze them, and in the same transaction put
    their lines (and the finalization) in the Stripe outbox."""
    now = now or dt.datetime.now(dt.UTC)
    start, _ = month_bounds(period)
    margin = dt.timedelta(days=1)
    done = []
    with store.writing() as s:
        stmt = select(InvoiceRow).where(
            InvoiceRow.status == "draft",
            InvoiceRow.period_start >= start - margin,
            InvoiceRow.period_start < start + margin,
        )
        if customers:
            stmt = stmt.where(InvoiceRow.customer.in_(list(customers)))
        drafts = s.scalars(stmt.order_by(InvoiceRow.customer)).all()
        if not drafts:
            raise InvalidState(
                f"no draft invoices for {period}; run `hwmarket invoice build --period {period}` first"
            )
        seq = (
            s.scalar(
                select(func.count()).select_from(InvoiceRow).where(InvoiceRow.status == "finalized")
            )
            or 0
        )
        for row in drafts:
            seq += 1
            row.status = "finalized"
            row.number = f"HWM-{row.period_start:%Y%m}-{seq:05d}"
            row.finalized_at = now
            inv = _invoice_of(s, row)
            for ln in inv.lines:
                if ln.amount == 0:
                    continue
                s.add(
                    StripeOutboxRow(
                        id=ln.line_id,
                        kind="invoice_item",
                        customer=inv.customer,
                        invoice_id=inv.invoice_id,
                        payload={
                            "invoice_id": inv.invoice_id,
                            "amount_minor": to_minor(ln.amount, ln.currency),
                            "currency": ln.currency.lower(),
                            "description": ln.description[:500],
                            "period_start": int(ln.period_start.timestamp()),
                            "period_end": int(ln.period_end.timestamp()),
                            "metadata": {
                                "hwmarket_line_id": ln.line_id,
                                "hwmarket_invoice_id": inv.invoice_id,
                                "hwmarket_period": f"{inv.period_start:%Y-%m}",
                            },
                        },
                        state="pending",
                        attempts=0,
                        created_at=now,
                    )
                )
            s.add(
                StripeOutboxRow(
                    id=f"fin_{inv.invoice_id}",
                    kind="invoice_finalize",
                    customer=inv.customer,
                    invoice_id=inv.invoice_id,
                    payload={
                        "invoice_id": inv.invoice_id,
                        "number": row.number,
                        "currency": inv.currency.lower(),
                        "total_minor": to_minor(inv.total, inv.currency),
                        "period_start": int(inv.period_start.timestamp()),
                        "period_end": int(inv.period_end.timestamp()),
                        "item_ids": [ln.line_id for ln in inv.lines if ln.amount != 0],
                    },
                    state="pending",
                    attempts=0,
                    created_at=now,
                )
            )
            done.append(
                dataclasses.replace(inv, status="finalized", number=row.number, finalized_at=now)
            )
    return done


def list_invoices(
    store: Store, *, period: str | None = None, customer: str | None = None
) -> list[Invoice]:
    """Stored invoices, by period and customer."""
    with store.reading() as s:
        stmt = select(InvoiceRow)
        if period:
            start, _ = month_bounds(period)
            margin = dt.timedelta(days=1)
            stmt = stmt.where(
                InvoiceRow.period_start >= start - margin, InvoiceRow.period_start < start + margin
            )
        if customer:
            stmt = stmt.where(InvoiceRow.customer == customer)
        return [
            _invoice_of(s, r)
            for r in s.scalars(stmt.order_by(InvoiceRow.period_start, InvoiceRow.customer))
        ]


def get_invoice(store: Store, invoice: str) -> Invoice:
    """An invoice by id or number."""
    with store.reading() as s:
        row = (
            s.get(InvoiceRow, invoice)
            or s.scalars(select(InvoiceRow).where(InvoiceRow.number == invoice)).first()
        )
        if row is None:
            raise NotFound(f"unknown invoice {invoice!r}; `hwmarket invoice list` shows them")
        return _invoice_of(s, row)


# -- rows <-> values ------------------------------------------------------------------------------


def _invoice_row(inv: Invoice, now: dt.datetime) -> InvoiceRow:
    return InvoiceRow(
        id=inv.invoice_id,
        customer=inv.customer,
        period_start=inv.period_start,
        period_end=inv.period_end,
        currency=inv.currency,
        status=inv.status,
        number=inv.number,
        total=inv.total,
        credit_applied=inv.credit_applied,
        credit_issued=inv.credit_issued,
        ledger_as_of=now,
        created_at=now,
        finalized_at=inv.finalized_at,
    )


_LINE_FIELDS = [f.name for f in dataclasses.fields(RatedLine)]


def _line_row(invoice_id: str, position: int, ln: RatedLine) -> InvoiceLineRow:
    return InvoiceLineRow(
        invoice_id=invoice_id, position=position, **{f: getattr(ln, f) for f in _LINE_FIELDS}
    )


def _lines_of(s: object, invoice_id: str) -> list[RatedLine]:
    from sqlalchemy.orm import Session

    assert isinstance(s, Session)
    rows = s.scalars(
        select(InvoiceLineRow)
        .where(InvoiceLineRow.invoice_id == invoice_id)
        .order_by(InvoiceLineRow.position)
    ).all()
    out = []
    for r in rows:
        values = {f: getattr(r, f) for f in _LINE_FIELDS}
        for money in ("quantity", "unit_price", "amount"):
            values[money] = (
                Decimal(values[money]).normalize() if values[money] is not None else None
            )
        values["amount"] = Decimal(r.amount).quantize(Decimal(1).scaleb(-_minor(r.currency)))
        out.append(RatedLine(**values))
    return out


def _plain(value: Decimal) -> Decimal:
    """Drop the zeros a NUMERIC column pads with, without turning 10 into 1E+1."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _minor(currency: str) -> int:
    from billing.money import minor_units

    return minor_units(currency)


def _invoice_of(s: object, row: InvoiceRow) -> Invoice:
    q = Decimal(1).scaleb(-_minor(row.currency))
    return Invoice(
        invoice_id=row.id,
        customer=row.customer,
        period_start=row.period_start,
        period_end=row.period_end,
        currency=row.currency,
        lines=tuple(_lines_of(s, row.id)),
        status="finalized" if row.status == "finalized" else "draft",
        number=row.number,
        finalized_at=row.finalized_at,
        credit_applied=Decimal(row.credit_applied).quantize(q),
        credit_issued=Decimal(row.credit_issued).quantize(q),
    )


__all__ = [
    "PRICING_TERMS",
    "BuildReport",
    "build",
    "finalize",
    "get_invoice",
    "list_invoices",
    "month_bounds",
    "price_book_from_catalogue",
]
