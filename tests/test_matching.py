"""Binding policies, re-packing and the admit-then-bind path of ``match``."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.admission import ClassCalendar, Verdict
from marketplace.binding import (
    _repack_targeted,
    apply,
    best_fit,
    bind,
    first_fit,
    in_preference_order,
    match,
    most_free_first,
    random_fit,
    repack,
    smallest_first,
)
from marketplace.errors import InvalidInput, NoCapacity
from marketplace.matching import (
    Binding,
    Busy,
    BusyKind,
    Demand,
    HostClass,
    HostTimeline,
    Interval,
    Option,
)

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
A = HostClass("ams1", "gpu8")
B = HostClass("ams1", "gpu4")
H = 3600


def iv(a: float, b: float) -> Interval:
    return Interval(T0 + dt.timedelta(hours=a), T0 + dt.timedelta(hours=b))


def booking(a: float, b: float, bid: str) -> Busy:
    return Busy(iv(a, b), BusyKind.BOOKING, bid)


def snapshot(cal: ClassCalendar) -> dict[str, tuple[str, int, int]]:
    """Every booking: id -> (host, lo, hi)."""
    return {
        bid: (h.host_id, lo, hi)
        for h in cal.hosts
        for bid, lo, hi in zip(h.ids, h.los, h.his, strict=True)
        if bid is not None
    }


def assert_consistent(cal: ClassCalendar) -> None:
    """No host has two overlapping intervals involving a booking."""
    for h in cal.hosts:
        items = list(zip(h.los, h.his, h.kinds, strict=True))
        for i, (lo1, hi1, k1) in enumerate(items):
            for lo2, hi2, k2 in items[i + 1 :]:
                if BusyKind.BOOKING in (k1, k2):
                    assert hi1 <= lo2 or hi2 <= lo1, f"{h.host_id} double booked"


@st.composite
def class_calendars(draw: st.DrawFn, max_hosts: int = 4) -> ClassCalendar:
    n = draw(st.integers(1, max_hosts))
    hosts, serial = [], 0
    for h in range(n):
        cuts = sorted(draw(st.sets(st.integers(0, 24), max_size=8)))
        busy = []
        for a, b in zip(cuts[::2], cuts[1::2], strict=False):
            serial += 1
            kind = BusyKind.MAINTENANCE if draw(st.integers(0, 6)) == 0 else BusyKind.BOOKING
            busy.append(
                Busy(iv(a, b), kind, None if kind is BusyKind.MAINTENANCE else f"b{serial}")
            )
        hosts.append(HostTimeline(f"h{h}", A, tuple(busy)))
    return ClassCalendar(A, hosts)


windows = st.tuples(st.integers(0, 23), st.integers(1, 10)).map(lambda t: iv(t[0], t[0] + t[1]))


def test_best_fit_takes_the_tightest_gap() -> None:
    cal = ClassCalendar(
        A,
        [
            HostTimeline("wide", A, (booking(0, 1, "a"), booking(9, 10, "b"))),
            HostTimeline("empty", A),
            HostTimeline("tight", A, (booking(0, 2, "c"), booking(5, 6, "d"))),
        ],
    )
    free = cal.free_slots(iv(2, 5).lo, iv(2, 5).hi)
    assert [h.host_id for h in best_fit(free, 1, iv(2, 5).lo, iv(2, 5).hi)] == ["tight"]
    assert [h.host_id for h in best_fit(free, 2, iv(2, 5).lo, iv(2, 5).hi)] == ["tight", "wide"]
    assert [h.host_id for h in first_fit(free, 1, 0, 0)] == ["wide"]
    picked = random_fit(random.Random(1))(free, 3, 0, 0)
    assert sorted(h.host_id for h in picked) == ["empty", "tight", "wide"]


def test_match_follows_preference_then_falls_back() -> None:
    cals = {
        A: ClassCalendar(A, [HostTimeline("a1", A, (booking(0, 5, "x"),))]),
        B: ClassCalendar(B, [HostTimeline("b1", B), HostTimeline("b2", B)]),
    }
    demand = Demand((Option(A, 1), Option(B, 2)), iv(1, 3), request_id="job")
    got = match(demand, cals, order=in_preference_order)
    assert got.host_class == B and sorted(got.host_ids) == ["b1", "b2"]
    assert match(Demand.of(1, [A, B], iv(6, 7)), cals, order=in_preference_order).host_class == A
    assert match(Demand.of(1, [A, B], iv(6, 7)), cals, order=most_free_first).host_class == B
    smallest = smallest_first({A: 8, B: 4})
    assert match(Demand.of(1, [A, B], iv(6, 7)), cals, order=smallest).host_class == B


def test_partial_demand_gets_what_is_free() -> None:
    cal = ClassCalendar(A, [HostTimeline("a1", A), HostTimeline("a2", A, (booking(0, 9, "x"),))])
    got = match(Demand.of(2, [A], iv(1, 2), min_count=1), {A: cal})
    assert got.host_ids == ("a1",)
    with pytest.raises(NoCapacity, match="ams1/gpu8: 1 free"):
        match(Demand.of(2, [A], iv(1, 2)), {A: cal})


def test_repack_moves_only_bookings_that_have_not_started() -> None:
    cal = ClassCalendar(
        A,
        [
            HostTimeline("h1", A, (booking(0, 1, "a"),)),
            HostTimeline("h2", A, (booking(1, 2, "b"),)),
            HostTimeline("h3", A, (booking(2, 3, "c"),)),
        ],
    )
    assert cal.admit(1, iv(0, 3)).verdict is Verdict.REPACK
    before = snapshot(cal)
    moves = repack(cal, 1, iv(0, 3), now=iv(0, 1).lo)
    assert moves and all(before[m.booking_id][0] == m.from_host for m in moves)
    assert snapshot(cal) == before  # a query: the calendar is unchanged
    # once everything has started, nothing may move
    assert repack(cal, 1, iv(0, 3), now=iv(2.5, 3).lo) is None
    with pytest.raises(NoCapacity):
        match(Demand.of(1, [A], iv(0, 3)), {A: cal}, now=iv(2.5, 3).lo)
    got = match(Demand.of(1, [A], iv(0, 3)), {A: cal}, now=iv(0, 1).lo)
    apply(cal, got, ["new"])
    assert_consistent(cal)


def test_repack_falls_back_to_a_full_replan() -> None:
    # no host can be emptied by moving only its own bookings where they fit as things stand
    cal = ClassCalendar(
        A,
        [
            HostTimeline("h0", A, (booking(0, 2, "a"), booking(3, 6, "b"))),
            HostTimeline("h1", A, (booking(0, 1, "c"), booking(2, 7, "d"))),
            HostTimeline("h2", A, (booking(1, 3, "e"), booking(7, 8, "f"))),
        ],
    )
    assert _repack_targeted(cal, 1, iv(0, 8), 0, []) is None
    moves = repack(cal, 1, iv(0, 8), now=0)
    assert moves is not None
    got = bind(cal, 1, iv(0, 8), moves=moves)
    apply(cal, got, ["new"])
    assert_consistent(cal)


@settings(max_examples=200, deadline=None)
@given(cal=class_calendars(), w=windows, count=st.integers(1, 3), now_h=st.integers(0, 24))
def test_a_binding_exists_whenever_admitted(
    cal: ClassCalendar, w: Interval, count: int, now_h: int
) -> None:
    now = iv(now_h, now_h + 1).lo
    before = snapshot(cal)
    adm = cal.admit(count, w)
    try:
        got = match(Demand.of(count, [A], w), {A: cal}, now=now)
    except NoCapacity:
        assert not adm.admitted
        return
    assert snapshot(cal) == before
    assert len(set(got.host_ids)) == count
    if adm.admitted:
        assert not got.moves
    for mv in got.moves:
        host, lo, hi = before[mv.booking_id]
        assert (host, lo, hi) == (mv.from_host, mv.interval.lo, mv.interval.hi)
        assert lo >= now, "a started booking was moved"
    apply(cal, got, [f"new{i}" for i in range(count)])
    assert_consistent(cal)
    after = snapshot(cal)
    assert set(after) == set(before) | {f"new{i}" for i in range(count)}
    for bid, (_, lo, hi) in before.items():
        assert after[bid][1:] == (lo, hi)


@settings(max_examples=200, deadline=None)
@given(cal=class_calendars(), w=windows)
def test_best_fit_choice_is_free_and_tightest(cal: ClassCalendar, w: Interval) -> None:
    free = cal.free_slots(w.lo, w.hi)
    if not free:
        return
    got = bind(cal, 1, w)
    host = cal.host(got.host_ids[0])
    assert host.is_free(w.lo, w.hi)
    assert sum(host.idle_gap(w.lo, w.hi)) == min(sum(h.idle_gap(w.lo, w.hi)) for h in free)


@settings(max_examples=60, deadline=None)
@given(
    n_hosts=st.integers(1, 4),
    jobs=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.integers(1, 3)), max_size=25),
    policy=st.sampled_from(["best", "first", "random"]),
)
def test_online_sequence_never_over_commits(
    n_hosts: int, jobs: list[tuple[int, int, int]], policy: str
) -> None:
    cal = ClassCalendar(A, [HostTimeline(f"h{i}", A) for i in range(n_hosts)])
    chooser = {"best": best_fit, "first": first_fit, "random": random_fit(random.Random(0))}
    # requests arrive in any order (advance bookings); "now" is the earliest start seen so far
    now = 0
    for k, (start, length, count) in enumerate(jobs):
        w = iv(start, start + length)
        now = max(now, iv(max(0, start - 6), start + 1).lo)
        try:
            got: Binding = match(
                Demand.of(count, [A], w), {A: cal}, policy=chooser[policy], now=now
            )
        except NoCapacity:
            continue
        apply(cal, got, [f"j{k}.{i}" for i in range(count)])
        assert_consistent(cal)
    for t in range(0, 40 * H, H):
        assert (
            sum(any(lo <= t < hi for lo, hi in zip(h.los, h.his, strict=True)) for h in cal.hosts)
            <= n_hosts
        )


def test_demand_names_every_problem() -> None:
    with pytest.raises(InvalidInput) as err:
        Demand((Option(A, 0), Option(A, 1)), iv(0, 1), min_fraction=0.0, request_id="job7")
    paths = [p.path for p in err.value.problems]
    assert paths == ["options[0].count", "options[1]", "min_fraction"]
    assert "demand job7" in str(err.value)


def test_relocate_swaps_bookings_as_a_set() -> None:
    cal = ClassCalendar(
        A,
        [
            HostTimeline("h1", A, (booking(0, 2, "a"),)),
            HostTimeline("h2", A, (booking(1, 3, "b"),)),
        ],
    )
    cal.relocate([("a", "h2"), ("b", "h1")])
    assert cal.host_of("a") == "h2" and cal.host_of("b") == "h1"
    with pytest.raises(InvalidInput):
        cal.move("a", "h1")  # b is there now
    assert snapshot(cal) == {
        "a": ("h2", iv(0, 2).lo, iv(0, 2).hi),
        "b": ("h1", iv(1, 3).lo, iv(1, 3).hi),
    }


@settings(max_examples=200, deadline=None)
@given(cal=class_calendars(), w=windows, count=st.integers(1, 3), now_h=st.integers(0, 24))
def test_repack_keeps_every_booking_on_a_free_host_of_its_class(
    cal: ClassCalendar, w: Interval, count: int, now_h: int
) -> None:
    now = iv(now_h, now_h + 1).lo
    before = snapshot(cal)
    moves = repack(cal, count, w, now)
    assert snapshot(cal) == before
    if moves is None:
        return
    assert len({m.booking_id for m in moves}) == len(moves)
    for m in moves:
        assert m.to_host != m.from_host and before[m.booking_id][1] >= now
    cal.relocate([(m.booking_id, m.to_host) for m in moves])
    assert_consistent(cal)
    assert {bid: span for bid, (_, *span) in snapshot(cal).items()} == {
        bid: span for bid, (_, *span) in before.items()
    }
    assert len(cal.free_slots(w.lo, w.hi)) >= count
