"""What the energy kernel works on: samples as host-sorted arrays, and pieces of time.

A host's pieces are consecutive half-open intervals (UTC hours, or the pieces between the ends
of requested intervals); every piece of every host has one global index, and the kernel sums
into arrays indexed by it. Times are int64 UTC nanoseconds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

NS = 1_000_000_000
HOUR_NS = 3600 * NS
CHUNK_SAMPLES = 65_536  # temporaries stay in cache and malloc arenas: 2-3x faster than 2M


@dataclass(frozen=True)
class SampleArrays:
    """Samples of many hosts, sorted by (code, t); ``excluded`` marks flagged or non-finite."""

    code: np.ndarray
    t: np.ndarray
    w: np.ndarray
    excluded: np.ndarray
    energy_j: np.ndarray | None = None
    min_w: np.ndarray | None = None
    max_w: np.ndarray | None = None

    def take(self, part: slice | np.ndarray) -> SampleArrays:
        """The same samples restricted to a slice or mask."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[part]

        return SampleArrays(
            self.code[part],
            self.t[part],
            self.w[part],
            self.excluded[part],
            cut(self.energy_j),
            cut(self.min_w),
            cut(self.max_w),
        )


class PieceGrid:
    """Pieces of time per host: host ``h`` owns pieces ``offset[h] .. offset[h+1]-1``.

    A host's pieces are consecutive: piece ``j`` ends where ``j + 1`` starts. ``locate`` gives
    the host-local piece holding an instant (-1 before the first, ``m`` after the last).
    """

    offset: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def n_pieces(self) -> int:
        return int(self.offset[-1])

    def locate(self, code: np.ndarray, t: np.ndarray, just_before: bool) -> np.ndarray:
        """Local piece index of instant ``t`` (or of the instant just before it)."""
        raise NotImplementedError

    def start_of(self, code: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Start of local piece ``local`` (its host's last end for ``m``); any value outside."""
        raise NotImplementedError

    def piece_of(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Global index of the piece holding ``t`` (meaningless where ``t`` is outside)."""
        return self.offset[code] + self.locate(code, t, just_before=False)


class HourGrid(PieceGrid):
    """Whole UTC hours ``first[h] .. last[h]`` (hour numbers since the epoch) for each host."""

    def __init__(self, first: np.ndarray, last: np.ndarray) -> None:
        self.first = first.astype(np.int64)
        counts = np.maximum(last.astype(np.int64) - self.first + 1, 0)
        self.offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        host = np.repeat(np.arange(len(counts)), counts)
        hour = self.first[host] + np.arange(self.n_pieces) - self.offset[host]
        self.start = hour * HOUR_NS
        self.end = self.start + HOUR_NS
        self.shift = self.offset[:-1] - self.first

    def locate(self, code: np.ndarray, t: np.ndarray, just_before: bool) -> np.ndarray:
        return ((t - 1) // HOUR_NS if just_before else t // HOUR_NS) - self.first[code]

    def start_of(self, code: np.ndarray, local: np.ndarray) -> np.ndarray:
        return (self.first[code] + local) * HOUR_NS

    def piece_of(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        # one gather instead of two: the hot path of hourly energy
        return t // HOUR_NS + self.shift[code]


class CutGrid(PieceGrid):
    """Pieces between sorted unique cut instants of each host (``cut_offset`` like ``offset``)."""

    def __init__(self, cut_code: np.ndarray, cuts: np.ndarray, n_hosts: int) -> None:
        self.cut_code = cut_code
        self.cuts = cuts
        ncut = np.bincount(cut_code, minlength=n_hosts)
        self.cut_offset = np.concatenate([[0], np.cumsum(ncut)]).astype(np.int64)
        counts = np.maximum(ncut - 1, 0)
        self.offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        last_of_host = np.zeros(len(cuts), dtype=bool)
        last_of_host[self.cut_offset[1:][ncut > 0] - 1] = True
        self.start = cuts[~last_of_host]
        self.end = cuts[1:][~last_of_host[:-1]] if len(cuts) else cuts

    def locate(self, code: np.ndarray, t: np.ndarray, just_before: bool) -> np.ndarray:
        if len(t) == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = int(code[0]), int(code[-1])
        c0, c1 = int(self.cut_offset[lo]), int(self.cut_offset[hi + 1])
        cuts, ccode = self.cuts[c0:c1], self.cut_code[c0:c1]
        tmin = int(t.min()) if c0 == c1 else min(int(t.min()), int(cuts.min()))
        tmax = int(t.max()) if c0 == c1 else max(int(t.max()), int(cuts.max()))
        span = tmax - tmin + 1
        if (hi - lo + 1) * span >= 2**62 and hi > lo:
            # (host, time) keys would overflow int64: search the two halves of the hosts apart
            mid = np.searchsorted(code, (lo + hi) // 2, side="right")
            return np.concatenate(
                [
                    self.locate(code[:mid], t[:mid], just_before),
                    self.locate(code[mid:], t[mid:], just_before),
                ]
            )
        keys = (ccode - lo) * span + (cuts - tmin)  # (host, time) order as one int64
        wanted = (code - lo) * span + (t - tmin)
        if just_before:
            pos = np.searchsorted(keys, wanted, side="left") + c0
        else:
            pos = np.searchsorted(keys, wanted, side="right") + c0
        return pos - self.cut_offset[code] - 1

    def start_of(self, code: np.ndarray, local: np.ndarray) -> np.ndarray:
        if len(self.cuts) == 0:
            return np.full(len(code), -1, dtype=np.int64)
        at = np.clip(self.cut_offset[code] + np.maximum(local, 0), 0, len(self.cuts) - 1)
        return self.cuts[at]


def host_chunks(code: np.ndarray, target: int = CHUNK_SAMPLES) -> list[slice]:
    """Slices of whole hosts of about ``target`` samples each (one host may exceed it)."""
    n = len(code)
    if n == 0:
        return []
    bounds = [0]
    while bounds[-1] < n:
        want = bounds[-1] + target
        if want >= n:
            bounds.append(n)
            break
        # end the chunk at the first host change at or after ``want``
        cut = int(np.searchsorted(code, code[want], side="right"))
        bounds.append(cut)
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]
