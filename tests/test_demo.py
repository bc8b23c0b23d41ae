"""The main job end to end, twice: same reservations, same ledger size, same invoice totals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from billing.demo import run_demo
from tests.conftest import SHARED_DATA, need


@pytest.mark.slow
@pytest.mark.xdist_group("demo")  # one worker runs the demos: they pick loopback ports
def test_demo_runs_end_to_end_and_repeats_its_totals(tmp_path: Path) -> None:
    need(SHARED_DATA.is_dir(), f"the shared data folder {SHARED_DATA} is missing")
    first = run_demo(tmp_path / "one", live_rounds=2)
    second = run_demo(tmp_path / "two", live_rounds=2)
    for run in (first, second):
        facts = run.facts
        assert facts["requests"]["booked"] > 100
        assert facts["requests"]["rejected: no capacity"] > 0  # capacity is scarce, as in life
        assert facts["requests"]["cancelled"] >= 1 and facts["requests"]["extended"] == 1
        assert facts["host_failure"]["events"] == ["moved"]
        samples = facts["samples"]
        assert samples["live"] > 0 and samples["failed_polls"] == 0
        assert set(samples["live_sources"]) == {"dcmi", "redfish-environment"}
        outputs = run.outputs
        assert (outputs / "usage_ledger.parquet").exists() and (outputs / "invoices.csv").exists()
        html = next(outputs.glob("invoice-*.html")).read_text()
        assert "<table" in html and "USD" in html
        ledger = pd.read_parquet(outputs / "usage_ledger.parquet")
        per_host_hour = ledger.groupby(["host", "hour"])["reserved_s"].sum()
        assert len(per_host_hour) == 18 * 720 and (per_host_hour == 3600).all()
    assert first.facts["requests"] == second.facts["requests"]
    assert first.facts["invoices"] == second.facts["invoices"]
    assert first.facts["revenue_total"] == second.facts["revenue_total"]
