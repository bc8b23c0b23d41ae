"""The Redfish client (through pyghmi's web client) against sushy-static serving our mockup."""

from __future__ import annotations

import math
import time

import pytest

from metering.bmc import BmcClient, BmcTarget
from metering.errors import BmcUnreachable, BmcUnsupported
from metering.samples import SampleFlag
from tests.peers.bmc_peers import (
    RedfishBmc,
    RedfishBmcs,
    free_tcp_port,
    redfish_bmc,
    redfish_bmcs,
)

pytestmark = pytest.mark.peer
__all__ = ["redfish_bmc", "redfish_bmcs"]


def _client(bmc: RedfishBmc, method: str | None = None, **kw: object) -> BmcClient:
    target = BmcTarget("redfish", "127.0.0.1", bmc.port, bmc.username, bmc.password,
                       method=method, **kw)  # type: ignore[arg-type]  # fmt: skip
    return BmcClient(target, timeout_s=10)


def test_detection_prefers_environment_metrics(redfish_bmc: RedfishBmc) -> None:
    with _client(redfish_bmc) as client:
        reading = client.read()
        assert client.method == "redfish-environment"
    assert reading.source == "redfish-environment"
    assert reading.watts == redfish_bmc.power.environment_watts
    assert reading.flags == SampleFlag.NONE and reading.bmc_time is None


def test_legacy_power_control_with_its_metrics(redfish_bmc: RedfishBmc) -> None:
    power = redfish_bmc.power
    with _client(redfish_bmc, "redfish-legacy") as client:
        reading = client.read()
    assert reading.source == "redfish-legacy"
    assert (reading.watts, reading.min_watts, reading.max_watts, reading.avg_watts) == (
        power.legacy_watts, power.legacy_min_watts, power.legacy_max_watts,
        power.legacy_avg_watts,
    )  # fmt: skip
    assert reading.period_s == 60.0 * power.legacy_interval_min
    # Like real BMCs, the two ways disagree slightly.
    assert 0 < abs(reading.watts - power.environment_watts) < 0.05 * power.environment_watts


def test_energy_sensor_gives_joules_and_watts_from_differences(redfish_bmc: RedfishBmc) -> None:
    power = redfish_bmc.power
    with _client(redfish_bmc, "energy") as client:  # short names are accepted
        first = client.read()
        time.sleep(0.2)
        second = client.read()
    assert first.source == second.source == "energy-counter"
    assert first.energy_j == pytest.approx(power.energy_kwh * 3.6e6)
    assert math.isnan(first.watts)  # one counter value says nothing about power yet
    # The static mockup's counter does not move: 0 W while the system says it is On.
    assert second.watts == 0.0 and second.flags == SampleFlag.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("ways", "detected"),
    [(("legacy", "energy"), "redfish-legacy"), (("energy",), "energy-counter")],
)
def test_detection_falls_back_when_a_bmc_lacks_newer_resources(
    redfish_bmcs: RedfishBmcs, ways: tuple[str, ...], detected: str
) -> None:
    bmc = redfish_bmcs.start(ways=ways)
    with _client(bmc) as client:
        reading = client.read()
        assert client.method == detected
    assert reading.source == detected


def test_a_bmc_with_no_power_resource_is_unsupported(redfish_bmcs: RedfishBmcs) -> None:
    bmc = redfish_bmcs.start(ways=())
    with _client(bmc) as client, pytest.raises(BmcUnsupported) as info:
        client.read()
    for method in ("redfish-environment", "redfish-legacy", "energy-counter"):
        assert method in str(info.value)


def test_nothing_listening_is_unreachable() -> None:
    target = BmcTarget("redfish", "127.0.0.1", free_tcp_port(), "root", "pw")
    with BmcClient(target, timeout_s=5) as client, pytest.raises(BmcUnreachable):
        client.read()
