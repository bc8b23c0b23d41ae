"""What the energy kernel returns, and the checks it makes on what it is given.

Columns of an energy frame (``ENERGY_COLUMNS``), one row per host and piece of time (a UTC hour
for :func:`metering.energy.hourly_energy`, one requested interval for
:func:`metering.energy.interval_energy`); intervals are half-open ``[start, end)``:

==============  ===================  ==========================================================
column          dtype                meaning
==============  ===================  ==========================================================
host            string               host id, as in the samples
start           datetime64[ns, UTC]  first instant of the piece
end             datetime64[ns, UTC]  first instant after the piece
energy_wh       float64              measured energy plus ``estimated_wh`` (Wh)
uncertainty_wh  float64              bound on ``|energy_wh - truth|`` (Wh), see below
measured_s      float64              seconds covered by integrated segments
gap_s           float64              seconds not measured (``end - start - measured_s``)
estimated_wh    float64              energy of the opt-in gap estimate (0 unless asked)
n_samples       int64                samples whose time lies in the piece, flagged included
n_flagged       int64                of those, left out (``EXCLUDE_FROM_ENERGY``, NaN/inf watts)
avg_watts       float64              measured energy / measured seconds (NaN if none)
min_watts       float64              lowest power in the piece (readings and cut points)
peak_watts      float64              highest power in the piece (readings and cut points)
method          string               ``trapezoid``, ``counter``, ``mixed`` or ``none``
power_check_wh  float64              trapezoid of the sampled watts over the measured seconds:
                                     the cross-check of a counter (equals the measured energy
                                     when ``method`` is ``trapezoid``)
quality         string               ``complete`` (every second measured), ``partial``,
                                     ``missing`` (no second measured)
==============  ===================  ==========================================================

The uncertainty bound: between two neighbouring valid samples the true power is assumed to stay
within the range of powers seen by those two samples, their ``neighbours`` nearest valid samples
on each side (same host, no gap in between), and any DCMI ``min_watts``/``max_watts`` they
carry. With ``[lo, hi]`` that range and ``w(t)`` the linear interpolation the trapezoid
integrates, the bound of a piece of the segment is ``∫ max(hi - w(t), w(t) - lo) dt`` over the
piece: it contains ``|∫ (p - w) dt|`` whenever ``lo <= p(t) <= hi``, and it is additive, so the
bounds of the pieces of an hour add up to the hour's bound. Energy-counter segments carry no
sampling error; where one is cut inside (an hour or interval end), the share given to each side
carries the same shape bound. Gap estimates add ``gap_s * (max - idle) / 2`` (the whole power
envelope of the SKU).

What the bound cannot see: a change shorter than the sampling interval that leaves no trace in
any of the neighbouring samples (a dip between two samples taken 30 s apart), and a sensor's own
calibration or averaging lag. Sample faster, keep DCMI min/max statistics, or keep a BMC energy
counter when that matters.

Validated on a measured H100 trace against its hardware energy counter
(``tests/test_energy_h100.py``): at the native ~50 ms sampling the energy is within 0.19 % of
the counter (bound ±4.5 %); subsampled to ~1 s, 5 s, 10 s and 30 s the bound (±27 %, ±62 %,
±88 %, ±101 % of the energy: a 1 s on/off duty phase aliases at all of them) contains the
counter's energy over the whole trace and over each workload phase.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from marketplace.errors import InvalidInput, Problem

ENERGY_COLUMNS: dict[str, str] = {
    "host": "string",
    "start": "datetime64[ns, UTC]",
    "end": "datetime64[ns, UTC]",
    "energy_wh": "float64",
    "uncertainty_wh": "float64",
    "measured_s": "float64",
    "gap_s": "float64",
    "estimated_wh": "float64",
    "n_samples": "int64",
    "n_flagged": "int64",
    "avg_watts": "float64",
    "min_watts": "float64",
    "peak_watts": "float64",
    "method": "string",
    "power_check_wh": "float64",
    "quality": "string",
}

#: Columns the kernel needs in a samples frame; the others of ``SAMPLE_COLUMNS`` are not read.
REQUIRED_SAMPLE_COLUMNS = ("host", "time", "watts", "flags")

#: Columns an intervals frame needs; any other column is carried through to the result.
INTERVAL_COLUMNS = ("host", "start", "end")

QUALITIES = ("complete", "partial", "missing")
METHODS = ("trapezoid", "counter", "mixed", "none")

_MAX_ROWS_NAMED = 5


def _rows(index: pd.Index, mask: np.ndarray) -> list[object]:
    return list(index[mask][:_MAX_ROWS_NAMED])


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`InvalidInput` naming every column of ``columns`` missing from ``frame``."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(
            [
                Problem(
                    path=f"{what}.{c}",
                    message=f"column is missing; {what} needs columns {', '.join(columns)}",
                    value=list(frame.columns),
                )
                for c in missing
            ]
        )


def utc_nanoseconds(column: pd.Series, path: str) -> np.ndarray:
    """Times of a timezone-aware column as int64 UTC nanoseconds; naive or NaT -> InvalidInput."""
    dtype = column.dtype
    if not isinstance(dtype, pd.DatetimeTZDtype):
        raise InvalidInput(
            [
                Problem(
                    path=path,
                    message="times must be timezone-aware (UTC), e.g. pd.to_datetime(x, utc=True)",
                    value=str(dtype),
                )
            ]
        )
    index = pd.DatetimeIndex(column).tz_convert("UTC").as_unit("ns")
    nat = np.asarray(index.isna())
    if nat.any():
        raise InvalidInput(
            [Problem(path=path, message="time is missing (NaT)", value=_rows(column.index, nat))]
        )
    return np.asarray(index.asi8)


def float_column(frame: pd.DataFrame, name: str, what: str) -> np.ndarray:
    """A numeric column as float64; a column that is not numeric -> InvalidInput."""
    column = frame[name]
    if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        raise InvalidInput(
            [Problem(path=f"{what}.{name}", message="must be numeric", value=str(column.dtype))]
        )
    if column.dtype == np.float64:
        return np.asarray(column.to_numpy())  # a view: no copy of a large column
    return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))


def check_negative_watts(frame: pd.DataFrame, watts: np.ndarray, excluded: np.ndarray) -> None:
    """Negative power on an unflagged sample is a collector bug: it must carry OUT_OF_RANGE."""
    bad = (watts < 0) & ~excluded
    if bad.any():
        raise InvalidInput(
            [
                Problem(
                    path="samples.watts",
                    message="negative watts on a sample not flagged OUT_OF_RANGE "
                    f"(rows {_rows(frame.index, bad)})",
                    value=float(watts[bad][0]),
                )
            ]
        )


def check_intervals(starts: np.ndarray, ends: np.ndarray, index: pd.Index, what: str) -> None:
    """Every interval must have start < end."""
    bad = starts >= ends
    if bad.any():
        raise InvalidInput(
            [
                Problem(
                    path=f"{what}.start",
                    message=f"start must be before end (rows {_rows(index, bad)})",
                    value=(
                        pd.Timestamp(int(starts[bad][0]), tz="UTC"),
                        pd.Timestamp(int(ends[bad][0]), tz="UTC"),
                    ),
                )
            ]
        )


def check_period(period: tuple[pd.Timestamp, pd.Timestamp]) -> tuple[int, int]:
    """A (start, end) period of aware timestamps with start < end, as UTC nanoseconds."""
    try:
        start, end = (pd.Timestamp(p) for p in period)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            [Problem(path="period", message="must be (start, end) timestamps", value=period)]
        ) from exc
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput(
            [Problem(path="period", message="timestamps must be timezone-aware", value=period)]
        )
    s, e = start.tz_convert("UTC").as_unit("ns").value, end.tz_convert("UTC").as_unit("ns").value
    if s >= e:
        raise InvalidInput(
            [Problem(path="period", message="start must be before end", value=(start, end))]
        )
    return int(s), int(e)


__all__ = [
    "ENERGY_COLUMNS",
    "INTERVAL_COLUMNS",
    "METHODS",
    "QUALITIES",
    "REQUIRED_SAMPLE_COLUMNS",
]
