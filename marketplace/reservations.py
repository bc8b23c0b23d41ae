"""What customers ask for and what they get: requests, offers, reservations and their events.

Pure values. :mod:`marketplace.booking` decides and stores them.

A reservation's *stored* state is one of confirmed, cancelled, released or degraded; active and
ended follow from the clock (:meth:`Reservation.state_at`), so no process has to wake up at a
reservation's start to flip a flag, and the state can never disagree with the bookings.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from marketplace.query import SkuQuery

Term = Literal["on-demand", "1y", "3y"]


class ReservationState(StrEnum):
    CONFIRMED = "confirmed"
    ACTIVE = "active"
    ENDED = "ended"
    CANCELLED = "cancelled"
    RELEASED = "released"
    DEGRADED = "degraded"


class Request(BaseModel):
    """A customer's request for ``count`` machines during ``[start, end)``.

    Exactly one of ``sku`` (a slug, optionally ``slug@revision``) or ``where`` (a capability
    query) names what fits. ``places`` are site, metro or region codes in order of preference
    (empty: anywhere). ``min_count`` accepts fewer machines than ``count`` (all-or-nothing when
    unset). ``latest_start`` makes the start flexible: any start in ``[start, latest_start]``
    with the same duration.
    """

    model_config = ConfigDict(extra="forbid")

    customer: Annotated[str, Field(min_length=1, max_length=100)]
    count: int
    sku: str | None = None
    where: SkuQuery | None = None
    places: list[str] = Field(default_factory=list)
    start: AwareDatetime
    end: AwareDatetime
    latest_start: AwareDatetime | None = None
    min_count: int | None = None
    term: Term = "on-demand"

    @model_validator(mode="after")
    def _coherent(self) -> Request:
        problems = []
        if self.count <= 0:
            problems.append(f"count must be at least 1 (got {self.count})")
        if (self.sku is None) == (self.where is None):
            problems.append("give exactly one of sku or where")
        if self.end <= self.start:
            problems.append(
                f"end {self.end.isoformat()} must be after start {self.start.isoformat()}"
            )
        if self.latest_start is not None and self.latest_start < self.start:
            problems.append("latest_start must not be before start")
        if self.min_count is not None and not 1 <= self.min_count <= self.count:
            problems.append(f"min_count must be between 1 and count ({self.count})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start


class Offer(BaseModel):
    """What a quote can promise: ``count`` machines of a SKU revision at a site for a window."""

    model_config = ConfigDict(frozen=True)

    site: str
    sku: str
    sku_revision: int
    count: int
    start: dt.datetime
    end: dt.datetime
    currency: str | None
    hourly_price: Decimal | None = Field(description="list price per machine-hour at the site")
    price: Decimal | None = Field(description="list price of the whole window, rounded to cents")
    customer: str
    term: Term = "on-demand"

    @staticmethod
    def window_price(
        hourly: Decimal | None, count: int, start: dt.datetime, end: dt.datetime
    ) -> Decimal | None:
        """List price of ``count`` machines for the window (half-even to the cent)."""
        if hourly is None:
            return None
        seconds = Decimal(int((end - start).total_seconds()))
        return (hourly * count * seconds / Decimal(3600)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


class Reservation(BaseModel):
    """A booked reservation with the hosts it holds now (or last held)."""

    id: str
    customer: str
    sku: str
    sku_revision: int
    site: str
    count: int
    start: dt.datetime
    end: dt.datetime
    stored_state: ReservationState
    hosts: list[str]
    term: Term = "on-demand"
    currency: str | None = None
    hourly_price: Decimal | None = None
    created_at: dt.datetime

    def state_at(self, now: dt.datetime) -> ReservationState:
        """The state at ``now``: stored cancelled/released stay; the rest follow the clock."""
        if self.stored_state in (ReservationState.CANCELLED,):
            return self.stored_state
        if self.stored_state is ReservationState.RELEASED or now >= self.end:
            return ReservationState.ENDED
        if self.stored_state is ReservationState.DEGRADED:
            return ReservationState.DEGRADED
        return ReservationState.ACTIVE if now >= self.start else ReservationState.CONFIRMED

    def public(self, now: dt.datetime) -> dict[str, Any]:
        """The reservation as ``--format json`` shows it."""
        data = self.model_dump(mode="json", exclude={"stored_state"})
        data["state"] = self.state_at(now).value
        return data


class ReservationEvent(BaseModel):
    """One line of a reservation's append-only log."""

    reservation_id: str
    at: dt.datetime
    kind: str
    host: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    #: True for active/ended, which follow from the clock and are not stored.
    derived: bool = False


class CapacityLevel(StrEnum):
    """Like Equinix Metal's capacity levels, per (site, SKU) for a window.

    ``unavailable``: no host is free for the whole window; ``limited``: fewer than a quarter of
    the hosts (and fewer than 2) are; ``normal``: otherwise.
    """

    NORMAL = "normal"
    LIMITED = "limited"
    UNAVAILABLE = "unavailable"

    @classmethod
    def of(cls, free_whole_window: int, total: int) -> CapacityLevel:
        if free_whole_window <= 0:
            return cls.UNAVAILABLE
        if free_whole_window < max(2, -(-total // 4)):
            return cls.LIMITED
        return cls.NORMAL


__all__ = [
    "CapacityLevel",
    "Offer",
    "Request",
    "Reservation",
    "ReservationEvent",
    "ReservationState",
    "Term",
]
