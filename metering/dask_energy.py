"""The energy kernel on a fleet: the same :func:`metering.energy.hourly_energy` over Dask.

Samples of a fleet are usually stored partitioned by day, but a segment that crosses midnight
needs the samples of both days, and the inferred poll interval is a per-host median. So the
frame is first shuffled to host partitions (every sample of a host lands in one partition),
then the pandas kernel runs on each partition as it is: the results are identical to a
single-process run on the same samples, whatever the partitioning of the input.

Pointing it at a real cluster::

    import dask.dataframe as dd
    from distributed import Client
    from metering.dask_energy import hourly_energy_dask

    client = Client("tcp://scheduler:8786")
    samples = dd.read_parquet("s3://telemetry/samples/", columns=["host", "time", "watts", "flags"])
    hourly = hourly_energy_dask(samples, poll_interval_s=10.0)
    hourly.to_parquet("s3://telemetry/host_hours/")      # or hourly.compute() for a pandas frame
"""

from __future__ import annotations

from typing import Any

import dask.dataframe as dd
import pandas as pd

from marketplace.errors import InvalidInput, Problem
from metering.energy import empty_energy_frame, hourly_energy
from metering.energy_schema import REQUIRED_SAMPLE_COLUMNS


def _hourly_partition(part: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    # Dask already runs one task per worker thread: the kernel's own threads would oversubscribe.
    result = hourly_energy(part, **{"threads": 1, **options})
    # Dask wants every partition to carry the meta's dtypes, empty ones included.
    return result.astype(empty_energy_frame().dtypes.to_dict())


def hourly_energy_dask(samples: dd.DataFrame, **options: Any) -> dd.DataFrame:
    """Hourly energy of a Dask samples frame; ``options`` as for :func:`hourly_energy`.

    The result is a lazy Dask frame with the ``ENERGY_COLUMNS`` of the pandas kernel, one
    partition per host partition (rows sorted by host and hour inside each partition).
    ``npartitions`` of the shuffle follows the input's; pass a repartitioned frame to change it.
    """
    missing = [c for c in REQUIRED_SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise InvalidInput(
            [
                Problem(
                    path=f"samples.{c}", message="column is missing", value=list(samples.columns)
                )
                for c in missing
            ]
        )
    by_host = samples.shuffle(on="host")
    return by_host.map_partitions(
        _hourly_partition, options, meta=empty_energy_frame(), enforce_metadata=False
    )


__all__ = ["hourly_energy_dask"]
