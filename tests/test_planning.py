"""The offline optimum: exact on tiny batches, never below an online policy, always bindable."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.admission import ClassCalendar
from marketplace.binding import apply, best_fit, first_fit, match, most_free_first
from marketplace.errors import NoCapacity
from marketplace.matching import Demand, HostClass, HostTimeline, Interval, Option
from marketplace.planning import demand_value, plan

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
A = HostClass("ams1", "gpu8")
B = HostClass("ams1", "gpu4")
H = 3600


def iv(a: float, b: float) -> Interval:
    return Interval(T0 + dt.timedelta(hours=a), T0 + dt.timedelta(hours=b))


@st.composite
def batches(draw: st.DrawFn, max_demands: int, partial: bool = True) -> list[Demand]:
    demands = []
    for r in range(draw(st.integers(1, max_demands))):
        start = draw(st.integers(0, 12))
        length = draw(st.integers(1, 6))
        classes = draw(st.sampled_from([(A,), (B,), (A, B), (B, A)]))
        options = tuple(Option(c, draw(st.integers(1, 2))) for c in classes)
        fraction = draw(st.sampled_from([1.0, 0.5])) if partial else 1.0
        demands.append(Demand(options, iv(start, start + length), fraction, request_id=f"r{r}"))
    return demands


capacities = st.fixed_dictionaries({A: st.integers(0, 2), B: st.integers(1, 3)})


def brute_force(demands: list[Demand], capacity: dict[HostClass, int]) -> float:
    choices = []
    for d in demands:
        ways: list[tuple[HostClass, int] | None] = [None]
        for o in d.options:
            ways += [(o.host_class, n) for n in range(d.min_count(o), o.count + 1)]
        choices.append(ways)
    best = 0.0
    for pick in itertools.product(*choices):
        ok = True
        for t in range(0, 20 * H, H):
            use = {A: 0, B: 0}
            for d, way in zip(demands, pick, strict=True):
                if way is not None and d.window.lo - iv(0, 1).lo <= t < d.window.hi - iv(0, 1).lo:
                    use[way[0]] += way[1]
            if any(use[c] > capacity[c] for c in use):
                ok = False
                break
        if ok:
            value = sum(demand_value(d, w[1]) for d, w in zip(demands, pick, strict=True) if w)
            best = max(best, value)
    return best


def online_value(demands: list[Demand], capacity: dict[HostClass, int], how: str) -> float:
    cals = {
        c: ClassCalendar(c, [HostTimeline(f"{c.sku}-{i}", c) for i in range(n)])
        for c, n in capacity.items()
    }
    total = 0.0
    for k, d in enumerate(sorted(demands, key=lambda d: d.window.lo)):
        try:
            if how == "most_free":
                got = match(d, cals, order=most_free_first)
            else:
                got = match(d, cals, policy=first_fit if how == "first" else best_fit)
        except NoCapacity:
            continue
        apply(cals[got.host_class], got, [f"{k}.{i}" for i in range(len(got.host_ids))])
        total += demand_value(d, len(got.host_ids))
    return total


def test_plan_prefers_the_longer_of_two_clashing_demands() -> None:
    short = Demand.of(1, [A], iv(0, 2), request_id="short")
    long = Demand.of(1, [A], iv(1, 6), request_id="long")
    later = Demand.of(1, [A], iv(6, 7), request_id="later")
    got = plan([short, long, later], {A: 1})
    assert sorted(a.request_id for a in got.accepted) == ["later", "long"]
    assert got.objective == pytest.approx(6.0)
    assert got.bound == pytest.approx(6.0)
    assert got.gap == pytest.approx(0.0)


def test_plan_uses_the_second_class_and_partial_counts() -> None:
    d1 = Demand((Option(A, 2), Option(B, 4)), iv(0, 1), request_id="d1")
    d2 = Demand.of(3, [A], iv(0, 1), request_id="d2", min_count=1)
    got = plan([d1, d2], {A: 2, B: 4})
    by_id = {a.request_id: a for a in got.accepted}
    assert by_id["d1"].option.host_class == B and by_id["d1"].hosts == 4
    assert by_id["d2"].hosts == 2
    assert got.objective == pytest.approx(6.0)


def test_classes_without_capacity_are_ignored() -> None:
    got = plan([Demand.of(1, [HostClass("x", "y")], iv(0, 1))], {A: 1})
    assert got.accepted == () and got.objective == 0.0


@settings(max_examples=40, deadline=None)
@given(demands=batches(4), capacity=capacities)
def test_plan_equals_brute_force_on_tiny_batches(
    demands: list[Demand], capacity: dict[HostClass, int]
) -> None:
    got = plan(demands, capacity, mip_gap=0.0)
    assert got.objective == pytest.approx(brute_force(demands, capacity), abs=1e-6)
    assert got.bound == pytest.approx(got.objective, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(demands=batches(25, partial=False), capacity=capacities)
def test_plan_beats_online_policies_and_is_bindable(
    demands: list[Demand], capacity: dict[HostClass, int]
) -> None:
    got = plan(demands, capacity, mip_gap=0.0)
    for how in ("first", "best", "most_free"):
        assert got.objective >= online_value(demands, capacity, how) - 1e-6
    # the plan's counts are a host-level binding: book in start order, first fit never fails
    cals = {
        c: ClassCalendar(c, [HostTimeline(f"{c.sku}-{i}", c) for i in range(n)])
        for c, n in capacity.items()
    }
    for a in sorted(got.accepted, key=lambda a: demands[a.index].window.lo):
        d = demands[a.index]
        one = Demand((Option(a.option.host_class, a.hosts),), d.window, request_id=d.request_id)
        binding = match(one, cals, policy=first_fit)
        apply(cals[binding.host_class], binding, [f"{a.index}.{i}" for i in range(a.hosts)])
