"""Where a booking is decided: quote, reserve, and everything that changes a reservation later.

Each operation is one transaction on the store. It loads the calendars of the (site, SKU) classes
that could serve the request, asks the pure matching core (:func:`marketplace.binding.match`)
which hosts to use, and writes the reservation, its bookings and its events. The database then
refuses any overlap on a host (exclusion constraint / trigger): a booker that loses a race to
another gets :class:`BookingConflict` from the store and tries again with fresh calendars, a
bounded number of times.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from marketplace.admission import ClassCalendar
from marketplace.binding import BindingPolicy, best_fit, match
from marketplace.catalog import Sku
from marketplace.db import epoch_ceil, epoch_floor
from marketplace.documents import validate_data
from marketplace.errors import (
    BookingConflict,
    InvalidInput,
    NoCapacity,
    NotFound,
    Problem,
)
from marketplace.matching import (
    Binding,
    BusyKind,
    Demand,
    HostClass,
    HostSlots,
    Interval,
    Option,
)
from marketplace.reservations import (
    Offer,
    Request,
    Reservation,
    ReservationEvent,
    ReservationState,
)
from marketplace.schema import (
    BookingRow,
    HostRow,
    MetroRow,
    ReservationEventRow,
    ReservationRow,
    SiteRow,
    SkuRow,
)
from marketplace.store import Store
from marketplace.units import plain_decimal

#: How many times a booking is retried after losing a race before ``BookingConflict``.
MAX_ATTEMPTS = 6
#: A request may start this far in the past (clock skew between client and server).
PAST_GRACE = dt.timedelta(minutes=5)
FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def as_request(request: Request | dict[str, Any]) -> Request:
    """A :class:`Request` from a dict, with bad fields reported as :class:`InvalidInput`."""
    if isinstance(request, Request):
        return request
    return validate_data(Request, request, "request")


@dataclass(frozen=True)
class _Class:
    """A (site, SKU revision) candidate with what the request needs of it."""

    site: str
    sku: Sku
    sku_id: int

    @property
    def key(self) -> HostClass:
        return HostClass(self.site, f"{self.sku.slug}@{self.sku.revision}")


def _sites_of_places(s: Session, places: Sequence[str]) -> list[str]:
    rows = s.execute(
        select(SiteRow.code, SiteRow.metro_code, MetroRow.region_code).join(MetroRow)
    ).all()
    if not places or list(places) == ["any"]:
        return sorted(r.code for r in rows)
    ordered: list[str] = []
    problems = []
    for i, place in enumerate(places):
        hits = sorted(
            r.code for r in rows if place in (r.code, r.metro_code, r.region_code) or place == "any"
        )
        if not hits:
            known = sorted(
                {r.code for r in rows}
                | {r.metro_code for r in rows}
                | {r.region_code for r in rows}
            )
            problems.append(
                Problem(
                    f"places[{i}]",
                    f"unknown place; known sites, metros and regions: {', '.join(known)}",
                    place,
                )
            )
        ordered += [h for h in hits if h not in ordered]
    if problems:
        raise InvalidInput(problems, "request")
    return ordered


def _candidates(s: Session, request: Request, *, required: bool = True) -> list[_Class]:
    """Classes that could serve ``request``, in the request's place order, then by SKU."""
    sites = _sites_of_places(s, request.places)
    stmt = (
        select(HostRow.sku_id, HostRow.site_code)
        .join(SkuRow, HostRow.sku_id == SkuRow.id)
        .distinct()
    )
    if request.sku is not None:
        slug, _, rev = request.sku.partition("@")
        stmt = stmt.where(SkuRow.slug == slug)
        if rev:
            stmt = stmt.where(SkuRow.revision == int(rev))
    id_pairs = s.execute(stmt).all()
    rows = {
        r.id: r
        for r in s.scalars(select(SkuRow).where(SkuRow.id.in_({p.sku_id for p in id_pairs})))
    }
    pairs = [(rows[sku_id], site) for sku_id, site in id_pairs]
    if request.sku is not None and not pairs:
        known = s.scalars(
            select(SkuRow.slug).where(SkuRow.slug == request.sku.partition("@")[0])
        ).first()
        what = (
            "has no hosts yet" if known else "is not in the catalogue; `hwmarket sku list` shows it"
        )
        raise NotFound(f"SKU {request.sku!r} {what}")
    skus: dict[int, Sku] = {}
    found = []
    for row, site in pairs:
        sku = skus.get(row.id) or skus.setdefault(row.id, sku_of_row(row))
        if request.where is not None and not request.where.matches(sku):
            continue
        if site in sites:
            found.append(_Class(site, sku, row.id))
    if required and request.where is not None and not found:
        raise InvalidInput(
            [
                Problem(
                    "where",
                    "no SKU with hosts in the places asked meets this query",
                    request.where.describe(),
                )
            ],
            "request",
        )
    rank = {site: i for i, site in enumerate(sites)}
    found.sort(key=lambda c: (rank[c.site], c.sku.slug, -(c.sku.revision or 0)))
    return found


def _calendars(
    s: Session, classes: Sequence[_Class], since: dt.datetime
) -> dict[HostClass, ClassCalendar]:
    """The calendar of each class: its usable hosts and their live bookings ending after ``since``."""
    by_key = {(c.site, c.sku_id): c.key for c in classes}
    if not by_key:
        return {}
    # One outer join gives every usable host with its live bookings (a host with none comes
    # once, with NULLs); the database hands the times over as whole epoch seconds, rounded
    # outward as Interval rounds them. This is the hot path of reserve().
    rows = s.execute(
        select(
            HostRow.id,
            HostRow.site_code,
            HostRow.sku_id,
            BookingRow.id,
            BookingRow.kind,
            epoch_floor(BookingRow.start_at),
            epoch_ceil(BookingRow.end_at),
        )
        .outerjoin(
            BookingRow,
            and_(
                BookingRow.host_id == HostRow.id,
                BookingRow.voided.is_(False),
                BookingRow.end_at > since,
            ),
        )
        .where(
            HostRow.state == "available",
            HostRow.sku_id.in_({c.sku_id for c in classes}),
            HostRow.site_code.in_({c.site for c in classes}),
        )
    ).all()
    busy: dict[str, tuple[HostClass, list[tuple[int, int, BusyKind, str | None]]]] = {}
    for host_id, site, sku_id, booking_id, kind, lo, hi in rows:
        held = busy.get(host_id)
        if held is None:
            key = by_key.get((site, sku_id))
            if key is None:
                continue
            held = busy[host_id] = (key, [])
        if booking_id is None:
            continue
        if kind == "maintenance":
            held[1].append((lo, hi, BusyKind.MAINTENANCE, None))
        else:
            held[1].append((lo, hi, BusyKind.BOOKING, str(booking_id)))
    hosts: dict[HostClass, list[HostSlots]] = {c.key: [] for c in classes}
    for host_id in sorted(busy):
        key, held_by = busy[host_id]
        hosts[key].append(HostSlots.of_seconds(host_id, held_by))
    return {key: ClassCalendar.of_slots(key, slots) for key, slots in hosts.items()}


def _class_sizes(s: Session, classes: Sequence[_Class]) -> dict[HostClass, int]:
    """How many usable hosts each class has (what its calendar's ``total`` will be)."""
    by_key = {(c.site, c.sku_id): c.key for c in classes}
    sizes = dict.fromkeys(by_key.values(), 0)
    if not by_key:
        return sizes
    rows = s.execute(
        select(HostRow.site_code, HostRow.sku_id, func.count())
        .where(
            HostRow.state == "available",
            HostRow.sku_id.in_({c.sku_id for c in classes}),
            HostRow.site_code.in_({c.site for c in classes}),
        )
        .group_by(HostRow.site_code, HostRow.sku_id)
    ).all()
    for site, sku_id, n in rows:
        key = by_key.get((site, sku_id))
        if key is not None:
            sizes[key] = n
    return sizes


class _SiteCalendars:
    """The candidate classes' calendars, read from the store a few sites at a time, when asked."""

    def __init__(self, s: Session, classes: Sequence[_Class], since: dt.datetime) -> None:
        self._s = s
        self._classes = classes
        self._since = since
        self._loaded: dict[HostClass, ClassCalendar] = {}

    def of_sites(self, sites: Collection[str]) -> dict[HostClass, ClassCalendar]:
        """The calendars of the candidate classes at ``sites``, in candidate order."""
        wanted = [c for c in self._classes if c.site in sites]
        missing = [c for c in wanted if c.key not in self._loaded]
        if missing:
            self._loaded.update(_calendars(self._s, missing, self._since))
        return {c.key: self._loaded[c.key] for c in wanted}

    def every(self) -> dict[HostClass, ClassCalendar]:
        """The calendars of every candidate class."""
        return self.of_sites({c.site for c in self._classes})


_SKU_CACHE: dict[tuple[int, str, int], Sku] = {}


def sku_of_row(row: SkuRow) -> Sku:
    """The :class:`Sku` of a stored revision. Cached, since a revision never changes (the key
    includes its content hash); callers must not modify the value."""
    key = (row.id, row.content_hash, row.revision)
    sku = _SKU_CACHE.get(key)
    if sku is None:
        sku = _SKU_CACHE[key] = Sku.model_validate({**row.spec, "revision": row.revision})
    return sku


def _check_window(request: Request, now: dt.datetime) -> None:
    if request.start < now - PAST_GRACE:
        raise InvalidInput(
            [
                Problem(
                    "start",
                    f"is in the past (now is {now.isoformat()}); reservations start now or later",
                    request.start.isoformat(),
                )
            ],
            "request",
        )


def _check_count(classes: Sequence[_Class], sizes: dict[HostClass, int], request: Request) -> None:
    most = max((sizes[c.key] for c in classes), default=0)
    need = request.min_count or request.count
    if need > most:
        raise InvalidInput(
            [
                Problem(
                    "count",
                    f"more machines than any matching site holds (at most {most})",
                    request.count,
                )
            ],
            "request",
        )


def quote(
    store: Store, request: Request | dict[str, Any], *, now: dt.datetime | None = None
) -> list[Offer]:
    """The offers that fit ``request`` now, without booking anything, best place first.

    For a flexible request (``latest_start``), each offer starts at the earliest instant its
    class can take the whole request. An empty list means nothing fits.
    """
    request = as_request(request)
    now = now or utcnow()
    _check_window(request, now)
    with store.reading() as s:
        classes = _candidates(s, request)
        calendars = _calendars(s, classes, min(now, request.start))
        _check_count(classes, {k: cal.total for k, cal in calendars.items()}, request)
    offers = []
    for c in classes:
        cal = calendars[c.key]
        start, end = request.start, request.end
        if request.latest_start is not None:
            found = cal.earliest_start(
                request.count, request.duration, request.start, request.latest_start
            )
            if found is None:
                continue
            start, end = found, found + request.duration
        adm = cal.admit(request.count, Interval(start, end))
        count = request.count if adm.admitted else len(adm.free_host_ids)
        if count < (request.min_count or request.count):
            continue
        offers.append(_offer(c, request, count, start, end))
    return offers


def _offer(c: _Class, request: Request, count: int, start: dt.datetime, end: dt.datetime) -> Offer:
    pricing = c.sku.pricing
    hourly = None
    if pricing is not None:
        hourly = (
            pricing.on_demand_at(c.site)
            if request.term == "on-demand"
            else pricing.reserved_hourly.get(request.term)
        )
    return Offer(
        site=c.site,
        sku=c.sku.slug,
        sku_revision=c.sku.revision or 1,
        count=count,
        start=start,
        end=end,
        currency=pricing.currency if pricing else None,
        hourly_price=hourly,
        price=Offer.window_price(hourly, count, start, end),
        customer=request.customer,
        term=request.term,
    )


def available(
    store: Store, request: Request | dict[str, Any], *, now: dt.datetime | None = None
) -> bool:
    """The exact yes/no: can ``request`` be booked now as asked (all of it, in its window)?"""
    return any(
        o.count == as_request(request).count and o.start == as_request(request).start
        for o in quote(store, request, now=now)
    )


def reserve(
    store: Store,
    request: Request | Offer | dict[str, Any],
    *,
    now: dt.datetime | None = None,
    policy: BindingPolicy = best_fit,
) -> Reservation:
    """Book ``request`` (or accept an :class:`Offer`) atomically; return it with hosts bound.

    Raises :class:`NoCapacity` saying what was short, where and when, or, after
    ``MAX_ATTEMPTS`` lost races with concurrent bookers, :class:`BookingConflict` (retryable).
    """
    if isinstance(request, Offer):
        request = Request(
            customer=request.customer,
            count=request.count,
            sku=f"{request.sku}@{request.sku_revision}",
            places=[request.site],
            start=request.start,
            end=request.end,
            term=request.term,
        )
    request = as_request(request)
    now = now or utcnow()
    _check_window(request, now)
    for attempt in range(MAX_ATTEMPTS):
        try:
            with store.writing() as s:
                return _reserve_in(s, request, now, policy)
        except BookingConflict:
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise BookingConflict(
        f"lost {MAX_ATTEMPTS} races for {request.count} x {request.sku or request.where} hosts; try again"
    )


def _reserve_in(
    s: Session, request: Request, now: dt.datetime, policy: BindingPolicy
) -> Reservation:
    classes = _candidates(s, request)
    _check_count(classes, _class_sizes(s, classes), request)
    calendars = _SiteCalendars(s, classes, min(now, request.start))
    start, end = request.start, request.end
    if request.latest_start is not None:
        every = calendars.every()
        starts = [
            (st, i)
            for i, c in enumerate(classes)
            if (
                st := every[c.key].earliest_start(
                    request.count, request.duration, request.start, request.latest_start
                )
            )
        ]
        if not starts:
            raise NoCapacity(
                _shortage(
                    request,
                    classes,
                    every,
                    request.start,
                    request.latest_start + request.duration,
                )
            )
        start = min(starts)[0]
        end = start + request.duration
    window = Interval(start, end)
    demand = Demand(
        tuple(Option(c.key, request.count) for c in classes),
        window,
        min_fraction=(request.min_count or request.count) / request.count,
        request_id=request.customer,
    )
    try:
        binding = _match(demand, calendars, policy, now)
    except NoCapacity:
        raise NoCapacity(_shortage(request, classes, calendars.every(), start, end)) from None
    chosen = next(c for c in classes if c.key == binding.host_class)
    rid = "rsv_" + uuid.uuid4().hex[:20]
    for mv in binding.moves:
        booking = s.get_one(BookingRow, int(mv.booking_id))
        booking.host_id = mv.to_host
        assert booking.reservation_id is not None
        _event(
            s,
            booking.reservation_id,
            now,
            "moved",
            mv.to_host,
            {"from": mv.from_host, "reason": f"re-packed to make room for {rid}"},
        )
    offer = _offer(chosen, request, len(binding.host_ids), window.start, window.end)
    s.add(
        ReservationRow(
            id=rid,
            customer=request.customer,
            sku_id=chosen.sku_id,
            site_code=chosen.site,
            count=len(binding.host_ids),
            start_at=window.start,
            end_at=window.end,
            state=ReservationState.CONFIRMED.value,
            term=request.term,
            currency=offer.currency,
            list_price_hourly=offer.hourly_price,
            created_at=now,
        )
    )
    s.flush()
    s.add_all(
        BookingRow(
            reservation_id=rid,
            host_id=h,
            kind="reservation",
            start_at=window.start,
            end_at=window.end,
            voided=False,
        )
        for h in binding.host_ids
    )
    _event(
        s,
        rid,
        now,
        "confirmed",
        None,
        {
            "hosts": list(binding.host_ids),
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
        },
    )
    s.flush()
    return _load(s, rid)


def _match(
    demand: Demand, calendars: _SiteCalendars, policy: BindingPolicy, now: dt.datetime
) -> Binding:
    """``match(demand, every calendar, policy=policy, now=now)``, reading calendars by site.

    match's default order tries the sites in the request's order (by most hosts free within
    a site) and takes the first class with enough hosts free as they stand; only when none has
    does it need every class (a partial grant, re-packing, or a refusal). So each site is first
    asked alone, all or nothing and without re-packing, reading only its own calendars: its
    answer, when it has one, is the one match would give with every calendar read. A capability
    query over every site usually stops at the first one instead of reading all of them.
    """
    sites = list(dict.fromkeys(o.host_class.site for o in demand.options))
    if len(sites) > 1:
        for site in sites:
            alone = replace(
                demand,
                options=tuple(o for o in demand.options if o.host_class.site == site),
                min_fraction=1.0,
            )
            try:
                return match(alone, calendars.of_sites({site}), policy=policy)
            except NoCapacity:
                continue
    return match(demand, calendars.every(), policy=policy, now=int(now.timestamp()))


def _shortage(
    request: Request,
    classes: Sequence[_Class],
    calendars: dict[HostClass, ClassCalendar],
    start: dt.datetime,
    end: dt.datetime,
) -> str:
    parts = []
    for c in classes:
        cal = calendars[c.key]
        free = len(cal.free_slots(int(start.timestamp()), int(end.timestamp()) + 1))
        parts.append(f"{c.sku.slug}@{c.sku.revision} at {c.site}: {free} of {cal.total} free")
    what = request.sku or (request.where.describe() if request.where else "?")
    return (
        f"cannot book {request.count} x {what} for {start.isoformat()} .. {end.isoformat()} "
        f"({'; '.join(parts) or 'no matching hosts'})"
    )


def _row(s: Session, reservation_id: str) -> ReservationRow:
    row = s.get(ReservationRow, reservation_id)
    if row is None:
        raise NotFound(
            f"unknown reservation {reservation_id!r}; `hwmarket reservation list` shows them"
        )
    return row


def _host(s: Session, host_id: str) -> HostRow:
    host = s.get(HostRow, host_id)
    if host is None:
        raise NotFound(f"unknown host {host_id!r}; `hwmarket host list` shows the hosts")
    return host


def _class_of(s: Session, row: ReservationRow) -> _Class:
    sku_row = s.get_one(SkuRow, row.sku_id)
    return _Class(
        row.site_code,
        sku_of_row(sku_row),
        row.sku_id,
    )


def _live_bookings(s: Session, reservation_id: str) -> list[BookingRow]:
    return list(
        s.scalars(
            select(BookingRow)
            .where(and_(BookingRow.reservation_id == reservation_id, BookingRow.voided.is_(False)))
            .order_by(BookingRow.start_at, BookingRow.host_id)
        )
    )


def _event(
    s: Session,
    reservation_id: str,
    at: dt.datetime,
    kind: str,
    host: str | None,
    detail: dict[str, Any],
) -> ReservationEvent:
    s.add(
        ReservationEventRow(
            reservation_id=reservation_id, at=at, kind=kind, host_id=host, detail=detail
        )
    )
    return ReservationEvent(
        reservation_id=reservation_id, at=at, kind=kind, host=host, detail=detail
    )


def _load(s: Session, reservation_id: str) -> Reservation:
    row = _row(s, reservation_id)
    sku = s.get_one(SkuRow, row.sku_id)
    bookings = s.scalars(
        select(BookingRow).where(BookingRow.reservation_id == reservation_id)
    ).all()
    live = [b for b in bookings if not b.voided]
    if live:
        hosts = sorted(
            {b.host_id for b in live if b.end_at >= row.end_at} or {b.host_id for b in live}
        )
    else:
        hosts = sorted({b.host_id for b in bookings})
    return Reservation(
        id=row.id,
        customer=row.customer,
        sku=sku.slug,
        sku_revision=sku.revision,
        site=row.site_code,
        count=row.count,
        start=row.start_at,
        end=row.end_at,
        stored_state=ReservationState(row.state),
        hosts=hosts,
        term=row.term,
        currency=row.currency,
        hourly_price=plain_decimal(row.list_price_hourly)
        if row.list_price_hourly is not None
        else None,
        created_at=row.created_at,
    )


__all__ = [
    "MAX_ATTEMPTS",
    "as_request",
    "available",
    "quote",
    "reserve",
    "utcnow",
]
