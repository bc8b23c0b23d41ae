"""Fixes to pyghmi 1.6's IPMI session layer, installed once per process by whoever uses it.

pyghmi runs every IPMI session of a process through one I/O thread and module-level state.
Several of its behaviours break or slow down a fleet of hundreds of BMCs (each found here by
measurement); each fix below changes that one behaviour and nothing else.

:func:`install_io_fixes` (both sides: readers and simulated BMCs):

- pyghmi's I/O thread reads a socket by switching it to non-blocking mode and then calling
  ``recvfrom``, while any thread that sends switches the same socket back to blocking mode.
  When a send lands between the two, the I/O thread blocks in ``recvfrom`` on that one socket
  until a packet reaches it, and no other socket of the process is read meanwhile. With one
  socket per simulated BMC this froze a simulator process serving 125 BMCs for ~10 s at a
  time (until the next poll of the BMC whose socket it sat on), which is what made a 500-1,000
  BMC collector run miss most polls. Reads now use ``MSG_DONTWAIT``, which never blocks
  whatever mode the socket is in.
- After each ``select()`` the I/O thread tried to read every socket of the process, readable
  or not (each failed read raises and is caught): ~500 failed reads per packet in a simulator
  process serving 500 BMCs. It now reads only the sockets ``select()`` reported readable.

:func:`install_client_fixes` (the reading side) adds:

- a lost wake-up in the client's wait for an answer (see :func:`_install_io_wait_fix`), and
  that wait no longer costs the I/O thread an extra wake-up per request;
- one lock instead of pyghmi's two global session locks, which it takes in both orders;
- ``Session.pause()`` logs the exception it swallows instead of printing it to stdout;
- a thread that sends session keepalives between reads.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any

import pyghmi.ipmi.private.session as pyghmi_session

log = logging.getLogger(__name__)

_lock = threading.Lock()
_io_fixed = False
_client_fixed = False


def install_io_fixes() -> None:
    """Non-blocking reads of only the readable sockets (see the module docstring)."""
    global _io_fixed
    with _lock:
        if _io_fixed:
            return

        def _io_recvfrom(mysocket: socket.socket, size: int) -> Any:
            try:
                return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
            except OSError:
                return None

        pyghmi_session._io_recvfrom = _io_recvfrom
        selector = _RememberingSelect()
        original_graball = pyghmi_session._io_graball

        def _io_graball(mysockets: list[socket.socket], iowaiters: Any) -> Any:
            # Only pyghmi's I/O thread calls both, one after the other.
            ready = selector.readable if selector.readable is not None else mysockets
            return original_graball(ready, iowaiters)

        pyghmi_session.select = selector
        pyghmi_session._io_graball = _io_graball
        _io_fixed = True


class _RememberingSelect:
    """Stands in for the ``select`` module inside pyghmi's session module: the same
    ``select()``, remembering which sockets it found readable for the read that follows."""

    def __init__(self) -> None:
        self.readable: list[Any] | None = None

    def select(self, rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> Any:
        ready = select.select(rlist, wlist, xlist, timeout)
        self.readable = list(ready[0])
        return ready


def install_client_fixes() -> None:
    """Everything a process that reads BMCs through pyghmi needs (idempotent)."""
    global _client_fixed
    install_io_fixes()
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
        # pyghmi's Session.pause() print()s any exception to stdout, which would corrupt
        # `collect --format json` output; the same loop, logging instead.
        pyghmi_session.Session.pause = classmethod(_pause)
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
        # The I/O thread sets the event when the BMC's answer arrives; the deadline is kept
        # here rather than by waking the I/O thread to shorten its select() (pyghmi sends
        # itself a packet for that, one extra wake-up of the I/O thread per request).
        event.wait(max(timeout, 0.0))

    pyghmi_session._io_wait = _io_wait


def _pause(cls: Any, timeout: float) -> None:
    try:
        start = pyghmi_session._monotonic_time()
        while pyghmi_session._monotonic_time() - start < timeout:
            cls.wait_for_rsp(timeout - (pyghmi_session._monotonic_time() - start))
    except Exception as exc:
        log.debug("pyghmi session pause ended early: %r", exc)


def _pump_keepalives() -> None:
    # Once a second, one non-blocking pass of pyghmi's event loop: it sends the keepalives
    # that are due (every ~25 s per session) and hands queued packets to their sessions.
    # Not wait_for_rsp(timeout=1.0): that wakes on every packet of the process and walks every
    # session each time, which cost ~1.5 ms of CPU per poll with 1,000 BMCs polled evenly.
    while True:
        time.sleep(1.0)
        try:
            pyghmi_session.Session.wait_for_rsp(timeout=0)
        except Exception:
            # One broken session must not end the keepalives of every other one.
            log.debug("pyghmi event loop iteration failed", exc_info=True)


__all__ = ["install_client_fixes", "install_io_fixes"]
