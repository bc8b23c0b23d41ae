"""The energy kernel's boundary: bad frames are refused with the column and rows named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from marketplace.errors import InvalidInput
from metering.energy import ENERGY_COLUMNS, hourly_energy, interval_energy
from metering.samples import SampleFlag

T = pd.date_range("2026-02-01 10:59:40", periods=5, freq="10s", tz="UTC")


def _samples(**changes: Any) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"host": "h1", "time": T, "watts": [100.0, 200.0, 300.0, 400.0, 500.0], "flags": 0}
    )
    frame["flags"] = frame["flags"].astype("int64")
    for k, v in changes.items():
        frame[k] = v
    return frame


def test_missing_columns_are_named() -> None:
    with pytest.raises(InvalidInput) as err:
        hourly_energy(_samples().drop(columns=["watts", "flags"]))
    text = str(err.value)
    assert "samples.watts" in text and "samples.flags" in text


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"samples\.time.*timezone-aware"):
        hourly_energy(_samples(time=T.tz_localize(None)))


def test_non_numeric_watts_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"samples\.watts.*numeric"):
        hourly_energy(_samples(watts=["a", "b", "c", "d", "e"]))


def test_negative_unflagged_watts_name_the_rows() -> None:
    with pytest.raises(InvalidInput, match=r"rows \[2\]"):
        hourly_energy(_samples(watts=[100.0, 200.0, -3.0, 400.0, 500.0]))
    ok = hourly_energy(
        _samples(
            watts=[100.0, 200.0, -3.0, 400.0, 500.0],
            flags=[0, 0, int(SampleFlag.OUT_OF_RANGE), 0, 0],
        )
    )
    assert ok["n_flagged"].sum() == 1


def test_nan_and_inf_watts_are_left_out_and_counted() -> None:
    got = hourly_energy(_samples(watts=[100.0, np.nan, 300.0, np.inf, 500.0]))
    assert got["n_flagged"].tolist() == [1, 1]
    assert got["n_samples"].tolist() == [2, 3]
    # 100 W at :40, 300 W at :00, 500 W at :20: the hour is cut at 11:00 (300 W there)
    np.testing.assert_allclose(
        got["energy_wh"] * 3600, [(100 + 300) / 2 * 20, (300 + 500) / 2 * 20]
    )


def test_period_and_intervals_must_run_forward() -> None:
    start = pd.Timestamp("2026-02-01 11:00", tz="UTC")
    with pytest.raises(InvalidInput, match="period"):
        hourly_energy(_samples(), period=(start, start))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        hourly_energy(
            _samples(),
            period=(start.tz_localize(None), start.tz_localize(None) + pd.Timedelta("1h")),
        )
    bad = pd.DataFrame({"host": ["h1"], "start": [start], "end": [start - pd.Timedelta("1min")]})
    with pytest.raises(InvalidInput, match=r"intervals\.start.*rows \[0\]"):
        interval_energy(_samples(), bad)


def test_output_has_the_documented_schema() -> None:
    got = hourly_energy(_samples())
    assert list(got.columns) == list(ENERGY_COLUMNS)
    assert str(got["start"].dtype) == "datetime64[ns, UTC]"
    empty = hourly_energy(_samples().iloc[:0])
    assert list(empty.columns) == list(ENERGY_COLUMNS) and empty.empty


def test_period_reports_missing_hours_and_uses_outside_samples() -> None:
    start = pd.Timestamp("2026-02-01 10:00", tz="UTC")
    got = hourly_energy(_samples(), period=(start, start + pd.Timedelta("3h")))
    assert got["quality"].tolist() == ["partial", "partial", "missing"]
    assert got["gap_s"].iloc[2] == 3600 and got["energy_wh"].iloc[2] == 0


def test_counter_disagreement_is_reported_beside_the_counter() -> None:
    got = hourly_energy(_samples(energy_j=[0.0, 2000.0, 4000.0, 6000.0, 8000.0]))
    assert set(got["method"]) == {"counter"}
    np.testing.assert_allclose(got["energy_wh"].sum() * 3600, 8000.0)
    np.testing.assert_allclose(got["power_check_wh"].sum() * 3600, (150 + 250 + 350 + 450) * 10)


def test_dcmi_min_max_widen_the_bound() -> None:
    plain = hourly_energy(_samples(watts=300.0))
    stats = hourly_energy(_samples(watts=300.0, min_watts=100.0, max_watts=700.0))
    assert plain["uncertainty_wh"].sum() == 0
    np.testing.assert_allclose(stats["uncertainty_wh"].sum() * 3600, 400.0 * 40)


def test_unknown_interval_hosts_are_missing_and_keys_carry_through() -> None:
    start = pd.Timestamp("2026-02-01 11:00", tz="UTC")
    iv = pd.DataFrame(
        {
            "reservation": ["r1", "r2"],
            "host": ["h1", "ghost"],
            "start": [start, start],
            "end": [start + pd.Timedelta("20s")] * 2,
        }
    )
    got = interval_energy(_samples(), iv)
    assert got["reservation"].tolist() == ["r1", "r2"]
    assert got["quality"].tolist() == ["complete", "missing"]
    np.testing.assert_allclose(got["energy_wh"].iloc[0] * 3600, (300 + 500) / 2 * 20)


def test_poll_interval_per_host_falls_back_to_the_median_spacing() -> None:
    two = pd.concat([_samples(), _samples(host="h2")], ignore_index=True)
    inferred = hourly_energy(two)
    mixed = hourly_energy(two, poll_interval_s={"h1": 2.0})  # h1: max gap 6 s < 10 s spacing
    h1, h2 = mixed["host"] == "h1", mixed["host"] == "h2"
    assert (mixed.loc[h1, "measured_s"] == 0).all()
    pd.testing.assert_frame_equal(mixed[h2], inferred[h2])
    with pytest.raises(InvalidInput, match="poll_interval_s"):
        hourly_energy(two, poll_interval_s=0)


def test_a_host_with_only_flagged_samples_is_missing_not_an_error() -> None:
    flagged = _samples(flags=int(SampleFlag.INACTIVE))
    got = hourly_energy(pd.concat([flagged, _samples(host="h2")], ignore_index=True), threads=1)
    h1 = got[got["host"] == "h1"]
    assert h1["quality"].tolist() == ["missing", "missing"]
    assert h1["n_flagged"].sum() == 5 and h1["energy_wh"].sum() == 0
    assert h1["method"].tolist() == ["none", "none"]
    alone = hourly_energy(flagged)
    assert alone["quality"].tolist() == ["missing", "missing"] and alone["n_flagged"].sum() == 5


def test_the_docstring_example_runs() -> None:
    import doctest

    import metering.energy

    result = doctest.testmod(metering.energy)
    assert result.attempted > 0 and result.failed == 0
