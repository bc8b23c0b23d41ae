"""Benchmark of the matching core: online policies against the offline optimum, and latency.

Run: ``.venv/bin/python bench/matching.py [--fractions 0.01 0.02 0.05] [--time-limit 120]``

1. Quality on the Alibaba GPU trace 2023 ("openb", /work/shared/data/traces/alibaba-openb-2023),
   as bare metal: each GPU node is a whole host; nodes with equal (cpu_milli, memory_mib, gpu,
   model) form one SKU at one site. Every task with ``num_gpu > 0`` asks, from creation to
   deletion, for ``ceil(num_gpu / GPUs per host)`` hosts of any SKU whose model its
   ``gpu_spec`` allows (any GPU SKU when empty); a fractional-GPU task takes one whole host.
   Hosts per SKU are shrunk to a fraction, rounded up (so every SKU keeps at least one host
   and no constrained task type becomes impossible). Requests arrive in creation order and are
   decided online at arrival; the value is accepted host-hours. The offline optimum is
   :func:`marketplace.planning.plan` on the same requests.
2. Decision latency of admission + binding (``match``) with 1,000 hosts in 10 classes holding
   10,000 reservations.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from marketplace.admission import ClassCalendar
from marketplace.binding import (
    BindingPolicy,
    ClassOrder,
    apply,
    best_fit,
    first_fit,
    in_preference_order,
    match,
    most_free_first,
    smallest_first,
)
from marketplace.errors import NoCapacity
from marketplace.matching import Demand, HostClass, HostTimeline, Interval, Option
from marketplace.planning import demand_value, plan

TRACE = Path("/work/shared/data/traces/alibaba-openb-2023")
SITE = "openb"
#: The trace counts seconds from its start; anchor it anywhere in UTC.
ORIGIN = 1_700_000_000


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_skus() -> tuple[dict[HostClass, int], dict[HostClass, tuple[str, int]]]:
    """Hosts per SKU and (GPU model, GPUs per host) of each SKU, from the GPU node list."""
    nodes = pd.read_csv(TRACE / "openb_node_list_gpu_node.csv")
    sizes = nodes.groupby(["cpu_milli", "memory_mib", "gpu", "model"]).size().reset_index()
    hosts: dict[HostClass, int] = {}
    kind: dict[HostClass, tuple[str, int]] = {}
    for cpu, mem, gpu, model, n in sizes.itertuples(index=False):
        cores, gib = int(str(cpu)) // 1000, int(str(mem)) // 1024
        c = HostClass(SITE, f"{model}x{gpu}-{cores}c-{gib}g")
        hosts[c] = int(str(n))
        kind[c] = (str(model), int(str(gpu)))
    return hosts, kind


def load_demands(kind: Mapping[HostClass, tuple[str, int]]) -> tuple[list[Demand], int]:
    """One demand per GPU task, in arrival (creation) order; also the number left out."""
    pods = pd.read_csv(TRACE / "openb_pod_list_gpuspec33.csv", keep_default_na=False)
    pods = pods[pods["num_gpu"] > 0].sort_values(["creation_time", "name"], kind="stable")
    demands: list[Demand] = []
    dropped = 0
    for row in pods.itertuples(index=False):
        lo, hi = int(str(row.creation_time)), int(str(row.deletion_time))
        if hi <= lo:
            dropped += 1
            continue
        allowed = set(str(row.gpu_spec).split("|")) if row.gpu_spec else None
        options = tuple(
            Option(c, math.ceil(int(str(row.num_gpu)) / gpus))
            for c, (model, gpus) in kind.items()
            if allowed is None or model in allowed
        )
        window = Interval.from_seconds(ORIGIN + lo, ORIGIN + hi)
        demands.append(Demand(options, window, request_id=str(row.name)))
    return demands, dropped


def shrink(hosts: Mapping[HostClass, int], fraction: float) -> dict[HostClass, int]:
    return {c: math.ceil(n * fraction - 1e-9) for c, n in hosts.items()}


def empty_calendars(capacity: Mapping[HostClass, int]) -> dict[HostClass, ClassCalendar]:
    return {
        c: ClassCalendar(c, [HostTimeline(f"{c.sku}#{i}", c) for i in range(n)])
        for c, n in capacity.items()
    }


def scarcity_order(
    demands: Sequence[Demand], capacity: Mapping[HostClass, int]
) -> Callable[[int], ClassOrder]:
    """Least-contended class first, contention learned online from the requests seen so far.

    Each past request spreads its host-hours evenly over the classes it accepts; a class's
    pressure is that share per host it has. A flexible request goes where the requests that
    have no choice are least likely to need the room.
    """
    pressure = dict.fromkeys(capacity, 0.0)
    seen = 0

    def at(k: int) -> ClassOrder:
        nonlocal seen
        while seen <= k:
            d = demands[seen]
            usable = [o for o in d.options if capacity.get(o.host_class, 0) >= o.count]
            for o in usable:
                pressure[o.host_class] += demand_value(d, o.count) / len(usable)
            seen += 1

        def order(demand: Demand, calendars: Mapping[HostClass, ClassCalendar]) -> Sequence[Option]:
            return sorted(
                demand.options,
                key=lambda o: pressure[o.host_class] / max(1, capacity.get(o.host_class, 0)),
            )

        return order

    return at


def always(order: ClassOrder) -> Callable[[int], ClassOrder]:
    """The same class order at every arrival."""
    return lambda _: order


def run_online(
    demands: Sequence[Demand],
    capacity: Mapping[HostClass, int],
    policy: BindingPolicy,
    order_at: Callable[[int], ClassOrder],
) -> float:
    """Accepted host-hours when each demand is decided at its arrival, in order."""
    cals = empty_calendars(capacity)
    total = 0.0
    for k, d in enumerate(demands):
        try:
            got = match(d, cals, policy=policy, order=order_at(k))
        except NoCapacity:
            continue
        apply(cals[got.host_class], got, [f"{d.request_id}.{i}" for i in range(len(got.host_ids))])
        total += demand_value(d, len(got.host_ids))
    return total


def quality(fractions: Sequence[float], time_limit: float) -> None:
    hosts, kind = load_skus()
    demands, dropped = load_demands(kind)
    print(
        f"trace: {sum(hosts.values())} GPU hosts in {len(hosts)} SKUs, {len(demands)} GPU tasks"
        f" ({dropped} of zero duration left out),"
        f" {sum(demand_value(d, 1) for d in demands):,.0f} task-hours"
    )
    header = f"{'hosts':>9} {'policy':<34} {'host-hours':>12} {'of plan()':>10} {'of bound':>9}"
    print(header)
    print("-" * len(header))
    for fraction in fractions:
        capacity = shrink(hosts, fraction)
        gpus = {c: float(n) for c, (_, n) in kind.items()}
        t0 = time.perf_counter()
        best = plan(demands, capacity, time_limit=time_limit, mip_gap=1e-4)
        label = f"{fraction:.0%} ={sum(capacity.values())}"
        print(
            f"{label:>9} {'plan(): LP bound + rounding + MIP':<34} {best.objective:>12,.0f}"
            f" {1.0:>10.1%} {best.objective / best.bound:>9.2%}"
            f"   [{best.status}, gap {best.gap:.3%}, {best.rows} rows x {best.columns} cols,"
            f" {time.perf_counter() - t0:.1f} s]"
        )
        runs: list[tuple[str, BindingPolicy, Callable[[int], ClassOrder]]] = [
            ("first-fit (catalogue order)", first_fit, always(in_preference_order)),
            ("best-fit (catalogue order)", best_fit, always(in_preference_order)),
            ("best-fit, most free class first (the default)", best_fit, always(most_free_first)),
            ("best-fit, smallest host first", best_fit, always(smallest_first(gpus))),
            ("best-fit, least contended class", best_fit, scarcity_order(demands, capacity)),
        ]
        for name, policy, order_at in runs:
            t0 = time.perf_counter()
            value = run_online(demands, capacity, policy, order_at)
            print(
                f"{'':>9} {name:<34} {value:>12,.0f} {value / best.objective:>10.1%}"
                f" {value / best.bound:>9.1%}   [{time.perf_counter() - t0:.1f} s]"
            )


def latency(n_hosts: int = 1000, n_classes: int = 10, n_bookings: int = 10_000) -> None:
    rng = random.Random(7)
    classes = [HostClass("site1", f"sku{k}") for k in range(n_classes)]
    per = n_hosts // n_classes
    cals = {
        c: ClassCalendar(c, [HostTimeline(f"{c.sku}-{i}", c) for i in range(per)]) for c in classes
    }
    horizon = 7 * 86_400  # ~60 % of host-time booked

    def random_demand(k: int) -> Demand:
        start = ORIGIN + rng.randrange(horizon)
        length = int(rng.lognormvariate(math.log(6 * 3600), 1.0)) + 60
        wanted = rng.sample(classes, rng.randint(1, 3))
        return Demand.of(
            rng.randint(1, 4),
            wanted,
            Interval.from_seconds(start, start + length),
            request_id=f"r{k}",
        )

    booked = tries = 0
    while booked < n_bookings:
        d = random_demand(tries)
        tries += 1
        try:
            got = match(d, cals)
        except NoCapacity:
            continue
        ids = [f"{d.request_id}.{i}" for i in range(len(got.host_ids))]
        apply(cals[got.host_class], got, ids)
        booked += len(ids)

    def timed(now: int | None, n: int, seed: int) -> tuple[list[float], list[float], int]:
        wall: list[float] = []
        cpu: list[float] = []
        admitted = 0
        for k in range(n):
            d = random_demand(seed + k)
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            try:
                match(d, cals, now=now)
                admitted += 1
            except NoCapacity:
                pass
            cpu.append((time.thread_time_ns() - c0) / 1e6)
            wall.append((time.perf_counter_ns() - w0) / 1e6)
        return wall, cpu, admitted

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=1000)[int(p * 1000) - 1]

    gc.collect()
    gc.freeze()  # the calendars are long-lived: keep the collector off them while timing
    print(
        f"latency: {n_hosts} hosts in {n_classes} classes, {booked:,} bookings over 7 days;"
        " random demand of 1-4 hosts, 1-3 acceptable classes, ~6 h"
    )
    for label, now, n in (("admission+binding", None, 5000), ("... with re-packing", ORIGIN, 500)):
        wall, cpu, admitted = timed(now, n, 10**6 * (2 if now else 1))
        print(
            f"  {label:<22} wall p50 {q(wall, 0.5):.3f} ms  p99 {q(wall, 0.99):.3f} ms;"
            f"  cpu p50 {q(cpu, 0.5):.3f} ms  p99 {q(cpu, 0.99):.3f} ms"
            f"  ({admitted / n:.0%} admitted, n={n})"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    if not args.skip_quality:
        quality(args.fractions, args.time_limit)
    if not args.skip_latency:
        latency()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
