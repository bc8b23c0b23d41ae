"""The Dask entry gives the same host-hours as the pandas kernel, on a distributed cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metering.energy import hourly_energy

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from metering.dask_energy import hourly_energy_dask  # noqa: E402


def _fleet(n_hosts: int = 6, seed: int = 3) -> pd.DataFrame:
    """Two days of irregular samples per host, starting in the evening so midnight is crossed."""
    rng = np.random.default_rng(seed)
    frames = []
    for h in range(n_hosts):
        n = 3000
        step = rng.uniform(5, 15, n)
        step[rng.integers(0, n, 5)] = 400  # a few gaps
        t = pd.Timestamp("2026-03-01 20:00", tz="UTC") + pd.to_timedelta(np.cumsum(step), unit="s")
        watts = 200 + 100 * np.sin(np.arange(n) / 50) + rng.normal(0, 5, n)
        flags = np.where(rng.random(n) < 0.02, 1, 0)
        frames.append(
            pd.DataFrame({"host": f"host-{h:02d}", "time": t, "watts": watts, "flags": flags})
        )
    fleet = pd.concat(frames, ignore_index=True)
    fleet["flags"] = fleet["flags"].astype("int64")
    return fleet


def _normal(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.sort_values(["host", "start"], ignore_index=True)
    for c in ("host", "method", "quality"):
        out[c] = out[c].astype(str)
    return out


@pytest.mark.slow
def test_dask_on_a_local_cluster_equals_pandas(tmp_path: Path) -> None:
    fleet = _fleet()
    expected = _normal(hourly_energy(fleet))
    # stored partitioned by day, as telemetry is: segments cross the partition boundaries
    stored = fleet.assign(day=fleet["time"].dt.strftime("%Y-%m-%d"))
    stored.to_parquet(tmp_path / "samples", partition_cols=["day"], index=False)
    samples = dd.read_parquet(tmp_path / "samples", columns=["host", "time", "watts", "flags"])
    assert samples.npartitions >= 2
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        got = _normal(hourly_energy_dask(samples).compute())
    assert len(got) > 48
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
