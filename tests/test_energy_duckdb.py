"""An independent implementation in DuckDB SQL (bench/metering.py) agrees with the kernel.

The SQL computes the same host-hours with window functions: median-spacing gap rule, exact
hour cuts with interpolation, the neighbours' uncertainty bound, counts and min/max. Agreement
to float rounding on irregular data with gaps and flags checks the vectorised kernel's
bookkeeping (runs, splits, neighbours across gaps) against a plain relational reading.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from metering.energy import hourly_energy

pytest.importorskip("duckdb")
BENCH = Path(__file__).resolve().parents[1] / "bench" / "metering.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hwmarket_bench_metering", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_duckdb_sql_gives_the_same_host_hours() -> None:
    bench = _bench()
    fleet = bench.fleet(20, 6, 10.0, seed=5)
    rng = np.random.default_rng(5)
    fleet = fleet.drop(index=fleet.sample(frac=0.01, random_state=5).index)  # holes
    fleet = fleet[~fleet.index.isin(range(3000, 3200))]  # one long gap
    fleet = fleet.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))  # any row order
    got = hourly_energy(fleet)
    got = got[got["n_samples"] > 0].reset_index(drop=True)
    sql = bench.duckdb_hourly(fleet).sort_values(["host", "hour"], ignore_index=True)
    assert len(got) == len(sql) == 20 * 6
    pairs = {
        "energy_wh": "energy_wh",
        "uncertainty_wh": "uncertainty_wh",
        "measured_s": "measured_s",
        "n_samples": "n_samples",
        "n_flagged": "n_flagged",
        "min_watts": "min_w",
        "peak_watts": "max_w",
    }
    for mine, theirs in pairs.items():
        np.testing.assert_allclose(
            got[mine].to_numpy(float),
            sql[theirs].to_numpy(float),
            rtol=1e-9,
            atol=1e-9,
            err_msg=mine,
        )
    assert (got["quality"] == "partial").any() and (got["n_flagged"] > 0).any()
