"""Billing's tables: invoices and their lines, Stripe customers, and the Stripe outbox.

Declared on the shared ``marketplace.db.Base`` (one Alembic history). A finalized invoice is
never changed: later corrections are adjustment lines on a later invoice. The outbox records
every invoice item or meter event to send to Stripe, keyed by its deterministic id, so a sync
that dies half-way is repaired by reconciling with Stripe, never by sending twice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, UTCDateTime


class InvoiceRow(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint(
            "customer", "period_start", "currency", name="uq_invoices_customer_period"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    #: draft or finalized
    status: Mapped[str] = mapped_column(String(12))
    number: Mapped[str | None] = mapped_column(String(40), unique=True)
    total: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    credit_applied: Mapped[Decimal] = mapped_column(Numeric(20, 4), default=Decimal(0))
    credit_issued: Mapped[Decimal] = mapped_column(Numeric(20, 4), default=Decimal(0))
    #: The ledger as known at this moment was rated (bitemporal: later versions are adjustments).
    ledger_as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class InvoiceLineRow(Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (Index("ix_invoice_lines_invoice", "invoice_id"),)

    line_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    position: Mapped[int] = mapped_column(Integer)
    customer: Mapped[str] = mapped_column(String(100))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(Numeric(24, 10))
    unit: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(24, 10))
    amount: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500))
    reservation_id: Mapped[str | None] = mapped_column(String(40))
    sku: Mapped[str | None] = mapped_column(String(64))
    sku_revision: Mapped[int | None] = mapped_column(Integer)
    site: Mapped[str | None] = mapped_column(String(32))
    term: Mapped[str | None] = mapped_column(String(16))
    price_id: Mapped[str | None] = mapped_column(String(80))
    usage_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    usage_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    corrects_line_id: Mapped[str | None] = mapped_column(String(40))
    corrects_period_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class StripeCustomerRow(Base):
    """Which Stripe customer a hwmarket customer is (created on first sync when missing)."""

    __tablename__ = "stripe_customers"

    customer: Mapped[str] = mapped_column(String(100), primary_key=True)
    stripe_id: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class StripeOutboxRow(Base):
    """One thing to send to Stripe, by its deterministic id: pending -> sent -> confirmed."""

    __tablename__ = "stripe_outbox"
    __table_args__ = (Index("ix_stripe_outbox_state", "state"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: invoice_item, invoice_finalize, meter_event, meter_event_adjustment
    kind: Mapped[str] = mapped_column(String(32))
    customer: Mapped[str] = mapped_column(String(100))
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: pending, sent, confirmed
    state: Mapped[str] = mapped_column(String(12))
    stripe_id: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


__all__ = ["InvoiceLineRow", "InvoiceRow", "StripeCustomerRow", "StripeOutboxRow"]
