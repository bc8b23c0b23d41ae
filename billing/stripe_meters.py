"""Usage as Stripe meter events: plan them from the ledger, enqueue them, send them once.

Per customer and UTC hour, two meter events: machine seconds (the sum of ``reserved_s`` of the
billable rows) and facility energy in Wh (rounded half-even), each with a deterministic
identifier ``hwm-{customer}-{YYYYmmddTHH}-{metric}-v{n}``. Stripe takes whole numbers of at most
15 digits; larger values are refused here, naming the customer and hour.

When a later ledger version changes a value already enqueued, Stripe's answer depends on time:
within 24 hours of the event it can be cancelled (a ``meter_event_adjustment`` row) and a new
event ``v{n+1}`` takes its place; later, the change is left to the next invoice's adjustment
lines and only counted and logged here.

Sending relies on Stripe's unique identifiers: re-sending an event Stripe already has is a 400
"already exists" (or, within 24 hours, the replayed answer of the same idempotency key), which
confirms it; so on real Stripe an event sent in one run is confirmed by the next. Real Stripe
offers no listing of raw events; the project's fake does (``/_fake/meter_events``), and the sync
uses it there to confirm in the same run. Stripe keeps identifiers unique for "at least 24
hours" only, so a send whose outcome was lost (marked in flight before the call) is repeated
within 20 hours of it and otherwise reported for a person, never re-sent blindly.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import stripe

from billing import stripe_outbox as outbox
from billing.stripe_api import StripeCalls, StripeSyncError, is_duplicate_event
from billing.stripe_outbox import OutboxEntry
from billing.stripe_run import SyncRun
from marketplace.errors import InvalidInput, Problem
from marketplace.store import Store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: metric -> the Stripe meter's event name
METERS = {"machine_seconds": "hwmarket_machine_seconds", "energy_wh": "hwmarket_energy_wh"}
_DISPLAY = {"machine_seconds": "Machine seconds", "energy_wh": "Facility energy (Wh)"}
MAX_VALUE = 10**15 - 1
ADJUSTMENT_WINDOW = dt.timedelta(hours=24)
#: Stripe keeps meter event identifiers unique for "at least 24 hours": a send whose outcome
#: was lost may be repeated safely within this time (with a margin), not later.
IDENTIFIER_MEMORY = dt.timedelta(hours=20)
#: Stripe refuses events older than 35 days; keep an hour of margin for the send.
EVENT_MAX_AGE = dt.timedelta(days=35) - dt.timedelta(hours=1)

Key = tuple[str, dt.datetime, str]  # customer, hour, metric


@dataclass(frozen=True)
class EnqueuedEvent:
    """A meter event already in the outbox."""

    id: str
    customer: str
    hour: dt.datetime
    metric: str
    value: int
    version: int
    cancelled: bool


@dataclass
class MeterEventPlan:
    """Outbox rows to add, and changes too late for Stripe (left to invoice adjustments)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    too_late: list[str] = field(default_factory=list)
    unchanged: int = 0


def event_id(customer: str, hour: dt.datetime, metric: str, version: int) -> str:
    """The deterministic identifier of a meter event."""
    return f"hwm-{customer}-{hour:%Y%m%dT%H}-{metric}-v{version}"


def _event_row(
    customer: str, hour: dt.datetime, metric: str, value: int, version: int
) -> dict[str, Any]:
    return {
        "id": event_id(customer, hour, metric, version),
        "kind": "meter_event",
        "customer": customer,
        "invoice_id": None,
        "payload": {
            "event_name": METERS[metric],
            "customer": customer,
            "value": value,
            "timestamp": int(hour.timestamp()),
        },
    }


def plan_meter_events(
    totals: Mapping[Key, int], enqueued: Sequence[EnqueuedEvent], now: dt.datetime
) -> MeterEventPlan:
    """What to enqueue so Stripe's meters hold ``totals`` (pure; no I/O).

    ``enqueued`` are the events already in the outbox for the same hours. A key missing from
    ``totals`` counts as 0 (its usage went away); zero values make no new events.
    """
    problems = [
        Problem(f"{c}/{h:%Y-%m-%dT%H}/{m}", f"must be a whole number in 0..{MAX_VALUE}", v)
        for (c, h, m), v in totals.items()
        if not 0 <= v <= MAX_VALUE
    ]
    if problems:
        raise InvalidInput(problems, "meter events")
    by_key: dict[Key, list[EnqueuedEvent]] = {}
    for e in enqueued:
        by_key.setdefault((e.customer, e.hour, e.metric), []).append(e)
    plan = MeterEventPlan()
    for key in sorted(set(totals) | set(by_key)):
        customer, hour, metric = key
        new = int(totals.get(key, 0))
        events = by_key.get(key, [])
        live = max((e for e in events if not e.cancelled), key=lambda e: e.version, default=None)
        next_version = max((e.version for e in events), default=0) + 1
        if live is None:
            if new == 0:
                continue
            if now - hour > EVENT_MAX_AGE:
                plan.too_late.append(f"{customer} {hour:%Y-%m-%dT%H} {metric}: none -> {new}")
                continue
            plan.rows.append(_event_row(customer, hour, metric, new, next_version))
        elif live.value == new:
            plan.unchanged += 1
        elif now - hour > ADJUSTMENT_WINDOW:
            plan.too_late.append(f"{customer} {hour:%Y-%m-%dT%H} {metric}: {live.value} -> {new}")
        else:
            plan.rows.append(
                {
                    "id": "adj_" + live.id,
                    "kind": "meter_event_adjustment",
                    "customer": customer,
                    "invoice_id": None,
                    "payload": {"event_name": METERS[metric], "cancel_identifier": live.id},
                }
            )
            if new:
                plan.rows.append(_event_row(customer, hour, metric, new, next_version))
    return plan


def _enqueued(store: Store, start: dt.datetime, end: dt.datetime) -> list[EnqueuedEvent]:
    rows = outbox.meter_rows_since(store, start - dt.timedelta(days=1))
    cancelled = {r.payload["cancel_identifier"] for r in rows if r.kind == "meter_event_adjustment"}
    metric_of = {v: k for k, v in METERS.items()}
    found = []
    for r in rows:
        if r.kind != "meter_event" or r.payload.get("event_name") not in metric_of:
            continue
        hour = dt.datetime.fromtimestamp(int(r.payload["timestamp"]), dt.UTC)
        if not start <= hour < end:
            continue
        version = int(r.id.rsplit("-v", 1)[1])
        metric = metric_of[r.payload["event_name"]]
        found.append(
            EnqueuedEvent(
                r.id, r.customer, hour, metric, int(r.payload["value"]), version, r.id in cancelled
            )
        )
    return found


def enqueue_meter_events(
    store: Store, start: dt.datetime, end: dt.datetime, *, now: dt.datetime
) -> int:
    """Enqueue meter events (and adjustments) for the ledger's hours in ``[start, end)``;
    returns how many outbox rows were added. Changes too late for Stripe are logged."""
    from metering.ledger import usage

    ledger = usage(store, start, end, include_idle=False)
    totals: dict[Key, int] = {}
    if len(ledger):
        sums = ledger.groupby(["customer", "hour"])[["reserved_s", "facility_energy_wh"]].sum()
        for key, row in sums.iterrows():
            customer, hour = cast("tuple[str, pd.Timestamp]", key)
            when = hour.to_pydatetime()
            # round() on a float is half-even on its exact value
            totals[(str(customer), when, "machine_seconds")] = round(float(row["reserved_s"]))
            totals[(str(customer), when, "energy_wh")] = round(float(row["facility_energy_wh"]))
    plan = plan_meter_events(totals, _enqueued(store, start, end), now)
    if plan.too_late:
        log.warning(
            "%d meter values changed too late for Stripe; the next invoice adjusts them: %s",
            len(plan.too_late),
            "; ".join(plan.too_late[:20]),
        )
    return outbox.add_rows(store, plan.rows, now=now)


def ensure_meters(calls: StripeCalls | stripe.StripeClient) -> tuple[dict[str, str], int]:
    """The two billing meters (event name -> meter id), created when missing; and how many
    were created."""
    if not isinstance(calls, StripeCalls):
        calls = StripeCalls(calls)
    have = {
        m["event_name"]: str(m["id"])
        for m in calls.meters()
        if m.get("status", "active") == "active"
    }
    created = 0
    for metric, name in METERS.items():
        if name in have:
            continue
        meter = calls.create_meter(
            {
                "display_name": _DISPLAY[metric],
                "event_name": name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            },
            key=f"hwm-meter-{name}",
        )
        have[name] = str(meter["id"])
        created += 1
    return have, created


def sync_meter_rows(run: SyncRun, rows: Sequence[OutboxEntry]) -> None:
    """Reconcile, send and confirm meter events, then their cancellations."""
    if not rows:
        return
    if not run.calls.flavor.meters:
        run.report.skipped.append(
            f"{len(rows)} meter rows: this Stripe ({run.calls.flavor.name}) has no billing meters"
        )
        run.tick(len(rows))
        return
    _, created = ensure_meters(run.calls)
    run.report.meters_created += created
    for customer in sorted({r.customer for r in rows}):
        run.stripe_customer(customer)
    events = [r for r in rows if r.kind == "meter_event"]
    adjustments = [r for r in rows if r.kind == "meter_event_adjustment"]
    listing = run.calls.flavor.meter_event_listing
    if listing:
        _confirm_received(run, rows)
        states = outbox.states(run.store, [r.id for r in rows])
        events = [r for r in events if states.get(r.id) != "confirmed"]
        adjustments = [r for r in adjustments if states.get(r.id) != "confirmed"]
    else:
        events = _resendable(run, events)
    _send_events(run, events)
    targets = outbox.states(run.store, [r.payload["cancel_identifier"] for r in adjustments])
    ready = [r for r in adjustments if targets.get(r.payload["cancel_identifier"]) != "pending"]
    for r in adjustments:
        if r not in ready:
            run.report.failures.append(f"{r.id}: its event is not in Stripe yet; next run")
    _send_adjustments(run, ready)
    if listing:
        _confirm_received(run, rows)


def _resendable(run: SyncRun, rows: Sequence[OutboxEntry]) -> list[OutboxEntry]:
    """Events safe to (re)send to a Stripe that cannot list them: never tried, or tried within
    the time Stripe keeps identifiers unique. An older unresolved try is left for a person."""
    keep = []
    for r in rows:
        since = outbox.in_flight_since(r.last_error)
        if r.state == "pending" and since is not None and run.now - since > IDENTIFIER_MEMORY:
            run.report.problems.append(
                f"meter event {r.id}: a send began {since:%Y-%m-%d %H:%M} UTC and its outcome "
                "was never recorded; Stripe no longer rejects its identifier as a duplicate, so "
                "it is not re-sent: compare the meter's event summary for that hour, then mark "
                "the row confirmed or clear its last_error"
            )
        else:
            keep.append(r)
    return keep


def _confirm_received(run: SyncRun, rows: Sequence[OutboxEntry]) -> None:
    received = {e["identifier"]: e for e in run.calls.received_meter_events()}
    events = {r.id: r.id for r in rows if r.kind == "meter_event" and r.id in received}
    cancels = {
        r.id: r.id
        for r in rows
        if r.kind == "meter_event_adjustment"
        and received.get(r.payload["cancel_identifier"], {}).get("cancelled")
    }
    run.report.events_confirmed += outbox.mark_confirmed(run.store, events)
    run.report.adjustments_confirmed += outbox.mark_confirmed(run.store, cancels)


def _send_events(run: SyncRun, rows: Sequence[OutboxEntry]) -> None:
    def send(row: OutboxEntry) -> str:
        p = row.payload
        run.calls.create_meter_event(
            {
                "event_name": p["event_name"],
                "identifier": row.id,
                "timestamp": int(p["timestamp"]),
                "payload": {
                    "stripe_customer_id": run.customers[row.customer],
                    "value": str(int(p["value"])),
                },
            },
            key=f"hwm-mev-{row.id}",
        )
        return "sent"

    def record(row: OutboxEntry, _: str) -> None:
        if row.state == "sent":
            # Re-sent to confirm: a 200 is the replay of the first answer (same key) or a fresh
            # acceptance; either way Stripe holds the event now.
            run.report.events_confirmed += outbox.mark_confirmed(run.store, {row.id: row.id})
            return
        outbox.mark_sent(run.store, row.id, row.id)
        run.report.events_sent += 1

    def refused(row: OutboxEntry, exc: StripeSyncError) -> None:
        if is_duplicate_event(exc):  # Stripe has it already: that confirms it
            run.report.events_confirmed += outbox.mark_confirmed(run.store, {row.id: row.id})
        else:
            run.fail([row], exc, outcome_known=not exc.retryable)

    todo = run.usable(rows)
    # Written before the calls: if the outcome is lost, the next run knows a send began when.
    outbox.mark_in_flight(run.store, [r.id for r in todo if r.state == "pending"], run.now)
    run.send_all(todo, send, record, refused)


def _send_adjustments(run: SyncRun, rows: Sequence[OutboxEntry]) -> None:
    def send(row: OutboxEntry) -> str:
        p = row.payload
        run.calls.cancel_meter_event(p["event_name"], p["cancel_identifier"], f"hwm-{row.id}")
        return "sent"

    def record(row: OutboxEntry, _: str) -> None:
        if row.state == "sent" and not run.calls.flavor.meter_event_listing:
            # A cancellation is idempotent: taken again, it is surely there.
            outbox.mark_confirmed(run.store, {row.id: row.id})
            run.report.adjustments_confirmed += 1
            return
        outbox.mark_sent(run.store, row.id, row.id)
        run.report.adjustments_sent += 1

    def refused(row: OutboxEntry, exc: StripeSyncError) -> None:
        run.fail([row], exc)

    run.send_all(run.usable(rows), send, record, refused)


__all__ = [
    "ADJUSTMENT_WINDOW",
    "METERS",
    "EnqueuedEvent",
    "MeterEventPlan",
    "enqueue_meter_events",
    "ensure_meters",
    "event_id",
    "plan_meter_events",
    "sync_meter_rows",
]
