"""The demo's machines' power: one model per host, served live by simulated BMCs and used to fill
the rest of the month.

A host draws its SKU's idle power when nobody holds it, and idle plus a share of its headroom
(a seeded diurnal load profile) while a reservation holds it. The same :class:`HostPowerModel`
objects are served over real IPMI by simulated BMCs (in a child process) for the live window and
evaluated directly for the rest of the month, so live and simulated samples agree in kind; every
simulated sample carries ``source='simulated'`` and the SIMULATED flag.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from metering.power_models import LoadProfile
from metering.samples import SampleFlag


@dataclass(frozen=True)
class HostPowerModel:
    """Idle power when free; ``idle + (peak - idle) * load(t)`` while held (``busy`` intervals)."""

    idle_watts: float
    peak_watts: float
    profile: LoadProfile
    busy_start: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.array([], dtype=np.float64)
    )
    busy_end: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.array([], dtype=np.float64)
    )

    #: The model is linear between points this far apart, like the simulated fill's samples, so
    #: live readings taken at any moment integrate to the same energy as the fill would have:
    #: the demo's totals do not depend on when its live window ran.
    grid_s: float = 300.0

    def watts(self, t: npt.ArrayLike) -> npt.NDArray[np.float64]:
        ts = np.asarray(t, dtype=np.float64)
        k = np.floor(ts / self.grid_s)
        left, right = self._at(k * self.grid_s), self._at((k + 1) * self.grid_s)
        share = ts / self.grid_s - k
        return np.round(left + (right - left) * share, 3)

    def _at(self, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        i = np.searchsorted(self.busy_start, ts, side="right") - 1
        held = (
            (i >= 0) & (ts < self.busy_end[np.clip(i, 0, None)])
            if len(self.busy_start)
            else np.zeros(ts.shape, bool)
        )
        load = self.profile.load(ts)
        idle = np.round(self.idle_watts * (1.0 + 0.02 * (load - 0.5)))
        busy = np.round(self.idle_watts + (self.peak_watts - self.idle_watts) * (0.3 + 0.7 * load))
        return np.where(held, busy, idle)


def host_models(
    hosts: pd.DataFrame,
    envelopes: dict[str, tuple[float, float]],
    holdings: pd.DataFrame,
    seed: int = 11,
) -> dict[str, HostPowerModel]:
    """One model per host (``hosts`` has id and sku; ``envelopes`` maps sku -> (idle, max))."""
    models = {}
    for i, row in enumerate(hosts.sort_values("id").itertuples(index=False)):
        held = holdings[holdings["host"] == row.id].sort_values("start")
        idle, peak = envelopes[str(row.sku)]
        models[str(row.id)] = HostPowerModel(
            idle,
            peak,
            LoadProfile(seed=seed * 1000 + i, base=0.5, amplitude=0.2, noise_step_s=60.0),
            held["start"].map(lambda t: t.timestamp()).to_numpy(dtype=np.float64),
            held["end"].map(lambda t: t.timestamp()).to_numpy(dtype=np.float64),
        )
    return models


def simulated_samples(
    models: dict[str, HostPowerModel],
    start: dt.datetime,
    end: dt.datetime,
    step_s: int,
    skip: dict[str, tuple[dt.datetime, dt.datetime]] | None = None,
) -> pd.DataFrame:
    """Samples every ``step_s`` from each host's model (flagged SIMULATED), leaving out the
    ``skip`` window of hosts measured live there."""
    times = np.arange(start.timestamp(), end.timestamp() + step_s, step_s, dtype=np.float64)
    frames = []
    for host, model in models.items():
        t = times
        if skip and host in skip:
            lo, hi = skip[host]
            t = t[(t < lo.timestamp()) | (t > hi.timestamp())]
        frames.append(
            pd.DataFrame(
                {
                    "host": host,
                    "time": pd.to_datetime(t, unit="s", utc=True),
                    "watts": model.watts(t),
                    "source": "simulated",
                    "flags": int(SampleFlag.SIMULATED),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype({"host": "string", "source": "string", "flags": "int64"})


def _serve(
    models: Sequence[HostPowerModel], base_port: int, password: str, ready: Any, stop: Any
) -> None:
    from metering.simulator import start_fleet

    fleet = start_fleet(len(models), base_port, list(models), username="admin", password=password)
    ready.set()
    try:
        stop.wait()
    finally:
        fleet.stop()


@contextlib.contextmanager
def simulated_ipmi_bmcs(
    models: Sequence[HostPowerModel], base_port: int, password: str
) -> Iterator[None]:
    """Serve ``models`` as IPMI BMCs on 127.0.0.1 ``base_port`` + i, in a child process (the
    collector in this process then talks to them over real UDP, as to real BMCs)."""
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(
        target=_serve, args=(list(models), base_port, password, ready, stop), daemon=True
    )
    proc.start()
    try:
        waited = 0.0
        while not ready.wait(0.2):
            waited += 0.2
            if not proc.is_alive() or waited > 60:
                raise OSError(
                    f"the simulated BMCs could not start on 127.0.0.1:{base_port}.. (ports taken?)"
                )
        yield
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


__all__ = [
    "HostPowerModel",
    "host_models",
    "simulated_ipmi_bmcs",
    "simulated_samples",
]
