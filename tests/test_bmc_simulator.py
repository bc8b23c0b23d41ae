"""The simulated BMC fleet: its DCMI records, its faults, and the `bmc simulate` entry point."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
import yaml

from marketplace.inventory import Inventory
from metering.bmc_reading import decode_dcmi_power_reading
from metering.errors import BadReading
from metering.power_models import LoadProfile, SpecPowerModel, TraceReplayModel, curve_from_row
from metering.sim_ipmi import BmcBehaviour, SimulatedBmc
from metering.simulator import simulate_fleet, start_fleet
from tests.peers.bmc_peers import free_udp_ports, ipmitool

__all__ = ["ipmitool"]

R640 = curve_from_row("R640", [55, 125, 151, 176, 202, 232, 261, 301, 357, 421, 469])
NOW = 1_795_000_000.0


@pytest.fixture
def sim_bmc() -> Iterator[SimulatedBmc]:
    """One simulated BMC (bound, not served: its records are computed directly)."""
    bmc = SimulatedBmc(SpecPowerModel(R640, LoadProfile(seed=4)), "admin", "pw", free_udp_ports(1))
    yield bmc
    bmc.close()


def test_record_statistics_cover_the_window(sim_bmc: SimulatedBmc) -> None:
    record = sim_bmc.power_record(NOW + 0.7)
    window = sim_bmc.model.watts(np.arange(NOW - 59, NOW + 1))
    assert record.current_watts == round(float(window[-1]))
    assert record.min_watts == round(float(window.min()))
    assert record.max_watts == round(float(window.max()))
    assert record.avg_watts == round(float(window.mean()))
    assert record.bmc_time == datetime.fromtimestamp(NOW, UTC)
    assert record.period_s == 60 and record.active


def test_faults_change_the_record(sim_bmc: SimulatedBmc) -> None:
    sim_bmc.behaviour = BmcBehaviour("sentinel")
    assert sim_bmc.power_record(NOW).current_watts == 0xFFFF
    sim_bmc.behaviour = BmcBehaviour("inactive")
    assert not sim_bmc.power_record(NOW).active
    sim_bmc.behaviour = BmcBehaviour("clock-1970")
    assert sim_bmc.power_record(NOW).bmc_time.year == 1970
    sim_bmc.behaviour = BmcBehaviour("stale")
    assert sim_bmc.power_record(NOW).bmc_time == sim_bmc.power_record(NOW + 9).bmc_time
    sim_bmc.behaviour = BmcBehaviour("garbage")
    with pytest.raises(BadReading):
        decode_dcmi_power_reading(bytes(sim_bmc.dcmi_response_data()))
    with pytest.raises(ValueError, match="unknown fault"):
        BmcBehaviour("melting")


def test_a_replayed_trace_feeds_a_bmc() -> None:
    trace = TraceReplayModel(np.array([0.0, 30.0, 60.0]), np.array([100.0, 700.0, 100.0]))
    bmc = SimulatedBmc(trace, "admin", "pw", free_udp_ports(1))
    try:
        record = bmc.power_record(90.0)  # 30 s into the second loop: the peak
        assert record.current_watts == 700 and record.min_watts < record.max_watts
    finally:
        bmc.close()


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatedBmc(SpecPowerModel(R640, LoadProfile()), "a", "b", 40000, address="0.0.0.0")
    with pytest.raises(ValueError):
        start_fleet(2, 80)


@pytest.mark.peer
def test_simulate_fleet_prints_an_inventory_that_ipmitool_can_read(ipmitool: str) -> None:
    base = free_udp_ports(3)
    texts: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def on_ready(text: str) -> None:
        texts.append(text)
        ready.set()

    runner = threading.Thread(
        target=simulate_fleet, args=(3, base), kwargs={"on_ready": on_ready, "stop": stop}
    )
    runner.start()
    try:
        assert ready.wait(30)
        inventory = yaml.safe_load(texts[0])
        Inventory.model_validate(inventory)  # the operator's inventory format accepts it
        hosts = inventory["hosts"]
        assert [h["bmc"]["port"] for h in hosts] == [base, base + 1, base + 2]
        for host in hosts:
            bmc = host["bmc"]
            assert bmc["protocol"] == "ipmi" and bmc["address"] == "127.0.0.1"
            out = subprocess.run(
                [ipmitool, "-I", "lanplus", "-H", bmc["address"], "-p", str(bmc["port"]),
                 "-U", bmc["username"], "-P", bmc["password"], "dcmi", "power", "reading"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout  # fmt: skip
            assert "Instantaneous power reading" in out and "activated" in out
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    for port in (base, base + 1, base + 2):  # every socket was released
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))
