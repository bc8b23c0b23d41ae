"""Admission on one class calendar: free-host counting, occupancy, earliest start, profile."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.admission import ClassCalendar, Verdict
from marketplace.errors import InvalidInput, NotFound
from marketplace.matching import Busy, BusyKind, HostClass, HostTimeline, Interval

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
C = HostClass("ams1", "gpu8")
H = 3600


def iv(a: float, b: float) -> Interval:
    return Interval(T0 + dt.timedelta(hours=a), T0 + dt.timedelta(hours=b))


def at(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def booking(a: float, b: float, bid: str) -> Busy:
    return Busy(iv(a, b), BusyKind.BOOKING, bid)


@st.composite
def calendars(draw: st.DrawFn, max_hosts: int = 4) -> ClassCalendar:
    """A class of 1..max_hosts hosts, each with non-overlapping hour-grid bookings/maintenance."""
    n = draw(st.integers(1, max_hosts))
    hosts = []
    serial = 0
    for h in range(n):
        cuts = sorted(draw(st.sets(st.integers(0, 24), max_size=8)))
        busy = []
        for a, b in zip(cuts[::2], cuts[1::2], strict=False):
            serial += 1
            if draw(st.integers(0, 5)) == 0:
                busy.append(Busy(iv(a, b), BusyKind.MAINTENANCE))
            else:
                busy.append(booking(a, b, f"b{serial}"))
        hosts.append(HostTimeline(f"h{h}", C, tuple(busy)))
    return ClassCalendar(C, hosts)


windows = st.tuples(st.integers(0, 23), st.integers(1, 12)).map(lambda t: iv(t[0], t[0] + t[1]))


def busy_at(cal: ClassCalendar, t: int) -> int:
    """Hosts taken at second ``t``, by brute force."""
    return sum(any(lo <= t < hi for lo, hi in zip(h.los, h.his, strict=True)) for h in cal.hosts)


def free_brute(cal: ClassCalendar, w: Interval) -> set[str]:
    return {
        h.host_id
        for h in cal.hosts
        if all(hi <= w.lo or lo >= w.hi for lo, hi in zip(h.los, h.his, strict=True))
    }


def test_staggered_bookings_are_not_admitted_by_occupancy_alone() -> None:
    # peak occupancy is 1 of 3, yet no host is free for the whole window
    cal = ClassCalendar(
        C,
        [
            HostTimeline("h1", C, (booking(0, 1, "a"),)),
            HostTimeline("h2", C, (booking(1, 2, "b"),)),
            HostTimeline("h3", C, (booking(2, 3, "c"),)),
        ],
    )
    adm = cal.admit(1, iv(0, 3))
    assert adm.verdict is Verdict.REPACK
    assert adm.peak_busy == 1
    assert not adm.admitted
    assert cal.admit(3, iv(0, 3)).verdict is Verdict.REJECT
    assert cal.admit(2, iv(3, 4)).free_host_ids == ("h1", "h2", "h3")


def test_adjacent_half_open_intervals_do_not_overlap() -> None:
    cal = ClassCalendar(C, [HostTimeline("h1", C, (booking(0, 1, "a"), booking(2, 3, "b")))])
    assert cal.admit(1, iv(1, 2)).admitted
    assert not cal.admit(1, iv(0.5, 2)).admitted


def test_maintenance_overlapping_a_booking_counts_once() -> None:
    cal = ClassCalendar(
        C,
        [
            HostTimeline("h1", C, (booking(0, 4, "a"), Busy(iv(1, 2), BusyKind.MAINTENANCE))),
            HostTimeline("h2", C, ()),
        ],
    )
    prof = cal.capacity_profile(iv(0, 5))
    rows = list(zip(prof.start, prof.free, prof.reserved, prof.maintenance, strict=True))
    assert rows == [(at(0), 1, 1, 0), (at(1), 1, 0, 1), (at(2), 1, 1, 0), (at(4), 2, 0, 0)]
    assert prof.end[-1] == at(5)
    assert cal.peak_busy(iv(0, 5)) == 1


def test_calendar_refuses_foreign_hosts_and_double_bookings() -> None:
    with pytest.raises(InvalidInput, match="not in"):
        ClassCalendar(C, [HostTimeline("x", HostClass("fra1", "gpu8"))])
    cal = ClassCalendar(C, [HostTimeline("h1", C, (booking(0, 2, "a"),))])
    with pytest.raises(InvalidInput, match="not free"):
        cal.book("h1", iv(1, 3), "b")
    with pytest.raises(NotFound):
        cal.book("h9", iv(1, 3), "b")
    cal.book("h1", iv(2, 3), "b")
    cal.release("a")
    assert cal.admit(1, iv(0, 2)).admitted


def test_naive_datetimes_and_empty_intervals_are_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        Interval(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    with pytest.raises(InvalidInput, match="after start"):
        iv(2, 2)


def test_sub_second_times_round_outward() -> None:
    w = Interval(T0 + dt.timedelta(microseconds=500), T0 + dt.timedelta(seconds=1, microseconds=1))
    assert w.start == T0
    assert w.end == T0 + dt.timedelta(seconds=2)


def test_earliest_start_waits_for_enough_hosts() -> None:
    cal = ClassCalendar(
        C,
        [
            HostTimeline("h1", C, (booking(0, 2, "a"),)),
            HostTimeline("h2", C, (booking(1, 5, "b"),)),
            HostTimeline("h3", C, (booking(3, 4, "c"),)),
        ],
    )
    d = dt.timedelta(hours=1)
    assert cal.earliest_start(1, d, at(0), at(10)) == at(0)
    assert cal.earliest_start(2, d, at(0), at(10)) == at(0)  # h2 before its booking, h3
    assert cal.earliest_start(2, d, at(1), at(10)) == at(2)
    assert cal.earliest_start(3, d, at(0), at(10)) == at(5)
    assert cal.earliest_start(3, d, at(0), at(4)) is None
    assert cal.earliest_start(2, dt.timedelta(hours=2), at(0), at(10)) == at(4)


@settings(max_examples=150, deadline=None)
@given(cal=calendars(), w=windows, count=st.integers(1, 4))
def test_admission_never_over_commits(cal: ClassCalendar, w: Interval, count: int) -> None:
    adm = cal.admit(count, w)
    truly_free = free_brute(cal, w)
    assert set(adm.free_host_ids) == truly_free
    assert adm.admitted == (len(truly_free) >= count)
    if adm.verdict is Verdict.REJECT:
        # proof of impossibility: some instant has too many hosts taken
        assert any(busy_at(cal, t) > cal.total - count for t in range(w.lo, w.hi, H))
    if adm.peak_busy is not None:
        assert adm.peak_busy == max(busy_at(cal, t) for t in range(w.lo, w.hi, H))


@settings(max_examples=150, deadline=None)
@given(cal=calendars(), w=windows)
def test_capacity_profile_matches_brute_force(cal: ClassCalendar, w: Interval) -> None:
    prof = cal.capacity_profile(w)
    assert prof.start[0] == w.start and prof.end[-1] == w.end
    for start, end, tot, free, res, mnt in zip(*prof.columns().values(), strict=True):
        assert start < end
        assert free + res + mnt == tot == cal.total
        t = int(start.timestamp())
        assert res + mnt == busy_at(cal, t)
    for t in range(w.lo, w.hi, H):
        step = max(i for i, s in enumerate(prof.start) if s.timestamp() <= t)
        assert prof.free[step] == cal.total - busy_at(cal, t)


@settings(max_examples=150, deadline=None)
@given(
    cal=calendars(),
    count=st.integers(1, 4),
    hours=st.integers(1, 6),
    first=st.integers(0, 20),
    span=st.integers(0, 20),
)
def test_earliest_start_is_earliest_and_feasible(
    cal: ClassCalendar, count: int, hours: int, first: int, span: int
) -> None:
    d = dt.timedelta(hours=hours)
    got = cal.earliest_start(count, d, at(first), at(first + span))
    # on the hour grid every feasible start can slide back to an hour boundary
    feasible = [
        t for t in range(first, first + span + 1) if len(free_brute(cal, iv(t, t + hours))) >= count
    ]
    if not feasible:
        assert got is None
    else:
        assert got == at(feasible[0])
