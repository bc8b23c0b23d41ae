"""Admission: can N hosts of one class be promised for a window, and when could they be?

A :class:`ClassCalendar` holds the busy intervals of every host of one (site, SKU) class in
sorted arrays of epoch seconds, so each question is a few binary searches per host.

The admission rule (whole-machine bookings on per-host timelines):

1. *Admit* when at least N hosts are each free for the **whole** window. The store can then
   book N of them as they stand, so a yes from admission always has a binding.
2. *Reject* when the class occupancy already proves it impossible: if at some instant of the
   window more than ``total - N`` hosts are taken, no re-packing can help, because every booking
   active at that instant still needs its own host whichever host it is moved to.
3. Otherwise the answer is *only after re-packing*: hosts are busy at different instants, never
   too many at once, but no N hosts are free throughout. :func:`marketplace.binding.repack` then
   looks for moves of bookings that have not started; the request is admitted only when such
   moves are found, so again a yes always comes with a binding.

Counting occupancy alone (rule 2 as a yes-rule) would over-promise: three hosts each busy for a
different third of the window have peak occupancy one, yet none is free for the whole window.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from marketplace.errors import InvalidInput, NotFound, Problem
from marketplace.matching import (
    BusyKind,
    HostClass,
    HostSlots,
    HostTimeline,
    Interval,
    from_seconds,
    hosts_by_class,
    to_seconds,
)


class Verdict(Enum):
    """Admission's three answers (see the module docstring for the rule)."""

    ADMIT = "admit"
    REJECT = "reject"
    REPACK = "only after re-packing"


@dataclass(frozen=True, slots=True)
class Admission:
    """Admission's answer for ``count`` hosts of ``host_class`` during ``window``."""

    host_class: HostClass
    window: Interval
    count: int
    verdict: Verdict
    #: Hosts free for the whole window, in calendar order.
    free_host_ids: tuple[str, ...]
    #: Most hosts taken at one instant of the window (computed only when not admitted).
    peak_busy: int | None = None

    @property
    def admitted(self) -> bool:
        """True when ``count`` hosts are free as they stand."""
        return self.verdict is Verdict.ADMIT


@dataclass(frozen=True, slots=True)
class CapacityProfile:
    """Capacity of one class over time as a step function, one row per step, plain lists.

    ``pandas.DataFrame(profile.columns())`` gives columns ``start``, ``end`` (aware UTC),
    ``total``, ``free``, ``reserved``, ``maintenance`` (host counts). A host under maintenance
    counts as maintenance even if a booking overlaps it.
    """

    host_class: HostClass
    start: list[dt.datetime]
    end: list[dt.datetime]
    total: list[int]
    free: list[int]
    reserved: list[int]
    maintenance: list[int]

    def columns(self) -> dict[str, list[dt.datetime] | list[int]]:
        """The profile as a mapping of column name to list."""
        return {
            "start": self.start,
            "end": self.end,
            "total": self.total,
            "free": self.free,
            "reserved": self.reserved,
            "maintenance": self.maintenance,
        }


class ClassCalendar:
    """Every host of one class with its busy intervals: the state admission and binding read.

    Built from the store's :class:`HostTimeline` values for one request, or kept in memory
    and updated with :meth:`book` / :meth:`release` / :meth:`move` (benchmarks, simulations).
    """

    def __init__(self, host_class: HostClass, hosts: Iterable[HostTimeline]) -> None:
        self.host_class = host_class
        self.hosts: list[HostSlots] = []
        self._index: dict[str, int] = {}
        problems: list[Problem] = []
        for host in hosts:
            if host.host_class != host_class:
                problems.append(
                    Problem("host_class", f"host {host.host_id} is not in {host_class}", host)
                )
                continue
            if host.host_id in self._index:
                problems.append(Problem("host_id", "host listed twice", host.host_id))
                continue
            self._index[host.host_id] = len(self.hosts)
            self.hosts.append(HostSlots(host.host_id, host.busy))
        if problems:
            raise InvalidInput(problems, source=f"calendar of {host_class}")
        self._booking_host: dict[str, int] = {}
        self._index_bookings()

    @classmethod
    def of_slots(cls, host_class: HostClass, hosts: Iterable[HostSlots]) -> ClassCalendar:
        """A calendar of ``host_class`` from hosts already in slot form, which it then owns (the
        store builds them straight from rows with :meth:`HostSlots.of_seconds`)."""
        calendar = cls(host_class, ())
        for slots in hosts:
            if slots.host_id in calendar._index:
                raise InvalidInput(
                    [Problem("host_id", "host listed twice", slots.host_id)],
                    source=f"calendar of {host_class}",
                )
            calendar._index[slots.host_id] = len(calendar.hosts)
            calendar.hosts.append(slots)
        calendar._index_bookings()
        return calendar

    def _index_bookings(self) -> None:
        for i, slots in enumerate(self.hosts):
            for bid in slots.ids:
                if bid is not None:
                    self._booking_host[bid] = i

    @property
    def total(self) -> int:
        """Number of hosts in the class."""
        return len(self.hosts)

    def host(self, host_id: str) -> HostSlots:
        """The slots of one host (``NotFound`` if it is not in this class)."""
        try:
            return self.hosts[self._index[host_id]]
        except KeyError:
            raise NotFound(f"host {host_id!r} is not in class {self.host_class}") from None

    def free_slots(self, lo: int, hi: int) -> list[HostSlots]:
        """Hosts free for the whole of ``[lo, hi)`` (seconds), in calendar order."""
        return [h for h in self.hosts if h.is_free(lo, hi)]

    def admit(self, count: int, window: Interval) -> Admission:
        """Decide whether ``count`` hosts can be promised for ``window`` (rule in module doc)."""
        if count < 1:
            raise InvalidInput([Problem("count", "must be >= 1", count)])
        free = tuple(h.host_id for h in self.free_slots(window.lo, window.hi))
        if len(free) >= count:
            return Admission(self.host_class, window, count, Verdict.ADMIT, free)
        peak = self.peak_busy(window)
        verdict = Verdict.REJECT if self.total - peak < count else Verdict.REPACK
        return Admission(self.host_class, window, count, verdict, free, peak)

    def peak_busy(self, window: Interval) -> int:
        """Most hosts taken (booked or in maintenance) at any one instant of ``window``."""
        _, counts = self._sweep(window.lo, window.hi)
        return max((r + m for _, r, m in counts), default=0)

    def capacity_profile(self, window: Interval) -> CapacityProfile:
        """Free, reserved and maintenance host counts over ``window`` as a step function."""
        times, counts = self._sweep(window.lo, window.hi)
        ends = [*times[1:], window.hi]
        total = self.total
        return CapacityProfile(
            host_class=self.host_class,
            start=[from_seconds(t) for t in times],
            end=[from_seconds(t) for t in ends],
            total=[total] * len(times),
            free=[total - r - m for _, r, m in counts],
            reserved=[r for _, r, _ in counts],
            maintenance=[m for _, _, m in counts],
        )

    def _sweep(self, lo: int, hi: int) -> tuple[list[int], list[tuple[int, int, int]]]:
        """Sweep line over busy starts and ends clipped to ``[lo, hi)``.

        Returns the step start times and, per step, ``(time, reserved, maintenance)``. Each
        host is counted once per instant, in its worst state (maintenance over booking).
        """
        events: list[tuple[int, int, int, int]] = []  # (time, host, kind 0/1, +1/-1)
        for h, slots in enumerate(self.hosts):
            i = bisect.bisect_left(slots.los, hi)
            for j in range(i):
                a, b = slots.los[j], slots.his[j]
                if b <= lo:
                    continue
                kind = 1 if slots.kinds[j] is BusyKind.MAINTENANCE else 0
                events.append((max(a, lo), h, kind, 1))
                if b < hi:
                    events.append((b, h, kind, -1))
        events.sort()
        depth: dict[tuple[int, int], int] = {}
        state: dict[int, int] = {}  # host -> 0 free, 1 reserved, 2 maintenance
        reserved = maintenance = 0
        times: list[int] = [lo]
        counts: list[tuple[int, int, int]] = [(lo, 0, 0)]
        k = 0
        while k < len(events):
            t = events[k][0]
            while k < len(events) and events[k][0] == t:
                _, h, kind, d = events[k]
                depth[h, kind] = depth.get((h, kind), 0) + d
                old = state.get(h, 0)
                new = 2 if depth.get((h, 1), 0) > 0 else 1 if depth.get((h, 0), 0) > 0 else 0
                if new != old:
                    reserved += (new == 1) - (old == 1)
                    maintenance += (new == 2) - (old == 2)
                    state[h] = new
                k += 1
            if t == times[-1]:
                counts[-1] = (t, reserved, maintenance)
            elif (reserved, maintenance) != counts[-1][1:]:
                times.append(t)
                counts.append((t, reserved, maintenance))
        return times, counts

    def earliest_start(
        self,
        count: int,
        duration: dt.timedelta,
        earliest: dt.datetime,
        latest: dt.datetime,
    ) -> dt.datetime | None:
        """The earliest start in ``[earliest, latest]`` with ``count`` hosts free for ``duration``.

        Hosts as they stand (no re-packing); None when no start in the range works. Each host
        contributes the starts its free gaps allow; a sweep finds the first instant covered by
        ``count`` hosts.
        """
        need = int(-(-duration.total_seconds() // 1))
        if need <= 0 or count < 1:
            raise InvalidInput([Problem("duration/count", "must be positive", (duration, count))])
        first = to_seconds(earliest, up=True, path="earliest")
        last = to_seconds(latest, path="latest")
        events: list[tuple[int, int]] = []
        for slots in self.hosts:
            for a, b in _free_gaps(slots):
                s, e = max(a, first), min(b - need, last)
                if s <= e:
                    events.append((s, 1))
                    events.append((e + 1, -1))
        events.sort()  # at a tie, -1 sorts first: a range ending there no longer counts
        covered = 0
        for k, (t, d) in enumerate(events):
            covered += d
            if covered >= count and (k + 1 == len(events) or events[k + 1][0] != t):
                return from_seconds(t)
        return None

    def book(self, host_id: str, window: Interval, booking_id: str) -> None:
        """Record a booking (``InvalidInput`` if the host is not free or the id is taken)."""
        slots = self.host(host_id)
        if booking_id in self._booking_host:
            raise InvalidInput([Problem("booking_id", "already booked", booking_id)])
        if not slots.is_free(window.lo, window.hi):
            raise InvalidInput([Problem("window", f"host {host_id} is not free for it", window)])
        slots.add(window.lo, window.hi, booking_id, BusyKind.BOOKING)
        self._booking_host[booking_id] = self._index[host_id]

    def block(self, host_id: str, window: Interval) -> None:
        """Record maintenance on a host (it may overlap bookings, which then need moving)."""
        self.host(host_id).add(window.lo, window.hi, None, BusyKind.MAINTENANCE)

    def release(self, booking_id: str) -> None:
        """Forget a booking (cancelled or ended)."""
        h = self._booking_host.pop(booking_id, None)
        if h is None:
            raise NotFound(f"booking {booking_id!r} is not in class {self.host_class}")
        self.hosts[h].remove(booking_id)

    def host_of(self, booking_id: str) -> str:
        """The host a booking is on."""
        h = self._booking_host.get(booking_id)
        if h is None:
            raise NotFound(f"booking {booking_id!r} is not in class {self.host_class}")
        return self.hosts[h].host_id

    def move(self, booking_id: str, to_host: str) -> None:
        """Move a booking to another host of the class, keeping its window."""
        self.relocate([(booking_id, to_host)])

    def relocate(self, moves: Sequence[tuple[str, str]]) -> None:
        """Move several bookings at once: ``(booking_id, to_host)`` pairs, all or none.

        A re-pack may swap bookings between hosts, so moves are applied as a set (all taken
        off, then all put back) rather than one after another.
        """
        targets = [(bid, self.host(to)) for bid, to in moves]
        taken: list[tuple[str, HostSlots, int, int]] = []
        for bid, _ in moves:
            h = self._booking_host.get(bid)
            if h is None:
                raise NotFound(f"booking {bid!r} is not in class {self.host_class}")
            lo, hi = self.hosts[h].remove(bid)
            taken.append((bid, self.hosts[h], lo, hi))
        placed: list[tuple[str, HostSlots]] = []
        for (bid, target), (_, _, lo, hi) in zip(targets, taken, strict=True):
            if not target.is_free(lo, hi):
                for pid, p in placed:
                    p.remove(pid)
                for tid, source, tlo, thi in taken:
                    source.add(tlo, thi, tid, BusyKind.BOOKING)
                raise InvalidInput(
                    [Problem("to_host", f"not free for booking {bid}", target.host_id)]
                )
            target.add(lo, hi, bid, BusyKind.BOOKING)
            placed.append((bid, target))
        for bid, target in targets:
            self._booking_host[bid] = self._index[target.host_id]

    def timelines(self) -> list[HostTimeline]:
        """The calendar back as host timelines."""
        return [HostTimeline(h.host_id, self.host_class, h.busy()) for h in self.hosts]


def _free_gaps(slots: HostSlots) -> list[tuple[int, int]]:
    """Maximal free gaps ``[a, b)`` of one host (open ends as +/- a large number)."""
    gaps: list[tuple[int, int]] = []
    end = -(2**62)
    for lo, hi in zip(slots.los, slots.his, strict=True):
        if lo > end:
            gaps.append((end, lo))
        end = max(end, hi)
    gaps.append((end, 2**62))
    return gaps


def calendars(
    hosts: Sequence[HostTimeline],
) -> dict[HostClass, ClassCalendar]:
    """One calendar per class present in ``hosts``."""
    return {c: ClassCalendar(c, hs) for c, hs in hosts_by_class(hosts).items()}


__all__ = [
    "Admission",
    "CapacityProfile",
    "ClassCalendar",
    "Verdict",
    "calendars",
]
