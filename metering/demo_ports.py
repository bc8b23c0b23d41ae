"""Free loopback ports for simulated peers (BMCs, Redfish services) in demos and benchmarks."""

from __future__ import annotations

import random
import socket

from metering.redfish_server import free_tcp_port

#: Simulated BMCs take ports from here up to the start of the kernel's ephemeral range.
LOW_PORT = 10000


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for ephemeral ports (what ``bind(port 0)`` and clients get)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(v) for v in fh.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _binds(base: int, count: int) -> bool:
    held: list[socket.socket] = []
    try:
        for port in range(base, base + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in held:
            s.close()


def free_udp_block(count: int) -> int:
    """A base port with ``count`` consecutive UDP ports free on 127.0.0.1.

    The block is taken below the kernel's ephemeral range, at a random place: there no client
    socket (of this or any other process, such as the simulators' own) can be handed one of
    its ports by the kernel between this check and the servers binding them, and two callers
    at once (parallel test workers) rarely pick overlapping blocks.
    """
    low, _high = ephemeral_port_range()
    rng = random.SystemRandom()
    if low - count > LOW_PORT:
        for _ in range(200):
            base = rng.randrange(LOW_PORT, low - count)
            if _binds(base, count):
                return base
    for _ in range(200):  # a block too large for below the range: take one inside it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65000 and _binds(base, count):
            return base
    raise OSError(f"no block of {count} free UDP ports on 127.0.0.1")


__all__ = ["ephemeral_port_range", "free_tcp_port", "free_udp_block"]
