"""Starting and stopping peer processes on 127.0.0.1: free ports, binaries, skip or fail.

A missing peer binary skips the test locally with how to install it, and fails it under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metering.demo_ports import free_udp_block

LOOPBACK = "127.0.0.1"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
APT_HINT = "apt-get install openipmi ipmitool"
PIP_HINT = "pip install sushy-tools"


def need(condition: bool, reason: str) -> None:
    """Skip locally when a peer is missing, but fail under CI=true (CI must not skip)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, install: str) -> str:
    """The path of ``name``, or skip (fail under CI) saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    need(found is not None, f"{name} is not installed (install it with: {install})")
    assert found is not None
    return found


def free_udp_ports(count: int) -> int:
    """A base port with ``count`` consecutive UDP ports free on 127.0.0.1 (below the
    ephemeral range, so no client socket can take one before the peer binds it)."""
    return free_udp_block(count)


def free_tcp_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


__all__ = [
    "APT_HINT",
    "IN_CI",
    "LOOPBACK",
    "PIP_HINT",
    "free_tcp_port",
    "free_udp_ports",
    "need",
    "require_binary",
    "stop_process",
]
