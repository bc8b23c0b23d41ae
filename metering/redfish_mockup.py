"""Write a Redfish mockup tree for ``sushy-static``: a server with three ways to read power.

The tree (``<dir>/<path under /redfish/v1>/index.json``) has a ServiceRoot, ``Systems/1``
with its PowerState, a Manager, and ``Chassis/1`` with

- ``EnvironmentMetrics``: ``PowerWatts.Reading`` (the current way),
- ``Power``: ``PowerControl[0].PowerConsumedWatts`` and ``PowerMetrics`` (the legacy way),
- ``Sensors/ChassisEnergy``: an ``EnergykWh`` counter with its ``SensorResetTime``.

As on real BMCs, the three disagree slightly (different sampling and averaging): the
:class:`MockupPower` given says by how much.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ROOT = "/redfish/v1"


@dataclass(frozen=True)
class MockupPower:
    """The power figures the mockup serves."""

    environment_watts: float = 412.0
    legacy_watts: float = 415.0
    legacy_min_watts: float = 380.0
    legacy_max_watts: float = 451.0
    legacy_avg_watts: float = 409.0
    legacy_interval_min: int = 1
    energy_kwh: float = 1234.567
    energy_reset_time: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    power_state: str = "On"


def _odata(path: str, rtype: str, **body: Any) -> dict[str, Any]:
    return {"@odata.id": f"{_ROOT}/{path}".rstrip("/"), "@odata.type": rtype, **body}


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": f"{_ROOT}/{path}".rstrip("/")}


def _collection(path: str, rtype: str, members: list[str]) -> dict[str, Any]:
    return _odata(
        path,
        rtype,
        Name=path.split("/")[-1],
        Members=[_link(m) for m in members],
        **{"Members@odata.count": len(members)},
    )


#: The ways of reading power a mockup can offer (all by default).
WAYS = ("environment", "legacy", "energy")


def mockup_resources(power: MockupPower, ways: Collection[str] = WAYS) -> dict[str, dict[str, Any]]:
    """Every resource of the mockup, by path under ``/redfish/v1`` ('' is the root).

    ``ways`` leaves out the power resources of the ways not listed, to stand for BMCs that
    lack them (older firmware has no EnvironmentMetrics; newer drops the legacy Power).
    """
    unknown = set(ways) - set(WAYS)
    if unknown:
        raise ValueError(f"unknown ways {sorted(unknown)}; expected some of {', '.join(WAYS)}")
    reset = power.energy_reset_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    resources = {
        "": _odata(
            "",
            "#ServiceRoot.v1_15_0.ServiceRoot",
            Id="RootService",
            Name="Root Service",
            RedfishVersion="1.15.0",
            UUID="92384634-2938-2342-8820-489239905423",
            Systems=_link("Systems"),
            Chassis=_link("Chassis"),
            Managers=_link("Managers"),
        ),
        "Systems": _collection(
            "Systems", "#ComputerSystemCollection.ComputerSystemCollection", ["Systems/1"]
        ),
        "Systems/1": _odata(
            "Systems/1",
            "#ComputerSystem.v1_20_0.ComputerSystem",
            Id="1",
            Name="hwmarket mockup server",
            Manufacturer="hwmarket",
            Model="Mockup 1U",
            SerialNumber="MOCK0001",
            PowerState=power.power_state,
            Status={"State": "Enabled", "Health": "OK"},
            Links={"Chassis": [_link("Chassis/1")], "ManagedBy": [_link("Managers/1")]},
            Actions={
                "#ComputerSystem.Reset": {
                    "target": f"{_ROOT}/Systems/1/Actions/ComputerSystem.Reset",
                }
            },
        ),
        "Managers": _collection("Managers", "#ManagerCollection.ManagerCollection", ["Managers/1"]),
        "Managers/1": _odata(
            "Managers/1",
            "#Manager.v1_17_0.Manager",
            Id="1",
            Name="BMC",
            ManagerType="BMC",
            Status={"State": "Enabled", "Health": "OK"},
            Links={
                "ManagerForServers": [_link("Systems/1")],
                "ManagerForChassis": [_link("Chassis/1")],
            },
        ),
        "Chassis": _collection("Chassis", "#ChassisCollection.ChassisCollection", ["Chassis/1"]),
        "Chassis/1": _odata(
            "Chassis/1",
            "#Chassis.v1_23_0.Chassis",
            Id="1",
            Name="Chassis",
            ChassisType="RackMount",
            PowerState=power.power_state,
            Status={"State": "Enabled", "Health": "OK"},
            EnvironmentMetrics=_link("Chassis/1/EnvironmentMetrics"),
            Power=_link("Chassis/1/Power"),
            Sensors=_link("Chassis/1/Sensors"),
            Links={"ComputerSystems": [_link("Systems/1")], "ManagedBy": [_link("Managers/1")]},
        ),
        "Chassis/1/EnvironmentMetrics": _odata(
            "Chassis/1/EnvironmentMetrics",
            "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
            Id="EnvironmentMetrics",
            Name="Chassis Environment Metrics",
            PowerWatts={
                "Reading": power.environment_watts,
                "DataSourceUri": f"{_ROOT}/Chassis/1/Sensors/ChassisPower",
            },
            EnergykWh={
                "Reading": power.energy_kwh,
                "DataSourceUri": f"{_ROOT}/Chassis/1/Sensors/ChassisEnergy",
            },
        ),
        "Chassis/1/Power": _odata(
            "Chassis/1/Power",
            "#Power.v1_7_1.Power",
            Id="Power",
            Name="Power",
            PowerControl=[
                {
                    "@odata.id": f"{_ROOT}/Chassis/1/Power#/PowerControl/0",
                    "MemberId": "0",
                    "Name": "System Power Control",
                    "PowerConsumedWatts": power.legacy_watts,
                    "PowerMetrics": {
                        "IntervalInMin": power.legacy_interval_min,
                        "MinConsumedWatts": power.legacy_min_watts,
                        "MaxConsumedWatts": power.legacy_max_watts,
                        "AverageConsumedWatts": power.legacy_avg_watts,
                    },
                }
            ],
        ),
        "Chassis/1/Sensors": _collection(
            "Chassis/1/Sensors",
            "#SensorCollection.SensorCollection",
            ["Chassis/1/Sensors/ChassisPower", "Chassis/1/Sensors/ChassisEnergy"],
        ),
        "Chassis/1/Sensors/ChassisPower": _odata(
            "Chassis/1/Sensors/ChassisPower",
            "#Sensor.v1_7_0.Sensor",
            Id="ChassisPower",
            Name="Chassis Power",
            ReadingType="Power",
            ReadingUnits="W",
            Reading=power.environment_watts,
        ),
        "Chassis/1/Sensors/ChassisEnergy": _odata(
            "Chassis/1/Sensors/ChassisEnergy",
            "#Sensor.v1_7_0.Sensor",
            Id="ChassisEnergy",
            Name="Chassis Energy",
            ReadingType="EnergykWh",
            ReadingUnits="kW.h",
            Reading=power.energy_kwh,
            SensorResetTime=reset,
        ),
    }
    chassis = resources["Chassis/1"]
    dropped = {
        "environment": ("EnvironmentMetrics", ["Chassis/1/EnvironmentMetrics"]),
        "legacy": ("Power", ["Chassis/1/Power"]),
        "energy": (
            "Sensors",
            [
                "Chassis/1/Sensors",
                "Chassis/1/Sensors/ChassisEnergy",
                "Chassis/1/Sensors/ChassisPower",
            ],
        ),
    }
    for way, (link, paths) in dropped.items():
        if way not in ways:
            chassis.pop(link)
            for path in paths:
                resources.pop(path)
    if "energy" not in ways and "environment" in ways:
        resources["Chassis/1/EnvironmentMetrics"].pop("EnergykWh")
        resources["Chassis/1/EnvironmentMetrics"]["PowerWatts"].pop("DataSourceUri")
    return resources


def write_mockup(
    directory: Path, power: MockupPower | None = None, ways: Collection[str] = WAYS
) -> Path:
    """Write the mockup tree under ``directory`` (created if needed) and return it."""
    for path, body in mockup_resources(power or MockupPower(), ways).items():
        target = directory / path / "index.json" if path else directory / "index.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(body, indent=2) + "\n")
    return directory


__all__ = ["WAYS", "MockupPower", "mockup_resources", "write_mockup"]
