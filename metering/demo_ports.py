"""Free loopback ports for simulated peers (BMCs, Redfish services) in demos and benchmarks."""

from __future__ import annotations

import socket

from metering.redfish_server import free_tcp_port


def free_udp_block(count: int) -> int:
    """A base port with ``count`` consecutive UDP ports free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65000:
            continue
        held = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise OSError("no block of free UDP ports on 127.0.0.1")


__all__ = ["free_tcp_port", "free_udp_block"]
