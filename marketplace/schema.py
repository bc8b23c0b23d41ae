"""The marketplace's tables: regions, metros, sites, SKU revisions and hosts.

Declared on the shared :class:`marketplace.db.Base`; migrations in ``marketplace/migrations``.
Rows are the store's business: the rest of the library sees the pydantic values of
``marketplace.catalog`` and ``marketplace.inventory``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, UTCDateTime


class RegionRow(Base):
    __tablename__ = "regions"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class MetroRow(Base):
    __tablename__ = "metros"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    name: Mapped[str] = mapped_column(String(200))


class SiteRow(Base):
    __tablename__ = "sites"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    metro_code: Mapped[str] = mapped_column(ForeignKey("metros.code"))
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(64))
    energy_price_kwh: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    pue: Mapped[float]


class SkuRow(Base):
    """One revision of a SKU. ``spec`` holds the whole normalised listing entry; the other
    columns are copies of it that queries filter on."""

    __tablename__ = "skus"
    __table_args__ = (
        UniqueConstraint("slug", "revision", name="uq_skus_slug_revision"),
        Index("ix_skus_current_slug", "is_current", "slug"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int]
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    vendor: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    arch: Mapped[str] = mapped_column(String(40))
    cores: Mapped[int]
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    accelerator_count: Mapped[int]
    accelerator_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    max_watts: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class HostRow(Base):
    __tablename__ = "hosts"
    __table_args__ = (Index("ix_hosts_site_sku", "site_code", "sku_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    site_code: Mapped[str] = mapped_column(ForeignKey("sites.code"))
    state: Mapped[str] = mapped_column(String(16))
    bmc_protocol: Mapped[str | None] = mapped_column(String(8))
    bmc_address: Mapped[str | None] = mapped_column(String(253))
    bmc_port: Mapped[int | None]
    bmc_username: Mapped[str | None] = mapped_column(String(64))
    # Stored as given: protect the database as you protect the BMC network.
    bmc_password: Mapped[str | None] = mapped_column(String(256))
    bmc_method: Mapped[str | None] = mapped_column(String(24))
    bmc_verify_tls: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ReservationRow(Base):
    """A customer's reservation of ``count`` machines of one SKU revision at one site.

    Its hosts are in :class:`BookingRow`; what happened to it, in :class:`ReservationEventRow`.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="positive_length"),
        CheckConstraint("count > 0", name="positive_count"),
        Index("ix_reservations_customer", "customer"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    site_code: Mapped[str] = mapped_column(ForeignKey("sites.code"))
    count: Mapped[int]
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: confirmed, cancelled, released, degraded (active and ended follow from the clock).
    state: Mapped[str] = mapped_column(String(16))
    term: Mapped[str] = mapped_column(String(16), default="on-demand")
    currency: Mapped[str | None] = mapped_column(String(3))
    list_price_hourly: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class BookingRow(Base):
    """One host held for ``[start_at, end_at)``: by a reservation, or blocked for maintenance.

    The database refuses two live (not voided) rows of one host whose times overlap: an
    exclusion constraint on PostgreSQL, a trigger on SQLite (migration 0002). A moved booking
    is cut at the moment of the move and continued on the new host, so these rows are the exact
    record of which reservation held which host for which seconds.
    """

    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="positive_length"),
        Index("ix_bookings_host_time", "host_id", "start_at"),
        # a host's bookings that end after an instant (its calendar, the overlap check)
        Index("ix_bookings_host_end", "host_id", "end_at"),
        Index("ix_bookings_reservation", "reservation_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    reservation_id: Mapped[str | None] = mapped_column(ForeignKey("reservations.id"))
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    #: reservation or maintenance
    kind: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: A booking cancelled before it began holds nothing; kept (voided) for the record.
    voided: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(String(200))


class ReservationEventRow(Base):
    """The append-only log of a reservation's life: confirmed, moved, extended, released ..."""

    __tablename__ = "reservation_events"
    __table_args__ = (Index("ix_reservation_events_reservation", "reservation_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    reservation_id: Mapped[str] = mapped_column(ForeignKey("reservations.id"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


__all__ = [
    "BookingRow",
    "HostRow",
    "MetroRow",
    "RegionRow",
    "ReservationEventRow",
    "ReservationRow",
    "SiteRow",
    "SkuRow",
]
