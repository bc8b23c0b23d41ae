"""The life of a reservation after it is booked: cancel, release, extend, and hosts that go into
maintenance or fail (their bookings move, or the reservation degrades), plus reading it back.

Every change is one transaction and one or more lines in the reservation's append-only event
log. Bookings are cut at the exact second of a change and continued on the new host, so the
booking rows stay the exact record metering reads (:func:`marketplace.capacity.holdings`).
"""

from __future__ import annotations

import datetime as dt
import random
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.binding import best_fit
from marketplace.booking import (
    FOREVER,
    MAX_ATTEMPTS,
    PAST_GRACE,
    _calendars,
    _Class,
    _class_of,
    _event,
    _host,
    _live_bookings,
    _load,
    _row,
    sku_of_row,
    utcnow,
)
from marketplace.errors import BookingConflict, InvalidInput, InvalidState, NoCapacity, Problem
from marketplace.matching import Interval
from marketplace.reservations import Reservation, ReservationEvent, ReservationState
from marketplace.schema import BookingRow, HostRow, ReservationEventRow, ReservationRow, SkuRow
from marketplace.store import Store


def cancel(store: Store, reservation_id: str, *, now: dt.datetime | None = None) -> Reservation:
    """Cancel: before the start its bookings are voided (they held nothing) and capacity is free
    at once; once active, cancelling releases the machines now (see :func:`release`)."""
    now = now or utcnow()
    with store.writing() as s:
        row = _row(s, reservation_id)
        current = _load(s, reservation_id).state_at(now)
        if current in (ReservationState.CANCELLED, ReservationState.ENDED):
            raise InvalidState(f"reservation {reservation_id} is already {current.value}")
        if now >= row.start_at:
            return _release_in(s, row, now)
        for b in _live_bookings(s, reservation_id):
            b.voided = True
        row.state = ReservationState.CANCELLED.value
        _event(s, reservation_id, now, "cancelled", None, {})
        s.flush()
        return _load(s, reservation_id)


def release(store: Store, reservation_id: str, *, now: dt.datetime | None = None) -> Reservation:
    """Early release: an active reservation ends now; its machines are free from this second."""
    now = now or utcnow()
    with store.writing() as s:
        row = _row(s, reservation_id)
        state = _load(s, reservation_id).state_at(now)
        if state not in (ReservationState.ACTIVE, ReservationState.DEGRADED) or now < row.start_at:
            raise InvalidState(
                f"reservation {reservation_id} is {state.value}; only an active one can be released (cancel one that has not started)"
            )
        return _release_in(s, row, now)


def _release_in(s: Session, row: ReservationRow, now: dt.datetime) -> Reservation:
    if now <= row.start_at:
        # Ended at its first second: it held nothing, which is a cancellation.
        for b in _live_bookings(s, row.id):
            b.voided = True
        row.state = ReservationState.CANCELLED.value
        _event(s, row.id, now, "cancelled", None, {"at_start": True})
        s.flush()
        return _load(s, row.id)
    for b in _live_bookings(s, row.id):
        if b.start_at >= now:
            b.voided = True  # a later segment (an extension on another host) never began
        elif b.end_at > now:
            b.end_at = now
    row.end_at = now
    row.state = ReservationState.RELEASED.value
    _event(s, row.id, now, "released", None, {})
    s.flush()
    return _load(s, row.id)


def extend(
    store: Store, reservation_id: str, new_end: dt.datetime, *, now: dt.datetime | None = None
) -> Reservation:
    """Extend to ``new_end``: on the same hosts where they are free, on others of the same SKU
    and site where not (the booking continues on the new host from the old end); otherwise
    :class:`NoCapacity` and nothing changes."""
    now = now or utcnow()
    for attempt in range(MAX_ATTEMPTS):
        try:
            with store.writing() as s:
                return _extend_in(s, reservation_id, new_end, now)
        except BookingConflict:
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise BookingConflict(f"lost {MAX_ATTEMPTS} races extending {reservation_id}; try again")


def _extend_in(
    s: Session, reservation_id: str, new_end: dt.datetime, now: dt.datetime
) -> Reservation:
    row = _row(s, reservation_id)
    current = _load(s, reservation_id)
    if current.state_at(now) in (ReservationState.CANCELLED, ReservationState.ENDED):
        raise InvalidState(
            f"reservation {reservation_id} is {current.state_at(now).value}; it cannot be extended"
        )
    if new_end.tzinfo is None:
        raise InvalidInput([Problem("end", "needs a timezone-aware datetime (UTC)", new_end)])
    if new_end <= row.end_at:
        raise InvalidInput(
            [
                Problem(
                    "end",
                    f"must be after the current end {row.end_at.isoformat()}",
                    new_end.isoformat(),
                )
            ]
        )
    cls = _class_of(s, row)
    cal = _calendars(s, [cls], min(now, row.start_at))[cls.key]
    extra = Interval(row.end_at, new_end)
    last = [b for b in _live_bookings(s, reservation_id) if b.end_at == row.end_at]
    stay = [b for b in last if cal.host(b.host_id).is_free(extra.lo, extra.hi)] if cal.total else []
    move = [b for b in last if b not in stay]
    free = [
        h.host_id
        for h in cal.free_slots(extra.lo, extra.hi)
        if h.host_id not in {b.host_id for b in last}
    ]
    if len(free) < len(move):
        raise NoCapacity(
            f"cannot extend {reservation_id} to {new_end.isoformat()}: {len(move)} of its hosts are taken after "
            f"{row.end_at.isoformat()} and {len(free)} other {cls.sku.slug} hosts at {cls.site} are free"
        )
    old_end = row.end_at
    for b in stay:
        b.end_at = new_end
    rebound = {}
    for b, host in zip(move, free, strict=False):
        s.add(
            BookingRow(
                reservation_id=reservation_id,
                host_id=host,
                kind="reservation",
                start_at=old_end,
                end_at=new_end,
                voided=False,
            )
        )
        rebound[b.host_id] = host
    row.end_at = new_end
    _event(
        s,
        reservation_id,
        now,
        "extended",
        None,
        {"from": old_end.isoformat(), "to": new_end.isoformat(), "rebound": rebound},
    )
    s.flush()
    return _load(s, reservation_id)


def schedule_maintenance(
    store: Store,
    host_id: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    now: dt.datetime | None = None,
    reason: str = "maintenance",
) -> list[ReservationEvent]:
    """Block ``host_id`` for ``[start, end)``. Bookings in the way move to free hosts of the same
    SKU at the site; where none is free the reservation is degraded, with an event saying why.
    Returns the events written."""
    now = now or utcnow()
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput(
            [Problem("start/end", "needs timezone-aware datetimes (UTC)", (start, end))]
        )
    if end <= start:
        raise InvalidInput([Problem("end", "must be after start", end.isoformat())])
    if start < now - PAST_GRACE:
        raise InvalidInput(
            [
                Problem(
                    "start",
                    f"maintenance cannot start in the past (now is {now.isoformat()})",
                    start.isoformat(),
                )
            ]
        )
    start = max(start, now)
    if end <= start:
        raise InvalidInput(
            [
                Problem(
                    "end", f"the window is already over (now is {now.isoformat()})", end.isoformat()
                )
            ]
        )
    with store.writing() as s:
        host = _host(s, host_id)
        clash = s.scalars(
            select(BookingRow).where(
                BookingRow.host_id == host_id,
                BookingRow.kind == "maintenance",
                BookingRow.voided.is_(False),
                BookingRow.start_at < end,
                BookingRow.end_at > start,
            )
        ).first()
        if clash is not None:
            raise InvalidState(
                f"host {host_id} already has maintenance {clash.start_at.isoformat()} .. "
                f"{clash.end_at.isoformat()} overlapping this window"
            )
        events = _evacuate(s, host, start, end, now, reason)
        s.add(
            BookingRow(
                reservation_id=None,
                host_id=host_id,
                kind="maintenance",
                start_at=start,
                end_at=end,
                voided=False,
                note=reason[:200],
            )
        )
        s.flush()
        return events


def fail_host(
    store: Store, host_id: str, *, now: dt.datetime | None = None, reason: str = "host failed"
) -> list[ReservationEvent]:
    """Mark ``host_id`` failed: from now on it takes no bookings, and its current and future
    bookings move to free hosts of the same SKU at the site (or their reservations degrade)."""
    now = now or utcnow()
    with store.writing() as s:
        host = _host(s, host_id)
        events = _evacuate(s, host, now, FOREVER, now, reason)
        host.state = "failed"
        s.flush()
        return events


def _evacuate(
    s: Session, host: HostRow, start: dt.datetime, end: dt.datetime, now: dt.datetime, reason: str
) -> list[ReservationEvent]:
    in_way = s.scalars(
        select(BookingRow)
        .where(
            BookingRow.host_id == host.id,
            BookingRow.kind == "reservation",
            BookingRow.voided.is_(False),
            BookingRow.start_at < end,
            BookingRow.end_at > start,
        )
        .order_by(BookingRow.start_at)
    ).all()
    if not in_way:
        return []
    sku_row = s.get_one(SkuRow, host.sku_id)
    sku = sku_of_row(sku_row)
    cls = _Class(host.site_code, sku, host.sku_id)
    cal = _calendars(s, [cls], now)[cls.key]
    events = []
    for b in in_way:
        assert b.reservation_id is not None
        cut = max(start, b.start_at, now)
        span = Interval(cut, b.end_at)
        candidates = [h for h in cal.free_slots(span.lo, span.hi) if h.host_id != host.id]
        target = best_fit(candidates, 1, span.lo, span.hi)[0].host_id if candidates else None
        if cut > b.start_at:
            b_end = b.end_at
            b.end_at = cut
            if target:
                s.add(
                    BookingRow(
                        reservation_id=b.reservation_id,
                        host_id=target,
                        kind="reservation",
                        start_at=cut,
                        end_at=b_end,
                        voided=False,
                    )
                )
        elif target:
            b.host_id = target
        else:
            b.voided = True
        s.flush()
        if target:
            cal.book(target, span, f"moved-{b.id}")
            events.append(
                _event(
                    s, b.reservation_id, cut, "moved", target, {"from": host.id, "reason": reason}
                )
            )
        else:
            s.get_one(ReservationRow, b.reservation_id).state = ReservationState.DEGRADED.value
            events.append(
                _event(
                    s,
                    b.reservation_id,
                    cut,
                    "degraded",
                    host.id,
                    {
                        "reason": f"{reason}: no free {sku.slug}@{sku.revision} host at {host.site_code} from {cut.isoformat()}"
                    },
                )
            )
    return events


def get_reservation(store: Store, reservation_id: str) -> Reservation:
    with store.reading() as s:
        return _load(s, reservation_id)


def list_reservations(
    store: Store,
    *,
    customer: str | None = None,
    state: ReservationState | str | None = None,
    now: dt.datetime | None = None,
) -> list[Reservation]:
    """Reservations by start time, optionally of one customer or in one state (at ``now``)."""
    now = now or utcnow()
    with store.reading() as s:
        stmt = select(ReservationRow.id).order_by(ReservationRow.start_at, ReservationRow.id)
        if customer:
            stmt = stmt.where(ReservationRow.customer == customer)
        found = [_load(s, rid) for rid in s.scalars(stmt)]
    if state:
        found = [r for r in found if r.state_at(now) == ReservationState(state)]
    return found


def reservation_events(
    store: Store, reservation_id: str, *, now: dt.datetime | None = None
) -> list[ReservationEvent]:
    """The reservation's log, with the clock's active/ended entries marked ``derived``."""
    now = now or utcnow()
    with store.reading() as s:
        r = _load(s, reservation_id)
        rows = s.scalars(
            select(ReservationEventRow)
            .where(ReservationEventRow.reservation_id == reservation_id)
            .order_by(ReservationEventRow.id)
        )
        events = [
            ReservationEvent(
                reservation_id=e.reservation_id,
                at=e.at,
                kind=e.kind,
                host=e.host_id,
                detail=e.detail,
            )
            for e in rows
        ]
    if r.stored_state is not ReservationState.CANCELLED:
        if now >= r.start:
            events.append(
                ReservationEvent(reservation_id=r.id, at=r.start, kind="active", derived=True)
            )
        if now >= r.end:
            events.append(
                ReservationEvent(reservation_id=r.id, at=r.end, kind="ended", derived=True)
            )
    return sorted(events, key=lambda e: (e.at, e.derived))


__all__ = [
    "cancel",
    "extend",
    "fail_host",
    "get_reservation",
    "list_reservations",
    "release",
    "reservation_events",
    "schedule_maintenance",
]
