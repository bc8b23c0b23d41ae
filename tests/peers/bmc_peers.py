"""Real BMC peers on 127.0.0.1 for the tests: simulated IPMI BMCs, OpenIPMI ipmi_sim, sushy-static.

Fixtures (import them into a test module to use them):

- ``sim_fleet``: a child process running :mod:`metering.simulator` with a few BMCs and a
  control channel (set a BMC's fault, read its counters);
- ``ipmitool``: the path of ``ipmitool``;
- ``ipmi_sim_bmc``: OpenIPMI's ``ipmi_sim`` with a "Pwr Consumption" SDR sensor (compiled by
  ``sdrcomp``) fed from a file the test writes;
- ``redfish_bmc``: ``sushy-static`` over HTTPS serving the project's Redfish mockup;
- ``redfish_bmcs``: starts more of them, each with a chosen subset of the power resources.

The simulated fleet and ipmitool live here; ipmi_sim and sushy-static in ``openipmi_peer`` and
``sushy_peer``, re-exported. A missing peer binary skips the test locally with how to install
it, and fails it under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.peers.openipmi_peer import IpmiSimBmc, ipmi_sim_bmc
from tests.peers.peer_process import (
    APT_HINT,
    free_tcp_port,
    free_udp_ports,
    need,
    require_binary,
    stop_process,
)
from tests.peers.sushy_peer import RedfishBmc, RedfishBmcs, redfish_bmc, redfish_bmcs


@dataclass(frozen=True)
class SimEndpoint:
    """One simulated BMC as the inventory would list it."""

    host: str
    protocol: str
    address: str
    port: int
    username: str
    password: str
    method: str | None = None
    max_watts: float | None = None


class SimFleetProcess:
    """``python -m metering.simulator`` in a child process, driven over its stdin."""

    def __init__(self, count: int, faults: dict[int, str] | None = None) -> None:
        self.base_port = free_udp_ports(count)
        self.password = "s1m-" + os.urandom(6).hex()
        args = [
            sys.executable, "-m", "metering.simulator",
            "--count", str(count), "--base-port", str(self.base_port),
            "--password", self.password,
        ]  # fmt: skip
        for index, mode in (faults or {}).items():
            args += ["--fault", f"{index}={mode}"]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        ready = self._answer(timeout_s=30)
        self.endpoints = [SimEndpoint(**ep) for ep in ready["endpoints"]]

    def _answer(self, timeout_s: float = 10) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip().startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"simulator gave no answer (exit code {self.proc.poll()})")

    def command(self, line: str) -> dict[str, Any]:
        """Send one control line and return the simulator's JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if not answer.get("ok"):
            raise RuntimeError(f"simulator refused {line!r}: {answer}")
        return answer

    def set_fault(self, port: int, fault: str, slow_s: float = 0.0) -> None:
        """Make the BMC on ``port`` misbehave (metering.sim_ipmi.FAULTS)."""
        self.command(f"fault {port} {fault} {slow_s}")

    def stats(self, port: int) -> dict[str, Any]:
        """The counters of the BMC on ``port``."""
        return self.command(f"stats {port}")

    def stop(self) -> None:
        """Stop the child process."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)


@pytest.fixture(scope="module")
def sim_fleet() -> Iterator[SimFleetProcess]:
    """Four simulated IPMI BMCs in a child process (faults reset to none by each test)."""
    fleet = SimFleetProcess(4)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def ipmitool() -> str:
    """Path of the ipmitool binary (skips locally, fails in CI, when missing)."""
    return require_binary("ipmitool", APT_HINT)


__all__ = [
    "IpmiSimBmc",
    "RedfishBmc",
    "RedfishBmcs",
    "SimEndpoint",
    "SimFleetProcess",
    "free_tcp_port",
    "free_udp_ports",
    "ipmi_sim_bmc",
    "ipmitool",
    "need",
    "redfish_bmc",
    "redfish_bmcs",
    "require_binary",
    "sim_fleet",
]
