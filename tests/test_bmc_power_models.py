"""Power models: SPECpower curves under a load profile, and the replayed H100 trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.power_models import LoadProfile, SpecPowerModel, TraceReplayModel, curve_from_row
from metering.sim_data import DEFAULT_POWER_DATA, load_h100_trace, load_specpower_curves
from tests.peers.bmc_peers import need

R640 = curve_from_row("R640", [55, 125, 151, 176, 202, 232, 261, 301, 357, 421, 469])
times = st.floats(0, 4e9, allow_nan=False)


def test_curve_interpolates_between_published_points() -> None:
    assert R640.watts_for_load([0.0, 0.05, 0.5, 1.0, 1.2]).tolist() == [55, 90, 232, 469, 469]


@given(seed=st.integers(0, 2**63), t=times)
def test_profile_is_deterministic_and_bounded(seed: int, t: float) -> None:
    profile = LoadProfile(seed=seed)
    a = profile.load(np.array([t]))
    assert a.tolist() == LoadProfile(seed=seed).load(np.array([t])).tolist()
    assert 0.0 <= a[0] <= 1.0
    watts = SpecPowerModel(R640, profile).watts(np.array([t]))
    assert R640.idle_watts <= watts[0] <= R640.max_watts


def test_profile_follows_the_day_and_seeds_differ() -> None:
    day = np.arange(0, 86_400, 60.0)
    load = LoadProfile(seed=1, noise=0.0).load(day)
    assert abs(float(day[np.argmax(load)]) / 3600 - 15.0) < 0.1  # peak at 15:00 UTC
    noisy_a = LoadProfile(seed=1).load(day)
    noisy_b = LoadProfile(seed=2).load(day)
    assert not np.array_equal(noisy_a, noisy_b)


def test_a_month_at_ten_seconds_is_one_vectorised_call() -> None:
    t = np.arange(0, 30 * 86_400, 10.0)
    watts = SpecPowerModel(R640, LoadProfile(seed=3)).watts(t)
    assert watts.shape == t.shape and np.isfinite(watts).all()


def test_trace_loops_and_scales() -> None:
    model = TraceReplayModel(np.array([0.0, 10.0, 20.0]), np.array([100.0, 300.0, 100.0]))
    assert model.watts([0.0, 5.0, 10.0, 25.0, 30.0]).tolist() == [100, 200, 300, 200, 300]
    half = TraceReplayModel(model.t_s, model.trace_watts, scale=0.5, start_epoch_s=5.0)
    assert half.watts([5.0, 15.0]).tolist() == [50.0, 150.0]
    with pytest.raises(ValueError):
        TraceReplayModel(np.array([0.0, 0.0]), np.array([1.0, 2.0]))


def _data_dir() -> Path:
    need(DEFAULT_POWER_DATA.is_dir(), f"power data {DEFAULT_POWER_DATA} missing")
    return DEFAULT_POWER_DATA


def test_real_curves_and_h100_trace_load() -> None:
    _data_dir()
    curves = load_specpower_curves()
    assert curves["Dell PowerEdge R640"].max_watts == 469
    trace = load_h100_trace()
    assert 150 < trace.duration_s < 152
    # The trace idles near 72 W at its start and reaches ~700 W under the matmul phase.
    assert trace.watts([0.0])[0] == pytest.approx(72.0, abs=1)
    peak = trace.watts(np.arange(0, trace.duration_s, 0.05)).max()
    assert 650 < peak < 760  # power limit 700 W, with short excursions above it
