"""Invoices: grouping, credit instead of negative totals, adjustments, exports and HTML."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.invoices import (
    INVOICE_COLUMNS,
    LINE_COLUMNS,
    adjustment_lines,
    build_invoices,
    draft_invoice,
    finalize,
    invoice_record,
    invoices_frame,
    lines_frame,
    render_html,
    to_csv,
    to_json,
)
from billing.rating import RatedLine, line_id
from marketplace.errors import InvalidState

UTC = dt.UTC
NOV = dt.datetime(2026, 11, 1, tzinfo=UTC)
DEC = dt.datetime(2026, 12, 1, tzinfo=UTC)
JAN = dt.datetime(2027, 1, 1, tzinfo=UTC)


def line(
    customer: str = "acme",
    amount: str = "10.00",
    quantity: str = "20",
    period: dt.datetime = NOV,
    reservation: str = "r1",
    currency: str = "USD",
    description: str = "c3 rev 1 at ams1",
) -> RatedLine:
    end = DEC if period == NOV else JAN
    return RatedLine(
        line_id=line_id("machine_time", customer, period, reservation),
        customer=customer,
        period_start=period,
        period_end=end,
        kind="machine_time",
        quantity=Decimal(quantity),
        unit="hour",
        unit_price=Decimal("0.50"),
        amount=Decimal(amount),
        currency=currency,
        description=description,
        reservation_id=reservation,
        sku="c3",
        sku_revision=1,
        site="ams1",
        term="on-demand",
        price_id="c3-ams",
    )


def test_one_invoice_per_customer_and_period_whose_total_is_the_sum_of_its_lines() -> None:
    lines = [
        line("acme", "10.00", reservation="r1"),
        line("acme", "0.01", reservation="r2"),
        line("acme", "5.00", period=DEC),
        line("bob", "7.77", reservation="r3"),
    ]
    invoices = build_invoices(lines)
    assert [(i.customer, i.period_start) for i in invoices] == [
        ("acme", NOV),
        ("acme", DEC),
        ("bob", NOV),
    ]
    assert invoices[0].total == Decimal("10.01")
    assert invoices[0].status == "draft" and invoices[0].number is None
    assert invoices[0].invoice_id == build_invoices(lines)[0].invoice_id  # deterministic


def test_finalize_returns_a_new_value_once() -> None:
    (draft,) = build_invoices([line()])
    at = dt.datetime(2026, 12, 1, 3, tzinfo=UTC)
    final = finalize(draft, number="HW-0001", at=at)
    assert (draft.status, final.status, final.number, final.finalized_at) == (
        "draft",
        "finalized",
        "HW-0001",
        at,
    )
    with pytest.raises(InvalidState):
        finalize(final, number="HW-0002", at=at)


def test_a_negative_total_becomes_a_credit_that_a_later_invoice_uses() -> None:
    refund = dataclasses.replace(line(amount="-12.50"), kind="adjustment")
    (nov,) = build_invoices([refund, line(amount="2.50", reservation="r2")])
    assert nov.total == Decimal("0.00")
    assert nov.credit_issued == Decimal("10.00")
    credit = [ln for ln in nov.lines if ln.kind == "credit"]
    assert [c.amount for c in credit] == [Decimal("10.00")]
    assert all(ln.amount >= 0 for ln in nov.lines if ln.kind == "credit")
    dec = draft_invoice("acme", DEC, JAN, [line(amount="4.00", period=DEC)], "USD", Decimal("10"))
    assert dec.total == Decimal("0.00")
    assert dec.credit_applied == Decimal("4.00")
    (jan,) = build_invoices([line(amount="9.00", period=DEC)], {"acme": Decimal("6.00")})
    assert (jan.total, jan.credit_applied) == (Decimal("3.00"), Decimal("6.00"))


def test_lines_of_another_currency_are_refused() -> None:
    with pytest.raises(ValueError, match="one currency per invoice"):
        build_invoices([line(), line(reservation="r2", currency="EUR")])


def test_adjustments_correct_the_difference_and_name_the_period() -> None:
    invoiced = [line(amount="10.00", quantity="20"), line(amount="3.00", reservation="r2")]
    rerated = [line(amount="11.50", quantity="23"), line(amount="1.00", reservation="r3")]
    adjustments = adjustment_lines(invoiced, rerated, DEC, JAN)
    by_target = {a.corrects_line_id: a for a in adjustments}
    assert {a.period_start for a in adjustments} == {DEC}
    assert {a.corrects_period_start for a in adjustments} == {NOV}
    assert all(a.kind == "adjustment" for a in adjustments)
    assert by_target[invoiced[0].line_id].amount == Decimal("1.50")
    assert by_target[invoiced[0].line_id].quantity == Decimal("3")
    assert by_target[invoiced[1].line_id].amount == Decimal("-3.00")  # usage that vanished
    assert by_target[rerated[1].line_id].amount == Decimal("1.00")  # late usage
    assert "adjustment for 2026-11" in adjustments[0].description
    # Deterministic: the same inputs give the same ids; a second correction counts the first.
    assert adjustment_lines(invoiced, rerated, DEC, JAN) == adjustments
    again = adjustment_lines([*invoiced, *adjustments], rerated, JAN, JAN)
    assert again == []
    later = [line(amount="12.00", quantity="24"), rerated[1]]
    (only,) = adjustment_lines([*invoiced, *adjustments], later, JAN, JAN)
    assert (only.amount, only.corrects_line_id) == (Decimal("0.50"), invoiced[0].line_id)


@given(
    st.lists(st.integers(-5_000, 50_000), min_size=1, max_size=6),
    st.lists(st.integers(-5_000, 50_000), min_size=1, max_size=6),
)
def test_invoiced_plus_adjustments_equals_the_new_rating(old: list[int], new: list[int]) -> None:
    invoiced = [line(amount=str(Decimal(c) / 100), reservation=f"r{i}") for i, c in enumerate(old)]
    rerated = [line(amount=str(Decimal(c) / 100), reservation=f"r{i}") for i, c in enumerate(new)]
    adjustments = adjustment_lines(invoiced, rerated, DEC, JAN)
    total = sum(ln.amount for ln in invoiced + adjustments)
    assert total == sum(ln.amount for ln in rerated)
    invoice = draft_invoice("acme", DEC, JAN, adjustments, "USD") if adjustments else None
    if invoice is not None:
        assert invoice.total >= 0
        assert invoice.total - invoice.credit_issued == sum(a.amount for a in adjustments)


def test_exports_keep_exact_money() -> None:
    invoices = build_invoices([line(amount="10.01"), line("bob", "0.10", reservation="r2")])
    frame = invoices_frame(invoices)
    assert list(frame.columns) == list(INVOICE_COLUMNS + LINE_COLUMNS)
    assert frame["amount"].tolist() == [Decimal("10.01"), Decimal("0.10")]
    assert frame["amount_minor"].tolist() == [1001, 10]
    assert list(lines_frame(invoices[0].lines).columns) == list(LINE_COLUMNS)
    back = pd.read_csv(io.StringIO(to_csv(invoices)), dtype=str)
    assert back["amount"].tolist() == ["10.01", "0.10"]
    assert back["period_start"].tolist() == ["2026-11-01T00:00:00Z"] * 2
    assert back["sku_revision"].tolist() == ["1", "1"]
    data = json.loads(to_json(invoices))
    assert data[0]["total"] == "10.01" and data[0]["total_minor"] == 1001
    assert data[0]["lines"][0]["period_start"] == "2026-11-01T00:00:00Z"
    assert invoice_record(invoices[1])["customer"] == "bob"


def test_html_is_self_contained_and_escaped() -> None:
    nasty = line(customer="<script>alert(1)</script>", description='GPU "x" & <b>bold</b>')
    (invoice,) = build_invoices([nasty])
    page = render_html(finalize(invoice, "HW-7", dt.datetime(2026, 12, 1, tzinfo=UTC)))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "GPU &quot;x&quot; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Invoice HW-7" in page and "10.00 USD" in page
    assert "http" not in page and "<link" not in page  # nothing fetched from elsewhere


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acme", "bob"]),
            st.sampled_from([NOV, DEC]),
            st.integers(-9_999, 9_999),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_invoice_is_the_exact_sum_of_its_lines_and_never_negative(
    rows: list[tuple[str, dt.datetime, int]],
) -> None:
    lines = [
        line(customer, str(Decimal(cents) / 100), period=period, reservation=f"r{i}")
        for i, (customer, period, cents) in enumerate(rows)
    ]
    balance: dict[str, Decimal] = {}
    for invoice in build_invoices(lines):
        assert invoice.total == sum(ln.amount for ln in invoice.lines)
        assert invoice.total >= 0
        charges = sum(
            ln.amount
            for ln in lines
            if (ln.customer, ln.period_start) == (invoice.customer, invoice.period_start)
        )
        assert invoice.charges == charges
        assert invoice.credit_issued == max(Decimal(0), -charges)
        assert invoice.credit_applied <= balance.get(invoice.customer, Decimal(0))
        balance[invoice.customer] = (
            balance.get(invoice.customer, Decimal(0))
            - invoice.credit_applied
            + invoice.credit_issued
        )
