"""sushy-static on 127.0.0.1 over HTTPS (a self-signed certificate) serving the project's mockup."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metering.redfish_mockup import WAYS, MockupPower, write_mockup
from metering.redfish_server import self_signed_certificate
from tests.peers.peer_process import LOOPBACK, PIP_HINT, free_tcp_port, require_binary, stop_process


@dataclass(frozen=True)
class RedfishBmc:
    """A running sushy-static serving the mockup with ``power``."""

    port: int
    power: MockupPower
    username: str = "root"
    password: str = "calvin-" + "mock"


class RedfishBmcs:
    """Starts sushy-static servers over TLS, each serving a mockup; stops them all at the end."""

    def __init__(self, directory: Path) -> None:
        self.sushy = require_binary("sushy-static", PIP_HINT)
        self.directory = directory
        self.cert, self.key = self_signed_certificate(directory)
        self._running: list[tuple[subprocess.Popen[Any], Any]] = []

    def start(self, power: MockupPower | None = None, ways: Collection[str] = WAYS) -> RedfishBmc:
        """A new sushy-static on a free port serving a mockup with ``power`` and ``ways``."""
        power = power or MockupPower()
        port = free_tcp_port()
        tree = write_mockup(self.directory / f"mockup-{port}", power, ways)
        log = (self.directory / f"sushy-{port}.log").open("w")
        proc = subprocess.Popen(
            [self.sushy, "-i", LOOPBACK, "-p", str(port), "-m", str(tree),
             "-c", str(self.cert), "-k", str(self.key)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._running.append((proc, log))
        _wait_tls(port, proc)
        return RedfishBmc(port, power)

    def stop(self) -> None:
        """Stop every server started."""
        for proc, log in self._running:
            stop_process(proc)
            log.close()


@pytest.fixture(scope="module")
def redfish_bmcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedfishBmcs]:
    """A starter of sushy-static servers (``.start(power, ways)``), all stopped afterwards."""
    starter = RedfishBmcs(tmp_path_factory.mktemp("redfish"))
    try:
        yield starter
    finally:
        starter.stop()


@pytest.fixture(scope="module")
def redfish_bmc(redfish_bmcs: RedfishBmcs) -> RedfishBmc:
    """sushy-static on 127.0.0.1 over TLS (self-signed), serving the full mockup."""
    return redfish_bmcs.start()


def _wait_tls(port: int, proc: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sushy-static exited with code {proc.returncode}")
        try:
            with (
                socket.create_connection((LOOPBACK, port), timeout=1) as raw,
                ctx.wrap_socket(raw),
            ):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sushy-static did not listen on {port} within {timeout_s} s")


__all__ = ["RedfishBmc", "RedfishBmcs", "redfish_bmc", "redfish_bmcs"]
