"""Planning: the offline optimum of a batch of demands, a time-point MIP solved by HiGHS.

Given every demand of a batch up front (windows fixed) and the number of hosts of each class,
choose which demands to accept, in which class and with how many hosts, to maximise the value
accepted (host-hours times ``value_per_host_hour``; host-hours by default).

Model, for demand ``r`` and acceptable option ``o`` (class ``c``, ``k`` hosts):

- ``y[r,o]`` binary: ``r`` is served by ``o``; ``sum_o y[r,o] <= 1``;
- all-or-nothing demands take ``k * y[r,o]`` hosts; a demand accepting fewer (``min_fraction``)
  has an integer ``n[r,o]`` with ``min * y <= n <= k * y``;
- capacity: for each class ``c`` and each instant ``t``, the hosts taken by demands active at
  ``t`` are at most ``capacity[c]``. Load only rises at a start, so instants that are starts
  suffice; and of a run of starts with no end between them only the last matters (its active
  set contains the others'), which keeps one row per *maximal* set of overlapping demands.

Because hosts of a class are interchangeable and intervals are half-open, a plan within these
counts always has a host-level binding (interval graphs are perfect: assigning by start time
never needs more hosts than the largest overlap), so the optimum is the true offline optimum
for whole-machine bookings on empty hosts, not only a bound.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketplace.errors import HwmarketError, InvalidInput, Problem
from marketplace.matching import Demand, HostClass, Option


class PlanningError(HwmarketError):
    """The MIP solver failed for a reason other than running out of time."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """One accepted demand: its index in the batch, the class and the number of hosts."""

    index: int
    request_id: str
    option: Option
    hosts: int
    value: float


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: accepted demands, their value and the solver's upper bound.

    ``bound`` is HiGHS's dual bound: no plan can be worth more. ``gap`` is
    ``(bound - objective) / bound`` (0 when proven optimal).
    """

    accepted: tuple[Accepted, ...]
    objective: float
    bound: float
    status: str
    seconds: float
    rows: int
    columns: int

    @property
    def gap(self) -> float:
        """Relative distance between the plan's value and the bound."""
        return 0.0 if self.bound <= 0 else max(0.0, (self.bound - self.objective) / self.bound)


def demand_value(demand: Demand, hosts: int) -> float:
    """Value of serving ``demand`` with ``hosts`` hosts for its whole window."""
    return hosts * demand.window.hours * demand.value_per_host_hour


def plan(
    demands: Sequence[Demand],
    capacity: Mapping[HostClass, int],
    *,
    time_limit: float = 60.0,
    mip_gap: float = 1e-4,
    threads: int = 1,
) -> Plan:
    """The best set of demands to accept given ``capacity`` hosts per class (empty hosts).

    Stops at ``time_limit`` seconds or when within ``mip_gap`` (relative) of the bound, and
    reports both the value reached and the bound. Options naming classes absent from
    ``capacity`` (or with zero hosts) are ignored.

    Large batches spend most of their time in the root LP, which the branch-and-bound's
    simplex solves slowly here; so the LP relaxation is first solved by interior point (its
    value is the bound), a plan is rounded from it greedily (demands the LP accepts most
    fully first), and branch-and-bound then starts from the better of that plan and a
    largest-value-first greedy one, with the time left.
    """
    import highspy  # imported here: a heavy extension only planning needs

    for c, n in capacity.items():
        if n < 0:
            raise InvalidInput([Problem(f"capacity[{c}]", "must be >= 0", n)])
    started = time.perf_counter()
    model = _build(demands, capacity)
    if not model.cost:
        return Plan((), 0.0, 0.0, "empty", time.perf_counter() - started, 0, 0)
    cost = np.asarray(model.cost)
    best = _greedy(model, demands, capacity, cost)
    bound = math.inf
    status = "greedy"

    relaxed = _solver(highspy, model, time_limit, mip_gap, threads, integral=False)
    relaxed.setOptionValue("solver", "ipm")
    relaxed.setOptionValue("run_crossover", "off")
    relaxed.run()
    if relaxed.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        lp = np.asarray(relaxed.getSolution().col_value)
        bound = float(relaxed.getInfo().objective_function_value)
        share = lp / np.maximum(np.asarray(model.upper), 1.0)
        whole = (share > 0.999) * 4 * cost.max()
        # what the LP accepts whole first (a feasible set on its own), then the rest by value;
        # on the Alibaba trace this closes about a third of the greedy plan's gap
        for rank in (whole + cost, whole + share * cost):
            rounded = _greedy(model, demands, capacity, rank)
            if cost @ rounded > cost @ best:
                best = rounded
        status = "LP rounding"

    left = time_limit - (time.perf_counter() - started)
    if left > 1.0 and cost @ best < bound * (1 - mip_gap):
        h = _solver(highspy, model, left, mip_gap, threads, integral=True)
        h.setSolution(len(cost), np.arange(len(cost), dtype=np.int32), best)
        h.run()
        info = h.getInfo()
        if info.primal_solution_status >= 2:
            x = np.asarray(h.getSolution().col_value)
            if cost @ x >= cost @ best:
                best = x
            bound = min(bound, float(info.mip_dual_bound))
            status = h.modelStatusToString(h.getModelStatus())
        elif h.getModelStatus() != highspy.HighsModelStatus.kTimeLimit:
            raise PlanningError(f"HiGHS stopped with {h.modelStatusToString(h.getModelStatus())}")

    accepted: list[Accepted] = []
    for j, (r, o, kind) in enumerate(model.cols):
        if kind not in (0, 1) or o is None or best[j] < 0.5:
            continue
        d = demands[r]
        hosts = o.count if kind == 0 else round(best[j + 1])
        accepted.append(Accepted(r, d.request_id, o, hosts, demand_value(d, hosts)))
    objective = sum(a.value for a in accepted)
    return Plan(
        tuple(accepted),
        objective,
        max(bound, objective),
        status,
        time.perf_counter() - started,
        len(model.rows),
        len(model.cost),
    )


def _solver(
    highspy: Any, model: _Model, time_limit: float, mip_gap: float, threads: int, integral: bool
) -> Any:
    """A HiGHS instance holding the model (as a MIP, or its LP relaxation)."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.setOptionValue("threads", int(threads))
    ncol = len(model.cost)
    h.addCols(
        ncol,
        np.asarray(model.cost, dtype=np.float64),
        np.zeros(ncol),
        np.asarray(model.upper, dtype=np.float64),
        0,
        np.zeros(0, dtype=np.int32),
        np.zeros(0, dtype=np.int32),
        np.zeros(0),
    )
    if integral:
        cols = np.flatnonzero(np.asarray(model.integral)).astype(np.int32)
        h.changeColsIntegrality(len(cols), cols, np.ones(len(cols), dtype=np.uint8))
    rows = model.rows
    if rows:
        starts = np.zeros(len(rows), dtype=np.int32)
        starts[1:] = np.cumsum([len(row) for row in rows[:-1]])
        index = np.fromiter((j for row in rows for j, _ in row), dtype=np.int32)
        value = np.fromiter((v for row in rows for _, v in row), dtype=np.float64)
        lo = np.asarray(model.rows_lo, dtype=np.float64)
        hi = np.asarray(model.rows_hi, dtype=np.float64)
        h.addRows(len(rows), lo, hi, len(index), starts, index, value)
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    return h


@dataclass
class _Model:
    """Columns and rows of the MIP, in plain lists."""

    cost: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integral: list[bool] = field(default_factory=list)
    #: per column: demand index, option, kind (0 all-or-nothing y, 1 partial y, 2 partial n,
    #: 3 load of a class at a point)
    cols: list[tuple[int, Option | None, int]] = field(default_factory=list)
    rows: list[list[tuple[int, float]]] = field(default_factory=list)
    rows_lo: list[float] = field(default_factory=list)
    rows_hi: list[float] = field(default_factory=list)
    #: per class: (first point, last point, column, hosts per unit) of every use, and the
    #: column of the load at the first point
    uses: dict[HostClass, list[tuple[int, int, int, float]]] = field(default_factory=dict)
    load0: dict[HostClass, int] = field(default_factory=dict)

    def col(self, cost: float, upper: float, info: tuple[int, Option | None, int]) -> int:
        self.cost.append(cost)
        self.upper.append(upper)
        self.integral.append(info[2] != 3)
        self.cols.append(info)
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        self.rows.append(terms)
        self.rows_lo.append(lo)
        self.rows_hi.append(hi)


def _build(demands: Sequence[Demand], capacity: Mapping[HostClass, int]) -> _Model:
    m = _Model()
    spans: dict[HostClass, list[tuple[int, int, int, float]]] = {}
    for r, d in enumerate(demands):
        ys: list[int] = []
        per_host = demand_value(d, 1)
        for o in d.options:
            cap = capacity.get(o.host_class, 0)
            k, kmin = o.count, d.min_count(o)
            if kmin > cap:
                continue
            if kmin == k:
                y = m.col(per_host * k, 1.0, (r, o, 0))
                use = (d.window.lo, d.window.hi, y, float(k))
            else:
                y = m.col(0.0, 1.0, (r, o, 1))
                n = m.col(per_host, float(k), (r, o, 2))
                m.row([(n, 1.0), (y, -float(k))], -math.inf, 0.0)
                m.row([(n, 1.0), (y, -float(kmin))], 0.0, math.inf)
                use = (d.window.lo, d.window.hi, n, 1.0)
            ys.append(y)
            spans.setdefault(o.host_class, []).append(use)
        if len(ys) > 1:
            m.row([(y, 1.0) for y in ys], -math.inf, 1.0)
    for c, uses in spans.items():
        points = _maximal_points(uses)
        # load[c, k] = hosts in use at point k; written as load[k] - load[k-1] = started at k
        # minus ended before k, so each use enters two rows instead of one row per point
        loads = [m.col(0.0, float(capacity[c]), (-1, None, 3)) for _ in points]
        starting: list[list[tuple[int, float]]] = [[] for _ in points]
        ending: list[list[tuple[int, float]]] = [[] for _ in points]
        placed = []
        for lo, hi, j, w in uses:
            a = bisect.bisect_left(points, lo)
            b = bisect.bisect_left(points, hi) - 1
            starting[a].append((j, -w))
            if b + 1 < len(points):
                ending[b + 1].append((j, w))
            placed.append((a, b, j, w))
        for k, load in enumerate(loads):
            terms = [(load, 1.0), *starting[k], *ending[k]]
            if k:
                terms.append((loads[k - 1], -1.0))
            m.row(terms, 0.0, 0.0)
        m.uses[c] = placed
        m.load0[c] = loads[0]
    return m


def _greedy(
    model: _Model, demands: Sequence[Demand], capacity: Mapping[HostClass, int], rank: Any
) -> Any:
    """A feasible plan: demands by falling ``rank`` of their best column, each in its
    highest-ranked option that fits; returns the column values (loads included)."""
    x = np.zeros(len(model.cost))
    load = {c: np.zeros(1 + max(b for _, b, _, _ in uses)) for c, uses in model.uses.items()}
    by_demand: dict[int, list[tuple[float, HostClass, int, int, int, float]]] = {}
    for c, uses in model.uses.items():
        for a, b, j, w in uses:
            by_demand.setdefault(model.cols[j][0], []).append((float(rank[j]), c, a, b, j, w))
    for r in sorted(by_demand, key=lambda r: -max(u[0] for u in by_demand[r])):
        for _, c, a, b, j, w in sorted(by_demand[r], key=lambda u: -u[0]):
            room = capacity[c] - float(load[c][a : b + 1].max())
            kind = model.cols[j][2]
            if kind == 0 and room >= w:
                x[j] = 1.0
                load[c][a : b + 1] += w
                break
            option = model.cols[j][1]
            if kind == 2 and option is not None:
                hosts = min(option.count, int(room))
                if hosts >= demands[r].min_count(option):
                    x[j], x[j - 1] = hosts, 1.0
                    load[c][a : b + 1] += hosts
                    break
    for c, first in model.load0.items():
        x[first : first + len(load[c])] = load[c]
    return x


def _maximal_points(spans: Sequence[tuple[int, int, int, float]]) -> list[int]:
    """Sorted instants at which a maximal group of spans is active.

    Sweeps starts and ends (an end at ``t`` before a start at ``t``: intervals are half-open)
    and keeps each start that is followed by an end: load only rises at a start, and between
    two starts with no end the later one sees a superset of the earlier one's spans.
    """
    events = sorted([(lo, 1) for lo, _, _, _ in spans] + [(hi, 0) for _, hi, _, _ in spans])
    points: list[int] = []
    rising_at: int | None = None
    for t, is_start in events:
        if is_start:
            rising_at = t
        elif rising_at is not None:
            points.append(rising_at)
            rising_at = None
    return points


__all__ = ["Accepted", "Plan", "PlanningError", "demand_value", "plan"]
