"""Metering's tables: power samples, poll failures, per-BMC status, and the usage ledger.

Declared on the shared ``marketplace.db.Base`` (one Alembic history). The ledger is bitemporal:
a row is never updated; re-metering an hour whose inputs changed adds a row with the next
``version`` and a new ``computed_at``, and unique constraints make duplicates impossible.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from marketplace.db import Base, UTCDateTime


class PowerSampleRow(Base):
    """One power reading of one host (see ``metering.samples`` for the meaning of each field)."""

    __tablename__ = "power_samples"
    __table_args__ = (
        UniqueConstraint("host_id", "time", "source", name="uq_power_samples_host_time_source"),
        Index("ix_power_samples_time", "time"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    host_id: Mapped[str] = mapped_column(String(64))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    watts: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(24))
    flags: Mapped[int] = mapped_column(Integer, default=0)
    bmc_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    min_watts: Mapped[float | None] = mapped_column(Float)
    max_watts: Mapped[float | None] = mapped_column(Float)
    avg_watts: Mapped[float | None] = mapped_column(Float)
    period_s: Mapped[float | None] = mapped_column(Float)
    energy_j: Mapped[float | None] = mapped_column(Float)


class PollFailureRow(Base):
    """A poll that failed: failures are data (a gap with its cause), not a stopped run."""

    __tablename__ = "poll_failures"
    __table_args__ = (Index("ix_poll_failures_host_time", "host_id", "time"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    host_id: Mapped[str] = mapped_column(String(64))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    #: unreachable, timeout, auth, unsupported, bad-reading
    cause: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(500))
    elapsed_s: Mapped[float] = mapped_column(Float)


class BmcStatusRow(Base):
    """The collector's view of each BMC: how it is read, when it last worked or failed."""

    __tablename__ = "bmc_status"

    host_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str | None] = mapped_column(String(24))
    last_success: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class UsageRow(Base):
    """One (reservation, host, hour) of the usage ledger, in one version.

    ``reservation_id`` is ``""`` for the operator's idle rows (the host held by nobody), so the
    unique constraint covers them too (NULLs would never collide).
    """

    __tablename__ = "usage_ledger"
    __table_args__ = (
        UniqueConstraint(
            "reservation_id", "host_id", "hour", "version", name="uq_usage_ledger_key_version"
        ),
        Index("ix_usage_ledger_hour", "hour"),
        Index("ix_usage_ledger_customer_hour", "customer", "hour"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    reservation_id: Mapped[str] = mapped_column(String(40))
    host_id: Mapped[str] = mapped_column(String(64))
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    customer: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(64))
    sku_revision: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(32))
    term: Mapped[str] = mapped_column(String(16))
    reserved_s: Mapped[float] = mapped_column(Float)
    measured_s: Mapped[float] = mapped_column(Float)
    gap_s: Mapped[float] = mapped_column(Float)
    energy_wh: Mapped[float] = mapped_column(Float)
    energy_uncertainty_wh: Mapped[float] = mapped_column(Float)
    facility_energy_wh: Mapped[float] = mapped_column(Float)
    avg_watts: Mapped[float | None] = mapped_column(Float)
    peak_watts: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[str] = mapped_column(String(16))
    #: A digest of what the row was computed from: equal inputs, equal digest, no new version.
    input_digest: Mapped[str] = mapped_column(String(64))


__all__ = ["BmcStatusRow", "PollFailureRow", "PowerSampleRow", "UsageRow"]
