"""OpenIPMI's ipmi_sim on 127.0.0.1 with a "Pwr Consumption" sensor fed from a file.

The SDR record is written in sdrcomp's source language and compiled by ``sdrcomp`` at fixture
time; the emulator commands load it with ``main_sdr_add``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers.peer_process import (
    APT_HINT,
    LOOPBACK,
    free_udp_ports,
    require_binary,
    stop_process,
)

POWER_SDR_SOURCE = """\
sdr type 1
  sensor_owner_id 0x20
  sensor_owner_lun 0
  channel_number 0
  sensor_number 2
  entity_id 19
  entity_instance 1
  init_scanning true
  init_sensor_type true
  default_sensor_scan_on true
  sensor_type Current
  event_reading_type_code 1
  analog_data_format unsigned
  base_unit Watts
  linearization linear
  m {m}
  b 0
  r_exp 0
  b_exp 0
  sensor_maximum 255
  sensor_minimum 0
  id_string "{name}"
endsdr
"""


@dataclass
class IpmiSimBmc:
    """A running ipmi_sim whose power sensor reads ``watts_file`` (watts, 10 W resolution)."""

    port: int
    username: str
    password: str
    watts_file: Path
    sensor_name: str
    resolution_w: int

    def write_watts(self, watts: int) -> None:
        """Set the power the sensor will report (ipmi_sim polls the file every 200 ms)."""
        tmp = self.watts_file.with_suffix(".tmp")
        tmp.write_text(f"{watts}\n")
        tmp.replace(self.watts_file)


def _ipmi_sim_files(tmp: Path, port: int, user: str, password: str, sdr: bytes) -> None:
    (tmp / "lan.conf").write_text(
        f"""name "hwmarket-sim"
set_working_mc 0x20
  startlan 1
    addr {LOOPBACK} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""
    )
    record = " ".join(f"0x{b:02x}" for b in sdr)
    (tmp / "sim.emu").write_text(
        f"""mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
sensor_add 0x20 0 0 35 0x6f event-only
sensor_add 0x20 0 2 0x03 0x01 poll 200 file "{tmp / "watts"}" div=10
sensor_set_event_support 0x20 0 2 enable scanning per-state \\
    000000000000000 000000000000000 000000000000000 000000000000000
main_sdr_add 0x20 {record}
mc_enable 0x20
"""
    )


@pytest.fixture(scope="module")
def ipmi_sim_bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiSimBmc]:
    """OpenIPMI ipmi_sim on 127.0.0.1 with a "Pwr Consumption" sensor fed from a file."""
    ipmi_sim = require_binary("ipmi_sim", APT_HINT)
    sdrcomp = require_binary("sdrcomp", APT_HINT)
    tmp = tmp_path_factory.mktemp("ipmi_sim")
    name = "Pwr Consumption"
    (tmp / "power.sdrs").write_text(POWER_SDR_SOURCE.format(m=10, name=name))
    subprocess.run(
        [sdrcomp, "-r", "-o", str(tmp / "power.sdr"), str(tmp / "power.sdrs")],
        check=True,
        capture_output=True,
    )
    port = free_udp_ports(1)
    bmc = IpmiSimBmc(port, "operator", "ipmi-" + os.urandom(4).hex(), tmp / "watts", name, 10)
    bmc.write_watts(420)
    _ipmi_sim_files(tmp, port, bmc.username, bmc.password, (tmp / "power.sdr").read_bytes())
    (tmp / "state").mkdir()
    log = (tmp / "ipmi_sim.log").open("w")
    proc = subprocess.Popen(
        [ipmi_sim, "-c", str(tmp / "lan.conf"), "-f", str(tmp / "sim.emu"),
         "-s", str(tmp / "state"), "-n"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_udp_bound(port, proc)
        yield bmc
    finally:
        stop_process(proc)
        log.close()


def _wait_udp_bound(port: int, proc: subprocess.Popen[Any], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with code {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return  # someone (the peer) holds the port now
        time.sleep(0.05)
    raise RuntimeError(f"peer did not bind UDP {port} within {timeout_s} s")


__all__ = ["POWER_SDR_SOURCE", "IpmiSimBmc", "ipmi_sim_bmc"]
