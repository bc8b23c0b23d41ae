"""Serve the project's Redfish mockup over HTTPS with ``sushy-static`` (from sushy-tools).

For demos and benchmarks: a real Redfish service on 127.0.0.1 with a fresh self-signed
certificate. Needs ``pip install sushy-tools cryptography`` (the ``test`` extra has both).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketplace.errors import HwmarketError
from metering.redfish_mockup import WAYS, MockupPower, write_mockup

LOOPBACK = "127.0.0.1"


@dataclass
class RunningRedfish:
    """A sushy-static process serving a mockup; ``stop()`` ends it."""

    port: int
    process: subprocess.Popen[Any]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "bmc.crt", directory / "bmc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def serve_mockup(
    directory: Path,
    power: MockupPower | None = None,
    *,
    port: int | None = None,
    ways: Collection[str] = WAYS,
) -> RunningRedfish:
    """Write the mockup with ``power`` under ``directory`` and serve it over HTTPS on 127.0.0.1."""
    sushy = shutil.which("sushy-static") or shutil.which(
        "sushy-static", path=str(Path(sys.executable).parent)
    )
    if sushy is None:
        raise HwmarketError("sushy-static is not installed (pip install sushy-tools)")
    port = port or free_tcp_port()
    tree = write_mockup(directory / f"mockup-{port}", power or MockupPower(), ways)
    cert, key = self_signed_certificate(directory)
    log = (directory / f"sushy-{port}.log").open("w")
    proc = subprocess.Popen(
        [sushy, "-i", LOOPBACK, "-p", str(port), "-m", str(tree), "-c", str(cert), "-k", str(key)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    running = RunningRedfish(port, proc)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HwmarketError(f"sushy-static exited with code {proc.returncode}; see {log.name}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as raw, ctx.wrap_socket(raw):
                return running
        except OSError:
            time.sleep(0.1)
    running.stop()
    raise HwmarketError(f"sushy-static did not answer on 127.0.0.1:{port} within 20 s")


__all__ = ["RunningRedfish", "free_tcp_port", "self_signed_certificate", "serve_mockup"]
