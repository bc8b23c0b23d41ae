"""Energy of hosts from their power samples: per UTC hour, or per any interval a caller asks.

Two functions of a samples frame (columns in :mod:`metering.samples`; ``host``, ``time``,
``watts`` and ``flags`` are read, ``energy_j``, ``min_watts`` and ``max_watts`` when present):

- :func:`hourly_energy` returns one row per host and UTC hour;
- :func:`interval_energy` returns one row per requested ``(host, start, end)`` interval.

Both return the columns of :data:`metering.energy_schema.ENERGY_COLUMNS`. The rules:

- power is integrated over the samples' own timestamps (trapezoid) between neighbouring valid
  samples at most ``max_gap_factor`` poll intervals apart (the poll interval is given, or the
  median spacing of each host's samples); a segment crossing an hour or interval end is cut
  exactly there, power interpolated at the cut, so hours add up to days and pieces to hours;
- a longer gap is never integrated: it is reported in ``gap_s``, and filled only when the
  caller passes ``gap_fill`` (per-host idle and max watts), as ``estimated_wh`` whose
  uncertainty spans that whole envelope;
- where samples carry a BMC energy counter (``energy_j``), its differences are the energy
  (wrap-around undone when ``counter_wrap_j`` is given; a reset falls back to the sampled power)
  and the trapezoid of the sampled power is reported beside it in ``power_check_wh``; counter
  differences obey the same gap rule, and a difference cut by an hour or interval end is shared
  in proportion to the sampled power on each side;
- samples flagged with any of ``EXCLUDE_FROM_ENERGY``, or with NaN/inf watts, are left out and
  counted in ``n_flagged``; row order and exact duplicate rows change nothing.

Example::

    >>> import pandas as pd
    >>> from metering.energy import hourly_energy
    >>> t = pd.date_range("2026-01-01", periods=361, freq="10s", tz="UTC")
    >>> samples = pd.DataFrame({"host": "h1", "time": t, "watts": 300.0, "flags": 0})
    >>> row = hourly_energy(samples).iloc[0]
    >>> float(row.energy_wh), row.quality
    (300.0, 'complete')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from marketplace.errors import InvalidInput, Problem
from metering.energy_kernel import PieceSums, Rules, integrate_chunk
from metering.energy_pieces import (
    HOUR_NS,
    NS,
    CutGrid,
    HourGrid,
    PieceGrid,
    SampleArrays,
    host_chunks,
)
from metering.energy_samples import host_hour_range, no_samples, prepare_samples
from metering.energy_schema import (
    ENERGY_COLUMNS,
    INTERVAL_COLUMNS,
    check_intervals,
    check_period,
    require_columns,
    utc_nanoseconds,
)

#: Per-host power envelope for the opt-in gap estimate: host -> (idle watts, max watts).
GapFill = Mapping[str, tuple[float, float]]


def hourly_energy(
    samples: pd.DataFrame,
    *,
    period: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    poll_interval_s: float | Mapping[str, float] | None = None,
    max_gap_factor: float = 3.0,
    max_gap_s: float | None = None,
    neighbours: int = 1,
    counter_wrap_j: float | None = None,
    gap_fill: GapFill | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Energy per host and UTC hour (columns ``ENERGY_COLUMNS``, sorted by host and start).

    Every hour from each host's first to its last sample is returned, or every hour touching
    ``period`` (start, end) for each host in ``samples``; samples outside still anchor the
    segments that cross into it. ``poll_interval_s`` is one number or one per host (default,
    and for hosts missing from the mapping: the host's median sample spacing); segments longer than ``max_gap_factor`` poll intervals
    (or ``max_gap_s``) are gaps. ``neighbours`` sets how many samples on each side widen the
    power range of the uncertainty bound; ``threads`` (default: one per core) run chunks of
    hosts in parallel, with identical results. Raises :class:`InvalidInput` for a bad frame.
    """
    prepared = prepare_samples(samples)
    if prepared is None:
        return empty_energy_frame()
    arrays, labels = prepared
    n_hosts = len(labels)
    if period is not None:
        p0, p1 = check_period(period)
        first = np.full(n_hosts, p0 // HOUR_NS)
        last = np.full(n_hosts, (p1 - 1) // HOUR_NS)
    else:
        first, last = host_hour_range(arrays, n_hosts)
    grid = HourGrid(first, last)
    rules = _rules(labels, poll_interval_s, max_gap_factor, max_gap_s, neighbours, counter_wrap_j)
    sums = _integrate(arrays, grid, rules, n_hosts, threads)
    frame = _energy_frame(grid, sums, labels, gap_fill)
    return frame.sort_values(["host", "start"], kind="stable", ignore_index=True)


def interval_energy(
    samples: pd.DataFrame,
    intervals: pd.DataFrame,
    *,
    poll_interval_s: float | Mapping[str, float] | None = None,
    max_gap_factor: float = 3.0,
    max_gap_s: float | None = None,
    neighbours: int = 1,
    counter_wrap_j: float | None = None,
    gap_fill: GapFill | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Energy of each ``(host, start, end)`` row of ``intervals``, in the same order.

    Other columns of ``intervals`` (reservation id, customer ...) are carried through in front
    of ``ENERGY_COLUMNS``. Segments are cut exactly at every interval end, so intervals that
    tile an hour add up to that hour's :func:`hourly_energy` row (energy, measured and gap
    seconds, uncertainty, counts) within float rounding; only a counter segment cut inside the
    hour adds its allocation bound to the pieces' uncertainty. Intervals may overlap.

    Example: cut the hour 10:00-11:00 of host ``h1`` where a reservation began at 10:20::

        pieces = pd.DataFrame({"host": ["h1", "h1"], "reservation": [None, "r7"],
                               "start": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:20"], utc=True),
                               "end": pd.to_datetime(["2026-01-01 10:20", "2026-01-01 11:00"], utc=True)})
        interval_energy(samples, pieces)[["reservation", "energy_wh", "uncertainty_wh"]]
    """
    require_columns(intervals, INTERVAL_COLUMNS, "intervals")
    starts = utc_nanoseconds(intervals["start"], "intervals.start")
    ends = utc_nanoseconds(intervals["end"], "intervals.end")
    check_intervals(starts, ends, intervals.index, "intervals")
    if intervals["host"].isna().any():
        raise InvalidInput([Problem(path="intervals.host", message="host is missing", value=None)])
    prepared = prepare_samples(samples)
    if prepared is None:
        arrays = no_samples()
        labels = np.array([], dtype=object)
    else:
        arrays, labels = prepared
    # hosts asked for but never sampled get codes after the sampled ones: all-missing rows
    want = intervals["host"].astype(str).to_numpy(dtype=object)
    known = pd.Index(labels)
    codes = known.get_indexer(want)
    extra = pd.unique(want[codes < 0])
    labels = np.concatenate([np.asarray(labels, dtype=object), extra])
    codes = pd.Index(labels).get_indexer(want).astype(np.int64)
    n_hosts = len(labels)

    cut_code = np.concatenate([codes, codes])
    cut_t = np.concatenate([starts, ends])
    order = np.lexsort((cut_t, cut_code))
    cut_code, cut_t = cut_code[order], cut_t[order]
    fresh = np.concatenate([[True], (cut_code[1:] != cut_code[:-1]) | (cut_t[1:] != cut_t[:-1])])
    grid = CutGrid(cut_code[fresh], cut_t[fresh], n_hosts)
    rules = _rules(labels, poll_interval_s, max_gap_factor, max_gap_s, neighbours, counter_wrap_j)
    sums = _integrate(arrays, grid, rules, n_hosts, threads)
    pieces = _energy_frame(grid, sums, labels, gap_fill)

    first = grid.offset[codes] + grid.locate(codes, starts, just_before=False)
    stop = grid.offset[codes] + grid.locate(codes, ends, just_before=False)
    result = _sum_pieces(pieces, first, stop)
    result.insert(0, "host", pd.Series(want, dtype="string"))
    result.insert(1, "start", pd.to_datetime(starts, utc=True).as_unit("ns"))
    result.insert(2, "end", pd.to_datetime(ends, utc=True).as_unit("ns"))
    keys = intervals.drop(columns=list(INTERVAL_COLUMNS)).reset_index(drop=True)
    return pd.concat([keys, result], axis=1)


def empty_energy_frame() -> pd.DataFrame:
    """An energy frame with no rows and the ``ENERGY_COLUMNS`` dtypes (Dask's ``meta``)."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in ENERGY_COLUMNS.items()})


def _per_host(labels: np.ndarray, value: float | Mapping[str, Any] | None) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return np.array([float(value.get(str(h), np.nan)) for h in labels])
    return np.full(len(labels), float(value))


def _rules(
    labels: np.ndarray,
    poll_interval_s: float | Mapping[str, float] | None,
    max_gap_factor: float,
    max_gap_s: float | None,
    neighbours: int,
    counter_wrap_j: float | None,
) -> Rules:
    problems = []
    if max_gap_factor <= 0:
        problems.append(Problem(path="max_gap_factor", message="must be > 0", value=max_gap_factor))
    if max_gap_s is not None and max_gap_s <= 0:
        problems.append(Problem(path="max_gap_s", message="must be > 0 seconds", value=max_gap_s))
    if neighbours < 0:
        problems.append(Problem(path="neighbours", message="must be >= 0", value=neighbours))
    poll = _per_host(labels, poll_interval_s)
    if poll is not None and bool(np.any(poll <= 0)):
        problems.append(
            Problem(path="poll_interval_s", message="must be > 0 seconds", value=poll_interval_s)
        )
    if problems:
        raise InvalidInput(problems)
    return Rules(
        poll_ns=None if poll is None else poll * NS,
        max_gap_factor=max_gap_factor,
        max_gap_ns=None if max_gap_s is None else max_gap_s * NS,
        neighbours=neighbours,
        counter_wrap_j=counter_wrap_j,
    )


def _integrate(
    s: SampleArrays, grid: PieceGrid, rules: Rules, n_hosts: int, threads: int | None
) -> PieceSums:
    """Run the kernel over chunks of whole hosts; chunks write disjoint pieces, so threads can
    share ``sums`` (numpy releases the GIL inside its loops)."""
    sums = PieceSums.zeros(grid.n_pieces)

    def one(part: slice) -> None:
        chunk = s.take(part)
        chunk = dataclasses.replace(chunk, code=chunk.code.astype(np.int64))
        integrate_chunk(chunk, grid, rules, n_hosts, sums)

    parts = host_chunks(s.code)
    workers = min(threads or os.cpu_count() or 1, len(parts))
    if workers <= 1:
        for part in parts:
            one(part)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, parts):
                pass
    return sums


def _energy_frame(
    grid: PieceGrid, sums: PieceSums, labels: np.ndarray, gap_fill: GapFill | None
) -> pd.DataFrame:
    counts = grid.offset[1:] - grid.offset[:-1]
    code = np.repeat(np.arange(len(counts)), counts)
    duration_ns = (grid.end - grid.start).astype(np.float64)
    measured_s = sums.measured_ns / NS
    gap_s = (duration_ns - sums.measured_ns) / NS
    estimated_j = np.zeros(len(code))
    estimated_unc_j = np.zeros(len(code))
    if gap_fill:
        idle = np.array([gap_fill.get(str(h), (np.nan, np.nan))[0] for h in labels], dtype=float)
        top = np.array([gap_fill.get(str(h), (np.nan, np.nan))[1] for h in labels], dtype=float)
        estimated_j = np.nan_to_num(gap_s * (idle[code] + top[code]) * 0.5)
        estimated_unc_j = np.nan_to_num(gap_s * (top[code] - idle[code]) * 0.5)
    measured = sums.measured_ns > 0
    method = np.where(
        ~measured,
        "none",
        np.where(
            sums.counter_ns == sums.measured_ns,
            "counter",
            np.where(sums.counter_ns == 0, "trapezoid", "mixed"),
        ),
    )
    quality = np.where(
        ~measured, "missing", np.where(sums.measured_ns == duration_ns, "complete", "partial")
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(measured, sums.energy_j / measured_s, np.nan)
    return pd.DataFrame(
        {
            "host": pd.array(labels[code].astype(str) if len(code) else [], dtype="string"),
            "start": pd.to_datetime(grid.start, utc=True).as_unit("ns"),
            "end": pd.to_datetime(grid.end, utc=True).as_unit("ns"),
            "energy_wh": (sums.energy_j + estimated_j) / 3600.0,
            "uncertainty_wh": (sums.uncertainty_j + estimated_unc_j) / 3600.0,
            "measured_s": measured_s,
            "gap_s": gap_s,
            "estimated_wh": estimated_j / 3600.0,
            "n_samples": sums.n_samples,
            "n_flagged": sums.n_flagged,
            "avg_watts": avg,
            "min_watts": sums.min_w,
            "peak_watts": sums.max_w,
            "method": pd.array(method, dtype="string"),
            "power_check_wh": sums.check_j / 3600.0,
            "quality": pd.array(quality, dtype="string"),
        }
    )


def _sum_pieces(pieces: pd.DataFrame, first: np.ndarray, stop: np.ndarray) -> pd.DataFrame:
    """Figures of intervals made of the consecutive pieces ``first .. stop - 1``."""
    idx = np.empty(2 * len(first), dtype=np.int64)
    idx[0::2], idx[1::2] = first, stop

    def over(column: str, ufunc: np.ufunc) -> np.ndarray:
        values = pieces[column].to_numpy(dtype=np.float64)
        return ufunc.reduceat(np.append(values, 0.0), idx)[0::2]

    out = {
        c: over(c, np.add)
        for c in (
            "energy_wh",
            "uncertainty_wh",
            "measured_s",
            "gap_s",
            "estimated_wh",
            "power_check_wh",
        )
    }
    measured_ns = over("measured_s", np.add) * NS
    counter_share = (pieces["method"] == "counter").to_numpy() | (
        pieces["method"] == "mixed"
    ).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        measured_wh = out["energy_wh"] - out["estimated_wh"]
        avg = np.where(out["measured_s"] > 0, measured_wh * 3600.0 / out["measured_s"], np.nan)
    kinds = pieces["method"].to_numpy(dtype=object)
    has_counter = np.add.reduceat(np.append(counter_share, False).astype(np.int64), idx)[0::2] > 0
    has_trap = (
        np.add.reduceat(
            np.append((kinds == "trapezoid") | (kinds == "mixed"), False).astype(np.int64), idx
        )[0::2]
        > 0
    )
    measured = measured_ns > 0
    method = np.where(
        ~measured,
        "none",
        np.where(has_counter & has_trap, "mixed", np.where(has_counter, "counter", "trapezoid")),
    )
    quality = np.where(~measured, "missing", np.where(out["gap_s"] <= 0, "complete", "partial"))
    return pd.DataFrame(
        {
            "energy_wh": out["energy_wh"],
            "uncertainty_wh": out["uncertainty_wh"],
            "measured_s": out["measured_s"],
            "gap_s": out["gap_s"],
            "estimated_wh": out["estimated_wh"],
            "n_samples": over("n_samples", np.add).astype(np.int64),
            "n_flagged": over("n_flagged", np.add).astype(np.int64),
            "avg_watts": avg,
            "min_watts": over("min_watts", np.fmin),
            "peak_watts": over("peak_watts", np.fmax),
            "method": pd.array(method, dtype="string"),
            "power_check_wh": out["power_check_wh"],
            "quality": pd.array(quality, dtype="string"),
        }
    )


__all__ = ["ENERGY_COLUMNS", "GapFill", "empty_energy_frame", "hourly_energy", "interval_energy"]
