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


__all__ = ["HostRow", "MetroRow", "RegionRow", "SiteRow", "SkuRow"]
