"""The IPMI client against simulated BMCs (pyghmi's RMCP+ server), cross-checked by ipmitool."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
from datetime import UTC, datetime

import pytest

from metering.bmc import BmcClient, BmcTarget
from metering.errors import BmcUnsupported
from metering.samples import SampleFlag
from tests.peers.bmc_peers import SimEndpoint, SimFleetProcess, ipmitool, sim_fleet

pytestmark = pytest.mark.peer
__all__ = ["ipmitool", "sim_fleet"]  # fixtures used by name below


def _target(ep: SimEndpoint, **extra: object) -> BmcTarget:
    fields = dict(protocol="ipmi", address=ep.address, port=ep.port, username=ep.username,
                  password=ep.password, max_watts=ep.max_watts)  # fmt: skip
    fields.update(extra)
    return BmcTarget(**fields)  # type: ignore[arg-type]


def _ipmitool_dcmi(tool: str, ep: SimEndpoint) -> dict[str, object]:
    out = subprocess.run(
        [tool, "-I", "lanplus", "-H", ep.address, "-p", str(ep.port), "-U", ep.username,
         "-P", ep.password, "dcmi", "power", "reading"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip

    def watts(label: str) -> int:
        found = re.search(rf"{label}:\s+(\d+) Watts", out)
        assert found, out
        return int(found.group(1))

    stamp = re.search(r"IPMI timestamp:\s+(\d\d/\d\d/\d\d \d\d:\d\d:\d\d)", out)
    period = re.search(r"Sampling period:\s+(\d+) Seconds", out)
    state = re.search(r"Power reading state is:\s+(\w+)", out)
    assert stamp and period and state, out
    return {
        "current": watts("Instantaneous power reading"),
        "min": watts("Minimum during sampling period"),
        "max": watts("Maximum during sampling period"),
        "avg": watts("Average power reading over sample period"),
        "bmc_time": datetime.strptime(stamp.group(1), "%m/%d/%y %H:%M:%S").replace(tzinfo=UTC),
        "period_s": int(period.group(1)),
        "active": state.group(1) == "activated",
    }


def test_library_and_ipmitool_report_the_same_record(
    sim_fleet: SimFleetProcess, ipmitool: str
) -> None:
    ep = sim_fleet.endpoints[0]
    with BmcClient(_target(ep)) as client:
        # The simulated record is a function of its one-second timestamp: retry until both
        # tools read within the same second, then every field must agree.
        for _ in range(5):
            ours = client.read()
            theirs = _ipmitool_dcmi(ipmitool, ep)
            if theirs["bmc_time"] == ours.bmc_time:
                break
        assert theirs["bmc_time"] == ours.bmc_time
        assert (theirs["current"], theirs["min"], theirs["max"], theirs["avg"]) == (
            ours.watts, ours.min_watts, ours.max_watts, ours.avg_watts,
        )  # fmt: skip
        assert theirs["period_s"] == ours.period_s == 60
        assert theirs["active"] is True
        assert ours.source == "dcmi" and ours.flags == SampleFlag.NONE
        assert ours.min_watts is not None and ours.max_watts is not None
        assert ours.min_watts <= ours.watts <= ours.max_watts


def test_detection_remembers_dcmi_and_the_session_is_kept(sim_fleet: SimFleetProcess) -> None:
    ep = sim_fleet.endpoints[1]
    before = sim_fleet.stats(ep.port)
    with BmcClient(_target(ep)) as client:
        assert client.method is None
        readings = [client.read() for _ in range(50)]
        assert client.method == "dcmi"
    after = sim_fleet.stats(ep.port)
    assert all(r.source == "dcmi" for r in readings)
    assert after["dcmi_reads"] - before["dcmi_reads"] == 50
    # One login for 50 reads: pyghmi asks for SHA-256, is refused, and retries with SHA-1.
    assert after["open_session_requests"] - before["open_session_requests"] == 2
    assert after["refused_algorithms"] - before["refused_algorithms"] == 1


def test_operator_override_of_the_method_is_obeyed(sim_fleet: SimFleetProcess) -> None:
    ep = sim_fleet.endpoints[2]
    with BmcClient(_target(ep, method="sdr")) as client:
        # The simulated BMC has no SDR repository: the override is not second-guessed.
        with pytest.raises(BmcUnsupported):
            client.read()
        assert client.method == "sdr"


def test_a_bmc_without_dcmi_or_power_sensors_is_unsupported(sim_fleet: SimFleetProcess) -> None:
    ep = sim_fleet.endpoints[3]
    sim_fleet.set_fault(ep.port, "no-dcmi")
    try:
        with BmcClient(_target(ep)) as client, pytest.raises(BmcUnsupported) as info:
            client.read()
        assert "dcmi" in str(info.value) and "sdr" in str(info.value)
        assert info.value.cause == "unsupported"
    finally:
        sim_fleet.set_fault(ep.port, "none")


@pytest.mark.slow
def test_one_process_serves_a_fleet_and_one_collector_reads_it_all() -> None:
    fleet = SimFleetProcess(100)
    try:
        # Strict on purpose: no re-read after a failure. pyghmi's I/O thread used to block in
        # recvfrom() on one BMC's socket (a send from another thread had switched it back to
        # blocking) and freeze every BMC of the process for seconds (metering.pyghmi_fixes).
        clients = [BmcClient(_target(ep), timeout_s=10) for ep in fleet.endpoints]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for _ in range(3):  # login + detection, then reads over kept sessions
                readings = list(pool.map(BmcClient.read, clients))
        assert all(r.source == "dcmi" and r.flags == SampleFlag.NONE for r in readings)
        assert len({r.watts for r in readings}) > 10  # the BMCs follow different models
        for client in clients:
            client.close()
    finally:
        fleet.stop()
