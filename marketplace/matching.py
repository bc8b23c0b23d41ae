"""The plain values matching works on: time intervals, host timelines, demands, moves.

Matching is split in three pure pieces, one idea per module:

- :mod:`marketplace.admission`: can N hosts of a class be promised for a window? (and when is
  the earliest start, and what does capacity look like over time);
- :mod:`marketplace.binding`: which concrete hosts, with which policy, and re-packing bookings
  that have not started yet to make room;
- :mod:`marketplace.planning`: the offline optimum of a batch of requests (time-point MIP).

:class:`HostSlots` is the one mutable piece: a host's busy intervals as sorted arrays, the index
admission and binding search.

The values here carry timezone-aware UTC datetimes at the API. Inside, an :class:`Interval` keeps
whole seconds since the epoch (``lo``, ``hi``), because matching compares millions of times and
integers are much cheaper than datetimes. Sub-second parts are rounded *outward* (start down, end
up): a busy interval or a request then covers at least the time it was given, so rounding can
never make two real overlaps look disjoint.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from marketplace.errors import InvalidInput, Problem

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_seconds(when: dt.datetime, *, up: bool = False, path: str = "when") -> int:
    """Whole seconds since the epoch of an aware datetime (rounded down, or up with ``up``)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInput([Problem(path, "needs a timezone-aware datetime (UTC)", when)])
    delta = when - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    if up and delta.microseconds:
        seconds += 1
    return seconds


def from_seconds(seconds: int) -> dt.datetime:
    """The aware UTC datetime of whole seconds since the epoch."""
    return _EPOCH + dt.timedelta(seconds=seconds)


class Interval:
    """A half-open time interval ``[start, end)``, non-empty, in UTC.

    Build it from aware datetimes (``Interval(start, end)``) or from epoch seconds
    (``Interval.from_seconds(lo, hi)``); read ``start``/``end`` as datetimes or ``lo``/``hi``
    as seconds.

    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> Interval(t, t + dt.timedelta(hours=2)).hours
    2.0
    """

    __slots__ = ("hi", "lo")

    lo: int
    hi: int

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        lo = to_seconds(start, path="start")
        hi = to_seconds(end, up=True, path="end")
        self._set(lo, hi)

    def _set(self, lo: int, hi: int) -> None:
        if hi <= lo:
            raise InvalidInput(
                [Problem("end", "must be after start (intervals are [start, end))", (lo, hi))]
            )
        self.lo = lo
        self.hi = hi

    @classmethod
    def from_seconds(cls, lo: int, hi: int) -> Interval:
        """The interval ``[lo, hi)`` given in whole seconds since the epoch."""
        interval = cls.__new__(cls)
        interval._set(int(lo), int(hi))
        return interval

    @property
    def start(self) -> dt.datetime:
        """Start, inclusive, as an aware UTC datetime."""
        return from_seconds(self.lo)

    @property
    def end(self) -> dt.datetime:
        """End, exclusive, as an aware UTC datetime."""
        return from_seconds(self.hi)

    @property
    def seconds(self) -> int:
        """Length in seconds."""
        return self.hi - self.lo

    @property
    def hours(self) -> float:
        """Length in hours."""
        return (self.hi - self.lo) / 3600.0

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share at least one instant."""
        return self.lo < other.hi and other.lo < self.hi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interval):
            return NotImplemented
        return self.lo == other.lo and self.hi == other.hi

    def __hash__(self) -> int:
        return hash((self.lo, self.hi))

    def __repr__(self) -> str:
        return f"Interval({self.start.isoformat()}, {self.end.isoformat()})"


class HostClass(NamedTuple):
    """The unit admission counts in: hosts of one SKU at one site are interchangeable."""

    site: str
    sku: str

    def __str__(self) -> str:
        return f"{self.site}/{self.sku}"


class BusyKind(Enum):
    """Why a host is not free: a customer's booking, or maintenance (which never moves)."""

    BOOKING = "booking"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class Busy:
    """One interval a host is taken, with the booking it belongs to (None for maintenance)."""

    interval: Interval
    kind: BusyKind = BusyKind.BOOKING
    booking_id: str | None = None

    def movable(self, now: int) -> bool:
        """A booking may move to another host of its class until it starts (``now`` in seconds)."""
        return self.kind is BusyKind.BOOKING and self.interval.lo >= now


@dataclass(frozen=True, slots=True)
class HostTimeline:
    """A host, its class and the intervals it is taken, sorted by start.

    Bookings on one host never overlap (the store enforces it); maintenance may overlap a
    booking (a failed host keeps its bookings until they are moved).
    """

    host_id: str
    host_class: HostClass
    busy: tuple[Busy, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.busy, key=lambda b: (b.interval.lo, b.interval.hi)))
        object.__setattr__(self, "busy", ordered)


@dataclass(frozen=True, slots=True)
class Option:
    """One acceptable way to serve a demand: ``count`` hosts of ``host_class``."""

    host_class: HostClass
    count: int


@dataclass(frozen=True)
class Demand:
    """A request for hosts during a window, with the acceptable classes in preference order.

    Each option names a class and how many hosts of it serve the request (a job needing 8 GPUs
    takes 1 host with 8 GPUs or 2 hosts with 4). ``min_fraction`` lets a request accept fewer
    hosts than asked: between ``ceil(count * min_fraction)`` and ``count`` (1.0: all or nothing).
    """

    options: tuple[Option, ...]
    window: Interval
    min_fraction: float = 1.0
    request_id: str = ""
    #: Value of serving one host of this request for one hour (planning maximises the total).
    value_per_host_hour: float = 1.0

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not self.options:
            problems.append(Problem("options", "needs at least one acceptable class", ()))
        seen: set[HostClass] = set()
        for i, opt in enumerate(self.options):
            if opt.count < 1:
                problems.append(Problem(f"options[{i}].count", "must be >= 1", opt.count))
            if opt.host_class in seen:
                problems.append(Problem(f"options[{i}]", "class listed twice", opt.host_class))
            seen.add(opt.host_class)
        if not 0.0 < self.min_fraction <= 1.0:
            problems.append(Problem("min_fraction", "must be in (0, 1]", self.min_fraction))
        if problems:
            raise InvalidInput(problems, source=f"demand {self.request_id}".strip())

    @classmethod
    def of(
        cls,
        count: int,
        classes: Iterable[HostClass],
        window: Interval,
        *,
        request_id: str = "",
        min_count: int | None = None,
    ) -> Demand:
        """The same ``count`` hosts from any of ``classes`` (in preference order)."""
        fraction = 1.0 if min_count is None else min_count / count
        options = tuple(Option(c, count) for c in classes)
        return cls(options, window, min_fraction=fraction, request_id=request_id)

    def min_count(self, option: Option) -> int:
        """The fewest hosts of ``option`` the requester accepts."""
        return max(1, math.ceil(option.count * self.min_fraction - 1e-9))


@dataclass(frozen=True, slots=True)
class Move:
    """Re-pack step: booking ``booking_id`` leaves ``from_host`` for ``to_host``, same window."""

    booking_id: str
    from_host: str
    to_host: str
    interval: Interval


@dataclass(frozen=True, slots=True)
class Binding:
    """The answer to a demand: the class and hosts chosen, and the moves to apply first.

    The store applies ``moves`` and books ``host_ids`` for ``window`` in one transaction.
    """

    host_class: HostClass
    host_ids: tuple[str, ...]
    window: Interval
    moves: tuple[Move, ...] = ()

    @property
    def host_hours(self) -> float:
        """Hosts times hours: the default measure of accepted value."""
        return len(self.host_ids) * self.window.hours


#: Stand-in for "no busy interval on that side": ten years, larger than any idle gap that matters.
OPEN_GAP = 10 * 365 * 86_400


class HostSlots:
    """The busy intervals of one host as sorted arrays (seconds), kept mutable for speed.

    ``reach[i]`` is the latest end among the first ``i + 1`` intervals, so a host is free for
    ``[lo, hi)`` iff every interval starting before ``hi`` has ended by ``lo``: one bisection,
    correct even when maintenance overlaps a booking.
    """

    __slots__ = ("his", "host_id", "ids", "kinds", "los", "reach")

    def __init__(self, host_id: str, busy: Iterable[Busy] = ()) -> None:
        self.host_id = host_id
        items = sorted(busy, key=lambda b: (b.interval.lo, b.interval.hi))
        self.los = [b.interval.lo for b in items]
        self.his = [b.interval.hi for b in items]
        self.ids: list[str | None] = [b.booking_id for b in items]
        self.kinds = [b.kind for b in items]
        self.reach: list[int] = []
        self._reach_from(0)

    @classmethod
    def of_seconds(
        cls, host_id: str, busy: Iterable[tuple[int, int, BusyKind, str | None]] = ()
    ) -> HostSlots:
        """The same as ``HostSlots(host_id, busy)`` from ``(lo, hi, kind, booking_id)`` tuples
        in whole epoch seconds (any order): what a store reads, without an :class:`Interval`
        and a :class:`Busy` per row."""
        slots = cls.__new__(cls)
        slots.host_id = host_id
        items = sorted(busy, key=lambda b: (b[0], b[1])) if busy else ()
        slots.los = [b[0] for b in items]
        slots.his = [b[1] for b in items]
        slots.kinds = [b[2] for b in items]
        slots.ids = [b[3] for b in items]
        slots.reach = []
        slots._reach_from(0)
        return slots

    def _reach_from(self, i: int) -> None:
        del self.reach[i:]
        latest = self.reach[i - 1] if i else -(2**62)
        for hi in self.his[i:]:
            latest = max(latest, hi)
            self.reach.append(latest)

    def is_free(self, lo: int, hi: int) -> bool:
        """Whether nothing on this host overlaps ``[lo, hi)``."""
        i = bisect.bisect_left(self.los, hi)
        return i == 0 or self.reach[i - 1] <= lo

    def idle_gap(self, lo: int, hi: int) -> tuple[int, int]:
        """Idle seconds before and after ``[lo, hi)`` if booked there (``OPEN_GAP`` if unbounded).

        Only meaningful when the host is free for the window.
        """
        i = bisect.bisect_left(self.los, hi)
        before = lo - self.reach[i - 1] if i else OPEN_GAP
        after = self.los[i] - hi if i < len(self.los) else OPEN_GAP
        return min(before, OPEN_GAP), min(after, OPEN_GAP)

    def add(self, lo: int, hi: int, booking_id: str | None, kind: BusyKind) -> None:
        """Insert a busy interval (the caller has checked it is free when it is a booking)."""
        i = bisect.bisect_right(self.los, lo)
        self.los.insert(i, lo)
        self.his.insert(i, hi)
        self.ids.insert(i, booking_id)
        self.kinds.insert(i, kind)
        self._reach_from(i)

    def remove(self, booking_id: str) -> tuple[int, int]:
        """Remove a booking; return its ``(lo, hi)``."""
        i = self.ids.index(booking_id)
        lo, hi = self.los.pop(i), self.his.pop(i)
        del self.ids[i], self.kinds[i]
        self._reach_from(i)
        return lo, hi

    def busy(self) -> tuple[Busy, ...]:
        """The intervals back as :class:`Busy` values."""
        return tuple(
            Busy(Interval.from_seconds(lo, hi), kind, bid)
            for lo, hi, kind, bid in zip(self.los, self.his, self.kinds, self.ids, strict=True)
        )


def hosts_by_class(hosts: Sequence[HostTimeline]) -> dict[HostClass, list[HostTimeline]]:
    """Group host timelines by their class, keeping the given order inside each class."""
    grouped: dict[HostClass, list[HostTimeline]] = {}
    for host in hosts:
        grouped.setdefault(host.host_class, []).append(host)
    return grouped


__all__ = [
    "OPEN_GAP",
    "Binding",
    "Busy",
    "BusyKind",
    "Demand",
    "HostClass",
    "HostSlots",
    "HostTimeline",
    "Interval",
    "Move",
    "Option",
    "from_seconds",
    "hosts_by_class",
    "to_seconds",
]
