"""Samples frames made ready for the energy kernel: checked, host-sorted, twins dropped.

The check at the boundary of :mod:`metering.energy`: required columns, aware UTC times,
numeric watts, integer flags; NaN/inf watts are excluded (and counted), negative unflagged
watts refused. Row order cannot change a result: rows are put in (host, time, values) order
unless they already are in strictly rising time per host.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketplace.errors import InvalidInput, Problem
from metering.energy_pieces import HOUR_NS, SampleArrays
from metering.energy_schema import (
    REQUIRED_SAMPLE_COLUMNS,
    check_negative_watts,
    float_column,
    require_columns,
    utc_nanoseconds,
)
from metering.samples import EXCLUDE_FROM_ENERGY


def no_samples() -> SampleArrays:
    """Arrays of zero samples (an interval query over hosts that have none)."""
    e = np.zeros(0)
    return SampleArrays(np.zeros(0, np.int64), np.zeros(0, np.int64), e, np.zeros(0, bool))


def prepare_samples(samples: pd.DataFrame) -> tuple[SampleArrays, np.ndarray] | None:
    """Check the frame at the boundary; arrays sorted by (host, time), exact duplicates out."""
    require_columns(samples, REQUIRED_SAMPLE_COLUMNS, "samples")
    if len(samples) == 0:
        return None
    t = utc_nanoseconds(samples["time"], "samples.time")
    w = float_column(samples, "watts", "samples")
    flags = samples["flags"]
    if not pd.api.types.is_integer_dtype(flags.dtype) or flags.isna().any():
        raise InvalidInput(
            [
                Problem(
                    path="samples.flags",
                    message="must be integer SampleFlag bits, none missing (0 = clean)",
                    value=str(flags.dtype),
                )
            ]
        )
    flag_bits = flags.to_numpy(dtype=np.int64)
    excluded = (flag_bits & int(EXCLUDE_FROM_ENERGY)) != 0
    excluded |= ~np.isfinite(w)
    check_negative_watts(samples, w, excluded)
    optional = {
        name: float_column(samples, name, "samples") if name in samples.columns else None
        for name in ("energy_j", "min_watts", "max_watts")
    }
    host = samples["host"]
    if isinstance(host.dtype, pd.CategoricalDtype):
        code = host.cat.codes.to_numpy()
        labels = np.asarray(host.cat.categories.astype(str), dtype=object)
    else:
        code, uniques = pd.factorize(host, sort=False)
        labels = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    if (code < 0).any():
        raise InvalidInput([Problem(path="samples.host", message="host is missing", value=None)])
    arrays = SampleArrays(
        code, t, w, excluded, optional["energy_j"], optional["min_watts"], optional["max_watts"]
    )
    return sorted_unique(arrays, flag_bits), labels


def sorted_unique(s: SampleArrays, flags: np.ndarray) -> SampleArrays:
    """Sort by (host, time, then every value) so that row order cannot matter; drop exact twins."""
    if _in_order(s.code, s.t):
        return s  # already in order with strictly rising times: no twins possible
    keys: list[np.ndarray] = [a for a in (s.max_w, s.min_w, s.energy_j) if a is not None]
    order = np.lexsort((*keys, flags, s.w, s.t, s.code))
    s = s.take(order)
    flags = flags[order]

    def same(a: np.ndarray) -> np.ndarray:
        return (a[1:] == a[:-1]) | (np.isnan(a[1:]) & np.isnan(a[:-1]))

    twin = (
        (s.code[1:] == s.code[:-1]) & (s.t[1:] == s.t[:-1]) & same(s.w) & (flags[1:] == flags[:-1])
    )
    for a in keys:
        twin &= same(a)
    return s.take(np.concatenate([[True], ~twin]))


def _in_order(code: np.ndarray, t: np.ndarray, block: int = 1 << 20) -> bool:
    """Hosts contiguous in rising code order, times strictly rising within each host.

    Checked block by block so that no temporary as large as the input is made.
    """
    for a in range(0, max(len(t) - 1, 0), block):
        b = min(len(t), a + block + 1)
        c0, c1 = code[a : b - 1], code[a + 1 : b]
        if bool((c1 < c0).any()) or bool(((c1 == c0) & (t[a + 1 : b] <= t[a : b - 1])).any()):
            return False
    return True


def host_hour_range(s: SampleArrays, n_hosts: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last UTC hour (hours since the epoch) of each host's samples, flagged included;
    hosts without samples get an empty range."""
    starts = np.flatnonzero(np.concatenate([[True], s.code[1:] != s.code[:-1]]))
    ends = np.concatenate([starts[1:], [len(s.code)]]) - 1
    first = np.zeros(n_hosts, np.int64)
    last = np.full(n_hosts, -1, np.int64)
    hosts = s.code[starts].astype(np.int64)
    first[hosts] = s.t[starts] // HOUR_NS
    last[hosts] = s.t[ends] // HOUR_NS
    return first, last
