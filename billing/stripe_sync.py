"""Exactly-once Stripe sync from the outbox: reconcile with Stripe first, then send what it lacks.

The invoicing transaction writes :class:`~billing.schema.StripeOutboxRow` rows (invoice items,
invoice finalizations, meter events, meter event adjustments) with deterministic ids. ``sync``
moves each row ``pending -> sent -> confirmed``:

1. before sending anything, it reads what Stripe already holds and confirms the rows it finds
   there (by ``metadata.hwmarket_line_id``, ``metadata.hwmarket_invoice_id``, meter event
   identifiers), so a sync killed between a Stripe call and its record never sends twice, even
   after Stripe forgot the idempotency key (it keeps them about 24 hours);
2. it sends the rest with idempotency keys made from the row ids, recording each answer in its
   own small transaction right after the call;
3. it confirms what it sent by reading Stripe again, and finalizes an invoice only when its
   Stripe lines are exactly the hwmarket invoice's lines.

Stripe's errors become :class:`StripeSyncError`; one customer's failure does not stop the others,
and the :class:`SyncReport` lists them. Example::

    client = client_from_env()      # STRIPE_API_KEY, STRIPE_API_BASE
    report = sync(store, client, mode="all")
    assert report.ok, report.failures + report.problems

Module map: :mod:`billing.stripe_api` (calls, flavors, errors), :mod:`billing.stripe_outbox`
(the rows in the store), :mod:`billing.stripe_run` (report, customers, parallel sends),
:mod:`billing.stripe_items` (items and invoices), :mod:`billing.stripe_meters` (meter events).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Literal

import stripe

from billing import stripe_outbox as outbox
from billing.stripe_api import (
    FAKE_STRIPE,
    LOCALSTRIPE,
    STRIPE,
    StripeCalls,
    StripeFlavor,
    StripeSyncError,
    client_from_env,
    flavor_from_env,
)
from billing.stripe_items import sync_customer_items
from billing.stripe_meters import (
    METERS,
    MeterEventPlan,
    enqueue_meter_events,
    ensure_meters,
    plan_meter_events,
    sync_meter_rows,
)
from billing.stripe_outbox import ITEM_KINDS, METER_KINDS, OutboxEntry
from billing.stripe_run import Progress, SyncReport, SyncRun
from marketplace.errors import InvalidInput, Problem
from marketplace.store import Store

Mode = Literal["items", "meters", "all"]
MODES: tuple[Mode, ...] = ("items", "meters", "all")


def sync(
    store: Store,
    client: stripe.StripeClient,
    *,
    mode: Mode = "all",
    progress: Progress | None = None,
    flavor: StripeFlavor | None = None,
    concurrency: int = 1,
    rate_limit: float | None = None,
    max_attempts: int = 10,
    now: dt.datetime | None = None,
) -> SyncReport:
    """Bring Stripe in line with the outbox: ``mode`` items (invoice items and invoices),
    meters (meter events and adjustments) or all.

    ``concurrency`` calls in flight at once, at most ``rate_limit`` requests per second (Stripe
    allows 100/s live, 25/s in test mode). ``progress(phase, done, total)`` is called as rows
    are handled. Rows that failed ``max_attempts`` times are left for a person. ``flavor``
    (what the peer supports) defaults to ``$HWMARKET_STRIPE_FLAVOR``, else real Stripe;
    ``now`` (default: the clock) dates in-flight marks and judges how old they are.
    """
    flavor = flavor or flavor_from_env()
    if mode not in MODES:
        raise InvalidInput([Problem("mode", f"must be one of {', '.join(MODES)}", mode)], "sync")
    if concurrency < 1:
        raise InvalidInput([Problem("concurrency", "must be at least 1", concurrency)], "sync")
    calls = StripeCalls(client, flavor, rate_limit)
    run = SyncRun(
        store,
        calls,
        SyncReport(flavor=flavor.name),
        concurrency=concurrency,
        max_attempts=max_attempts,
        progress=progress,
        customers=outbox.customer_map(store),
        now=now or dt.datetime.now(dt.UTC),
    )
    try:
        if mode in ("items", "all"):
            _sync_items(run)
        if mode in ("meters", "all"):
            _sync_meters(run)
    finally:
        run.report.requests = calls.requests
    return run.report


def _sync_items(run: SyncRun) -> None:
    rows = outbox.unfinished(run.store, ITEM_KINDS)
    run.start_phase("items", len(rows))
    by_customer: dict[str, list[OutboxEntry]] = defaultdict(list)
    for r in rows:
        by_customer[r.customer].append(r)
    for customer, mine in sorted(by_customer.items()):
        try:
            sync_customer_items(run, customer, mine)
        except StripeSyncError as exc:
            run.fail(mine, f"customer {customer}: {exc}")


def _sync_meters(run: SyncRun) -> None:
    rows = outbox.unfinished(run.store, METER_KINDS)
    run.start_phase("meters", len(rows))
    try:
        sync_meter_rows(run, rows)
    except StripeSyncError as exc:
        run.report.failures.append(f"meter events: {exc}")


__all__ = [
    "FAKE_STRIPE",
    "LOCALSTRIPE",
    "METERS",
    "MODES",
    "STRIPE",
    "MeterEventPlan",
    "Mode",
    "Progress",
    "StripeFlavor",
    "StripeSyncError",
    "SyncReport",
    "client_from_env",
    "enqueue_meter_events",
    "ensure_meters",
    "flavor_from_env",
    "plan_meter_events",
    "sync",
]
