"""Loaders of the measured power data the simulators replay (reads files; models stay pure).

The files are described in the data directory's README: ``specpower_curves.csv`` (published
SPECpower curves) and ``h100_power_trace.csv`` (a measured accelerator trace, 50 ms steps).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from metering.power_models import SpecPowerCurve, TraceReplayModel, curve_from_row


def shared_data_dir() -> Path:
    """The real data folder: ``$HWMARKET_SHARED_DATA``, else ``shared/data`` beside the
    repository (where the project keeps it), else ``/work/shared/data``."""
    if "HWMARKET_SHARED_DATA" in os.environ:
        return Path(os.environ["HWMARKET_SHARED_DATA"])
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return beside if beside.is_dir() else Path("/work/shared/data")


#: Where the measured power data lives unless HWMARKET_POWER_DATA says otherwise.
DEFAULT_POWER_DATA = Path(os.environ.get("HWMARKET_POWER_DATA", shared_data_dir() / "power"))


def load_specpower_curves(path: Path | None = None) -> dict[str, SpecPowerCurve]:
    """Every curve in a SPECpower CSV, by system name."""
    path = path or DEFAULT_POWER_DATA / "specpower_curves.csv"
    curves: dict[str, SpecPowerCurve] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            points = [float(row[f"load_{p}"]) for p in range(0, 101, 10)]
            curves[row["system"]] = curve_from_row(row["system"], points)
    return curves


def load_h100_trace(
    path: Path | None = None, scale: float = 1.0, start_epoch_s: float = 0.0
) -> TraceReplayModel:
    """The measured H100 board-power trace as a looping model (watts, seconds)."""
    path = path or DEFAULT_POWER_DATA / "h100_power_trace.csv"
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1), dtype=np.float64)
    t_s = (data[:, 0] - data[0, 0]) / 1e9
    keep = np.concatenate(([True], np.diff(t_s) > 0))
    return TraceReplayModel(
        t_s[keep], data[keep, 1] / 1000.0, scale=scale, start_epoch_s=start_epoch_s
    )


__all__ = ["DEFAULT_POWER_DATA", "load_h100_trace", "load_specpower_curves"]
