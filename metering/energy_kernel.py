"""The vectorised core of energy integration: host-sorted numpy arrays in, per-piece sums out.

Everything here works on arrays already checked, sorted by (host code, time) and free of exact
duplicates (see :mod:`metering.energy`). Time is int64 nanoseconds (UTC), power float64 watts,
energy joules. One pass over a chunk of whole hosts: segments between neighbouring valid samples
are formed with array shifts, split exactly at piece ends (hours, interval ends) and summed into
pieces with ``np.add.reduceat`` over runs; no Python runs per host or per sample. Chunks of about
64k samples keep the temporaries in cache and small, so memory stays below the input's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metering.energy_pieces import NS, PieceGrid, SampleArrays

_DT_MS_BITS = 24
_DT_MS_MAX = 2**_DT_MS_BITS - 1


@dataclass
class PieceSums:
    """Running per-piece sums, filled chunk by chunk."""

    n_samples: np.ndarray
    n_flagged: np.ndarray
    energy_j: np.ndarray
    check_j: np.ndarray
    uncertainty_j: np.ndarray
    measured_ns: np.ndarray
    counter_ns: np.ndarray
    min_w: np.ndarray
    max_w: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> PieceSums:
        """Empty sums for ``n`` pieces."""
        z = np.zeros
        return cls(
            z(n, np.int64),
            z(n, np.int64),
            z(n),
            z(n),
            z(n),
            z(n),
            z(n),
            np.full(n, np.nan),
            np.full(n, np.nan),
        )


@dataclass(frozen=True)
class Rules:
    """How to integrate: gap limit, neighbourhood of the bound, counter wrap."""

    poll_ns: np.ndarray | None  # per host code; None or NaN -> median spacing of the host
    max_gap_factor: float
    max_gap_ns: float | None
    neighbours: int
    counter_wrap_j: float | None


def _bound(
    w0: np.ndarray, w1: np.ndarray, lo: np.ndarray, hi: np.ndarray, sec: np.ndarray
) -> np.ndarray:
    """∫ max(hi - w, w - lo) dt over a piece where w runs linearly from w0 to w1 (joules).

    max(hi - w, w - lo) = half + |w - mid|; with x = w - mid linear from x0 to x1 the integral
    of |x| is the difference of the antiderivative x|x|/2, divided by the slope.
    """
    mid = (hi + lo) * 0.5
    x0 = w0 - mid
    x1 = w1 - mid
    den = x1 - x0
    flat = den == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_abs = (x1 * np.abs(x1) - x0 * np.abs(x0)) / (2 * den)
    mean_abs = np.where(flat, np.abs(x0), mean_abs)
    return ((hi - lo) * 0.5 + mean_abs) * sec


def median_spacing(code: np.ndarray, dt: np.ndarray, n_hosts: int) -> np.ndarray:
    """Median of positive spacings per host code, in ns (NaN where a host has none).

    Spacings are taken to the millisecond and clipped at 2**24 ms (4.7 h) before the median:
    (host, spacing) then packs into one uint32 key for up to 256 hosts, and sorting uint32 keys
    is several times faster than int64 ones; the packing never changes the result.
    """
    out = np.full(n_hosts, np.nan)
    if len(code) == 0:
        return out
    lo = int(code[0])
    rel = code - lo
    ms = np.minimum(dt // 1_000_000, _DT_MS_MAX)
    if int(rel[-1]) < 2 ** (32 - _DT_MS_BITS):
        keys = np.sort((rel.astype(np.uint32) << _DT_MS_BITS) | ms.astype(np.uint32))
        ordered = (keys & np.uint32(_DT_MS_MAX)).astype(np.int64)
    else:
        ordered = ms[np.lexsort((ms, rel))]
    counts = np.bincount(rel)
    has = np.flatnonzero(counts)
    first = np.concatenate([[0], np.cumsum(counts)])[has]
    n = counts[has]
    out[has + lo] = (ordered[first + (n - 1) // 2] + ordered[first + n // 2]) * 500_000.0
    return out


def _neighbour_range(s: SampleArrays, joined: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest power seen around each segment: its two samples, ``k`` more samples
    on each side while no gap or host change intervenes, and DCMI min/max where present."""
    w = s.w
    pair_lo = np.minimum(w[:-1], w[1:])
    pair_hi = np.maximum(w[:-1], w[1:])
    lo, hi = pair_lo.copy(), pair_hi.copy()
    big = len(lo)
    chain = joined  # chain[x]: segments x .. x+j-1 all joined
    for j in range(1, k + 1):
        if j > 1:
            chain = chain[:-1] & joined[j - 1 :]
        if big - j <= 0:
            break
        # segment i - j is seen from segment i when chain[i - j]; segment i + j when chain[i + 1]
        prev_lo = np.where(chain, pair_lo[: len(chain)], np.inf)
        prev_hi = np.where(chain, pair_hi[: len(chain)], -np.inf)
        if j == 1:
            next_lo, next_hi = prev_lo, prev_hi
        else:
            next_lo = np.where(chain, pair_lo[j - 1 :], np.inf)
            next_hi = np.where(chain, pair_hi[j - 1 :], -np.inf)
        np.minimum(lo[j:], prev_lo[: big - j], out=lo[j:])
        np.maximum(hi[j:], prev_hi[: big - j], out=hi[j:])
        np.minimum(lo[: big - j], next_lo[1 : big - j + 1], out=lo[: big - j])
        np.maximum(hi[: big - j], next_hi[1 : big - j + 1], out=hi[: big - j])
    if s.min_w is not None:
        lo = np.fmin(lo, np.fmin(s.min_w[:-1], s.min_w[1:]))
    if s.max_w is not None:
        hi = np.fmax(hi, np.fmax(s.max_w[:-1], s.max_w[1:]))
    return lo, hi


def _counter_energy(
    s: SampleArrays, hi: np.ndarray, sec: np.ndarray, wrap: float | None
) -> np.ndarray | None:
    """Counter differences per segment (J), NaN where unusable (reset, absent); None if no
    counter at all."""
    if s.energy_j is None or not np.isfinite(s.energy_j).any():
        return None
    diff = s.energy_j[1:] - s.energy_j[:-1]
    if wrap is not None:
        wrapped = diff + wrap
        # A wrap is believed only if the wrapped difference is physically possible; anything else
        # is a reset (BMC reboot, counter cleared) and the sampled power takes over.
        plausible = (diff < 0) & (wrapped >= 0) & (wrapped <= 4.0 * np.fmax(hi, 1.0) * sec + 1.0)
        diff = np.where(plausible, wrapped, diff)
    return np.where(diff >= 0, diff, np.nan)


@dataclass(frozen=True)
class _Runs:
    """Maximal runs of equal piece index among items inside their host's pieces."""

    starts: np.ndarray  # first item of every run (inside or not), for reduceat
    inside: np.ndarray  # which runs are inside
    pieces: np.ndarray  # piece index of the inside runs (strictly increasing)

    @classmethod
    def of(cls, g: np.ndarray, inside: np.ndarray, all_inside: bool = False) -> _Runs:
        """Runs of ``g`` (non-decreasing within each host) split where ``inside`` changes."""
        brk = np.empty(len(g), dtype=bool)
        if len(g) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64))
        brk[0] = True
        np.not_equal(g[1:], g[:-1], out=brk[1:])
        if not all_inside:
            brk[1:] |= inside[1:] != inside[:-1]
        starts = np.flatnonzero(brk)
        ins = inside[starts]
        return cls(starts, ins, g[starts][ins])

    def without_last(self, n: int) -> _Runs:
        """The runs of the first ``n - 1`` items (segments are indexed by their first sample)."""
        if len(self.starts) and self.starts[-1] == n - 1:
            keep = self.inside[:-1]
            return _Runs(self.starts[:-1], keep, self.pieces[: int(keep.sum())])
        return self

    def fold(self, target: np.ndarray, values: np.ndarray, ufunc: np.ufunc = np.add) -> None:
        """Reduce ``values`` over each inside run into ``target`` (add, fmin or fmax)."""
        if len(self.pieces) == 0:
            return
        reduced = ufunc.reduceat(values, self.starts)[self.inside]
        if ufunc is np.add:
            target[self.pieces] += reduced
        else:
            target[self.pieces] = ufunc(target[self.pieces], reduced)


def integrate_chunk(
    s: SampleArrays, grid: PieceGrid, rules: Rules, n_hosts: int, acc: PieceSums
) -> None:
    """Add one chunk of whole hosts to ``acc`` (pieces of different chunks never overlap).

    Samples are in (host, time) order, so the piece index of samples and of segments never
    decreases within a host: per-piece sums are ``np.add.reduceat`` over runs, several times
    cheaper than ``np.bincount`` with weights.
    """
    if len(s.t) == 0:
        return
    m = grid.offset[1:] - grid.offset[:-1]
    g_all = grid.piece_of(s.code, s.t)
    # Usually every sample lies in its host's pieces (hours span the samples): then the
    # per-sample range test can be skipped, checking only each host's first and last sample.
    edges = np.flatnonzero(s.code[1:] != s.code[:-1])
    ends = np.concatenate([[0], edges + 1, edges, [len(s.code) - 1]])
    local_ends = g_all[ends] - grid.offset[s.code[ends]]
    covered = bool(np.all((local_ends >= 0) & (local_ends < m[s.code[ends]])))
    if covered:
        inside = np.ones(len(g_all), bool)
    else:
        local = g_all - grid.offset[s.code]
        inside = (local >= 0) & (local < m[s.code])
    runs = _Runs.of(g_all, inside, covered)
    lengths = np.diff(np.append(runs.starts, len(g_all)))[runs.inside]
    acc.n_samples[runs.pieces] += lengths
    if s.excluded.any():
        runs.fold(acc.n_flagged, s.excluded.astype(np.int64))
        keep = ~s.excluded
        v = s.take(keep)
        g_v = g_all[keep]
        inside_v = inside if covered else inside[keep]
        v_runs = _Runs.of(g_v, inside_v, covered)
    else:
        v, g_v, inside_v, v_runs = s, g_all, inside, runs
    n = len(v.t)
    if n == 0:
        return
    v_runs.fold(acc.min_w, v.w, np.fmin)
    v_runs.fold(acc.max_w, v.w, np.fmax)
    if n < 2:
        return

    code0 = v.code[:-1]
    dtn = v.t[1:] - v.t[:-1]
    same = code0 == v.code[1:]
    if rules.max_gap_ns is not None:
        gap_ns = np.full(n_hosts, float(rules.max_gap_ns))
    else:
        poll = rules.poll_ns
        hosts_here = np.unique(code0[[0, -1]])
        if poll is None or np.isnan(poll[hosts_here[0] : hosts_here[-1] + 1]).any():
            # no poll interval given for (some of) these hosts: their median spacing stands in
            pos = same & (dtn > 0)
            median = median_spacing(code0[pos], dtn[pos], n_hosts)
            poll = median if poll is None else np.where(np.isnan(poll), median, poll)
        gap_ns = rules.max_gap_factor * poll
    with np.errstate(invalid="ignore"):
        joined = same & (dtn <= gap_ns[code0])
    seg = joined & (dtn > 0)
    lo, hi = _neighbour_range(v, joined, rules.neighbours)

    w0, w1 = v.w[:-1], v.w[1:]
    sec = dtn * (1.0 / NS)
    trap = (w0 + w1) * 0.5 * sec
    # A segment lies whole in one piece when both its samples do (a segment ending exactly
    # on the next piece's start goes the split way, which handles that case exactly).
    in_one = g_v[1:] == g_v[:-1]
    whole = seg & in_one
    if not covered:
        whole &= inside_v[:-1]
    # runs of segments are the runs of their first samples, less a last run of one sample
    seg_runs = v_runs.without_last(n)
    bound = _bound(w0, w1, lo, hi, sec) * whole
    measured = dtn * whole
    trap_whole = trap * whole
    seg_runs.fold(acc.check_j, trap_whole)
    seg_runs.fold(acc.measured_ns, measured)
    counter = _counter_energy(v, hi, sec, rules.counter_wrap_j)
    if counter is None:
        seg_runs.fold(acc.energy_j, trap_whole)
        seg_runs.fold(acc.uncertainty_j, bound)
    else:
        use = np.isfinite(counter) & whole
        seg_runs.fold(acc.energy_j, np.where(use, counter, trap_whole))
        seg_runs.fold(acc.uncertainty_j, np.where(use, 0.0, bound))
        seg_runs.fold(acc.counter_ns, measured * use)

    maybe = np.flatnonzero(seg & ~in_one)
    if len(maybe):
        ca = v.code[maybe]
        pa = g_v[maybe] - grid.offset[ca]
        pb = grid.locate(ca, v.t[maybe + 1], just_before=True)
        mh = m[ca]
        ok = np.maximum(pa, 0) <= np.minimum(pb, mh - 1)  # touches at least one piece
        if ok.any():
            _split_segments(v, grid, maybe[ok], pa[ok], pb[ok], mh[ok], lo, hi, trap, counter, acc)


def _split_segments(
    v: SampleArrays,
    grid: PieceGrid,
    split: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    mh: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    trap: np.ndarray,
    counter: np.ndarray | None,
    acc: PieceSums,
) -> None:
    """Cut segments that cross piece ends exactly at them, interpolating power at each cut.

    ``split`` indexes the segments; ``pa``, ``pb`` and ``mh`` are given for those only: the
    local pieces of their start and of the instant before their end, and their host's count.
    """
    first = np.maximum(pa, 0)
    last = np.minimum(pb, mh - 1)
    count = last - first + 1
    rep = np.repeat(split, count)
    step = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
    g = grid.offset[v.code[rep]] + np.repeat(first, count) + step
    t0, t1 = v.t[rep], v.t[rep + 1]
    a = np.maximum(t0, grid.start[g])
    b = np.minimum(t1, grid.end[g])
    span = (t1 - t0).astype(np.float64)
    w0, w1 = v.w[rep], v.w[rep + 1]
    wa = w0 + (w1 - w0) * ((a - t0) / span)
    wb = w0 + (w1 - w0) * ((b - t0) / span)
    length = b - a
    sec = length / NS
    part = (wa + wb) * 0.5 * sec
    bound = _bound(wa, wb, lo[rep], hi[rep], sec)
    seg_trap = trap[rep]
    share = np.where(seg_trap > 0, part / np.where(seg_trap > 0, seg_trap, 1.0), length / span)
    cnt = np.full(len(rep), np.nan) if counter is None else counter[rep]
    use = np.isfinite(cnt)
    np.add.at(acc.energy_j, g, np.where(use, cnt * share, part))
    np.add.at(acc.check_j, g, part)
    np.add.at(acc.uncertainty_j, g, bound)
    np.add.at(acc.measured_ns, g, length.astype(np.float64))
    np.add.at(acc.counter_ns, g, np.where(use, length, 0).astype(np.float64))
    np.fmin.at(acc.min_w, g, np.minimum(wa, wb))
    np.fmax.at(acc.max_w, g, np.maximum(wa, wb))
