"""A simulated IPMI BMC that speaks real RMCP+ (pyghmi's BMC server) and answers DCMI.

:class:`SimulatedBmc` serves *Get Power Reading* (DCMI) from a power model, chassis status
and device id, on one UDP port of 127.0.0.1. Fault modes make it misbehave the ways real BMCs
do (:data:`FAULTS`). Any RMCP+ client reads it: pyghmi, ipmitool, the project's own client.

pyghmi's server only speaks RAKP-HMAC-SHA1; its client asks for SHA-256 first and crashes on
the SHA-1 answer. :class:`Sha1OnlySession` refuses other algorithms with RMCP+ status 0x11 /
0x12 ("no matching payload"), as a real SHA-1-only BMC does, so clients fall back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession

from metering.bmc_reading import DcmiPowerRecord, encode_dcmi_power_reading
from metering.power_models import PowerModel
from metering.pyghmi_fixes import install_io_fixes

#: Fault modes: none, drop (never answers), sentinel (0xFFFF watts), garbage (truncated
#: record), inactive (measurement-active bit clear), clock-1970 (BMC clock near the epoch),
#: stale (timestamp frozen), zero (0 W while on), slow (answers after ``slow_s``), no-dcmi
#: (completion code 0xc1 for DCMI, like a BMC without DCMI).
FAULTS = (
    "none",
    "drop",
    "sentinel",
    "garbage",
    "inactive",
    "clock-1970",
    "stale",
    "zero",
    "slow",
    "no-dcmi",
)

_AUTH_HMAC_SHA1 = 1
_INTEGRITY_HMAC_SHA1_96 = 1
_RMCP_NO_MATCHING_AUTH = 0x11
_RMCP_NO_MATCHING_INTEGRITY = 0x12
_NETFN_DCMI = 0x2C
_DCMI_GET_POWER_READING = 0x02
_DCMI_GROUP = 0xDC
_first_socket_lock = threading.Lock()


@dataclass
class BmcBehaviour:
    """How a simulated BMC behaves now; tests and the control channel change it live."""

    fault: str = "none"
    slow_s: float = 0.0
    powered_on: bool = True

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {', '.join(FAULTS)}")


@dataclass
class BmcCounters:
    """What a simulated BMC has seen, for tests (how many logins did a client try?)."""

    open_session_requests: int = 0
    refused_algorithms: int = 0
    dcmi_reads: int = 0
    dropped_packets: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Sha1OnlySession(serversession.ServerSession):
    """Server session that refuses any RMCP+ proposal but RAKP-HMAC-SHA1 / HMAC-SHA1-96."""

    def create_open_session_response(self, request: Any) -> Any:
        """The RMCP+ Open Session Response: an error status unless SHA-1 was proposed."""
        bmc: SimulatedBmc = self.bmc
        bmc.counters.open_session_requests += 1
        auth_algo = request[12] & 0x3F if len(request) > 12 else None
        integrity_algo = request[20] & 0x3F if len(request) > 20 else None
        status = 0
        if auth_algo != _AUTH_HMAC_SHA1:
            status = _RMCP_NO_MATCHING_AUTH
        elif integrity_algo != _INTEGRITY_HMAC_SHA1_96:
            status = _RMCP_NO_MATCHING_INTEGRITY
        if status:
            bmc.counters.refused_algorithms += 1
            self.clientsessionid = request[4:8]
            return bytearray([request[0], status, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)


class SimulatedBmc(pyghmi_bmc.Bmc):
    """One simulated BMC on ``address:port`` reading its power from ``model``.

    DCMI statistics (min/max/avg) are over the last ``window_s`` seconds of the model, sampled
    every second; the statistics period reported is ``window_s``.
    """

    def __init__(
        self,
        model: PowerModel,
        username: str,
        password: str,
        port: int,
        address: str = "127.0.0.1",
        behaviour: BmcBehaviour | None = None,
        window_s: int = 60,
    ) -> None:
        if not address.startswith("127."):
            raise ValueError("simulated BMCs listen on loopback addresses (127.0.0.0/8) only")
        install_io_fixes()  # one blocked read would otherwise freeze every BMC of the process
        with _first_socket_lock:
            if not ipmisession.iosockets:
                # pyghmi wakes its I/O thread through the first socket it ever made. Make
                # that a client socket, so closing a BMC never closes the process's wake-up.
                ipmisession.Session._assignsocket()
        super().__init__({username: password}, port=port, address=address)
        self.model = model
        self.behaviour = behaviour or BmcBehaviour()
        self.window_s = window_s
        self.counters = BmcCounters()
        self.started = time.time()
        self._lock = threading.Lock()

    # --- sessionless traffic: drop it when told, open sessions with the SHA-1-only class
    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        """Route a packet outside any session (auth capabilities, open session request)."""
        if self.behaviour.fault == "drop":
            self.counters.dropped_packets += 1
            return
        raw = bytearray(data)
        is_rmcp_plus = len(raw) >= 22 and raw[0] == 6 and raw[2:4] == b"\xff\x07" and raw[4] == 6
        if is_rmcp_plus and raw[5] == 16:  # RMCP+ Open Session Request
            Sha1OnlySession(
                self.authdata, self.kg, sockaddr, self.serversocket, raw[16:], self.uuid, self
            )
            return
        super().sessionless_data(data, sockaddr)

    def get_power_state(self) -> str:
        """Chassis power state, as pyghmi's Bmc expects it."""
        return "on" if self.behaviour.powered_on else "off"

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        """Answer one IPMI request inside an established session."""
        fault = self.behaviour.fault
        if fault == "drop":
            self.counters.dropped_packets += 1
            return
        if request["netfn"] == _NETFN_DCMI and request["command"] == _DCMI_GET_POWER_READING:
            if fault == "no-dcmi":
                session.send_ipmi_response(code=0xC1)
                return
            self.counters.dcmi_reads += 1
            data = self.dcmi_response_data()
            if fault == "slow" and self.behaviour.slow_s > 0:
                timer = threading.Timer(
                    self.behaviour.slow_s, session.send_ipmi_response, kwargs={"data": data}
                )
                timer.daemon = True
                timer.start()
                return
            session.send_ipmi_response(data=data)
            return
        super().handle_raw_request(request, session)

    def power_record(self, now: float | None = None) -> DcmiPowerRecord:
        """The DCMI record this BMC reports at ``now`` (epoch seconds), faults applied."""
        # Whole seconds: the record is then a function of the BMC timestamp it carries, so two
        # clients reading within the same second see the same record.
        now = float(int(time.time() if now is None else now))
        fault = self.behaviour.fault
        window = np.arange(now - self.window_s + 1, now + 1, 1.0)
        watts = self.model.watts(window) if self.behaviour.powered_on else np.zeros(len(window))
        current = round(float(watts[-1]))
        low, high, avg = (round(float(f(watts))) for f in (np.min, np.max, np.mean))
        if fault == "sentinel":
            current = low = high = avg = 0xFFFF
        elif fault == "zero":
            current = low = high = avg = 0
        stamp = now
        if fault == "clock-1970":
            # A BMC whose RTC battery died: 1 January 1970, at today's time of day.
            stamp = now % 86_400.0
        elif fault == "stale":
            stamp = self.started
        return DcmiPowerRecord(
            current_watts=current,
            min_watts=low,
            max_watts=high,
            avg_watts=avg,
            bmc_time=datetime.fromtimestamp(int(stamp), UTC),
            period_s=float(self.window_s),
            active=fault != "inactive",
        )

    def dcmi_response_data(self) -> list[int]:
        """Response bytes (without completion code) of Get Power Reading."""
        payload = encode_dcmi_power_reading(self.power_record())
        if self.behaviour.fault == "garbage":
            return [_DCMI_GROUP, 0x12, 0x34]
        return list(payload)

    def detach(self) -> None:
        """Stop answering: take the socket out of pyghmi's routing and I/O loop (still open)."""
        sock = self.serversocket
        with self._lock:
            ipmisession.Session.bmc_handlers.pop(sock, None)
            for handlers in list(ipmisession.Session.bmc_handlers.values()):
                mine = isinstance(handlers, dict) and handlers.get(self.port) is not None
                if mine and getattr(handlers[self.port], "bmc", None) is self:
                    del handlers[self.port]
            if sock in ipmisession.iosockets[1:]:
                ipmisession.iosockets.remove(sock)

    def close(self) -> None:
        """Stop listening and release the port."""
        close_all([self])


def close_all(bmcs: list[SimulatedBmc]) -> None:
    """Stop and release many BMCs at once (one wake-up of pyghmi's I/O thread for all)."""
    for bmc in bmcs:
        bmc.detach()
    # Wake pyghmi's I/O thread so its next select() no longer lists the sockets, then close
    # them: closing a socket a select() is waiting on would kill that thread.
    wake = ipmisession.iosockets[0]
    wake.sendto(b"\x01", (ipmisession.myself, wake.getsockname()[1]))
    time.sleep(0.05)
    for bmc in bmcs:
        bmc.serversocket.close()


__all__ = [
    "FAULTS",
    "BmcBehaviour",
    "BmcCounters",
    "Sha1OnlySession",
    "SimulatedBmc",
    "close_all",
]
