"""Contract tests of the Stripe-shaped fake, driven through the real ``stripe`` 16.x client.

Each test pins the form fields the client actually sends (captured by the server) and checks that
the client parses the answers into its own objects. stripe-python 16 sets the API base with
``StripeClient(..., base_addresses={"api": url})`` and serves the v1 API under ``client.v1``.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing.fake_stripe import FakeStripeHandle, serve

NOW = 1_795_000_000  # 2026-11-18, the fake's clock in these tests


@pytest.fixture
def fake() -> Iterator[FakeStripeHandle]:
    with serve(clock=lambda: NOW) as handle:
        yield handle


@pytest.fixture
def client(fake: FakeStripeHandle) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_hwmarket", base_addresses={"api": fake.url}, max_network_retries=0
    )


def raw(
    fake: FakeStripeHandle, method: str, path: str, body: str = "", **headers: str
) -> tuple[int, Any]:
    """A request without the client, to see statuses and bodies as sent."""
    request = urllib.request.Request(
        fake.url + path,
        data=body.encode() if method == "POST" else None,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sent(fake: FakeStripeHandle) -> list[tuple[str, str]]:
    """The form fields of the last request, as the client encoded them."""
    return fake.requests[-1].form


def test_customers_create_retrieve_update_list_and_search(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    acme = client.v1.customers.create(
        params={"email": "ops@acme.test", "name": "Acme", "metadata": {"hwmarket_customer": "acme"}}
    )
    assert sent(fake) == [
        ("email", "ops@acme.test"),
        ("name", "Acme"),
        ("metadata[hwmarket_customer]", "acme"),
    ]
    assert fake.requests[-1].idempotency_key  # the client sends one on every POST
    assert isinstance(acme, stripe.Customer) and acme.id.startswith("cus_")
    assert acme.metadata is not None and acme.created == NOW
    assert acme.metadata["hwmarket_customer"] == "acme"
    assert client.v1.customers.retrieve(acme.id).email == "ops@acme.test"
    updated = client.v1.customers.update(acme.id, params={"metadata": {"tier": "gold"}})
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"hwmarket_customer": "acme", "tier": "gold"}
    others = [client.v1.customers.create(params={"email": f"c{i}@x.test"}).id for i in range(3)]
    page = client.v1.customers.list(params={"limit": 2})
    assert sent(fake) == [("limit", "2")]
    assert page.has_more and [c.id for c in page.data] == others[::-1][:2]
    every = [c.id for c in client.v1.customers.list(params={"limit": 2}).auto_paging_iter()]
    assert every == [*others[::-1], acme.id]
    back = client.v1.customers.list(params={"limit": 2, "ending_before": acme.id})
    assert [c.id for c in back.data] == others[:2][::-1]
    found = client.v1.customers.search(params={"query": "metadata['hwmarket_customer']:'acme'"})
    assert [c.id for c in found.data] == [acme.id]
    assert client.v1.customers.search(params={"query": "email:'nobody@x.test'"}).data == []


def test_invoice_items_pin_the_fields_and_list_by_customer_and_invoice(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"email": "a@b.test"})
    item = client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "amount": 1234,
            "currency": "usd",
            "description": "c3 rev 1 at ams1: 24 hours",
            "period": {"start": NOW - 86400, "end": NOW},
            "metadata": {"hwmarket_line_id": "ln_0123"},
        }
    )
    assert sent(fake) == [
        ("customer", customer.id),
        ("amount", "1234"),
        ("currency", "usd"),
        ("description", "c3 rev 1 at ams1: 24 hours"),
        ("period[start]", str(NOW - 86400)),
        ("period[end]", str(NOW)),
        ("metadata[hwmarket_line_id]", "ln_0123"),
    ]
    assert isinstance(item, stripe.InvoiceItem)
    assert (item.amount, item.currency, item.invoice) == (1234, "usd", None)
    assert (item.period.start, item.period.end) == (NOW - 86400, NOW)
    draft = client.v1.invoices.create(params={"customer": customer.id})
    onto = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": -200, "currency": "usd", "invoice": draft.id}
    )
    assert onto.invoice == draft.id
    by_invoice = client.v1.invoice_items.list(params={"invoice": draft.id})
    assert [i.id for i in by_invoice.data] == [onto.id]
    by_customer = client.v1.invoice_items.list(params={"customer": customer.id})
    assert {i.id for i in by_customer.data} == {item.id, onto.id}
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert [i.id for i in pending.data] == [item.id]
    assert sent(fake) == [("customer", customer.id), ("pending", "true")]


def test_invoice_lifecycle_draft_open_paid(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"email": "a@b.test"})
    for amount in (1000, 234):
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": amount, "currency": "usd"}
        )
    invoice = client.v1.invoices.create(
        params={
            "customer": customer.id,
            "pending_invoice_items_behavior": "include",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"hwmarket_invoice": "in_x"},
        }
    )
    assert ("pending_invoice_items_behavior", "include") in sent(fake)
    assert isinstance(invoice, stripe.Invoice)
    assert (invoice.status, invoice.total, invoice.amount_due, invoice.number) == (
        "draft",
        1234,
        1234,
        None,
    )
    assert sorted(line.amount for line in invoice.lines.data) == [234, 1000]
    final = client.v1.invoices.finalize_invoice(invoice.id)
    assert (final.status, final.number, final.amount_due) == ("open", "FAKE-0001", 1234)
    assert final.status_transitions.finalized_at == NOW
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": 1, "currency": "usd", "invoice": invoice.id}
        )
    assert caught.value.code == "invoice_not_editable"
    paid = client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 1234, 0)
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    listed = client.v1.invoices.list(params={"customer": customer.id, "status": "paid"})
    assert [i.id for i in listed.data] == [invoice.id]


def test_a_negative_invoice_is_a_credit_used_by_the_next(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "a@b.test"})
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": -500, "currency": "usd"}
    )
    credit = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    credit = client.v1.invoices.finalize_invoice(credit.id)
    assert (credit.total, credit.amount_due, credit.status, credit.ending_balance) == (
        -500,
        0,
        "paid",
        -500,
    )
    assert client.v1.customers.retrieve(customer.id).balance == -500
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 800, "currency": "usd"}
    )
    later = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    later = client.v1.invoices.finalize_invoice(later.id)
    assert (later.amount_due, later.starting_balance, later.ending_balance) == (300, -500, 0)


def test_prices_create_and_list(fake: FakeStripeHandle, client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Energy",
            "event_name": "kwh",
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount_decimal": Decimal("21.5"),  # the typed params want a Decimal
            "product_data": {"name": "Facility energy (kWh)"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "lookup_key": "energy-ams1",
        }
    )
    assert sent(fake) == [
        ("currency", "usd"),
        ("unit_amount_decimal", "21.5"),
        ("product_data[name]", "Facility energy (kWh)"),
        ("recurring[interval]", "month"),
        ("recurring[usage_type]", "metered"),
        ("recurring[meter]", meter.id),
        ("lookup_key", "energy-ams1"),
    ]
    assert isinstance(price, stripe.Price) and price.recurring is not None
    assert price.recurring.meter == meter.id and price.type == "recurring"
    assert isinstance(price.product, str) and price.product.startswith("prod_")
    once = client.v1.prices.create(
        params={"currency": "eur", "unit_amount": 99, "product": price.product}
    )
    assert [p.id for p in client.v1.prices.list(params={"currency": "eur"}).data] == [once.id]
    assert len(client.v1.prices.list().data) == 2


def test_meters_events_adjustments_and_summaries(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Machine hours",
            "event_name": "machine_hours",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    assert isinstance(meter, stripe.billing.Meter) and meter.status == "active"
    assert [m.id for m in client.v1.billing.meters.list().data] == [meter.id]
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "machine_hours"
    hour = NOW // 3600 * 3600
    for i, (value, at) in enumerate([(5, hour - 3600), (7, hour - 1800), (11, hour + 60)]):
        event = client.v1.billing.meter_events.create(
            params={
                "event_name": "machine_hours",
                "payload": {"stripe_customer_id": "cus_1", "value": str(value)},
                "identifier": f"ln_{i}",
                "timestamp": at,
            }
        )
        assert isinstance(event, stripe.billing.MeterEvent) and event.identifier == f"ln_{i}"
    assert sent(fake) == [
        ("event_name", "machine_hours"),
        ("payload[stripe_customer_id]", "cus_1"),
        ("payload[value]", "11"),
        ("identifier", "ln_2"),
        ("timestamp", str(hour + 60)),
    ]
    adjustment = client.v1.billing.meter_event_adjustments.create(
        params={"event_name": "machine_hours", "type": "cancel", "cancel": {"identifier": "ln_1"}}
    )
    assert sent(fake) == [
        ("event_name", "machine_hours"),
        ("type", "cancel"),
        ("cancel[identifier]", "ln_1"),
    ]
    assert isinstance(adjustment, stripe.billing.MeterEventAdjustment)
    assert adjustment.cancel is not None
    assert (adjustment.status, adjustment.cancel.identifier) == ("pending", "ln_1")
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={
            "customer": "cus_1",
            "start_time": hour - 3600,
            "end_time": hour + 3600,
            "value_grouping_window": "hour",
        },
    )
    assert all(isinstance(s, stripe.billing.MeterEventSummary) for s in summaries.data)
    assert [(s.start_time, s.aggregated_value) for s in summaries.data] == [
        (hour - 3600, 5.0),
        (hour, 11.0),
    ]
    events = raw(fake, "GET", "/_fake/meter_events")[1]
    assert [(e["identifier"], e["cancelled"]) for e in events] == [
        ("ln_0", False),
        ("ln_1", True),
        ("ln_2", False),
    ]


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"identifier": "ln_0"}, "duplicate_meter_event", "identifier"),
        ({"timestamp": NOW - 35 * 86400 - 1}, "timestamp_too_far_in_past", "timestamp"),
        ({"timestamp": NOW + 301}, "timestamp_in_future", "timestamp"),
        (
            {"payload": {"stripe_customer_id": "cus_1", "value": "1.5"}},
            "parameter_invalid_integer",
            "payload[value]",
        ),
        (
            {"payload": {"stripe_customer_id": "cus_1", "value": "1" * 16}},
            "parameter_invalid_integer",
            "payload[value]",
        ),
        ({"payload": {"value": "1"}}, "parameter_missing", "payload[stripe_customer_id]"),
        ({"event_name": "nope"}, "resource_missing", "event_name"),
    ],
)
def test_meter_event_rules(
    client: stripe.StripeClient, change: dict[str, Any], code: str, param: str
) -> None:
    client.v1.billing.meters.create(
        params={
            "display_name": "kWh",
            "event_name": "kwh",
            "default_aggregation": {"formula": "sum"},
        }
    )
    good: Any = {
        "event_name": "kwh",
        "payload": {"stripe_customer_id": "cus_1", "value": "1" * 15},
        "identifier": "ln_0",
        "timestamp": NOW - 35 * 86400,
    }
    client.v1.billing.meter_events.create(params=good)  # the limits themselves are accepted
    with pytest.raises(stripe.InvalidRequestError) as caught:
        bad: Any = {**good, "identifier": "ln_1", **change}
        client.v1.billing.meter_events.create(params=bad)
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, code, param)


def test_idempotency_replays_the_first_answer_and_refuses_other_parameters(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    first = client.v1.customers.create(
        params={"email": "a@b.test"}, options={"idempotency_key": "k-1"}
    )
    again = client.v1.customers.create(
        params={"email": "a@b.test"}, options={"idempotency_key": "k-1"}
    )
    assert again.id == first.id
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create(
            params={"email": "other@b.test"}, options={"idempotency_key": "k-1"}
        )
    assert caught.value.http_status == 400
    assert caught.value.error is not None and caught.value.error.type == "idempotency_error"
    # A request that failed validation leaves no result behind: the key is still free.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.create(
            params={"customer": "cus_nope", "amount": 1, "currency": "usd"},
            options={"idempotency_key": "k-2"},
        )
    assert client.v1.customers.create(
        params={"email": "c@b.test"}, options={"idempotency_key": "k-2"}
    ).id
    body = "email=a%40b.test"
    status, replay = raw(
        fake,
        "POST",
        "/v1/customers",
        body,
        Authorization="Bearer sk_test_hwmarket",
        **{"Idempotency-Key": "k-1"},
    )
    assert (status, replay["id"]) == (200, first.id)


def test_errors_are_shaped_like_stripes(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    status, body = raw(fake, "GET", "/v1/customers")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in body["error"]["message"]
    status, body = raw(fake, "GET", "/v1/customers/cus_missing", Authorization="Bearer sk_test_x")
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        404,
        "resource_missing",
        "id",
    )
    status, body = raw(
        fake, "POST", "/v1/customers", "colour=red", Authorization="Bearer sk_test_x"
    )
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "parameter_unknown",
        "colour",
    )
    status, body = raw(fake, "GET", "/v1/charges", Authorization="Bearer sk_test_x")
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.create(params={})
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "customer")


def test_a_server_with_a_key_refuses_others() -> None:
    with serve(api_key="sk_test_right") as fake:
        wrong = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": fake.url}, max_network_retries=0
        )
        with pytest.raises(stripe.AuthenticationError):
            wrong.v1.customers.list()
        right = stripe.StripeClient(
            "sk_test_right", base_addresses={"api": fake.url}, max_network_retries=0
        )
        assert right.v1.customers.list().data == []


def test_retries_and_threads_create_each_object_once(fake: FakeStripeHandle) -> None:
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": fake.url}, max_network_retries=2
    )

    def create(i: int) -> str:
        return str(client.v1.customers.create(params={"email": f"u{i}@x.test"}).id)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))
    assert len(set(ids)) == 40
    assert len(list(client.v1.customers.list(params={"limit": 100}).data)) == 40


def test_snapshot_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "stripe.json"
    with serve(snapshot=path) as fake:
        client = stripe.StripeClient(
            "sk_test_x", base_addresses={"api": fake.url}, max_network_retries=0
        )
        kept = client.v1.customers.create(params={"email": "kept@x.test"}).id
    assert json.loads(path.read_text())["objects"]["customer"][kept]["email"] == "kept@x.test"
    with serve(snapshot=path) as fake:
        client = stripe.StripeClient(
            "sk_test_x", base_addresses={"api": fake.url}, max_network_retries=0
        )
        assert client.v1.customers.retrieve(kept).email == "kept@x.test"
        assert client.v1.customers.create(params={"email": "new@x.test"}).id != kept


def test_python_dash_m_serves_until_terminated() -> None:
    with socket.socket() as probe:  # a port free right now; the server binds it just after
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.fake_stripe", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert (
            process.stdout.readline().strip() == f"fake Stripe listening on http://127.0.0.1:{port}"
        )
        client = stripe.StripeClient(
            "sk_test_x", base_addresses={"api": f"http://127.0.0.1:{port}"}, max_network_retries=0
        )
        assert client.v1.customers.create(params={"email": "cli@x.test"}).email == "cli@x.test"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_debug_endpoints_show_requests_and_reset(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    client.v1.customers.create(params={"email": "a@b.test"})
    status, requests = raw(fake, "GET", "/_fake/requests")
    assert (
        status == 200 and requests[-1]["path"] == "/v1/customers" and requests[-1]["status"] == 200
    )
    assert raw(fake, "POST", "/_fake/reset")[0] == 200
    assert client.v1.customers.list().data == []
    assert raw(fake, "GET", "/_fake/state")[1]["objects"]["customer"] == {}


def test_items_retrieve_and_delete_invoice_lines_and_products(
    fake: FakeStripeHandle, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"email": "a@b.test"})
    product = client.v1.products.create(params={"name": "c3.small hours"})
    assert sent(fake) == [("name", "c3.small hours")]
    assert client.v1.products.retrieve(product.id).name == "c3.small hours"
    keep, drop = (
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": amount, "currency": "usd"}
        )
        for amount in (300, 400)
    )
    assert client.v1.invoice_items.retrieve(keep.id).amount == 300
    deleted = client.v1.invoice_items.delete(drop.id)
    assert (deleted.id, deleted.deleted) == (drop.id, True)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.retrieve(drop.id)
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")
    invoice = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    lines = client.v1.invoices.line_items.list(invoice.id)
    (only,) = lines.data
    assert isinstance(only, stripe.InvoiceLineItem)
    assert only.parent is not None and only.parent.invoice_item_details is not None
    assert (only.amount, only.parent.invoice_item_details.invoice_item) == (300, keep.id)
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.delete(keep.id)
    assert caught.value.code == "invoice_not_editable"
