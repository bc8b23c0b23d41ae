"""Read a host's power from its BMC, out of band, through pyghmi.

One :class:`BmcClient` per BMC keeps its session (an RMCP+ session or an authenticated Redfish
client) between reads, reconnects after a failure, bounds every read by ``timeout_s`` and
returns a :class:`~metering.bmc_reading.PowerReading` with quality flags. Ways of reading:

==========================  ============================================================
method (= reading source)   what is read
==========================  ============================================================
``dcmi`` (ipmi)             DCMI Get Power Reading: current/min/max/avg, period, active
``sdr`` (ipmi)              an SDR sensor in watts ("Pwr Consumption" ..., or PSUs summed)
``redfish-environment``     ``Chassis/*/EnvironmentMetrics`` ``PowerWatts``
``redfish-legacy``          ``Chassis/*/Power`` ``PowerControl[].PowerConsumedWatts``
``energy-counter``          a Redfish ``EnergykWh`` sensor (watts from two reads' difference)
==========================  ============================================================

Unless the endpoint names a method, the first read tries them in the order above for its
protocol and the client remembers the first that works. Failures raise
:mod:`metering.errors` (``BmcTimeout``, ``BmcAuthFailed`` ...), never pyghmi's exceptions.

>>> client = BmcClient(BmcTarget("ipmi", "127.0.0.1", 623, "admin", "secret"))  # doctest: +SKIP
>>> client.read().watts  # doctest: +SKIP
312.0
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyghmi import exceptions as pyghmi_exc

from metering.bmc_ipmi import IpmiPowerSession, IpmiRead
from metering.bmc_reading import (
    IPMI_METHODS,
    METHOD_ALIASES,
    REDFISH_METHODS,
    BmcEndpointLike,
    PowerReading,
    assess,
)
from metering.bmc_redfish import RedfishPowerSession, RedfishRead
from metering.errors import (
    BadReading,
    BmcAuthFailed,
    BmcError,
    BmcTimeout,
    BmcUnreachable,
    BmcUnsupported,
)

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
#: IPMI completion codes meaning "this BMC does not do that".
_UNSUPPORTED_CODES = frozenset({0xC1, 0xC2, 0xC9, 0xCB, 0xD4, 0xD5, 0xD6})


@dataclass(frozen=True)
class BmcTarget:
    """How to reach one BMC. The password never appears in ``repr`` or messages."""

    protocol: str
    address: str
    port: int
    username: str
    password: str = field(repr=False, compare=False)
    method: str | None = None
    max_watts: float | None = None
    sensor_names: tuple[str, ...] | None = None
    verify_tls: bool = False

    def __post_init__(self) -> None:
        methods = _methods_of(self.protocol)
        if self.method in METHOD_ALIASES:
            object.__setattr__(self, "method", METHOD_ALIASES[self.method])
        if self.method is not None and self.method not in methods:
            raise ValueError(
                f"{self.label}: method {self.method!r} is not one of {', '.join(methods)}"
            )

    @property
    def label(self) -> str:
        """``protocol://address:port``, how messages name this BMC."""
        return f"{self.protocol}://{self.address}:{self.port}"

    @classmethod
    def from_endpoint(cls, endpoint: BmcEndpointLike | BmcTarget) -> BmcTarget:
        """A target from any object with the endpoint's attributes (inventory BmcEndpoint)."""
        if isinstance(endpoint, BmcTarget):
            return endpoint
        secret = endpoint.password
        password = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        protocol = str(endpoint.protocol)
        names = getattr(endpoint, "sensor_names", None)
        return cls(
            protocol=protocol,
            address=str(endpoint.address),
            port=int(getattr(endpoint, "port", None) or DEFAULT_PORTS[protocol]),
            username=str(endpoint.username),
            password=str(password),
            method=getattr(endpoint, "method", None),
            max_watts=getattr(endpoint, "max_watts", None),
            sensor_names=tuple(names) if names else None,
            verify_tls=bool(getattr(endpoint, "verify_tls", False)),
        )


def _methods_of(protocol: str) -> tuple[str, ...]:
    if protocol == "ipmi":
        return IPMI_METHODS
    if protocol == "redfish":
        return REDFISH_METHODS
    raise ValueError(f"protocol {protocol!r} is not one of ipmi, redfish")


_Session = IpmiPowerSession | RedfishPowerSession

#: Threads that run blocking pyghmi reads for every client of the process. Their number
#: follows the reads in flight (plus abandoned ones still unwinding), not the number of BMCs.
MAX_READ_THREADS = 512
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _read_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                MAX_READ_THREADS, thread_name_prefix="bmc-read"
            )
        return _pool


class BmcClient:
    """A kept-alive power reader of one BMC (use one client per BMC per process: pyghmi
    shares one session among all users of the same BMC and credentials).

    ``timeout_s`` bounds each :meth:`read` (login included). After a refused password the
    client does not try again for ``auth_backoff_s`` (BMCs lock accounts after a few failed
    logins): reads in that window raise :class:`BmcAuthFailed` at once. A BMC timestamp equal
    to the previous read's is STALE only when the reads are ``stale_after_s`` or more apart
    (DCMI timestamps have a resolution of one second).
    """

    def __init__(
        self,
        target: BmcTarget | BmcEndpointLike,
        *,
        timeout_s: float = 5.0,
        auth_backoff_s: float = 60.0,
        stale_after_s: float = 2.0,
        verify_certificate: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.target = BmcTarget.from_endpoint(target)
        self.timeout_s = timeout_s
        self.auth_backoff_s = auth_backoff_s
        self._verify_certificate = verify_certificate
        self.method: str | None = self.target.method
        self._session: _Session | None = None
        self._generation = 0
        self._lock = threading.Lock()
        self._auth_failed_at: float | None = None
        self.stale_after_s = stale_after_s
        self._previous_bmc_time: datetime | None = None
        self._previous_received: datetime | None = None
        self._previous_energy: tuple[datetime, float, datetime | None] | None = None

    def __repr__(self) -> str:
        return f"BmcClient({self.target.label}, method={self.method!r})"

    # --- the public face
    def read(self) -> PowerReading:
        """Read power once; raise a :class:`~metering.errors.BmcError` if it cannot be read."""
        with self._lock:
            if self._auth_failed_at is not None:
                waited = time.monotonic() - self._auth_failed_at
                if waited < self.auth_backoff_s:
                    raise BmcAuthFailed(
                        f"credentials were refused {waited:.0f} s ago; not retried for "
                        f"{self.auth_backoff_s:.0f} s",
                        self.target.label,
                    )
                self._auth_failed_at = None
            generation = self._generation
            future = _read_pool().submit(self._read_blocking, generation)
            try:
                return future.result(timeout=self.timeout_s)
            except concurrent.futures.TimeoutError:
                # The stuck worker finishes on pyghmi's own timers; its session is dropped.
                self._abandon_session()
                raise BmcTimeout(
                    f"no answer within {self.timeout_s:g} s", self.target.label
                ) from None
            except BmcAuthFailed:
                self._auth_failed_at = time.monotonic()
                self._abandon_session()
                raise
            except (BmcTimeout, BmcUnreachable):
                self._abandon_session()
                raise

    def close(self) -> None:
        """Log out (the client may be used again: the next read logs in anew)."""
        with self._lock:
            self._generation += 1
            session, self._session = self._session, None
            if session is not None:
                # No read of this client is in flight (we hold the lock), so logging out is
                # one packet without waiting; it must finish before a new client to the same
                # BMC logs in, or pyghmi would hand that client this closing session.
                session.close()

    def __enter__(self) -> BmcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker side
    def _abandon_session(self) -> None:
        self._generation += 1
        session, self._session = self._session, None
        if session is not None:
            session.close(polite=False)

    def _read_blocking(self, generation: int) -> PowerReading:
        try:
            session = self._session or self._connect(generation)
            if self.method is not None:
                return self._read_with(session, self.method)
            unsupported: list[str] = []
            for method in _methods_of(self.target.protocol):
                try:
                    reading = self._read_with(session, method)
                except BmcUnsupported as err:
                    unsupported.append(f"{method} ({err.detail})")
                    continue
                self.method = method
                log.info("%s: reading power by %s", self.target.label, method)
                return reading
            raise BmcUnsupported("no way of reading power works: " + "; ".join(unsupported))
        except BmcError as err:
            raise err.naming(self.target.label) from err.__cause__
        except Exception as err:
            raise self._translate(err) from None

    def _connect(self, generation: int) -> _Session:
        t = self.target
        session: _Session
        if t.protocol == "ipmi":
            session = IpmiPowerSession(t.address, t.port, t.username, t.password, t.sensor_names)
        else:
            verify = self._verify_certificate or (None if t.verify_tls else _accept_any)
            session = RedfishPowerSession(
                t.address, t.port, t.username, t.password, self.timeout_s, verify
            )
        if generation == self._generation:
            self._session = session
        return session

    def _read_with(self, session: _Session, method: str) -> PowerReading:
        try:
            return self._read_unguarded(session, method)
        except BmcError:
            raise
        except Exception as err:
            raise self._translate(err) from None

    def _read_unguarded(self, session: _Session, method: str) -> PowerReading:
        raw: IpmiRead | RedfishRead
        if isinstance(session, IpmiPowerSession):
            raw = session.read_dcmi() if method == "dcmi" else session.read_sdr()
        elif method == "redfish-environment":
            raw = session.read_environment()
        elif method == "redfish-legacy":
            raw = session.read_legacy()
        else:
            raw = session.read_energy()
        received = datetime.now(UTC)
        bmc_time = None
        active = True
        if isinstance(raw, IpmiRead):
            active = raw.active
            if raw.bmc_epoch_s is not None:
                bmc_time = datetime.fromtimestamp(raw.bmc_epoch_s, UTC)
        watts = raw.watts
        energy_j = raw.energy_j if isinstance(raw, RedfishRead) else None
        if energy_j is not None and isinstance(raw, RedfishRead):
            watts = self._watts_from_energy(received, energy_j, raw.energy_reset)
        powered_on = session.powered_on() if watts == 0 else None
        flags = assess(
            watts,
            received=received,
            bmc_time=bmc_time,
            previous_bmc_time=self._previous_bmc_time,
            previous_received=self._previous_received,
            stale_after_s=self.stale_after_s,
            active=active,
            powered_on=powered_on,
            max_watts=self.target.max_watts,
        )
        self._previous_bmc_time = bmc_time
        self._previous_received = received
        return PowerReading(
            time=received,
            watts=watts,
            source=method,
            bmc_time=bmc_time,
            min_watts=raw.min_watts,
            max_watts=raw.max_watts,
            avg_watts=raw.avg_watts,
            period_s=raw.period_s,
            energy_j=energy_j,
            flags=flags,
        )

    def _watts_from_energy(
        self, received: datetime, energy_j: float, reset: datetime | None
    ) -> float:
        previous, self._previous_energy = self._previous_energy, (received, energy_j, reset)
        if previous is None:
            return math.nan
        then, before, before_reset = previous
        seconds = (received - then).total_seconds()
        if before_reset != reset or energy_j < before or seconds <= 0:
            return math.nan  # the counter was reset between the reads
        return (energy_j - before) / seconds

    def _translate(self, err: Exception) -> BmcError:
        label = self.target.label
        text = _scrub(str(err) or type(err).__name__, self.target.password)
        if isinstance(err, pyghmi_exc.IpmiException):
            code = getattr(err, "ipmicode", 0) or 0
            lowered = text.lower()
            if code in _UNSUPPORTED_CODES:
                return BmcUnsupported(f"completion code 0x{code:02x} ({text})", label)
            if "password" in lowered or "unauthorized" in lowered or "privilege" in lowered:
                return BmcAuthFailed(text, label)
            if code:
                return BadReading(f"completion code 0x{code:02x} ({text})", label)
            if "unable to transmit" in lowered:
                return BmcUnreachable(text, label)
            return BmcTimeout(f"session lost or no answer ({text})", label)
        if isinstance(err, pyghmi_exc.PyghmiException) and "access denied" in text.lower():
            return BmcAuthFailed(text, label)
        if isinstance(err, TimeoutError | socket.timeout):
            return BmcTimeout(text, label)
        if isinstance(err, socket.gaierror | ConnectionError | ssl.SSLError | OSError):
            return BmcUnreachable(text, label)
        if isinstance(err, ValueError | KeyError | TypeError | IndexError):
            return BadReading(f"undecodable answer ({type(err).__name__}: {text})", label)
        # Anything else came out of decoding a BMC's answer (pyghmi raises struct.error and
        # the like on malformed packets): one of the documented causes, with the type kept.
        return BadReading(f"unexpected answer ({type(err).__name__}: {text})", label)


def _accept_any(certificate: bytes) -> bool:
    return True


def _scrub(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text


def read_power(endpoint: BmcTarget | BmcEndpointLike, *, timeout_s: float = 5.0) -> PowerReading:
    """Read once from a BMC with a fresh session (for one-off use; poll with a BmcClient)."""
    with BmcClient(endpoint, timeout_s=timeout_s) as client:
        return client.read()


def open_clients(
    endpoints: Sequence[BmcTarget | BmcEndpointLike], *, timeout_s: float = 5.0
) -> list[BmcClient]:
    """One client per endpoint (sessions open lazily on the first read)."""
    return [BmcClient(ep, timeout_s=timeout_s) for ep in endpoints]


__all__ = ["DEFAULT_PORTS", "BmcClient", "BmcTarget", "open_clients", "read_power"]
