"""Invoices in the store: build from the ledger, finalize into the outbox, adjust later."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from billing.errors import PriceMissing
from billing.invoicing import build, finalize, get_invoice, list_invoices, price_book_from_catalogue
from billing.prices import PriceBook
from billing.schema import InvoiceRow, StripeOutboxRow
from marketplace.booking import reserve
from marketplace.errors import InvalidState
from marketplace.store import Store
from metering.ledger import meter, write_samples

NOV = dt.datetime(2031, 11, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def samples(
    store: Store, start: dt.datetime, end: dt.datetime, watts: float = 300.0
) -> pd.DataFrame:
    t = pd.date_range(start, end, freq="60s")
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "host": h,
                    "time": t,
                    "watts": watts + 10 * np.sin(np.arange(len(t))),
                    "source": "simulated",
                }
            )
            for h in store.hosts_frame()["id"]
        ],
        ignore_index=True,
    )


def count(store: Store, table: type) -> int:
    with store.reading() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


@pytest.fixture
def metered(example_store: Store) -> Store:
    reserve(
        example_store,
        {
            "customer": "acme",
            "count": 2,
            "sku": "c3.small.x86",
            "start": NOV + 2 * H,
            "end": NOV + 7 * H + dt.timedelta(minutes=30),
        },
        now=NOV,
    )
    reserve(
        example_store,
        {
            "customer": "globex",
            "count": 1,
            "sku": "g4.8x.h100",
            "places": ["fra1"],
            "start": NOV + H,
            "end": NOV + 3 * H,
        },
        now=NOV,
    )
    write_samples(example_store, samples(example_store, NOV, NOV + 10 * H))
    meter(example_store, NOV, NOV + 10 * H, now=NOV + 11 * H)
    return example_store


def test_build_and_finalize(metered: Store) -> None:
    report = build(metered, "2031-11", price_book_from_catalogue(metered), now=NOV + 12 * H)
    by_customer = {inv.customer: inv for inv in report.drafts}
    assert set(by_customer) == {"acme", "globex"}
    acme = by_customer["acme"]
    machine = [ln for ln in acme.lines if ln.kind == "machine_time"]
    assert [str(ln.quantity) for ln in machine] == ["12"]  # 2 hosts x 6 started hours
    assert str(machine[0].amount) == "6.00"
    assert acme.total == sum(ln.amount for ln in acme.lines)
    gpu_time = next(ln for ln in by_customer["globex"].lines if ln.kind == "machine_time")
    assert str(gpu_time.amount) == "208.00"
    again = build(metered, "2031-11", price_book_from_catalogue(metered), now=NOV + 13 * H)
    assert again.replaced_drafts == 2 and count(metered, InvoiceRow) == 2
    final = finalize(metered, "2031-11", now=NOV + 14 * H)
    assert sorted(i.number for i in final if i.number) == ["HWM-203111-00001", "HWM-203111-00002"]
    assert get_invoice(metered, final[0].number or "").total == final[0].total
    kinds = {k for (k,) in _outbox_kinds(metered)}
    assert kinds == {"invoice_item", "invoice_finalize"}
    with pytest.raises(InvalidState):
        finalize(metered, "2031-11", now=NOV + 15 * H)
    # a finalized invoice is never rebuilt
    later = build(metered, "2031-11", price_book_from_catalogue(metered), now=NOV + 16 * H)
    assert later.drafts == [] and len(later.already_final) == 2


def _outbox_kinds(store: Store) -> list[tuple[str]]:
    with store.reading() as s:
        return [tuple(r) for r in s.execute(select(StripeOutboxRow.kind).distinct())]


def test_missing_price_lists_every_gap_and_stores_nothing(metered: Store) -> None:
    full = price_book_from_catalogue(metered)
    partial = PriceBook(
        currency="USD",
        prices=tuple(p for p in full.prices if p.sku != "g4.8x.h100"),
        energy=tuple(e for e in full.energy if e.site != "fra1"),
    )
    with pytest.raises(PriceMissing) as caught:
        build(metered, "2031-11", partial, now=NOV + 12 * H)
    text = str(caught.value)
    assert "g4.8x.h100" in text and "fra1" in text
    assert count(metered, InvoiceRow) == 0


def test_late_usage_becomes_adjustment_on_next_invoice(metered: Store) -> None:
    build(metered, "2031-11", price_book_from_catalogue(metered), now=NOV + 12 * H)
    finalize(metered, "2031-11", now=NOV + 12 * H)
    # late samples at a much higher power for the hours acme held its hosts
    late = samples(metered, NOV + 3 * H + dt.timedelta(seconds=30), NOV + 5 * H, watts=2000.0)
    write_samples(metered, late)
    meter(metered, NOV, NOV + 10 * H, now=NOV + 20 * H)
    dec = build(
        metered,
        "2031-12",
        price_book_from_catalogue(metered),
        now=dt.datetime(2032, 1, 1, 1, tzinfo=dt.UTC),
    )
    adjustments = [ln for inv in dec.drafts for ln in inv.lines if ln.kind == "adjustment"]
    assert adjustments and all(ln.corrects_period_start == NOV for ln in adjustments)
    assert all("adjustment for 2031-11" in ln.description for ln in adjustments)
    assert sum(ln.amount for ln in adjustments) > 0
    assert [i.status for i in list_invoices(metered, period="2031-11")] == [
        "finalized",
        "finalized",
    ]
