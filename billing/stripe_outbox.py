"""The Stripe outbox and customer map in the store: read what is unfinished, record each step.

Every state change is its own small transaction, committed right after the Stripe call it
records, so a crash loses at most the record of one call, which the next sync's reconciliation
with Stripe recovers. States only move forward: ``pending -> sent -> confirmed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from billing.schema import StripeCustomerRow, StripeOutboxRow
from marketplace.store import Store

ITEM_KINDS = ("invoice_item", "invoice_finalize")
METER_KINDS = ("meter_event", "meter_event_adjustment")
STATES = ("pending", "sent", "confirmed")


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as read (a plain value; the row itself stays in the store)."""

    id: str
    kind: str
    customer: str
    invoice_id: str | None
    payload: dict[str, Any]
    state: str
    stripe_id: str | None
    attempts: int
    last_error: str | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def unfinished(store: Store, kinds: Iterable[str]) -> list[OutboxEntry]:
    """Rows of these kinds not yet confirmed, by customer, invoice and id."""
    with store.reading() as s:
        rows = s.scalars(
            select(StripeOutboxRow)
            .where(StripeOutboxRow.kind.in_(list(kinds)), StripeOutboxRow.state != "confirmed")
            .order_by(StripeOutboxRow.customer, StripeOutboxRow.invoice_id, StripeOutboxRow.id)
        ).all()
        return [_entry(r) for r in rows]


def mark_sent(store: Store, row_id: str, stripe_id: str) -> None:
    """Stripe accepted the row's call and named it ``stripe_id`` (never moves a row back)."""
    with store.writing() as s:
        s.execute(
            update(StripeOutboxRow)
            .where(StripeOutboxRow.id == row_id, StripeOutboxRow.state == "pending")
            .values(
                state="sent",
                stripe_id=stripe_id,
                sent_at=_now(),
                attempts=StripeOutboxRow.attempts + 1,
                last_error=None,
            )
        )


def mark_confirmed(store: Store, seen: Mapping[str, str]) -> int:
    """Rows seen in Stripe (row id -> Stripe id) become confirmed; returns how many changed."""
    if not seen:
        return 0
    now, changed = _now(), 0
    with store.writing() as s:
        for row_id, stripe_id in seen.items():
            result = s.execute(
                update(StripeOutboxRow)
                .where(StripeOutboxRow.id == row_id, StripeOutboxRow.state != "confirmed")
                .values(
                    state="confirmed",
                    stripe_id=stripe_id,
                    sent_at=func.coalesce(StripeOutboxRow.sent_at, now),
                    confirmed_at=now,
                    last_error=None,
                )
            )
            changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


def set_stripe_id(store: Store, row_id: str, stripe_id: str) -> None:
    """Note the Stripe object a row is about (the draft invoice of a finalize row)."""
    with store.writing() as s:
        s.execute(
            update(StripeOutboxRow)
            .where(StripeOutboxRow.id == row_id, StripeOutboxRow.state == "pending")
            .values(stripe_id=stripe_id)
        )


#: ``last_error`` of a row whose send began and whose outcome is not known yet.
IN_FLIGHT = "in flight since "


def mark_in_flight(store: Store, row_ids: Iterable[str], now: dt.datetime) -> None:
    """Note that sending these pending rows begins now (cleared by any recorded outcome)."""
    ids = list(row_ids)
    if not ids:
        return
    with store.writing() as s:
        s.execute(
            update(StripeOutboxRow)
            .where(
                StripeOutboxRow.id.in_(ids),
                StripeOutboxRow.state == "pending",
                # keep the first attempt's time: that is when Stripe may have taken it
                func.coalesce(StripeOutboxRow.last_error, "").not_like(IN_FLIGHT + "%"),
            )
            .values(last_error=IN_FLIGHT + now.isoformat())
        )


def in_flight_since(last_error: str | None) -> dt.datetime | None:
    """When an unresolved send of this row began, if one did."""
    if not last_error or not last_error.startswith(IN_FLIGHT):
        return None
    return dt.datetime.fromisoformat(last_error.removeprefix(IN_FLIGHT).split(";")[0])


def mark_failed(
    store: Store,
    row_ids: Iterable[str],
    message: str,
    *,
    outcome_known: bool = True,
    count: bool = True,
) -> None:
    """Keep Stripe's answer and, with ``count``, count a failed attempt (the row stays where it
    was). ``outcome_known=False`` (a timeout, a 5xx): Stripe may have taken it, so an in-flight
    mark stays in front of the message."""
    ids = list(row_ids)
    if not ids:
        return
    with store.writing() as s:
        for row in s.scalars(
            select(StripeOutboxRow).where(
                StripeOutboxRow.id.in_(ids), StripeOutboxRow.state != "confirmed"
            )
        ):
            flight = row.last_error if in_flight_since(row.last_error) else None
            kept = f"{flight.split(';')[0]}; " if flight and not outcome_known else ""
            row.attempts += int(count)
            row.last_error = (kept + message)[:500]


def customer_map(store: Store) -> dict[str, str]:
    """hwmarket customer -> Stripe customer id, for every customer created or matched."""
    with store.reading() as s:
        return dict(
            s.execute(select(StripeCustomerRow.customer, StripeCustomerRow.stripe_id)).all()
        )


def record_customer(store: Store, customer: str, stripe_id: str) -> None:
    """Remember a Stripe customer (a second record of the same pair is a no-op)."""
    with store.writing() as s:
        if s.get(StripeCustomerRow, customer) is None:
            s.add(StripeCustomerRow(customer=customer, stripe_id=stripe_id, created_at=_now()))


def add_rows(store: Store, rows: list[dict[str, Any]], now: dt.datetime | None = None) -> int:
    """Insert outbox rows whose id is new, as ``pending``; returns how many were new."""
    if not rows:
        return 0
    now = now or _now()
    values = [
        {
            "state": "pending",
            "attempts": 0,
            "created_at": now,
            "stripe_id": None,
            "last_error": None,
            "sent_at": None,
            "confirmed_at": None,
            **r,
        }
        for r in rows
    ]
    with store.writing() as s:
        dialect = s.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        added = 0
        for i in range(0, len(values), 500):
            stmt = insert(StripeOutboxRow).values(values[i : i + 500]).on_conflict_do_nothing()
            # RETURNING counts what went in; rowcount is unreliable for multi-row inserts.
            added += len(s.execute(stmt.returning(StripeOutboxRow.id)).all())
    return added


def states(store: Store, ids: Iterable[str]) -> dict[str, str]:
    """Row id -> state, for those of ``ids`` that exist."""
    wanted = list(ids)
    if not wanted:
        return {}
    with store.reading() as s:
        return dict(
            s.execute(
                select(StripeOutboxRow.id, StripeOutboxRow.state).where(
                    StripeOutboxRow.id.in_(wanted)
                )
            ).all()
        )


def meter_rows_since(store: Store, since: dt.datetime) -> list[OutboxEntry]:
    """Meter event and adjustment rows enqueued since ``since``, whatever their state."""
    with store.reading() as s:
        rows = s.scalars(
            select(StripeOutboxRow).where(
                StripeOutboxRow.kind.in_(METER_KINDS), StripeOutboxRow.created_at >= since
            )
        ).all()
        return [_entry(r) for r in rows]


def state_counts(store: Store) -> dict[tuple[str, str], int]:
    """(kind, state) -> number of rows."""
    with store.reading() as s:
        return {
            (k, st): n
            for k, st, n in s.execute(
                select(StripeOutboxRow.kind, StripeOutboxRow.state, func.count()).group_by(
                    StripeOutboxRow.kind, StripeOutboxRow.state
                )
            )
        }


def _entry(r: StripeOutboxRow) -> OutboxEntry:
    """The plain value of an outbox row (detached from the session)."""
    return OutboxEntry(
        r.id,
        r.kind,
        r.customer,
        r.invoice_id,
        dict(r.payload),
        r.state,
        r.stripe_id,
        r.attempts,
        r.last_error,
    )


__all__ = [
    "IN_FLIGHT",
    "ITEM_KINDS",
    "METER_KINDS",
    "STATES",
    "OutboxEntry",
    "add_rows",
    "customer_map",
    "in_flight_since",
    "mark_confirmed",
    "mark_failed",
    "mark_in_flight",
    "mark_sent",
    "meter_rows_since",
    "record_customer",
    "set_stripe_id",
    "state_counts",
    "states",
    "unfinished",
]
