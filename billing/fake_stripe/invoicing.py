"""Invoice items and invoices: draft -> open (finalize) -> paid, with the customer's balance.

As in Stripe, a finalized invoice whose total is negative is not a negative charge: it is due 0
and its total is credited to the customer's balance (``ending_balance``); a later invoice uses
that credit before anything is due. An invoice due 0 is paid when finalized.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from billing.fake_stripe.errors import ApiError
from billing.fake_stripe.forms import Params
from billing.fake_stripe.state import Obj, StripeState


def _editable_invoice(state: StripeState, ident: str, param: str = "invoice") -> Obj:
    invoice = state.get("invoice", ident, param)
    if invoice["status"] != "draft":
        raise ApiError(
            400,
            f"Invoice {ident} is {invoice['status']}; only draft invoices can be edited.",
            "invoice_not_editable",
            param,
        )
    return invoice


def create_invoiceitem(state: StripeState, params: Params) -> Obj:
    """POST /v1/invoiceitems: ``amount`` (may be negative) or ``unit_amount_decimal`` x quantity."""
    customer = state.get("customer", params.text("customer", required=True) or "", "customer")
    quantity = params.integer("quantity", default=1)
    assert quantity is not None
    amount = params.integer("amount")
    unit_decimal = params.text("unit_amount_decimal")
    if amount is None and unit_decimal is None:
        raise ApiError(400, "Missing required param: amount.", "parameter_missing", "amount")
    if amount is None:
        try:
            amount = int(
                (Decimal(unit_decimal or "") * quantity).to_integral_value(ROUND_HALF_EVEN)
            )
        except ArithmeticError:
            raise ApiError(
                400, "Invalid decimal: unit_amount_decimal", None, "unit_amount_decimal"
            ) from None
    currency = state.currency(params)
    now = state.now()
    period = params.mapping("period")
    start = int(period.get("start", now))
    end = int(period.get("end", now))
    if start > end:
        raise ApiError(400, "period[start] must be before period[end]", None, "period[start]")
    invoice_id = params.text("invoice")
    if invoice_id is not None:
        invoice = _editable_invoice(state, invoice_id)
        if invoice["customer"] != customer["id"]:
            raise ApiError(400, "The invoice belongs to another customer.", None, "invoice")
        if invoice["currency"] != currency:
            raise ApiError(400, "The invoice has another currency.", None, "currency")
    item: Obj = {
        "id": state.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer["id"],
        "date": now,
        "description": params.text("description"),
        "discountable": params.boolean("discountable", amount >= 0),
        "invoice": invoice_id,
        "livemode": False,
        "metadata": params.metadata(),
        "period": {"start": start, "end": end},
        "proration": False,
        "quantity": quantity,
        "unit_amount_decimal": unit_decimal if unit_decimal is not None else str(amount),
    }
    state.objects["invoiceitem"][item["id"]] = item
    if invoice_id is not None:
        _recompute(state, state.objects["invoice"][invoice_id])
    return item


def list_invoiceitems(state: StripeState, params: Params) -> Obj:
    """GET /v1/invoiceitems: filters customer, invoice, pending (not yet on an invoice)."""
    items = list(state.objects["invoiceitem"].values())
    for field in ("customer", "invoice"):
        if params.has(field):
            items = [i for i in items if i[field] == params.text(field)]
    if params.has("pending"):
        pending = params.boolean("pending", False)
        items = [i for i in items if (i["invoice"] is None) == pending]
    return state.page(items, params, "/v1/invoiceitems")


def delete_invoiceitem(state: StripeState, ident: str) -> Obj:
    """DELETE /v1/invoiceitems/{id}: only while pending or on a draft invoice."""
    item = state.get("invoiceitem", ident)
    if item["invoice"] is not None:
        _editable_invoice(state, item["invoice"])
    del state.objects["invoiceitem"][ident]
    if item["invoice"] is not None:
        _recompute(state, state.objects["invoice"][item["invoice"]])
    return {"id": ident, "object": "invoiceitem", "deleted": True}


def _line(item: Obj) -> Obj:
    return {
        "id": "il_" + item["id"].removeprefix("ii_"),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "invoice": item["invoice"],
        "livemode": False,
        "metadata": item["metadata"],
        "period": item["period"],
        "quantity": item["quantity"],
        "parent": {
            "type": "invoice_item_details",
            "invoice_item_details": {"invoice_item": item["id"]},
        },
    }


def _recompute(state: StripeState, invoice: Obj) -> None:
    items = [i for i in state.objects["invoiceitem"].values() if i["invoice"] == invoice["id"]]
    items.sort(key=lambda i: i["id"])
    total = sum(i["amount"] for i in items)
    invoice["lines"] = {
        "object": "list",
        "data": [_line(i) for i in items],
        "has_more": False,
        "total_count": len(items),
        "url": f"/v1/invoices/{invoice['id']}/lines",
    }
    invoice["subtotal"] = invoice["total"] = total
    if invoice["status"] == "draft":
        invoice["amount_due"] = invoice["amount_remaining"] = max(total, 0)
    if items:
        invoice["period_start"] = min(i["period"]["start"] for i in items)
        invoice["period_end"] = max(i["period"]["end"] for i in items)


def create_invoice(state: StripeState, params: Params) -> Obj:
    """POST /v1/invoices: a draft; ``pending_invoice_items_behavior=include`` takes pending items."""
    customer = state.get("customer", params.text("customer", required=True) or "", "customer")
    method = params.choice(
        "collection_method", ("charge_automatically", "send_invoice"), "charge_automatically"
    )
    days = params.integer("days_until_due")
    if method == "send_invoice" and days is None:
        raise ApiError(
            400, "Missing required param: days_until_due.", "parameter_missing", "days_until_due"
        )
    behavior = params.choice("pending_invoice_items_behavior", ("include", "exclude"), "exclude")
    pending = [
        i
        for i in state.objects["invoiceitem"].values()
        if i["customer"] == customer["id"] and i["invoice"] is None
    ]
    currency = state.currency(params, required=False)
    if currency is None:
        currency = pending[0]["currency"] if pending and behavior == "include" else "usd"
    now = state.now()
    invoice: Obj = {
        "id": state.new_id("in"),
        "object": "invoice",
        "created": now,
        "customer": customer["id"],
        "currency": currency,
        "status": "draft",
        "number": None,
        "auto_advance": params.boolean("auto_advance", False),
        "collection_method": method,
        "days_until_due": days,
        "description": params.text("description"),
        "metadata": params.metadata(),
        "livemode": False,
        "amount_paid": 0,
        "starting_balance": 0,
        "ending_balance": None,
        "period_start": now,
        "period_end": now,
        "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None},
    }
    state.objects["invoice"][invoice["id"]] = invoice
    if behavior == "include":
        for item in pending:
            if item["currency"] == currency:
                item["invoice"] = invoice["id"]
    _recompute(state, invoice)
    return invoice


def list_invoices(state: StripeState, params: Params) -> Obj:
    """GET /v1/invoices: filters customer, status."""
    items = list(state.objects["invoice"].values())
    for field in ("customer", "status"):
        if params.has(field):
            items = [i for i in items if i[field] == params.text(field)]
    return state.page(items, params, "/v1/invoices")


def finalize_invoice(state: StripeState, ident: str, params: Params) -> Obj:
    """POST /v1/invoices/{id}/finalize: draft -> open (or paid when nothing is due)."""
    invoice = _editable_invoice(state, ident, "id")
    customer = state.objects["customer"][invoice["customer"]]
    balance = customer["balance"]  # negative: credit the customer holds
    total = invoice["total"]
    invoice["starting_balance"] = balance
    due = max(total + min(balance, 0), 0) if total > 0 else 0
    customer["balance"] = balance + total - due
    invoice["ending_balance"] = customer["balance"]
    invoice["amount_due"] = invoice["amount_remaining"] = due
    invoice["number"] = f"FAKE-{next(state.invoice_numbers):04d}"
    now = state.now()
    invoice["status_transitions"]["finalized_at"] = now
    invoice["status"] = "open"
    if due == 0:
        _mark_paid(invoice, now)
    invoice["auto_advance"] = params.boolean("auto_advance", invoice["auto_advance"])
    return invoice


def _mark_paid(invoice: Obj, now: int) -> None:
    invoice["status"] = "paid"
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["status_transitions"]["paid_at"] = now


def pay_invoice(state: StripeState, ident: str, params: Params) -> Obj:
    """POST /v1/invoices/{id}/pay: an open invoice becomes paid (no payment methods here)."""
    invoice = state.get("invoice", ident)
    if invoice["status"] != "open":
        codes = {"draft": "invoice_not_open", "paid": "invoice_already_paid"}
        message = f"Invoice is {invoice['status']}; only open invoices can be paid."
        raise ApiError(400, message, codes.get(invoice["status"]), "id")
    params.boolean("paid_out_of_band", False)
    _mark_paid(invoice, state.now())
    return invoice


def invoice_lines(state: StripeState, ident: str, params: Params) -> Any:
    """GET /v1/invoices/{id}/lines."""
    invoice = state.get("invoice", ident)
    return state.page(list(invoice["lines"]["data"]), params, f"/v1/invoices/{ident}/lines")
