"""Models of a host's power over time (pure: numpy only, no I/O).

A power model is a deterministic, vectorised function of time: ``model.watts(t)`` takes epoch
seconds (a float array) and returns watts (a float array of the same shape). The same model feeds
a simulated BMC one reading at a time and fills a simulated month of samples in one call.

- :class:`SpecPowerModel`: a published SPECpower curve (watts at 0 %, 10 % ... 100 % load)
  under a :class:`LoadProfile` (diurnal swing plus seeded noise).
- :class:`TraceReplayModel`: a measured trace replayed in a loop, optionally scaled.

>>> import numpy as np
>>> curve = SpecPowerCurve("demo", np.linspace(0, 1, 11), np.linspace(50, 250, 11))
>>> model = SpecPowerModel(curve, LoadProfile(seed=7, noise=0.0, amplitude=0.0, base=0.5))
>>> model.watts(np.array([0.0, 3600.0])).tolist()
[150.0, 150.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_DAY_S = 86_400.0


class PowerModel(Protocol):
    """Anything that maps epoch seconds to watts, vectorised."""

    def watts(self, t: npt.ArrayLike) -> FloatArray:
        """Watts at each time ``t`` (epoch seconds)."""
        ...


@dataclass(frozen=True)
class SpecPowerCurve:
    """A server's average active power at target loads (``loads`` in 0..1, ascending)."""

    system: str
    loads: FloatArray
    watts_at_load: FloatArray

    def __post_init__(self) -> None:
        if len(self.loads) != len(self.watts_at_load) or len(self.loads) < 2:
            raise ValueError("a power curve needs matching loads and watts, at least two points")
        if np.any(np.diff(self.loads) <= 0):
            raise ValueError("curve loads must be strictly ascending")

    @property
    def idle_watts(self) -> float:
        """Power at active idle (the lowest load point)."""
        return float(self.watts_at_load[0])

    @property
    def max_watts(self) -> float:
        """Power at full load (the highest load point)."""
        return float(self.watts_at_load[-1])

    def watts_for_load(self, load: npt.ArrayLike) -> FloatArray:
        """Interpolated watts at ``load`` (clipped to 0..1)."""
        x = np.clip(np.asarray(load, dtype=np.float64), 0.0, 1.0)
        return np.interp(x, self.loads, self.watts_at_load)


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # A counter-based generator: the noise at a time depends on (seed, time bucket) only, so
    # any slice of time is reproducible without replaying the stream from the start.
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class LoadProfile:
    """Utilisation 0..1 over time: ``base + amplitude*sin(day) + noise``, clipped.

    The diurnal peak is at ``peak_hour_utc``; noise is uniform in ``[-noise, noise]``, constant
    within ``noise_step_s`` buckets and a pure function of ``seed`` and the bucket.
    """

    seed: int = 0
    base: float = 0.4
    amplitude: float = 0.25
    noise: float = 0.08
    peak_hour_utc: float = 15.0
    noise_step_s: float = 10.0

    def load(self, t: npt.ArrayLike) -> FloatArray:
        """Utilisation at each epoch second in ``t``."""
        ts = np.asarray(t, dtype=np.float64)
        phase = 2 * np.pi * (ts - self.peak_hour_utc * 3600.0) / _DAY_S
        diurnal = self.base + self.amplitude * np.cos(phase)
        bucket = np.floor(ts / self.noise_step_s).astype(np.int64).astype(np.uint64)
        mixed = _splitmix64(bucket ^ np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF))
        uniform = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.clip(diurnal + self.noise * (2.0 * uniform - 1.0), 0.0, 1.0)


@dataclass(frozen=True)
class SpecPowerModel:
    """A SPECpower curve driven by a load profile."""

    curve: SpecPowerCurve
    profile: LoadProfile

    def watts(self, t: npt.ArrayLike) -> FloatArray:
        """Watts at each epoch second in ``t``."""
        return self.curve.watts_for_load(self.profile.load(t))


@dataclass(frozen=True)
class TraceReplayModel:
    """A measured power trace, looped forever and scaled by ``scale``.

    ``t_s`` are the trace's sample times (seconds, ascending, any origin), ``trace_watts`` its
    readings. Time ``start_epoch_s`` maps to the trace's first sample; between samples the
    power is interpolated linearly.
    """

    t_s: FloatArray
    trace_watts: FloatArray
    scale: float = 1.0
    start_epoch_s: float = 0.0

    def __post_init__(self) -> None:
        if len(self.t_s) < 2 or len(self.t_s) != len(self.trace_watts):
            raise ValueError("a trace needs at least two samples and one watts value per time")
        if np.any(np.diff(self.t_s) <= 0):
            raise ValueError("trace times must be strictly ascending")

    @property
    def duration_s(self) -> float:
        """Length of one loop of the trace."""
        return float(self.t_s[-1] - self.t_s[0])

    def watts(self, t: npt.ArrayLike) -> FloatArray:
        """Watts at each epoch second in ``t``."""
        ts = np.asarray(t, dtype=np.float64)
        offset = np.mod(ts - self.start_epoch_s, self.duration_s) + self.t_s[0]
        return self.scale * np.interp(offset, self.t_s, self.trace_watts)


def curve_from_row(system: str, watts_at_tenths: Sequence[float]) -> SpecPowerCurve:
    """A curve from the 11 SPECpower points (0 %, 10 % ... 100 % load)."""
    if len(watts_at_tenths) != 11:
        raise ValueError(f"{system}: expected 11 load points, got {len(watts_at_tenths)}")
    return SpecPowerCurve(
        system, np.linspace(0.0, 1.0, 11), np.asarray(watts_at_tenths, dtype=np.float64)
    )


__all__ = [
    "LoadProfile",
    "PowerModel",
    "SpecPowerCurve",
    "SpecPowerModel",
    "TraceReplayModel",
    "curve_from_row",
]
