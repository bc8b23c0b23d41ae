"""Fixes to pyghmi 1.6's IPMI session layer, installed once per process by whoever uses it.

pyghmi runs every IPMI session of a process through one I/O thread and module-level state.
Four of its behaviours break a fleet of hundreds of BMCs (each found here by measurement);
each fix below changes that one behaviour and nothing else:

- :func:`install_receive_fix` (client and simulated BMCs): pyghmi's I/O thread reads a socket
  by switching it to non-blocking mode and then calling ``recvfrom``, while any thread that
  sends switches the same socket back to blocking mode. When a send lands between the two,
  the I/O thread blocks in ``recvfrom`` on that one socket until a packet reaches it, and no
  other socket of the process is read meanwhile. With one socket per simulated BMC this froze
  a simulator process serving 125 BMCs for ~10 s at a time (until the next poll of the BMC
  whose socket it sat on), which is what made a 500-1,000 BMC collector run miss most polls.
  The fix reads with ``MSG_DONTWAIT``, which never blocks whatever mode the socket is in.
- :func:`install_client_fixes` (the reading side) adds three more:
  a lost wake-up in the client's wait for an answer, the lock-order inversion between
  pyghmi's two global session locks, and a thread that sends session keepalives between reads.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pyghmi.ipmi.private.session as pyghmi_session

log = logging.getLogger(__name__)

_lock = threading.Lock()
_receive_fixed = False
_client_fixed = False


def install_receive_fix() -> None:
    """Make pyghmi's socket reads non-blocking per call (see the module docstring)."""
    global _receive_fixed
    with _lock:
        if _receive_fixed:
            return

        def _io_recvfrom(mysocket: socket.socket, size: int) -> Any:
            try:
                return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
            except OSError:
                return None

        pyghmi_session._io_recvfrom = _io_recvfrom
        _receive_fixed = True


def install_client_fixes() -> None:
    """Everything a process that reads BMCs through pyghmi needs (idempotent)."""
    global _client_fixed
    install_receive_fix()
    with _lock:
        if _client_fixed:
            return
        _install_io_wait_fix()
        # pyghmi takes its two global locks in both orders: a login holds KEEPALIVE_SESSIONS
        # and then takes WAITING_SESSIONS, while a timeout found by wait_for_rsp() holds
        # WAITING_SESSIONS and tears the session down under KEEPALIVE_SESSIONS. With many
        # threads (a fleet's logins while some BMCs time out) the two deadlock for good; seen
        # with 1,000 simulated BMCs. Both are re-entrant locks, so making them one lock keeps
        # every code path's meaning and removes the inversion.
        pyghmi_session.WAITING_SESSIONS = pyghmi_session.KEEPALIVE_SESSIONS
        # pyghmi sends its session keepalives from inside wait_for_rsp(); between reads
        # nobody would call it, and BMCs drop sessions idle for about a minute.
        threading.Thread(target=_pump_keepalives, name="pyghmi-keepalive", daemon=True).start()
        _client_fixed = True


def _install_io_wait_fix() -> None:
    """Close a race in pyghmi's client wait that costs a ~1 s retransmission per hit.

    pyghmi's ``awaitresponse`` sends a request, then registers to be woken when the BMC's
    address next shows traffic. An answer that lands in between (a fast BMC on a short path:
    ipmi_sim answered most SDR reads this way) is already queued on the session and wakes no
    one, so the reader sleeps until its retransmission timer. The replacement registers as
    before and returns at once when the session already holds a packet.
    """
    original = pyghmi_session._io_wait

    def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        if myaddr is None or evq is not None:
            original(timeout, myaddr, evq)
            return
        event = threading.Event()
        deadline = timeout + pyghmi_session._monotonic_time()
        pyghmi_session.ioqueue.append((deadline, event, myaddr))
        handlers = list(pyghmi_session.Session.bmc_handlers.get(myaddr, {}).values())
        if any(h.pktqueue or h.lastresponse is not None for h in handlers):
            return  # the answer is here (queued, or handled by another thread)
        if deadline < pyghmi_session.selectdeadline:
            wake = pyghmi_session.iosockets[0]
            wake.sendto(b"\x01", (pyghmi_session.myself, wake.getsockname()[1]))
        event.wait()

    pyghmi_session._io_wait = _io_wait


def _pump_keepalives() -> None:
    while True:
        try:
            pyghmi_session.Session.wait_for_rsp(timeout=1.0)
        except Exception:
            # One broken session must not end the keepalives of every other one.
            log.debug("pyghmi event loop iteration failed", exc_info=True)
            time.sleep(1.0)


__all__ = ["install_client_fixes", "install_receive_fix"]
