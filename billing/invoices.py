"""Invoices as values: build per customer and period, finalize, adjust, export, render.

An :class:`Invoice` is a frozen value; ``finalize`` returns a new one. A finalized invoice is
never changed: usage corrected later becomes *adjustment lines* on a later invoice
(:func:`adjustment_lines`), each naming the line and the period it corrects. An invoice never
charges a negative total: a negative balance of its lines becomes a ``credit`` line that brings
the total to zero and is issued to the customer's credit balance (``credit_issued``), and an
existing balance is applied to a later positive total (``credit_applied``). The total is exactly
the sum of the lines, each rounded once (see :mod:`billing.money`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pandas as pd

from billing.errors import CurrencyMismatch
from billing.money import quantum, to_minor
from billing.rating import RatedLine, line_id
from marketplace.errors import InvalidState, Problem

InvoiceStatus = Literal["draft", "finalized"]

#: Columns of :func:`lines_frame` (and, after the invoice columns, of :func:`invoices_frame`).
LINE_COLUMNS: tuple[str, ...] = (
    *(f.name for f in dataclasses.fields(RatedLine)),
    "amount_minor",
)
INVOICE_COLUMNS: tuple[str, ...] = ("invoice_id", "number", "status", "invoice_total")
_KIND_ORDER = {"machine_time": 0, "energy": 1, "adjustment": 2, "credit": 3}


@dataclass(frozen=True)
class Invoice:
    """One customer's invoice for one period, draft or finalized."""

    invoice_id: str
    customer: str
    period_start: dt.datetime
    period_end: dt.datetime
    currency: str
    lines: tuple[RatedLine, ...]
    status: InvoiceStatus = "draft"
    number: str | None = None
    finalized_at: dt.datetime | None = None
    credit_applied: Decimal = Decimal(0)
    credit_issued: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        """Exactly the sum of the lines' amounts (never negative)."""
        return sum((ln.amount for ln in self.lines), Decimal(0) * quantum(self.currency))

    @property
    def charges(self) -> Decimal:
        """The sum of the lines before credit (usage and adjustments)."""
        amounts = (ln.amount for ln in self.lines if ln.kind != "credit")
        return sum(amounts, Decimal(0) * quantum(self.currency))


def _credit_line(
    customer: str, start: dt.datetime, end: dt.datetime, currency: str, amount: Decimal, what: str
) -> RatedLine:
    return RatedLine(
        line_id=line_id("credit", customer, start, what),
        customer=customer,
        period_start=start,
        period_end=end,
        kind="credit",
        quantity=Decimal(1),
        unit="credit",
        unit_price=amount,
        amount=amount,
        currency=currency,
        description=what,
    )


def draft_invoice(
    customer: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    lines: Iterable[RatedLine],
    currency: str,
    credit_balance: Decimal = Decimal(0),
) -> Invoice:
    """A draft invoice of ``lines``, settling a negative total or an existing credit balance."""
    body = sorted(lines, key=lambda ln: (_KIND_ORDER.get(ln.kind, 9), ln.line_id))
    wrong = [ln for ln in body if ln.currency != currency or ln.customer != customer]
    if wrong:
        raise CurrencyMismatch(
            [
                Problem(f"lines[{ln.line_id}]", f"not a {currency} line of {customer}", ln.currency)
                for ln in wrong
            ]
        )
    charges = sum((ln.amount for ln in body), Decimal(0) * quantum(currency))
    applied = issued = Decimal(0) * quantum(currency)
    if charges < 0:
        issued = -charges
        body.append(
            _credit_line(
                customer,
                period_start,
                period_end,
                currency,
                issued,
                f"credit of {issued} {currency} to the customer's balance",
            )
        )
    elif charges > 0 and credit_balance > 0:
        applied = min(charges, credit_balance)
        body.append(
            _credit_line(
                customer,
                period_start,
                period_end,
                currency,
                -applied,
                f"credit of {applied} {currency} applied from the customer's balance",
            )
        )
    return Invoice(
        invoice_id="in_" + line_id("invoice", customer, period_start)[3:],
        customer=customer,
        period_start=period_start,
        period_end=period_end,
        currency=currency,
        lines=tuple(body),
        credit_applied=applied,
        credit_issued=issued,
    )


def build_invoices(
    lines: Iterable[RatedLine], credit_balances: Mapping[str, Decimal] | None = None
) -> list[Invoice]:
    """Draft one invoice per (customer, period) of ``lines``, sorted by customer and period.

    ``credit_balances`` (customer -> amount) is applied to the customer's first positive invoice;
    the new balance is ``old - credit_applied + credit_issued`` of the invoices returned.
    """
    groups: dict[tuple[str, dt.datetime, dt.datetime, str], list[RatedLine]] = {}
    currencies: dict[tuple[str, dt.datetime], set[str]] = {}
    for ln in lines:
        groups.setdefault((ln.customer, ln.period_start, ln.period_end, ln.currency), []).append(ln)
        currencies.setdefault((ln.customer, ln.period_start), set()).add(ln.currency)
    mixed = {k: v for k, v in currencies.items() if len(v) > 1}
    if mixed:
        raise CurrencyMismatch(
            [
                Problem(
                    f"lines[customer={c}, period={p.isoformat()}]",
                    "one currency per invoice",
                    sorted(v),
                )
                for (c, p), v in mixed.items()
            ]
        )
    balance = dict(credit_balances or {})
    out = []
    for (customer, start, end, currency), body in sorted(groups.items(), key=lambda kv: kv[0][:2]):
        inv = draft_invoice(customer, start, end, body, currency, balance.get(customer, Decimal(0)))
        balance[customer] = balance.get(customer, Decimal(0)) - inv.credit_applied
        balance[customer] += inv.credit_issued
        out.append(inv)
    return out


def finalize(invoice: Invoice, number: str, at: dt.datetime) -> Invoice:
    """The finalized value of a draft invoice; finalizing twice is :class:`InvalidState`."""
    if invoice.status != "draft":
        raise InvalidState(f"invoice {invoice.invoice_id} is already {invoice.status}")
    return dataclasses.replace(invoice, status="finalized", number=number, finalized_at=at)


def adjustment_lines(
    invoiced: Iterable[RatedLine],
    rerated: Iterable[RatedLine],
    period_start: dt.datetime,
    period_end: dt.datetime,
) -> list[RatedLine]:
    """Lines for the invoice of [period_start, period_end) that correct earlier periods.

    ``invoiced``: every line already on finalized invoices of the corrected period(s), including
    earlier adjustments to them (credit lines are ignored). ``rerated``: the fresh rating of the
    same period(s). Each original line whose amount or quantity changed gets one adjustment of
    the difference, naming it in ``corrects_line_id`` and its period in ``corrects_period_start``;
    lines that vanished are reversed. The ids are deterministic, so a retry makes the same lines.
    """
    amount_billed: dict[str, Decimal] = {}
    qty_billed: dict[str, Decimal] = {}
    corrected_period: dict[str, dt.datetime] = {}
    original: dict[str, RatedLine] = {}
    for ln in invoiced:
        if ln.kind == "credit":
            continue
        key = ln.corrects_line_id or ln.line_id
        amount_billed[key] = amount_billed.get(key, Decimal(0)) + ln.amount
        qty_billed[key] = qty_billed.get(key, Decimal(0)) + ln.quantity
        corrected_period[key] = ln.corrects_period_start or ln.period_start
        original.setdefault(key, ln)
    fresh = {ln.line_id: ln for ln in rerated}
    out = []
    for key in sorted(amount_billed.keys() | fresh.keys()):
        new, old = fresh.get(key), original.get(key)
        like = new or old
        assert like is not None
        if old is not None and new is not None and old.currency != new.currency:
            raise CurrencyMismatch([Problem(f"lines[{key}]", "currency changed", new.currency)])
        delta = (new.amount if new else Decimal(0)) - amount_billed.get(key, Decimal(0))
        dqty = (new.quantity if new else Decimal(0)) - qty_billed.get(key, Decimal(0))
        if delta == 0 and dqty == 0:
            continue
        corrected = corrected_period.get(key, like.period_start)
        out.append(
            dataclasses.replace(
                like,
                line_id=line_id("adjustment", key, period_start),
                period_start=period_start,
                period_end=period_end,
                kind="adjustment",
                quantity=dqty,
                amount=delta,
                description=f"adjustment for {corrected:%Y-%m}: {like.description}",
                corrects_line_id=key,
                corrects_period_start=corrected,
            )
        )
    return out


# --- exports ------------------------------------------------------------------------------------


def _line_record(ln: RatedLine) -> dict[str, Any]:
    record = dataclasses.asdict(ln)
    record["amount_minor"] = to_minor(ln.amount, ln.currency)
    return record


def lines_frame(lines: Iterable[RatedLine]) -> pd.DataFrame:
    """Lines as a DataFrame with :data:`LINE_COLUMNS`; money stays ``Decimal`` (object)."""
    frame = pd.DataFrame([_line_record(ln) for ln in lines], columns=list(LINE_COLUMNS))
    return frame.astype({"sku_revision": "Int64", "amount_minor": "int64"})


def invoices_frame(invoices: Iterable[Invoice]) -> pd.DataFrame:
    """One row per line of each invoice: :data:`INVOICE_COLUMNS` then :data:`LINE_COLUMNS`."""
    records = [
        {
            "invoice_id": inv.invoice_id,
            "number": inv.number,
            "status": inv.status,
            "invoice_total": inv.total,
            **_line_record(ln),
        }
        for inv in invoices
        for ln in inv.lines
    ]
    frame = pd.DataFrame(records, columns=list(INVOICE_COLUMNS + LINE_COLUMNS))
    return frame.astype({"sku_revision": "Int64", "amount_minor": "int64"})


def to_csv(invoices: Iterable[Invoice]) -> str:
    """CSV of :func:`invoices_frame`; amounts as exact decimal text, times in ISO 8601 UTC."""
    frame = invoices_frame(invoices)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def invoice_record(invoice: Invoice) -> dict[str, Any]:
    """An invoice as JSON-ready data: Decimals as strings, times as ISO 8601 text."""
    head = {f.name: getattr(invoice, f.name) for f in dataclasses.fields(Invoice)}
    head.pop("lines")
    head["total"] = invoice.total
    head["total_minor"] = to_minor(invoice.total, invoice.currency)
    out = {k: _jsonable(v) for k, v in head.items()}
    out["lines"] = [{k: _jsonable(v) for k, v in _line_record(ln).items()} for ln in invoice.lines]
    return out


def to_json(invoices: Sequence[Invoice]) -> str:
    """JSON array of :func:`invoice_record` of each invoice."""
    return json.dumps([invoice_record(inv) for inv in invoices], indent=2)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{padding:.35rem .5rem;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tfoot td{font-weight:bold;border-top:2px solid #222}.meta{color:#555}
"""


def render_html(invoice: Invoice, seller: str = "hwmarket") -> str:
    """A self-contained, escaped HTML page of one invoice (inline CSS, no external resources)."""
    e = html.escape
    cur = e(invoice.currency)
    title = f"Invoice {invoice.number or '(draft)'}"
    rows = "\n".join(
        "<tr>"
        f"<td>{e(ln.description)}</td><td>{e(ln.kind.replace('_', ' '))}</td>"
        f"<td>{e(ln.reservation_id or '')}</td>"
        f"<td class=n>{e(str(ln.quantity))} {e(ln.unit)}</td>"
        f"<td class=n>{e(str(ln.unit_price))}</td><td class=n>{e(str(ln.amount))}</td>"
        "</tr>"
        for ln in invoice.lines
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{e(title)}</h1>
<p class=meta>From {e(seller)} to <strong>{e(invoice.customer)}</strong>;
period {invoice.period_start:%Y-%m-%d %H:%M} to {invoice.period_end:%Y-%m-%d %H:%M} UTC;
status {e(invoice.status)}; id {e(invoice.invoice_id)}</p>
<table><thead><tr><th>Description</th><th>Kind</th><th>Reservation</th>
<th class=n>Quantity</th><th class=n>Unit price ({cur})</th><th class=n>Amount ({cur})</th>
</tr></thead><tbody>
{rows}
</tbody><tfoot><tr><td colspan=5>Total</td><td class=n>{e(str(invoice.total))} {cur}</td></tr>
</tfoot></table>
</body></html>
"""


__all__ = [
    "INVOICE_COLUMNS",
    "LINE_COLUMNS",
    "Invoice",
    "InvoiceStatus",
    "adjustment_lines",
    "build_invoices",
    "draft_invoice",
    "finalize",
    "invoice_record",
    "invoices_frame",
    "lines_frame",
    "render_html",
    "to_csv",
    "to_json",
]
