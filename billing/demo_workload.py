"""The demo's customers: a slice of the real Alibaba GPU trace as a month of bare-metal requests.

Each sampled task of ``openb_pod_list_gpuspec33.csv`` becomes one request at its creation time,
mapped linearly into the demo month: GPU tasks ask for accelerator machines (a GPU model named in
the task's constraints asks for a GPU SKU; an unconstrained one takes any accelerator), CPU-only
tasks ask for cores. Bare metal is rented by the hour, so durations are whole hours (at least
one). One request in eight books ahead, so some can be cancelled before they start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
#: Each customer's place preference (codes of the example inventory), or anywhere.
PLACES: dict[str, list[str]] = {
    "acme": ["sv"],
    "globex": ["fr", "sv"],
    "initech": [],
    "umbrella": ["sjc2", "sv"],
    "hooli": ["sv", "fr"],
    "stark": [],
}


@dataclass(frozen=True)
class DemoRequest:
    """A request and the moment it reaches the marketplace."""

    arrival: dt.datetime
    task: str
    request: dict[str, Any]


def _customer(task: str) -> str:
    digest = int(hashlib.sha256(task.encode()).hexdigest()[:8], 16)
    return CUSTOMERS[digest % len(CUSTOMERS)]


def trace_requests(
    trace_csv: Path, month_start: dt.datetime, *, count: int = 600, seed: int = 7
) -> list[DemoRequest]:
    """``count`` requests sampled (seeded) from the trace's busiest 30 days, in arrival order."""
    tasks = pd.read_csv(trace_csv, keep_default_na=False)
    span = 30 * 86_400
    t0 = float(tasks["creation_time"].quantile(0.5)) - span / 2
    window = tasks[(tasks["creation_time"] >= t0) & (tasks["creation_time"] < t0 + span)]
    rng = np.random.default_rng(seed)
    picked = window.iloc[
        np.sort(rng.choice(len(window), size=min(count, len(window)), replace=False))
    ]
    month_end = (month_start + dt.timedelta(days=32)).replace(day=1)
    out = []
    for row in picked.to_dict("records"):
        task = str(row["name"])
        arrival = month_start + dt.timedelta(seconds=int(row["creation_time"] - t0))
        # a pod of the trace lives minutes; a bare-metal booking lasts hours: 10 min -> 1 h
        hours = max(1, math.ceil((row["deletion_time"] - row["creation_time"]) / 600))
        hours = min(hours, 72)
        lead = (
            dt.timedelta(hours=int(rng.integers(6, 48)))
            if rng.random() < 0.125
            else dt.timedelta(0)
        )
        start = (arrival + lead).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        end = min(start + dt.timedelta(hours=hours), month_end)
        if start >= month_end:
            continue
        customer = _customer(task)
        request: dict[str, Any] = {
            "customer": customer,
            "count": 1,
            "start": start,
            "end": end,
            "places": PLACES[customer],
        }
        if row["num_gpu"] > 0:
            spec = str(row["gpu_spec"])
            if spec and any(m in spec for m in ("V100", "A10", "G2", "G3")):
                request["where"] = {"accelerator_kind": "gpu"}
            else:
                request["where"] = {"min_accelerators": 1}
            request["count"] = max(1, math.ceil(row["num_gpu"] / 8))
        else:
            cores = int(row["cpu_milli"]) // 1000
            request["where"] = {"min_cores": 32 if cores >= 16 else 8}
        out.append(DemoRequest(arrival, task, request))
    return sorted(out, key=lambda r: (r.arrival, r.task))


__all__ = ["CUSTOMERS", "PLACES", "DemoRequest", "trace_requests"]
