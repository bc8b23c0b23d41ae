"""The Stripe sync against real peers: the project's fake (items, invoices, meters) and
localstripe (customers and invoice items), over SQLite and PostgreSQL stores.

Exactly-once is checked from Stripe's side: after each sync, Stripe holds every outbox row once
(matched by ``metadata.hwmarket_line_id`` and meter event identifiers), whatever was lost or
repeated before.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from billing import stripe_outbox as outbox
from billing.fake_stripe import FakeStripeHandle, serve
from billing.schema import StripeCustomerRow, StripeOutboxRow
from billing.stripe_meters import EnqueuedEvent, event_id
from billing.stripe_sync import (
    FAKE_STRIPE,
    LOCALSTRIPE,
    METERS,
    STRIPE,
    StripeSyncError,
    client_from_env,
    enqueue_meter_events,
    flavor_from_env,
    plan_meter_events,
    sync,
)
from marketplace.errors import InvalidInput
from marketplace.store import Store
from metering.schema import UsageRow
from tests.peers.localstripe_peer import localstripe  # noqa: F401  (fixture)

CUSTOMERS = ("acme", "globex", "initech")
H = dt.timedelta(hours=1)


def _hour(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(t) // 3600 * 3600, dt.UTC)


def seed_outbox(
    store: Store,
    *,
    items_per_customer: int = 40,
    meter_events: int = 200,
    finalize: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """A realistic outbox: one invoice per customer with its lines and finalize row, and meter
    events over the last hours. Returns what Stripe should end up holding."""
    now = time.time() if now is None else now
    period_start = int(now) - 30 * 86400
    rows: list[dict[str, Any]] = []
    expected: dict[str, Any] = {"items": {}, "invoices": {}, "events": set()}
    for c in CUSTOMERS:
        invoice_id = f"inv-2026-11-{c}"
        line_ids, total = [], 0
        for i in range(items_per_customer):
            line_id = f"ln-{c}-{i:03d}"
            amount = 1000 + 37 * i - (500 if i % 13 == 0 else 0)
            line_ids.append(line_id)
            total += amount
            expected["items"][line_id] = amount
            rows.append(
                {
                    "id": line_id,
                    "kind": "invoice_item",
                    "customer": c,
                    "invoice_id": invoice_id,
                    "payload": {
                        "invoice_id": invoice_id,
                        "amount_minor": amount,
                        "currency": "usd",
                        "description": f"c3.small.x86 rev 1 at ams1, line {i}",
                        "period_start": period_start,
                        "period_end": int(now) - 86400,
                        "metadata": {
                            "hwmarket_line_id": line_id,
                            "hwmarket_invoice_id": invoice_id,
                            "hwmarket_period": "2026-11",
                        },
                    },
                }
            )
        expected["invoices"][invoice_id] = (line_ids, total)
        if finalize:
            rows.append(
                {
                    "id": "fin_" + invoice_id,
                    "kind": "invoice_finalize",
                    "customer": c,
                    "invoice_id": invoice_id,
                    "payload": {
                        "invoice_id": invoice_id,
                        "number": f"HWM-2026-11-{c}",
                        "currency": "usd",
                        "total_minor": total,
                        "period_start": period_start,
                        "period_end": int(now) - 86400,
                        "item_ids": line_ids,
                    },
                }
            )
    metrics = list(METERS)
    for n in range(meter_events):
        c = CUSTOMERS[n % 3]
        metric = metrics[(n // 3) % 2]
        hour = _hour(now) - (1 + n // 6) * H
        ident = event_id(c, hour, metric, 1)
        expected["events"].add(ident)
        rows.append(
            {
                "id": ident,
                "kind": "meter_event",
                "customer": c,
                "invoice_id": None,
                "payload": {
                    "event_name": METERS[metric],
                    "customer": c,
                    "value": 3600 + n,
                    "timestamp": int(hour.timestamp()),
                },
            }
        )
    outbox.add_rows(store, rows)
    return expected


@pytest.fixture
def fake() -> Iterator[FakeStripeHandle]:
    with serve() as handle:
        yield handle


def client_for(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_hwmarket", base_addresses={"api": url}, max_network_retries=2
    )


def stripe_items(fake: FakeStripeHandle) -> Counter[str]:
    """hwmarket line id -> how many Stripe invoice items carry it."""
    return Counter(
        i["metadata"].get("hwmarket_line_id")
        for i in fake.fake.state.objects["invoiceitem"].values()
    )


def outbox_states(store: Store) -> Counter[str]:
    with store.reading() as s:
        return Counter(s.scalars(select(StripeOutboxRow.state)).all())


def writes(fake: FakeStripeHandle) -> int:
    return sum(1 for r in fake.requests if r.method == "POST")


@pytest.mark.parametrize("concurrency", [1, 4])
def test_sync_sends_everything_once_and_a_second_run_sends_nothing(
    store: Store, fake: FakeStripeHandle, concurrency: int
) -> None:
    expected = seed_outbox(store, items_per_customer=12, meter_events=30)
    seen: list[tuple[str, int, int]] = []
    report = sync(
        store,
        client_for(fake.url),
        flavor=FAKE_STRIPE,
        concurrency=concurrency,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert report.ok, report
    assert (report.customers_created, report.invoices_created) == (3, 3)
    assert (report.items_sent, report.invoices_finalized, report.events_sent) == (36, 3, 30)
    assert stripe_items(fake) == Counter(dict.fromkeys(expected["items"], 1))
    invoices = fake.fake.state.objects["invoice"].values()
    for inv in invoices:
        lines, total = expected["invoices"][inv["metadata"]["hwmarket_invoice_id"]]
        assert inv["status"] in ("open", "paid") and inv["total"] == total
        assert sorted(ln["metadata"]["hwmarket_line_id"] for ln in inv["lines"]["data"]) == lines
    assert set(fake.fake.state.meter_events) == expected["events"]
    assert outbox_states(store) == Counter(confirmed=36 + 3 + 30)
    assert seen[-1][0] == "meters" and seen[-1][1] == seen[-1][2] == 30
    with store.reading() as s:
        assert {r.customer for r in s.scalars(select(StripeCustomerRow))} == set(CUSTOMERS)
    before = writes(fake)
    again = sync(store, client_for(fake.url), flavor=FAKE_STRIPE, concurrency=concurrency)
    assert again.ok and writes(fake) == before and again.requests == 0


def test_lost_records_and_forgotten_idempotency_keys_never_send_twice(
    store: Store, fake: FakeStripeHandle
) -> None:
    expected = seed_outbox(store, items_per_customer=8, meter_events=12, finalize=False)
    assert sync(store, client_for(fake.url), flavor=FAKE_STRIPE).ok
    # As if every record after each Stripe call was lost, more than 24 h ago (keys forgotten).
    with store.writing() as s:
        s.execute(update(StripeOutboxRow).values(state="pending", stripe_id=None))
        s.execute(delete(StripeCustomerRow))
    fake.fake.idempotency.clear()
    before = {k: dict(v) for k, v in fake.fake.state.objects["invoiceitem"].items()}
    report = sync(store, client_for(fake.url), flavor=FAKE_STRIPE)
    assert report.ok, report
    assert report.customers_matched == 3 and report.customers_created == 0
    assert report.items_sent == 0 and report.items_confirmed == 24
    assert report.events_sent == 0 and report.events_confirmed == 12
    assert len(fake.fake.state.objects["customer"]) == 3
    assert stripe_items(fake) == Counter(dict.fromkeys(expected["items"], 1))
    with store.reading() as s:
        recorded = {r.id: r.stripe_id for r in s.scalars(select(StripeOutboxRow))}
    for item_id, item in before.items():
        assert recorded[item["metadata"]["hwmarket_line_id"]] == item_id


def test_finalize_waits_for_every_line_and_refuses_a_draft_that_differs(
    store: Store, fake: FakeStripeHandle
) -> None:
    seed_outbox(store, items_per_customer=3, meter_events=0)
    client = client_for(fake.url)
    # Someone added a line by hand to acme's draft, claiming a hwmarket line it is not.
    cus = client.v1.customers.create(params={"metadata": {"hwmarket_customer": "acme"}})
    draft = client.v1.invoices.create(
        params={"customer": cus.id, "metadata": {"hwmarket_invoice_id": "inv-2026-11-acme"}}
    )
    client.v1.invoice_items.create(
        params={
            "customer": cus.id,
            "amount": 5,
            "currency": "usd",
            "invoice": draft.id,
            "metadata": {"hwmarket_line_id": "ln-acme-999"},
        }
    )
    report = sync(store, client, flavor=FAKE_STRIPE, mode="items")
    assert report.invoices_finalized == 2 and report.invoices_created == 2
    assert len(report.problems) == 1 and "ln-acme-999" in report.problems[0]
    assert fake.fake.state.objects["invoice"][draft.id]["status"] == "draft"
    assert outbox.states(store, ["fin_inv-2026-11-acme"]) == {"fin_inv-2026-11-acme": "pending"}
    assert outbox.states(store, ["ln-acme-000"]) == {"ln-acme-000": "confirmed"}


def test_stripe_refusals_are_reported_per_row_and_the_run_goes_on(
    store: Store, fake: FakeStripeHandle
) -> None:
    seed_outbox(store, items_per_customer=4, meter_events=6)
    with store.writing() as s:
        row = s.get(StripeOutboxRow, "ln-globex-002")
        assert row is not None
        row.payload = {**row.payload, "currency": "usdollars"}
    report = sync(store, client_for(fake.url), flavor=FAKE_STRIPE)
    assert not report.ok and len(report.failures) == 1
    assert "ln-globex-002" in report.failures[0] and "Invalid currency" in report.failures[0]
    assert report.invoices_finalized == 2  # globex waits for its missing line
    with store.reading() as s:
        bad = s.get(StripeOutboxRow, "ln-globex-002")
        assert bad is not None and bad.state == "pending" and bad.attempts == 1
        assert bad.last_error is not None and "HTTP 400" in bad.last_error
    assert outbox_states(store) == Counter(confirmed=12 + 2 + 6 - 1, pending=2)


def test_unreachable_stripe_is_a_stripe_sync_error_not_a_raw_exception(store: Store) -> None:
    seed_outbox(store, items_per_customer=1, meter_events=1)
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": "http://127.0.0.1:9"}, max_network_retries=1
    )
    report = sync(store, client, flavor=FAKE_STRIPE)
    assert len(report.failures) == 4  # three customers, then the meter events
    assert all("no answer" in f for f in report.failures)
    assert outbox_states(store) == Counter(pending=3 + 3 + 1)


def test_client_comes_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, store: Store, fake: FakeStripeHandle
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    with pytest.raises(StripeSyncError, match="STRIPE_API_KEY"):
        client_from_env()
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_env")
    monkeypatch.setenv("STRIPE_API_BASE", fake.url)
    monkeypatch.setenv("HWMARKET_STRIPE_FLAVOR", "fake")
    assert flavor_from_env() is FAKE_STRIPE
    seed_outbox(store, items_per_customer=1, meter_events=3)
    report = sync(store, client_from_env())  # flavor from the environment: confirms events now
    assert report.ok and report.flavor == "fake" and report.events_confirmed == 3
    monkeypatch.setenv("HWMARKET_STRIPE_FLAVOR", "nope")
    with pytest.raises(StripeSyncError, match="HWMARKET_STRIPE_FLAVOR"):
        flavor_from_env()


def test_on_real_stripe_events_are_confirmed_by_the_duplicate_answer_and_old_lost_sends_wait(
    store: Store, fake: FakeStripeHandle
) -> None:
    """With STRIPE's flavor (no event listing), a resend's "already exists" confirms an event;
    a send whose outcome was lost longer ago than Stripe keeps identifiers is not repeated."""
    seed_outbox(store, items_per_customer=0, meter_events=6, finalize=False)
    now = dt.datetime.now(dt.UTC)
    ids = sorted(outbox.states(store, [r.id for r in outbox.unfinished(store, ["meter_event"])]))
    old, recent = ids[0], ids[1]
    outbox.mark_in_flight(store, [old], now - 30 * H)
    outbox.mark_in_flight(store, [recent], now - 2 * H)
    first = sync(store, client_for(fake.url), flavor=STRIPE, now=now)
    assert first.events_sent == 5 and first.events_confirmed == 0
    assert len(first.problems) == 1 and old in first.problems[0]
    assert old not in fake.fake.state.meter_events and recent in fake.fake.state.meter_events
    second = sync(store, client_for(fake.url), flavor=STRIPE, now=now)
    assert second.events_sent == 0 and second.events_confirmed == 5
    assert outbox.states(store, ids) == {i: "pending" if i == old else "confirmed" for i in ids}
    assert len(fake.fake.state.meter_events) == 5


@pytest.mark.peer
def test_localstripe_takes_items_once_even_when_records_are_lost(
    sqlite_store: Store,
    localstripe: str,  # noqa: F811
) -> None:
    expected = seed_outbox(sqlite_store, items_per_customer=15, meter_events=5)
    client = client_for(localstripe)
    report = sync(sqlite_store, client, flavor=LOCALSTRIPE)
    assert report.ok, report
    assert report.items_sent == 45 and report.customers_created == 3
    assert len(report.skipped) == 4  # three finalize rows, the meter events
    with sqlite_store.writing() as s:
        s.execute(
            update(StripeOutboxRow)
            .where(StripeOutboxRow.kind == "invoice_item")
            .values(state="pending", stripe_id=None)
        )
        s.execute(delete(StripeCustomerRow))
    again = sync(sqlite_store, client, flavor=LOCALSTRIPE, mode="items")
    assert again.ok and again.items_sent == 0 and again.items_confirmed == 45
    held: Counter[str] = Counter()
    for cus in client.v1.customers.list(params={"limit": 100}).auto_paging_iter():
        items = client.v1.invoice_items.list(params={"customer": cus.id, "limit": 100})
        held.update(i.to_dict()["metadata"]["hwmarket_line_id"] for i in items.auto_paging_iter())
    assert held == Counter(dict.fromkeys(expected["items"], 1))


# -- meter events from the ledger ------------------------------------------------------------

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def _ev(
    metric: str, hour: dt.datetime, value: int, version: int = 1, cancelled: bool = False
) -> EnqueuedEvent:
    return EnqueuedEvent(
        event_id("acme", hour, metric, version), "acme", hour, metric, value, version, cancelled
    )


def test_plan_adjusts_within_a_day_and_leaves_older_changes_to_invoices() -> None:
    recent, old = NOW - 3 * H, NOW - 30 * H
    enqueued = [
        _ev("energy_wh", recent, 100),
        _ev("energy_wh", old, 100),
        _ev("machine_seconds", recent, 3600),
    ]
    totals = {
        ("acme", recent, "energy_wh"): 120,  # changed within 24 h: cancel v1, send v2
        ("acme", old, "energy_wh"): 90,  # changed too late: invoice adjustment
        ("acme", recent, "machine_seconds"): 3600,  # unchanged
        ("acme", NOW - H, "machine_seconds"): 1800,  # new
    }
    plan = plan_meter_events(totals, enqueued, NOW)
    ids = [r["id"] for r in plan.rows]
    v1 = event_id("acme", recent, "energy_wh", 1)
    assert ids == [
        "adj_" + v1,
        event_id("acme", recent, "energy_wh", 2),
        event_id("acme", NOW - H, "machine_seconds", 1),
    ]
    assert plan.rows[0]["payload"] == {"event_name": "hwmarket_energy_wh", "cancel_identifier": v1}
    assert plan.rows[1]["payload"]["value"] == 120
    assert plan.unchanged == 1 and len(plan.too_late) == 1 and "100 -> 90" in plan.too_late[0]
    # usage that went away is cancelled and not replaced
    gone = plan_meter_events({}, [_ev("energy_wh", recent, 100)], NOW)
    assert [r["kind"] for r in gone.rows] == ["meter_event_adjustment"]


def test_plan_refuses_values_stripe_cannot_take() -> None:
    with pytest.raises(InvalidInput, match="acme/2026-11-20T11/energy_wh"):
        plan_meter_events({("acme", NOW - H, "energy_wh"): 10**15}, [], NOW)
    with pytest.raises(InvalidInput):
        plan_meter_events({("acme", NOW - H, "energy_wh"): -1}, [], NOW)


@settings(max_examples=60, deadline=None)
@given(
    first=st.dictionaries(st.sampled_from(range(6)), st.integers(0, 10**6), max_size=6),
    second=st.dictionaries(st.sampled_from(range(6)), st.integers(0, 10**6), max_size=6),
)
def test_plan_applied_converges_to_the_totals(
    first: dict[int, int], second: dict[int, int]
) -> None:
    """After enqueuing one plan then another, the live events are exactly the new totals, and
    planning the same totals again adds nothing."""

    def totals(d: dict[int, int]) -> dict[tuple[str, dt.datetime, str], int]:
        return {("acme", NOW - (1 + k) * H, "energy_wh"): v for k, v in d.items()}

    enqueued: list[EnqueuedEvent] = []
    for wanted in (totals(first), totals(second)):
        plan = plan_meter_events(wanted, enqueued, NOW)
        cancels = {
            r["payload"]["cancel_identifier"] for r in plan.rows if r["kind"] != "meter_event"
        }
        enqueued = [
            EnqueuedEvent(
                e.id,
                e.customer,
                e.hour,
                e.metric,
                e.value,
                e.version,
                e.cancelled or e.id in cancels,
            )
            for e in enqueued
        ]
        for r in plan.rows:
            if r["kind"] == "meter_event":
                hour = dt.datetime.fromtimestamp(r["payload"]["timestamp"], dt.UTC)
                version = int(r["id"].rsplit("-v", 1)[1])
                enqueued.append(
                    EnqueuedEvent(
                        r["id"], "acme", hour, "energy_wh", r["payload"]["value"], version, False
                    )
                )
        live = {(e.customer, e.hour, e.metric): e.value for e in enqueued if not e.cancelled}
        assert live == {k: v for k, v in wanted.items() if v}
        assert len({e.id for e in enqueued}) == len(enqueued)
        assert plan_meter_events(wanted, enqueued, NOW).rows == []


def _ledger_row(
    customer: str, hour: dt.datetime, host: str, reserved: float, energy: float, version: int = 1
) -> dict[str, Any]:
    return {
        "reservation_id": f"res-{customer}",
        "host_id": host,
        "hour": hour,
        "version": version,
        "computed_at": NOW + version * dt.timedelta(minutes=1),
        "customer": customer,
        "sku": "c3.small.x86",
        "sku_revision": 1,
        "site": "ams1",
        "term": "on-demand",
        "reserved_s": reserved,
        "measured_s": reserved,
        "gap_s": 0.0,
        "energy_wh": energy / 1.5,
        "energy_uncertainty_wh": 0.0,
        "facility_energy_wh": energy,
        "avg_watts": 100.0,
        "peak_watts": 120.0,
        "quality": "complete",
        "input_digest": f"d{version}",
    }


def test_enqueue_meter_events_from_the_ledger_rounds_half_even_and_adjusts(store: Store) -> None:
    h1, h2 = NOW - 3 * H, NOW - 2 * H
    idle = _ledger_row("", h1, "h9", 3600.0, 500.0) | {"reservation_id": ""}
    with store.writing() as s:
        s.execute(
            insert(UsageRow),
            [
                _ledger_row("acme", h1, "h1", 3600.0, 1.25),
                _ledger_row("acme", h1, "h2", 1800.0, 1.25),  # 2.5 Wh in the hour: rounds to 2
                _ledger_row("acme", h2, "h1", 3600.0, 3.5),  # rounds to 4
                _ledger_row("globex", h2, "h3", 0.4, 0.0),  # 0 s, 0 Wh: no events
                idle,
            ],
        )
    assert enqueue_meter_events(store, h1, NOW, now=NOW) == 4
    assert enqueue_meter_events(store, h1, NOW, now=NOW) == 0
    with store.reading() as s:
        values = {r.id: r.payload["value"] for r in s.scalars(select(StripeOutboxRow))}
    assert values == {
        event_id("acme", h1, "machine_seconds", 1): 5400,
        event_id("acme", h1, "energy_wh", 1): 2,
        event_id("acme", h2, "machine_seconds", 1): 3600,
        event_id("acme", h2, "energy_wh", 1): 4,
    }
    # Send them as of a fake clock near NOW, then a late version changes h2's energy.
    with serve(clock=lambda: NOW.timestamp() + 3 * 3600) as fake_at_now:
        client = client_for(fake_at_now.url)
        assert sync(store, client, flavor=FAKE_STRIPE, mode="meters").ok
        with store.writing() as s:
            s.execute(insert(UsageRow), [_ledger_row("acme", h2, "h1", 3600.0, 7.0, version=2)])
        assert enqueue_meter_events(store, h1, NOW, now=NOW + H) == 2
        report = sync(store, client, flavor=FAKE_STRIPE, mode="meters")
        assert report.ok and report.adjustments_confirmed == 1 and report.events_sent == 1
        events = fake_at_now.fake.state.meter_events
        assert events[event_id("acme", h2, "energy_wh", 1)]["cancelled"] is True
        assert events[event_id("acme", h2, "energy_wh", 2)]["payload"]["value"] == "7"
    # A day later, another change is left to the invoice (counted, nothing enqueued).
    with store.writing() as s:
        s.execute(insert(UsageRow), [_ledger_row("acme", h2, "h1", 3600.0, 9.0, version=3)])
    assert enqueue_meter_events(store, h1, NOW, now=NOW + 30 * H) == 0


# -- with the invoicing that writes the outbox -----------------------------------------------


def test_invoices_finalized_by_invoicing_arrive_in_stripe_with_their_totals(
    example_store: Store, fake: FakeStripeHandle
) -> None:
    """The outbox as billing.invoicing writes it: Stripe ends with one finalized invoice per
    hwmarket invoice, the same lines and the same total in minor units."""
    import numpy as np
    import pandas as pd

    from billing.invoicing import build, finalize, price_book_from_catalogue
    from billing.money import to_minor
    from marketplace.booking import reserve
    from metering.ledger import meter, write_samples

    nov = dt.datetime(2031, 11, 1, tzinfo=dt.UTC)
    for customer, count, sku in (("acme", 2, "c3.small.x86"), ("globex", 1, "c3.small.x86")):
        request = {"customer": customer, "count": count, "sku": sku}
        reserve(example_store, request | {"start": nov + 2 * H, "end": nov + 7 * H}, now=nov)
    times = pd.date_range(nov, nov + 10 * H, freq="60s")
    write_samples(
        example_store,
        pd.concat(
            [
                pd.DataFrame(
                    {"host": h, "time": times, "watts": 300 + 10 * np.sin(np.arange(len(times)))}
                )
                for h in example_store.hosts_frame()["id"]
            ],
            ignore_index=True,
        ),
    )
    meter(example_store, nov, nov + 10 * H, now=nov + 11 * H)
    build(example_store, "2031-11", price_book_from_catalogue(example_store), now=nov + 12 * H)
    invoices = finalize(example_store, "2031-11", now=nov + 13 * H)
    report = sync(example_store, client_for(fake.url), flavor=FAKE_STRIPE)
    assert report.ok, report
    in_stripe = {
        i["metadata"]["hwmarket_invoice_id"]: i for i in fake.fake.state.objects["invoice"].values()
    }
    assert set(in_stripe) == {i.invoice_id for i in invoices}
    for inv in invoices:
        mirrored = in_stripe[inv.invoice_id]
        assert mirrored["status"] in ("open", "paid")
        assert mirrored["total"] == to_minor(inv.total, inv.currency)
        assert mirrored["metadata"]["hwmarket_invoice_number"] == inv.number
        lines = {ln["metadata"]["hwmarket_line_id"] for ln in mirrored["lines"]["data"]}
        assert lines == {ln.line_id for ln in inv.lines if ln.amount != 0}
