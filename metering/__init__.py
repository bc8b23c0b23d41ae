"""hwmarket metering: BMC power collection, energy integration, the usage ledger.

The public face of the package::

    from metering import BmcClient, BmcTarget, Collector, hourly_energy, meter, usage

    reading = BmcClient(BmcTarget("ipmi", "10.0.0.5", 623, "admin", "secret")).read()
    energy = hourly_energy(samples)              # one row per host and UTC hour, with a bound
    meter(store, start, end)                      # the usage ledger, idempotent and versioned
    usage(store, start, end)                      # a DataFrame with LEDGER_COLUMNS

Other modules are importable but not promised.
"""

from metering.bmc import BmcClient, BmcTarget, read_power
from metering.bmc_reading import PowerReading
from metering.collector import Collector, CollectorStats, ParquetSink, PollResult, PollTarget
from metering.energy import hourly_energy, interval_energy
from metering.energy_schema import ENERGY_COLUMNS
from metering.errors import (
    BadReading,
    BmcAuthFailed,
    BmcError,
    BmcTimeout,
    BmcUnreachable,
    BmcUnsupported,
)
from metering.ledger import (
    MeterReport,
    StoreSink,
    bmc_status,
    check_samples,
    fleet,
    meter,
    poll_targets,
    read_samples,
    usage,
    write_samples,
)
from metering.power_models import LoadProfile, SpecPowerCurve, SpecPowerModel, TraceReplayModel
from metering.samples import EXCLUDE_FROM_ENERGY, SAMPLE_COLUMNS, SampleFlag
from metering.simulator import simulate_fleet, start_fleet
from metering.usage import LEDGER_COLUMNS, attribute, cut_host_hours

__all__ = [
    "ENERGY_COLUMNS",
    "EXCLUDE_FROM_ENERGY",
    "LEDGER_COLUMNS",
    "SAMPLE_COLUMNS",
    "BadReading",
    "BmcAuthFailed",
    "BmcClient",
    "BmcError",
    "BmcTarget",
    "BmcTimeout",
    "BmcUnreachable",
    "BmcUnsupported",
    "Collector",
    "CollectorStats",
    "LoadProfile",
    "MeterReport",
    "ParquetSink",
    "PollResult",
    "PollTarget",
    "PowerReading",
    "SampleFlag",
    "SpecPowerCurve",
    "SpecPowerModel",
    "StoreSink",
    "TraceReplayModel",
    "attribute",
    "bmc_status",
    "check_samples",
    "cut_host_hours",
    "fleet",
    "hourly_energy",
    "interval_energy",
    "meter",
    "poll_targets",
    "read_power",
    "read_samples",
    "simulate_fleet",
    "start_fleet",
    "usage",
    "write_samples",
]
