"""Benchmark of the energy kernel (metering.energy.hourly_energy) against its neighbours.

On ``--hosts`` hosts x ``--hours`` hours at ``--interval`` s sampling (default 10,000 x 24 h
x 10 s = 86.4 million samples) it prints: samples per second of the kernel (poll interval
inferred per host, and given), the same hourly energy by DuckDB SQL (window functions, lag) and
by a plain pandas groupby-apply (run on ``--pandas-hosts`` hosts and extrapolated), one plain
numpy pass over the same columns (the floor), the kernel's peak memory against the input's
size, and Dask with 1 and 2 local workers on ``--dask-hosts`` hosts over two days.

    .venv/bin/python bench/metering.py                 # full size (about 10 minutes, 9 GB RSS)
    .venv/bin/python bench/metering.py --hosts 500     # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# This file is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metering.energy import hourly_energy  # noqa: E402

HOUR_NS = 3_600_000_000_000
T0 = pd.Timestamp("2026-06-01", tz="UTC").value


def machine() -> str:
    """CPU model, cores, memory, Python and library versions."""
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import dask
    import duckdb

    return (
        f"machine: {model}, {os.cpu_count()} cores, {mem:.0f} GiB; Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}, duckdb {duckdb.__version__}, dask {dask.__version__}"
    )


def fleet(
    hosts: int, hours: int, interval_s: float, seed: int = 1, day_offset: int = 0
) -> pd.DataFrame:
    """Host-sorted samples: jittered timestamps, a load curve per host, rare flags and NaNs."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / interval_s)
    total = hosts * n
    code = np.repeat(np.arange(hosts, dtype=np.int16 if hosts < 32767 else np.int32), n)
    step = np.int64(interval_s * 1e9)
    t = np.tile(np.arange(n, dtype=np.int64) * step, hosts)
    t += rng.integers(0, step // 20, total)  # receive-time jitter, stays sorted
    t += T0 + day_offset * 24 * HOUR_NS
    watts = np.tile(300 + 120 * np.sin(np.arange(n) * (2 * np.pi * interval_s / 86400)), hosts)
    watts += np.repeat(rng.uniform(-60, 60, hosts), n)
    watts += rng.normal(0, 15, total)
    watts[rng.random(total) < 0.0005] = np.nan
    flags = np.zeros(total, dtype=np.int64)
    flags[rng.random(total) < 0.001] = 1
    categories = pd.Index([f"host-{i:05d}" for i in range(hosts)])
    return pd.DataFrame(
        {
            "host": pd.Categorical.from_codes(code.astype(np.int32), categories=categories),
            "time": pd.to_datetime(t, utc=True).as_unit("ns"),
            "watts": watts,
            "flags": flags,
        }
    )


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (the machine may be shared) and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def numpy_floor(df: pd.DataFrame) -> np.ndarray:
    """One plain pass: trapezoid per neighbouring pair, summed per host-hour (no rules at all)."""
    t = df["time"].array.asi8
    w = df["watts"].to_numpy()
    code = df["host"].cat.codes.to_numpy()
    hour = (t[:-1] - T0) // HOUR_NS
    e = (w[1:] + w[:-1]) * (np.diff(t) * 5e-10)
    return np.bincount(code[:-1].astype(np.int64) * 48 + hour, weights=e)


DUCKDB_SQL = """
WITH v AS (
    SELECT host, t, w FROM s WHERE (flags & 3) = 0 AND isfinite(w)
), d AS (
    SELECT host, t, w,
        t - lag(t) OVER h AS dt, lag(w) OVER h AS w0,
        lag(t, 2) OVER h AS tp, lag(w, 2) OVER h AS wp, lead(t) OVER h AS tn, lead(w) OVER h AS wn
    FROM v WINDOW h AS (PARTITION BY host ORDER BY t)
), poll AS (
    -- the kernel takes the median spacing to the millisecond, clipped at 2^24 ms
    SELECT host, 3 * 1000000 * median(least(dt // 1000000, 16777215)) AS gap
    FROM d WHERE dt > 0 GROUP BY host
), seg AS (
    SELECT host, t - dt AS t0, t AS t1, w0, w AS w1,
        least(w0, w, CASE WHEN t - dt - tp <= gap THEN wp END, CASE WHEN tn - t <= gap THEN wn END) AS lo,
        greatest(w0, w, CASE WHEN t - dt - tp <= gap THEN wp END, CASE WHEN tn - t <= gap THEN wn END) AS hi,
        (t - dt) // 3600000000000 AS h0, (t - 1) // 3600000000000 AS h1
    FROM d JOIN poll USING (host) WHERE dt > 0 AND dt <= gap
), parts AS (  -- a segment crossing an hour is cut there (segments are shorter than an hour)
    SELECT host, h0 AS hour, t0 AS a, t1 AS b, w0 AS wa, w1 AS wb, lo, hi FROM seg WHERE h0 = h1
    UNION ALL
    SELECT host, h0, t0, h1 * 3600000000000, w0, w0 + (w1 - w0) * (h1 * 3600000000000 - t0) / (t1 - t0), lo, hi
    FROM seg WHERE h0 < h1
    UNION ALL
    SELECT host, h1, h1 * 3600000000000, t1, w0 + (w1 - w0) * (h1 * 3600000000000 - t0) / (t1 - t0), w1, lo, hi
    FROM seg WHERE h0 < h1
), bounded AS (
    SELECT host, hour, wa, wb, (b - a) / 1e9 AS sec, (wa + wb) / 2 * (b - a) / 1e9 AS j,
        wa - (hi + lo) / 2 AS x0, wb - (hi + lo) / 2 AS x1, (hi - lo) / 2 AS half
    FROM parts
), energy AS (
    SELECT host, hour, sum(j) / 3600 AS energy_wh, sum(sec) AS measured_s,
        sum(sec * (half + CASE WHEN x0 = x1 THEN abs(x0)
                               ELSE (x1 * abs(x1) - x0 * abs(x0)) / (2 * (x1 - x0)) END)) / 3600 AS uncertainty_wh,
        min(least(wa, wb)) AS cut_min, max(greatest(wa, wb)) AS cut_max
    FROM bounded GROUP BY host, hour
), counts AS (
    SELECT host, t // 3600000000000 AS hour, count(*) AS n_samples,
        count(*) FILTER (WHERE (flags & 3) <> 0 OR w IS NULL OR NOT isfinite(w)) AS n_flagged,
        min(w) FILTER (WHERE (flags & 3) = 0 AND isfinite(w)) AS min_w,
        max(w) FILTER (WHERE (flags & 3) = 0 AND isfinite(w)) AS max_w
    FROM s GROUP BY host, hour
)
SELECT c.host, c.hour, coalesce(e.energy_wh, 0) AS energy_wh, coalesce(e.uncertainty_wh, 0) AS uncertainty_wh,
    coalesce(e.measured_s, 0) AS measured_s, n_samples, n_flagged,
    least(min_w, cut_min) AS min_w, greatest(max_w, cut_max) AS max_w
FROM counts c LEFT JOIN energy e USING (host, hour)
"""


def duckdb_hourly(df: pd.DataFrame) -> pd.DataFrame:
    """The same host-hours in DuckDB SQL: trapezoid with the median-spacing gap rule, exact hour
    cuts, the neighbours' uncertainty bound, sample counts and min/max readings."""
    import duckdb

    s = pd.DataFrame(
        {
            "host": df["host"].cat.codes.to_numpy().astype(np.int32),
            "t": df["time"].array.asi8,
            "w": df["watts"].to_numpy(),
            "flags": df["flags"].to_numpy(),
        }
    )
    con = duckdb.connect()
    con.register("s", s)
    out = con.sql(DUCKDB_SQL).df()
    con.close()
    return out


def pandas_apply(df: pd.DataFrame) -> pd.DataFrame:
    """A plain per-host groupby-apply: the trapezoid with a fixed 30 s gap rule and hour cuts
    (energy only: less work than the kernel, which also bounds, counts and infers the poll)."""

    def one_host(g: pd.DataFrame) -> pd.Series:
        g = g[((g["flags"] & 3) == 0) & np.isfinite(g["watts"])].sort_values("time")
        t = g["time"].astype("int64").to_numpy()
        w = g["watts"].to_numpy()
        dt = np.diff(t)
        ok = (dt > 0) & (dt <= 30e9)
        h0, h1 = t[:-1] // HOUR_NS, (t[1:] - 1) // HOUR_NS
        e = (w[1:] + w[:-1]) / 2 * dt / 1e9
        rows = pd.Series(e[ok & (h0 == h1)]).groupby(h0[ok & (h0 == h1)]).sum()
        for i in np.flatnonzero(ok & (h0 != h1)):
            b = h1[i] * HOUR_NS
            wb = w[i] + (w[i + 1] - w[i]) * (b - t[i]) / dt[i]
            rows.loc[h0[i]] = rows.get(h0[i], 0.0) + (w[i] + wb) / 2 * (b - t[i]) / 1e9
            rows.loc[h1[i]] = rows.get(h1[i], 0.0) + (wb + w[i + 1]) / 2 * (t[i + 1] - b) / 1e9
        return rows / 3600

    return pd.DataFrame(df.groupby("host", observed=True).apply(one_host))


def dask_run(hosts: int, interval_s: float, workers: int, path: str) -> tuple[float, int]:
    """Hourly energy of a two-day, day-partitioned Parquet set on a local cluster."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from metering.dask_energy import hourly_energy_dask

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        samples = dd.read_parquet(path, columns=["host", "time", "watts", "flags"])
        seconds, out = timed(lambda: hourly_energy_dask(samples).compute())
    return seconds, len(out)


def main() -> None:
    """Parse the arguments, print the machine, measure in one process, then on Dask."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--pandas-hosts", type=int, default=100)
    ap.add_argument("--dask-hosts", type=int, default=1000)
    ap.add_argument("--skip-duckdb", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for each timing")
    args = ap.parse_args()
    print(machine())
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other processes share the cores)")
    in_process(args)
    on_dask(args)


def in_process(args: argparse.Namespace) -> None:
    """Kernel, floor, memory, DuckDB and pandas on the full input in this process."""
    df = fleet(args.hosts, args.hours, args.interval)
    n = len(df)
    input_bytes = int(df.memory_usage(deep=True, index=False).sum())
    print(
        f"input: {args.hosts} hosts x {args.hours} h at {args.interval:g} s = {n:,} samples, {input_bytes / 2**30:.2f} GiB"
    )

    floor_s, _ = timed(lambda: numpy_floor(df), args.repeat)
    kern_s, hourly = timed(lambda: hourly_energy(df), args.repeat)
    given_s, _ = timed(lambda: hourly_energy(df, poll_interval_s=args.interval), args.repeat)
    rate = n / kern_s
    print(
        f"kernel (poll inferred): {kern_s:.2f} s = {rate / 1e6:.1f} M samples/s; {len(hourly):,} host-hours"
    )
    print(f"kernel (poll given):    {given_s:.2f} s = {n / given_s / 1e6:.1f} M samples/s")
    print(
        f"numpy floor (one pass, bincount per host-hour): {floor_s:.2f} s; kernel / floor = {kern_s / floor_s:.1f}x"
    )

    tracemalloc.start()
    hourly_energy(df)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"kernel peak extra memory (tracemalloc): {peak / 2**30:.2f} GiB = {peak / input_bytes:.2f}x input; "
        f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    )

    if not args.skip_duckdb:
        duck_s, duck = timed(lambda: duckdb_hourly(df))  # one run: it is the slow one
        agree = abs(duck["energy_wh"].sum() / hourly["energy_wh"].sum() - 1)
        agree_u = abs(duck["uncertainty_wh"].sum() / hourly["uncertainty_wh"].sum() - 1)
        print(
            f"duckdb SQL (lag/lead windows, same figures incl. bound, counts, min/max): {duck_s:.2f} s; "
            f"kernel is {duck_s / kern_s:.1f}x faster; totals agree: energy {agree:.1e}, uncertainty {agree_u:.1e}"
        )

    sub_hosts = min(args.pandas_hosts, args.hosts)
    sub = df[df["host"].cat.codes < sub_hosts]
    pd_s, pd_out = timed(lambda: pandas_apply(sub))
    pd_rate = len(sub) / pd_s
    mine = hourly_energy(sub)["energy_wh"].sum()
    print(
        f"pandas groupby-apply on {sub_hosts} hosts ({len(sub):,} samples): {pd_s:.2f} s = {pd_rate / 1e6:.2f} M samples/s, "
        f"extrapolated to the full input {n / pd_rate:.0f} s; kernel is {rate / pd_rate:.0f}x faster; energy agrees to {abs(float(np.nansum(np.asarray(pd_out, dtype=float))) / mine - 1):.1e}"
    )


def on_dask(args: argparse.Namespace) -> None:
    """The Dask entry on local clusters of 1 and 2 worker processes."""
    tmp = tempfile.mkdtemp(prefix="hwmarket-bench-")
    try:
        dh = min(args.dask_hosts, args.hosts)
        for day in range(2):
            part = fleet(dh, 24, args.interval, seed=10 + day, day_offset=day)
            part.to_parquet(f"{tmp}/day={day}.parquet", index=False, row_group_size=2_000_000)
        dn = dh * 2 * int(24 * 3600 / args.interval)
        for workers in (1, 2):
            secs, rows = dask_run(dh, args.interval, workers, tmp)
            print(
                f"dask, {workers} local worker(s), {dh} hosts x 2 days ({dn:,} samples, shuffled to hosts): {secs:.2f} s = {dn / secs / 1e6:.2f} M samples/s, {rows:,} rows"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
