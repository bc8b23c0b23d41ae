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

from sqlalchemy import Select, and_, bindparam, case, func, select, tuple_, update
from sqlalchemy.orm import Session

from marketplace.admission import ClassCalendar
from marketplace.binding import BindingPolicy, best_fit, match
from marketplace.catalog import Sku
from marketplace.db import UTCDateTime, epoch_ceil, epoch_floor
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
    Move,
    Option,
    from_seconds,
    to_seconds,
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


def _classes_statement() -> Select[tuple[int, str, str, int, int]]:
    # Hosts are counted per (site, SKU) first, along the index, and then joined to the SKUs.
    per_class = (
        select(
            HostRow.sku_id,
            HostRow.site_code,
            func.sum(case((HostRow.state == "available", 1), else_=0)).label("usable"),
        )
        .group_by(HostRow.site_code, HostRow.sku_id)
        .subquery()
    )
    return select(
        per_class.c.sku_id,
        per_class.c.site_code,
        SkuRow.content_hash,
        SkuRow.revision,
        per_class.c.usable,
    ).join(SkuRow, per_class.c.sku_id == SkuRow.id)


#: Every (SKU revision, site) with hosts, with the SKU's cache key and its usable host count.
#: Built once: constructing the subquery costs more than running it.
_CLASSES = _classes_statement()


def _candidates(s: Session, request: Request, *, required: bool = True) -> list[_Class]:
    """Classes that could serve ``request``, in the request's place order, then by SKU."""
    return _sized_candidates(s, request, required=required)[0]


def _sized_candidates(
    s: Session, request: Request, *, required: bool = True
) -> tuple[list[_Class], dict[HostClass, int]]:
    """:func:`_candidates`, and how many usable hosts each has (its calendar's ``total``)."""
    sites = _sites_of_places(s, request.places)
    stmt = _CLASSES
    if request.sku is not None:
        slug, _, rev = request.sku.partition("@")
        stmt = stmt.where(SkuRow.slug == slug)
        if rev:
            stmt = stmt.where(SkuRow.revision == int(rev))
    groups = s.execute(stmt).all()
    # A SKU revision never changes: read its spec (and validate it) only when not cached yet.
    skus = {g.sku_id: _SKU_CACHE.get((g.sku_id, g.content_hash, g.revision)) for g in groups}
    missing = {sku_id for sku_id, sku in skus.items() if sku is None}
    if missing:
        for row in s.scalars(select(SkuRow).where(SkuRow.id.in_(missing))):
            skus[row.id] = sku_of_row(row)
    pairs = [(g.sku_id, g.site_code, int(g.usable or 0)) for g in groups]
    if request.sku is not None and not pairs:
        known = s.scalars(
            select(SkuRow.slug).where(SkuRow.slug == request.sku.partition("@")[0])
        ).first()
        what = (
            "has no hosts yet" if known else "is not in the catalogue; `hwmarket sku list` shows it"
        )
        raise NotFound(f"SKU {request.sku!r} {what}")
    found = []
    sizes: dict[HostClass, int] = {}
    for sku_id, site, usable in pairs:
        sku = skus[sku_id]
        assert sku is not None
        if request.where is not None and not request.where.matches(sku):
            continue
        if site in sites:
            found.append(_Class(site, sku, sku_id))
            sizes[found[-1].key] = usable
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
    return found, sizes


#: Every usable host of some classes with its live bookings ending after ``since``: one outer
#: join, so a host with none comes once, with NULLs. The database hands the times over as
#: whole epoch seconds, rounded outward as Interval rounds them. Built once (its construction
#: costs about as much as running it for one site); this is the hot path of reserve().
_CALENDAR = (
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
            BookingRow.end_at > bindparam("since", type_=UTCDateTime()),
        ),
    )
    .where(
        HostRow.state == "available",
        HostRow.sku_id.in_(bindparam("sku_ids", expanding=True)),
        HostRow.site_code.in_(bindparam("sites", expanding=True)),
    )
)


def _calendars(
    s: Session, classes: Sequence[_Class], since: dt.datetime
) -> dict[HostClass, ClassCalendar]:
    """The calendar of each class: its usable hosts and their live bookings ending after ``since``."""
    by_key = {(c.site, c.sku_id): c.key for c in classes}
    if not by_key:
        return {}
    # Through the session's connection: plain rows, without the ORM's per-row bookkeeping.
    rows = s.connection().execute(
        _CALENDAR,
        {
            "since": since,
            "sku_ids": sorted({c.sku_id for c in classes}),
            "sites": sorted({c.site for c in classes}),
        },
    )
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
    classes, sizes = _sized_candidates(s, request)
    _check_count(classes, sizes, request)
    calendars = _SiteCalendars(s, classes, min(now, request.start))
    start, end = request.start, request.end
    if request.latest_start is not None:
        found = _earliest_start(request, classes, calendars)
        if found is None:
            raise NoCapacity(
                _shortage(
                    request,
                    classes,
                    calendars.every(),
                    request.start,
                    request.latest_start + request.duration,
                )
            )
        start, end = found, found + request.duration
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
    if binding.moves:
        _move_bookings(s, binding.moves, now, f"re-packed to make room for {rid}")
    offer = _offer(chosen, request, len(binding.host_ids), window.start, window.end)
    # Held until _load below reads it back: the session keeps clean rows only weakly, and a
    # row it still has is read back without a query.
    row = ReservationRow(
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
    s.add(row)
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
    assert chosen.sku.revision is not None  # sku_of_row sets the stored revision
    return _load(s, row.id, sku=(chosen.sku.slug, chosen.sku.revision))


def _move_bookings(s: Session, moves: Sequence[Move], now: dt.datetime, reason: str) -> None:
    """Re-bind bookings that have not started to the hosts ``moves`` give, with an event each.

    The database checks each row as it is written, so moving them one at a time fails whenever
    a re-pack swaps or chains bookings (one moves onto a host another has yet to leave). So
    first every moved booking is voided, which takes it out of the overlap check, and then each
    is written back live on its new host: every state in between holds a subset of the final
    live bookings, and each row gets the usual check. No one else sees the voided rows: SQLite
    serialises writers, and PostgreSQL shows others the old rows until the commit (an insert
    over one of them waits for it). A booking that had not started held nothing, so the row
    keeps its id and times and only its host changes: the bookings stay the exact record of who
    held which host when, and each move is one "moved" event.

    On PostgreSQL the calendar may be stale by now (read committed): a booking that a concurrent
    re-pack moved, or a cancel voided, is not where the moves think, and is not moved (nor
    brought back to life); the booker gets :class:`BookingConflict` and tries again.
    """
    voided = s.execute(
        update(BookingRow)
        .where(
            tuple_(BookingRow.id, BookingRow.host_id).in_(
                [(int(mv.booking_id), mv.from_host) for mv in moves]
            ),
            BookingRow.kind == "reservation",
            BookingRow.voided.is_(False),
        )
        .values(voided=True)
        .returning(BookingRow.id, BookingRow.reservation_id)
        .execution_options(synchronize_session=False)
    ).all()
    if len(voided) != len(moves):
        raise BookingConflict(
            "a concurrent change moved or cancelled a booking this re-pack would move; try again"
        )
    holder: dict[int, str] = {}
    for booking_id, reservation_id in voided:
        assert reservation_id is not None  # a reservation's booking (the kind says so)
        holder[booking_id] = reservation_id
    s.execute(
        update(BookingRow),
        [{"id": int(mv.booking_id), "host_id": mv.to_host, "voided": False} for mv in moves],
    )
    for mv in moves:
        _event(
            s,
            holder[int(mv.booking_id)],
            now,
            "moved",
            mv.to_host,
            {"from": mv.from_host, "reason": reason},
        )


def _earliest_start(
    request: Request, classes: Sequence[_Class], calendars: _SiteCalendars
) -> dt.datetime | None:
    """The earliest start of a flexible ``request`` any class can take whole, or None.

    The earliest over every class, as if every calendar were read; but no class can start
    before ``request.start`` (rounded up to the second, as ``earliest_start`` rounds it), so
    once a class in the sites read so far starts then, the sites after cannot change it.
    """
    assert request.latest_start is not None
    soonest = from_seconds(to_seconds(request.start, up=True))
    best: dt.datetime | None = None
    for site in dict.fromkeys(c.site for c in classes):
        for cal in calendars.of_sites({site}).values():
            found = cal.earliest_start(
                request.count, request.duration, request.start, request.latest_start
            )
            if found is not None and (best is None or found < best):
                best = found
        if best == soonest:
            break
    return best


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


def _load(s: Session, reservation_id: str, *, sku: tuple[str, int] | None = None) -> Reservation:
    """The reservation as stored; ``sku`` (slug, revision) saves reading its SKU when known."""
    row = _row(s, reservation_id)
    if sku is None:
        sku_row = s.get_one(SkuRow, row.sku_id)
        sku = (sku_row.slug, sku_row.revision)
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
        sku=sku[0],
        sku_revision=sku[1],
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
