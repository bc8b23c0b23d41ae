"""What a power sample is: its columns, its quality flags, and the check at the boundary.

A sample is one reading of one host's power at one moment, as the collector received it. The
frame schema below is the contract between the collector (which writes samples), the energy
kernel (which integrates them) and importers of telemetry exported from elsewhere.

Columns of a samples frame (``SAMPLE_COLUMNS``):

============  ======================  =====================================================
column        dtype                   meaning
============  ======================  =====================================================
host          string / category       host id, as in the inventory
time          datetime64[ns, UTC]     receive time on the collector's clock (UTC)
watts         float64                 power reading in watts (NaN when the read failed)
source        string                  dcmi, sdr, redfish-environment, redfish-legacy,
                                      energy-counter, import, simulated
flags         int64                   :class:`SampleFlag` bits; 0 means a clean reading
============  ======================  =====================================================

Optional columns: ``bmc_time`` (datetime64[ns, UTC], the BMC's own clock), ``min_watts``,
``max_watts``, ``avg_watts`` and ``period_s`` (DCMI statistics), ``energy_j`` (a cumulative
hardware energy counter in joules, float64, NaN where absent).
"""

from __future__ import annotations

import enum

SAMPLE_COLUMNS: dict[str, str] = {
    "host": "string",
    "time": "datetime64[ns, UTC]",
    "watts": "float64",
    "source": "string",
    "flags": "int64",
}

OPTIONAL_SAMPLE_COLUMNS: dict[str, str] = {
    "bmc_time": "datetime64[ns, UTC]",
    "min_watts": "float64",
    "max_watts": "float64",
    "avg_watts": "float64",
    "period_s": "float64",
    "energy_j": "float64",
}

SOURCES = (
    "dcmi",
    "sdr",
    "redfish-environment",
    "redfish-legacy",
    "energy-counter",
    "import",
    "simulated",
)


class SampleFlag(enum.IntFlag):
    """Quality flags of a sample. Flagged samples are kept and marked, never silently dropped.

    The energy kernel leaves samples with any of ``EXCLUDE_FROM_ENERGY`` out of the integral
    and counts them.
    """

    NONE = 0
    #: The BMC said its power measurement is not active (DCMI "measurement active" bit clear).
    INACTIVE = 1
    #: Negative, zero on a powered-on host, a 0xFFFF-style sentinel, or above 1.5x the SKU's max.
    OUT_OF_RANGE = 2
    #: The BMC repeated its previous timestamp: the value may be a cached old reading.
    STALE = 4
    #: The BMC's clock is far from the collector's (some read 1970); receive time is used.
    CLOCK_SKEW = 8
    #: Not measured: filled in from a power model (the demo's simulated month, estimates).
    SIMULATED = 16


EXCLUDE_FROM_ENERGY = SampleFlag.INACTIVE | SampleFlag.OUT_OF_RANGE

__all__ = [
    "EXCLUDE_FROM_ENERGY",
    "OPTIONAL_SAMPLE_COLUMNS",
    "SAMPLE_COLUMNS",
    "SOURCES",
    "SampleFlag",
]
