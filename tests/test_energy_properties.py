"""Properties of the energy kernel, checked by hypothesis on generated sample frames."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.energy import hourly_energy, interval_energy

T0 = pd.Timestamp("2026-05-04 22:00", tz="UTC")
FIGURES = ["energy_wh", "uncertainty_wh", "measured_s", "gap_s", "power_check_wh"]
quick = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fleets(
    draw: st.DrawFn, max_hosts: int = 3, max_n: int = 60, flagged: bool = True
) -> pd.DataFrame:
    """Irregular samples of a few hosts over a few hours, some flagged, some far apart."""
    frames = []
    for h in range(draw(st.integers(1, max_hosts))):
        n = draw(st.integers(2, max_n))
        steps = draw(st.lists(st.integers(1, 1200), min_size=n, max_size=n))
        watts = draw(st.lists(st.floats(0, 2000, allow_nan=False), min_size=n, max_size=n))
        flags = (
            draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 4]), min_size=n, max_size=n))
            if flagged
            else [0] * n
        )
        t = T0 + pd.to_timedelta(np.cumsum(steps), unit="s")
        frames.append(pd.DataFrame({"host": f"h{h}", "time": t, "watts": watts, "flags": flags}))
    frame = pd.concat(frames, ignore_index=True)
    frame["flags"] = frame["flags"].astype("int64")
    return frame


def _cuts(
    data: st.DataObject, start: pd.Timestamp, end: pd.Timestamp, k: int
) -> list[pd.Timestamp]:
    span = int((end - start).total_seconds())
    inner = sorted(set(data.draw(st.lists(st.integers(1, span - 1), max_size=k))))
    return [start, *(start + pd.Timedelta(seconds=s) for s in inner), end]


@quick
@given(fleets(), st.randoms(use_true_random=False), st.integers(0, 20))
def test_row_order_and_exact_duplicates_change_nothing(
    samples: pd.DataFrame, rnd: random.Random, n_dup: int
) -> None:
    expected = hourly_energy(samples, poll_interval_s=300)
    dup = samples.iloc[[rnd.randrange(len(samples)) for _ in range(n_dup)]]
    shuffled = pd.concat([samples, dup]).sample(frac=1, random_state=rnd.randrange(2**31))
    pd.testing.assert_frame_equal(hourly_energy(shuffled, poll_interval_s=300), expected)


@quick
@given(fleets(flagged=True))
def test_hours_add_up_to_days(samples: pd.DataFrame) -> None:
    hours = hourly_energy(samples)
    day0 = T0.normalize()
    days = pd.DataFrame(
        {"host": h, "start": day0 + pd.Timedelta(days=d), "end": day0 + pd.Timedelta(days=d + 1)}
        for h in samples["host"].unique()
        for d in range(3)
    )
    got = interval_energy(samples, days).set_index(["host", "start"])
    summed = hours.groupby(["host", hours["start"].dt.floor("D")])[
        [*FIGURES[:-1], "n_samples", "n_flagged"]
    ].sum()
    summed.index = summed.index.set_names(["host", "start"])
    joined = got.merge(summed, left_index=True, right_index=True, suffixes=("", "_h"))
    assert len(joined) >= 1
    for c in ["energy_wh", "uncertainty_wh", "measured_s", "n_samples", "n_flagged"]:
        np.testing.assert_allclose(joined[c], joined[c + "_h"], rtol=1e-9, atol=1e-9)


@quick
@given(fleets(max_hosts=2, flagged=False), st.data())
def test_pieces_of_an_hour_add_up_to_the_hour_exactly(
    samples: pd.DataFrame, data: st.DataObject
) -> None:
    hours = hourly_energy(samples)
    row = hours.iloc[data.draw(st.integers(0, len(hours) - 1))]
    cuts = _cuts(data, row["start"], row["end"], 6)
    pieces = pd.DataFrame(
        {"host": row["host"], "start": cuts[:-1], "end": cuts[1:], "piece": range(len(cuts) - 1)}
    )
    got = interval_energy(samples, pieces)
    assert list(got["piece"]) == list(range(len(cuts) - 1))
    for c in FIGURES:
        assert abs(got[c].sum() - row[c]) <= 1e-9 * max(1.0, abs(row[c])), c
    assert got["n_samples"].sum() == row["n_samples"]
    assert np.nanmax(got["peak_watts"]) == row["peak_watts"] or row["quality"] == "missing"


@quick
@given(st.lists(st.integers(1, 30), min_size=2, max_size=300), st.floats(1, 3000), st.data())
def test_constant_power_integrates_exactly(
    steps: list[int], watts: float, data: st.DataObject
) -> None:
    t = T0 + pd.to_timedelta(np.cumsum(steps) + 0.25, unit="s")
    samples = pd.DataFrame({"host": "h", "time": t, "watts": watts, "flags": 0})
    got = hourly_energy(samples, poll_interval_s=10)
    span = (t[-1] - t[0]).total_seconds()
    assert got["measured_s"].sum() == span
    np.testing.assert_allclose(got["energy_wh"].sum(), watts * span / 3600, rtol=1e-12)
    np.testing.assert_allclose(got["energy_wh"], watts * got["measured_s"] / 3600, rtol=1e-12)
    assert (got["uncertainty_wh"] == 0).all()


@quick
@given(
    st.lists(st.integers(1, 30), min_size=2, max_size=300),
    st.floats(0, 500),
    st.floats(-0.05, 0.05),
    st.data(),
)
def test_linear_ramp_integrates_exactly_over_any_cut(
    steps: list[int], a: float, b: float, data: st.DataObject
) -> None:
    secs = np.cumsum(steps).astype(float)
    t = T0 + pd.to_timedelta(secs, unit="s")
    watts = a + 1000 + b * secs  # stays positive
    samples = pd.DataFrame({"host": "h", "time": t, "watts": watts, "flags": 0})
    lo, hi = int(secs[0]), int(secs[-1])
    cut = data.draw(st.integers(lo, hi)) if hi > lo else lo
    edges = sorted({lo, cut, hi})
    if len(edges) < 2:
        return
    pieces = pd.DataFrame(
        {
            "host": "h",
            "start": [T0 + pd.Timedelta(seconds=s) for s in edges[:-1]],
            "end": [T0 + pd.Timedelta(seconds=s) for s in edges[1:]],
        }
    )
    got = interval_energy(samples, pieces, poll_interval_s=30)
    for (s0, s1), e in zip(itertools.pairwise(edges), got["energy_wh"], strict=True):
        exact = (a + 1000) * (s1 - s0) + b * (s1 * s1 - s0 * s0) / 2
        np.testing.assert_allclose(e * 3600, exact, rtol=1e-9, atol=1e-6)
    # a ramp is monotone: the truth is inside the bound even with the neighbours' range
    assert (got["uncertainty_wh"] >= 0).all()


@quick
@given(fleets(max_hosts=2))
def test_gaps_are_never_integrated_silently(samples: pd.DataFrame) -> None:
    poll = 60.0
    got = hourly_energy(samples, poll_interval_s=poll)
    duration = (got["end"] - got["start"]).dt.total_seconds()
    np.testing.assert_allclose(got["measured_s"] + got["gap_s"], duration)
    # every measured second comes from a segment of two valid samples at most 3 polls apart
    valid = samples[(samples["flags"] & 3) == 0].sort_values(["host", "time"])
    dt = valid.groupby("host")["time"].diff().dt.total_seconds()
    allowed = dt[(dt > 0) & (dt <= 3 * poll)].sum()
    np.testing.assert_allclose(got["measured_s"].sum(), allowed, rtol=1e-12, atol=1e-6)
    assert ((got["quality"] == "missing") == (got["measured_s"] == 0)).all()
    assert (got["estimated_wh"] == 0).all()
    filled = hourly_energy(
        samples,
        poll_interval_s=poll,
        gap_fill={h: (100.0, 900.0) for h in samples["host"].unique()},
    )
    np.testing.assert_allclose(filled["estimated_wh"], filled["gap_s"] * 500 / 3600)
    np.testing.assert_allclose(
        filled["uncertainty_wh"] - got["uncertainty_wh"], filled["gap_s"] * 400 / 3600, atol=1e-9
    )


@quick
@given(fleets(max_hosts=1, flagged=False), st.integers(1, 5), st.floats(1e4, 1e6))
def test_counter_with_resets_and_wrap(samples: pd.DataFrame, k: int, wrap: float) -> None:
    """A counter that wraps and resets still gives the true energy where it can be trusted."""
    t = samples["time"].dt.as_unit("ns").astype("int64").to_numpy() / 1e9
    watts = samples["watts"].to_numpy()
    true_j = np.concatenate([[0.0], np.cumsum((watts[1:] + watts[:-1]) / 2 * np.diff(t))])
    wrapped = samples.assign(energy_j=(true_j + 5e3) % wrap)
    got = hourly_energy(wrapped, poll_interval_s=1e5, counter_wrap_j=wrap)
    exact = hourly_energy(samples, poll_interval_s=1e5)
    plausible = (
        np.diff(true_j) <= 4 * np.maximum(watts[1:], watts[:-1]).clip(1) * np.diff(t) + 1
    ).all()
    if plausible and (np.diff(true_j) < wrap).all():
        np.testing.assert_allclose(got["energy_wh"], exact["energy_wh"], rtol=1e-6, atol=1e-6)
        assert set(got["method"]) <= {"counter", "none"}
    # a reset (counter back to zero after sample k) makes that segment fall back to the power
    reset = samples.assign(energy_j=np.where(np.arange(len(t)) < k, true_j + 1e9, true_j))
    got = hourly_energy(reset, poll_interval_s=1e5)
    np.testing.assert_allclose(
        got["energy_wh"].sum(), exact["energy_wh"].sum(), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(got["power_check_wh"], exact["energy_wh"], rtol=1e-9, atol=1e-9)


@quick
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), min_size=0, max_size=40),
    st.integers(1, 8),
)
def test_order_check_by_blocks_matches_a_plain_check(
    rows: list[tuple[int, int]], block: int
) -> None:
    from metering.energy_samples import _in_order

    code = np.array([r[0] for r in rows], dtype=np.int16)
    t = np.array([r[1] for r in rows], dtype=np.int64)
    plain = all(
        (c1 > c0) or (c1 == c0 and t1 > t0)
        for (c0, t0), (c1, t1) in itertools.pairwise(zip(code, t, strict=True))
    )
    assert _in_order(code, t, block) == plain
