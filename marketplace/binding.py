"""Binding: which concrete hosts serve an admitted demand, and re-packing to make room.

A binding policy picks ``count`` hosts among those free for the whole window:

- :func:`best_fit` (default), *temporal* best fit: the hosts whose idle gaps around the window
  (before plus after) are smallest, so long free stretches stay whole for long requests;
- :func:`first_fit`: the first free hosts in calendar order;
- :func:`random_fit`: uniformly at random (a baseline).

:func:`match` goes through a demand's classes, asks admission, binds, and when only re-packing
can make room, asks :func:`repack` for moves of bookings that have not started yet.
Nothing here writes anything: the answer is a :class:`~marketplace.matching.Binding` that the
store applies in one transaction, and the calendar is left as it was found.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from marketplace.admission import Admission, ClassCalendar, Verdict
from marketplace.errors import InvalidInput, NoCapacity, Problem
from marketplace.matching import (
    Binding,
    BusyKind,
    Demand,
    HostClass,
    HostSlots,
    Interval,
    Move,
    Option,
    to_seconds,
)


class BindingPolicy(Protocol):
    """Choose ``count`` hosts among ``free`` (all free for ``[lo, hi)``, at least ``count``)."""

    def __call__(self, free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
        """Return ``count`` distinct hosts taken from ``free``."""
        ...


def best_fit(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
    """Temporal best fit: smallest idle gap before plus after the window, then calendar order."""
    if count == 1:
        return [min(free, key=lambda h: sum(h.idle_gap(lo, hi)))]
    order = heapq.nsmallest(count, range(len(free)), key=lambda i: sum(free[i].idle_gap(lo, hi)))
    return [free[i] for i in order]


def first_fit(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
    """The first ``count`` free hosts in calendar order."""
    return list(free[:count])


def random_fit(rng: random.Random) -> BindingPolicy:
    """A policy choosing hosts uniformly at random with ``rng`` (for comparison)."""

    def choose(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
        return rng.sample(list(free), count)

    return choose


#: Orders the options of a demand before admission tries them: (demand, calendars) -> options.
ClassOrder = Callable[[Demand, Mapping[HostClass, ClassCalendar]], Sequence[Option]]


def in_preference_order(
    demand: Demand, calendars: Mapping[HostClass, ClassCalendar]
) -> Sequence[Option]:
    """The demand's own order: the first acceptable class with room wins."""
    return demand.options


def most_free_first(
    demand: Demand, calendars: Mapping[HostClass, ClassCalendar]
) -> Sequence[Option]:
    """The class with the most hosts free for the window first (most slack left after it)."""
    lo, hi = demand.window.lo, demand.window.hi

    def slack(option: Option) -> float:
        cal = calendars.get(option.host_class)
        if cal is None or not cal.total:
            return float("-inf")
        return (len(cal.free_slots(lo, hi)) - option.count) / cal.total

    return sorted(demand.options, key=slack, reverse=True)


def preferred_place_then_most_free(
    demand: Demand, calendars: Mapping[HostClass, ClassCalendar]
) -> Sequence[Option]:
    """The default: sites in the demand's order of preference, and among the classes of one
    site (SKUs the customer did not rank) the one with most hosts free first. With one site this
    is :func:`most_free_first`, which the matching benchmark measured best across capacities."""
    rank: dict[str, int] = {}
    for option in demand.options:
        rank.setdefault(option.host_class.site, len(rank))
    free_first = {o: i for i, o in enumerate(most_free_first(demand, calendars))}
    return sorted(demand.options, key=lambda o: (rank[o.host_class.site], free_first[o]))


def smallest_first(size: Mapping[HostClass, float]) -> ClassOrder:
    """ "Smallest sufficient": the class with the smallest hosts (``size``: GPUs, cores...)
    first, then the demand's own order. Big machines stay free for the demands only they fit.
    """

    def order(demand: Demand, calendars: Mapping[HostClass, ClassCalendar]) -> Sequence[Option]:
        return sorted(demand.options, key=lambda o: size.get(o.host_class, math.inf))

    return order


def repack(
    calendar: ClassCalendar, count: int, window: Interval, now: dt.datetime | int
) -> list[Move] | None:
    """Moves of not-yet-started bookings that leave ``count`` hosts free for ``window``.

    A booking may move when it starts at or after ``now`` (an aware datetime, or epoch
    seconds); maintenance and started
    bookings stay. Two tries, cheapest first:

    1. *targeted*: free busy hosts one by one by moving only the bookings that overlap the
       window, each to the best-fitting other host where it fits as things stand;
    2. *full*: take every movable booking off, then place them and the new request's hosts
       greedily by start time (longest first at a tie), a booking keeping its own host when it
       still fits there, else the best-fitting free host. Greedy by start is optimal for
       identical hosts without fixed intervals; with them it is a heuristic, so ``None`` means
       "no room found", not a proof that none exists.

    Returns the moves (possibly empty if room already exists) or ``None``; ``calendar`` is left
    unchanged either way.
    """
    if isinstance(now, dt.datetime):
        now = to_seconds(now, path="now")
    free = calendar.free_slots(window.lo, window.hi)
    if len(free) >= count:
        return []
    moves = _repack_targeted(calendar, count, window, now, free)
    if moves is None:
        moves = _repack_full(calendar, count, window, now)
    return moves


def _undo(calendar: ClassCalendar, moves: Sequence[Move]) -> None:
    calendar.relocate([(mv.booking_id, mv.from_host) for mv in moves])


def _repack_targeted(
    calendar: ClassCalendar, count: int, window: Interval, now: int, free: list[HostSlots]
) -> list[Move] | None:
    lo, hi = window.lo, window.hi
    taken = {h.host_id for h in free}
    candidates: list[tuple[int, int, HostSlots]] = []
    for h in calendar.hosts:
        if h.host_id in taken:
            continue
        blockers = _overlapping(h, lo, hi)
        if all(h.kinds[j] is BusyKind.BOOKING and h.los[j] >= now for j in blockers):
            span = sum(h.his[j] - h.los[j] for j in blockers)
            candidates.append((len(blockers), span, h))
    candidates.sort(key=lambda c: (c[0], c[1]))
    moves: list[Move] = []
    moved: set[str | None] = set()
    for _, _, host in candidates:
        if len(taken) >= count:
            break
        blockers = _overlapping(host, lo, hi)
        if any(host.ids[j] in moved for j in blockers):
            continue  # one move per booking keeps the answer a plain set of moves
        done = len(moves)
        for bid, blo, bhi in [(host.ids[j], host.los[j], host.his[j]) for j in blockers]:
            assert bid is not None
            targets = [
                g
                for g in calendar.hosts
                if g.host_id not in taken and g is not host and g.is_free(blo, bhi)
            ]
            if not targets:
                _undo(calendar, moves[done:])
                moved.difference_update(m.booking_id for m in moves[done:])
                del moves[done:]
                break
            target = best_fit(targets, 1, blo, bhi)[0]
            calendar.move(bid, target.host_id)
            moved.add(bid)
            moves.append(Move(bid, host.host_id, target.host_id, Interval.from_seconds(blo, bhi)))
        else:
            taken.add(host.host_id)
    _undo(calendar, moves)
    return moves if len(taken) >= count else None


def _overlapping(host: HostSlots, lo: int, hi: int) -> list[int]:
    return [j for j in range(len(host.los)) if host.los[j] < hi and host.his[j] > lo]


def _repack_full(
    calendar: ClassCalendar, count: int, window: Interval, now: int
) -> list[Move] | None:
    movable: list[tuple[int, int, str, str]] = []  # (lo, hi, booking, original host)
    for h in calendar.hosts:
        for j, bid in enumerate(h.ids):
            if bid is not None and h.kinds[j] is BusyKind.BOOKING and h.los[j] >= now:
                movable.append((h.los[j], h.his[j], bid, h.host_id))
    if not movable:
        return None
    for _, _, bid, host_id in movable:
        calendar.host(host_id).remove(bid)
    placed: list[tuple[str, HostSlots, int, int]] = []
    new = "\0new"  # marks the request's own hosts, which are not bookings
    items = [*movable, *[(window.lo, window.hi, f"{new}{i}", "") for i in range(count)]]
    items.sort(key=lambda it: (it[0], it[0] - it[1]))
    ok = True
    for lo, hi, bid, home in items:
        target: HostSlots | None = None
        if home and calendar.host(home).is_free(lo, hi):
            target = calendar.host(home)
        else:
            fits = [g for g in calendar.hosts if g.is_free(lo, hi)]
            if fits:
                target = best_fit(fits, 1, lo, hi)[0]
        if target is None:
            ok = False
            break
        target.add(lo, hi, bid, BusyKind.BOOKING)
        placed.append((bid, target, lo, hi))
    for bid, target, _, _ in placed:
        target.remove(bid)
    for lo, hi, bid, host_id in movable:
        calendar.host(host_id).add(lo, hi, bid, BusyKind.BOOKING)
    if not ok:
        return None
    home_of = {bid: host_id for _, _, bid, host_id in movable}
    return [
        Move(bid, home_of[bid], target.host_id, Interval.from_seconds(lo, hi))
        for bid, target, lo, hi in placed
        if not bid.startswith(new) and target.host_id != home_of[bid]
    ]


def bind(
    calendar: ClassCalendar,
    count: int,
    window: Interval,
    policy: BindingPolicy = best_fit,
    moves: Sequence[Move] = (),
) -> Binding:
    """Choose ``count`` hosts free for ``window`` after ``moves`` (``NoCapacity`` if too few)."""
    calendar.relocate([(mv.booking_id, mv.to_host) for mv in moves])
    try:
        free = calendar.free_slots(window.lo, window.hi)
        if len(free) < count:
            raise NoCapacity(
                f"{len(free)} of {count} hosts of {calendar.host_class} free for {window}"
            )
        chosen = policy(free, count, window.lo, window.hi)
    finally:
        _undo(calendar, moves)
    return Binding(calendar.host_class, tuple(h.host_id for h in chosen), window, tuple(moves))


def apply(calendar: ClassCalendar, binding: Binding, booking_ids: Sequence[str]) -> None:
    """Carry out a binding in an in-memory calendar: its moves, then one booking per host.

    The store does the same in its transaction; this is for simulations and benchmarks.
    """
    if len(booking_ids) != len(binding.host_ids):
        raise InvalidInput(
            [
                Problem(
                    "booking_ids", f"needs one id per host ({len(binding.host_ids)})", booking_ids
                )
            ]
        )
    calendar.relocate([(mv.booking_id, mv.to_host) for mv in binding.moves])
    for host_id, bid in zip(binding.host_ids, booking_ids, strict=True):
        calendar.book(host_id, binding.window, bid)


def match(
    demand: Demand,
    calendars: Mapping[HostClass, ClassCalendar],
    *,
    policy: BindingPolicy = best_fit,
    order: ClassOrder = preferred_place_then_most_free,
    now: dt.datetime | int | None = None,
) -> Binding:
    """Admit and bind a demand: the first class (in ``order``) that can serve it.

    All of ``count`` hosts as they stand first; then, if the demand accepts fewer, the most
    hosts at least its minimum; then, when ``now`` (aware datetime or epoch seconds) is
    given, room made by re-packing bookings that start at or after ``now``. Raises
    ``NoCapacity`` naming what each class had free when nothing works.

    >>> import datetime as dt
    >>> from marketplace.admission import ClassCalendar
    >>> from marketplace.matching import HostTimeline
    >>> c = HostClass("ams1", "gpu8")
    >>> cal = ClassCalendar(c, [HostTimeline("h1", c), HostTimeline("h2", c)])
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> got = match(Demand.of(2, [c], Interval(t, t + dt.timedelta(hours=4))), {c: cal})
    >>> got.host_ids, got.host_hours
    (('h1', 'h2'), 8.0)
    """
    window = demand.window
    options = order(demand, calendars)
    answers: list[tuple[Option, ClassCalendar, Admission]] = []
    for option in options:
        cal = calendars.get(option.host_class)
        if cal is None:
            continue
        adm = cal.admit(option.count, window)
        if adm.admitted:
            return bind(cal, option.count, window, policy)
        answers.append((option, cal, adm))
    partial = [
        (len(adm.free_host_ids), option, cal)
        for option, cal, adm in answers
        if len(adm.free_host_ids) >= demand.min_count(option)
    ]
    if partial:
        # the option that can grant the largest share of what was asked
        _, option, cal = max(partial, key=lambda p: p[0] / p[1].count)
        granted = min(option.count, len(cal.free_slots(window.lo, window.hi)))
        return bind(cal, granted, window, policy)
    if now is not None:
        for option, cal, adm in answers:
            if adm.verdict is Verdict.REPACK:
                moves = repack(cal, option.count, window, now)
                if moves is not None:
                    return bind(cal, option.count, window, policy, moves)
    tried = ", ".join(f"{adm.host_class}: {len(adm.free_host_ids)} free" for _, _, adm in answers)
    raise NoCapacity(
        f"no class can give {demand.request_id or 'the demand'} its hosts for {window}"
        f" ({tried or 'no known class'})"
    )


__all__ = [
    "BindingPolicy",
    "ClassOrder",
    "apply",
    "best_fit",
    "bind",
    "first_fit",
    "in_preference_order",
    "match",
    "most_free_first",
    "preferred_place_then_most_free",
    "random_fit",
    "repack",
    "smallest_first",
]
