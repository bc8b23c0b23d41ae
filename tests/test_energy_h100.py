"""Validation of the energy kernel and its uncertainty bound on a measured H100 power trace.

The trace's NVML energy counter is the ground truth (README next to the file). The sampled
power alone is integrated at the native ~50 ms and at every 20th/100th/200th/600th row; the
reported bound must contain the counter's energy over the covered span and over each phase.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metering.energy import interval_energy
from tests.conftest import SHARED_DATA, need

TRACE = SHARED_DATA / "power" / "h100_power_trace.csv"
STEPS = (20, 100, 200, 600)


@pytest.fixture(autouse=True)
def _trace_present() -> None:
    need(TRACE.exists(), f"the measured H100 trace {TRACE} is missing (set HWMARKET_SHARED_DATA)")


def _trace() -> pd.DataFrame:
    raw = pd.read_csv(TRACE)
    return pd.DataFrame(
        {
            "host": "h100",
            "time": pd.to_datetime(raw["t_ns"], utc=True, unit="ns"),
            "watts": raw["power_mw"] / 1000.0,
            "flags": 0,
            "truth_j": raw["energy_mj"] / 1000.0,
            "phase": raw["phase"],
        }
    )


def _truth_j(trace: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    t = trace["time"].dt.as_unit("ns").astype("int64").to_numpy()
    e = trace["truth_j"].to_numpy()
    return float(np.interp(end.value, t, e) - np.interp(start.value, t, e))


def _windows(trace: pd.DataFrame, subsample: pd.DataFrame) -> pd.DataFrame:
    """The whole covered span, then each phase clipped to it (phase ends at the next start)."""
    first, last = subsample["time"].iloc[0], subsample["time"].iloc[-1]
    starts = trace.groupby("phase", sort=False)["time"].min()
    ends = [*starts.iloc[1:], trace["time"].iloc[-1]]
    rows = [("whole", first, last)]
    for phase, a, b in zip(starts.index, starts, ends, strict=True):
        a, b = max(a, first), min(b, last)
        if a < b:
            rows.append((phase, a, b))
    return pd.DataFrame(rows, columns=["window", "start", "end"]).assign(host="h100")


def validate(step: int) -> pd.DataFrame:
    """Estimate, bound and truth per window for one subsampling step."""
    trace = _trace()
    sub = trace.iloc[::step].reset_index(drop=True)
    windows = _windows(trace, sub)
    got = interval_energy(sub[["host", "time", "watts", "flags"]], windows)
    got["truth_wh"] = [
        _truth_j(trace, a, b) / 3600 for a, b in zip(windows.start, windows.end, strict=True)
    ]
    got["error_wh"] = got["energy_wh"] - got["truth_wh"]
    got["width_pct"] = 100 * got["uncertainty_wh"] / got["energy_wh"]
    return got


def test_native_sampling_is_within_half_a_percent_of_the_counter() -> None:
    whole = validate(1).iloc[0]
    assert whole["window"] == "whole"
    assert abs(whole["error_wh"]) <= 0.005 * whole["truth_wh"]
    assert abs(whole["error_wh"]) <= whole["uncertainty_wh"]


@pytest.mark.parametrize("step", STEPS)
def test_bound_contains_the_counter_over_the_trace_and_each_phase(step: int) -> None:
    got = validate(step)
    print(
        f"\nstep {step}:\n"
        + got[["window", "energy_wh", "truth_wh", "error_wh", "uncertainty_wh", "width_pct"]]
        .round(2)
        .to_string()
    )
    assert len(got) >= 5
    outside = got[got["error_wh"].abs() > got["uncertainty_wh"]]
    assert outside.empty, outside.to_string()


if __name__ == "__main__":
    for s in (1, *STEPS):
        g = validate(s)
        print(
            f"every {s}th row:",
            "; ".join(
                f"{w} err {e:+.1f} Wh bound ±{u:.1f} Wh ({p:.1f}%)"
                for w, e, u, p in zip(
                    g.window, g.error_wh, g.uncertainty_wh, g.width_pct, strict=True
                )
            ),
        )
