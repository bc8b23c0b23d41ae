"""The SDR power-sensor path against OpenIPMI's ipmi_sim, cross-checked by ipmitool sdr."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from metering.bmc import BmcClient, BmcTarget
from metering.errors import BmcUnsupported
from metering.samples import SampleFlag
from tests.peers.bmc_peers import IpmiSimBmc, ipmi_sim_bmc, ipmitool

pytestmark = pytest.mark.peer
__all__ = ["ipmi_sim_bmc", "ipmitool"]


def _target(bmc: IpmiSimBmc, **extra: object) -> BmcTarget:
    return BmcTarget("ipmi", "127.0.0.1", bmc.port, bmc.username, bmc.password, **extra)  # type: ignore[arg-type]


def _ipmitool_sdr_watts(tool: str, bmc: IpmiSimBmc) -> float:
    # -C 3: ipmi_sim does not answer the cipher-suite lookup ipmitool would otherwise wait on.
    out = subprocess.run(
        [tool, "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(bmc.port),
         "-U", bmc.username, "-P", bmc.password, "sdr"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    found = re.search(rf"^{re.escape(bmc.sensor_name)}\s*\|\s*([\d.]+) Watts", out, re.M)
    assert found, out
    return float(found.group(1))


def _settle(client: BmcClient, watts: float, timeout_s: float = 5.0) -> float:
    # ipmi_sim polls the file every 200 ms: wait until the new value shows.
    deadline = time.monotonic() + timeout_s
    reading = client.read().watts
    while reading != watts and time.monotonic() < deadline:
        time.sleep(0.1)
        reading = client.read().watts
    return reading


def test_library_reads_the_sensor_file_and_ipmitool_agrees(
    ipmi_sim_bmc: IpmiSimBmc, ipmitool: str
) -> None:
    with BmcClient(_target(ipmi_sim_bmc, max_watts=2000.0), timeout_s=10) as client:
        for watts in (420, 1230, 80):
            ipmi_sim_bmc.write_watts(watts)
            assert _settle(client, watts) == watts
            reading = client.read()
            assert reading.source == "sdr" and reading.flags == SampleFlag.NONE
            assert reading.bmc_time is None and reading.min_watts is None
            assert _ipmitool_sdr_watts(ipmitool, ipmi_sim_bmc) == watts
        # ipmi_sim has no DCMI: detection fell back to the SDR sensor and kept it.
        assert client.method == "sdr"


def test_the_sensor_reports_in_its_own_10_watt_steps(
    ipmi_sim_bmc: IpmiSimBmc, ipmitool: str
) -> None:
    with BmcClient(_target(ipmi_sim_bmc, method="sdr"), timeout_s=10) as client:
        ipmi_sim_bmc.write_watts(357)  # raw reading 36 (x10 W), as the SDR's M factor says
        assert _settle(client, 360) == 360 == _ipmitool_sdr_watts(ipmitool, ipmi_sim_bmc)


def test_a_configured_sensor_name_that_does_not_exist_is_unsupported(
    ipmi_sim_bmc: IpmiSimBmc,
) -> None:
    target = _target(ipmi_sim_bmc, method="sdr", sensor_names=("PSU1 Input Power",))
    with BmcClient(target, timeout_s=10) as client, pytest.raises(BmcUnsupported):
        client.read()


def test_dcmi_override_on_a_bmc_without_dcmi_is_unsupported(ipmi_sim_bmc: IpmiSimBmc) -> None:
    target = _target(ipmi_sim_bmc, method="dcmi")
    with BmcClient(target, timeout_s=10) as client, pytest.raises(BmcUnsupported):
        client.read()
