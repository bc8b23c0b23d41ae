"""What one read of a BMC returns, and how its quality is judged (pure: no I/O, no pyghmi).

:class:`PowerReading` is the value a BMC client hands the collector. :func:`assess` decides its
:class:`~metering.samples.SampleFlag` bits from the value alone plus the previous read's BMC
timestamp, so the rules are testable without a BMC. :func:`decode_dcmi_power_reading` turns the
bytes of a DCMI *Get Power Reading* response into a :class:`DcmiPowerRecord`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from metering.errors import BadReading
from metering.samples import SampleFlag

#: Ways of reading power, per protocol, in the order detection tries them. A method is named
#: by the ``source`` its readings carry (metering.samples.SOURCES).
IPMI_METHODS = ("dcmi", "sdr")
REDFISH_METHODS = ("redfish-environment", "redfish-legacy", "energy-counter")
#: Short names accepted for the Redfish methods.
METHOD_ALIASES = {
    "environment": "redfish-environment",
    "legacy": "redfish-legacy",
    "energy": "energy-counter",
}

#: Values BMCs put in a 16-bit watts field when they have no reading.
SENTINEL_WATTS = frozenset({0xFFFF, 0xFFFE, 0x8000, 0x7FFF})
#: How far the BMC clock may be from the collector's before the reading is marked CLOCK_SKEW.
MAX_CLOCK_SKEW = timedelta(days=1)
#: A reading above this multiple of the host's max_watts is implausible.
OVER_MAX_FACTOR = 1.5

_DCMI_GROUP = 0xDC
_DCMI_ACTIVE_BIT = 0x40
_DCMI_LAYOUT = struct.Struct("<BHHHHIIB")


class BmcEndpointLike(Protocol):
    """What the clients need to know about a BMC; the inventory's ``BmcEndpoint`` fits.

    ``password`` may be a ``str`` or anything with ``get_secret_value()`` (pydantic SecretStr).
    Optional attributes, read when present: ``method`` (a method override), ``max_watts``
    (the host's rated maximum), ``sensor_names`` (SDR sensors to read), ``verify_tls``.
    """

    # Read-only properties, so models with narrower types (Literal protocols) fit.
    @property
    def protocol(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> Any: ...


@dataclass(frozen=True)
class DcmiPowerRecord:
    """The whole DCMI *Get Power Reading* record (DCMI 1.5, table 6-16)."""

    current_watts: int
    min_watts: int
    max_watts: int
    avg_watts: int
    bmc_time: datetime
    period_s: float
    active: bool


@dataclass(frozen=True)
class PowerReading:
    """One power reading of one BMC, as received.

    ``time`` is the collector's receive time (UTC); ``bmc_time`` the BMC's own clock when it
    reports one. ``watts`` is NaN only for an energy-counter read without a previous read to
    difference against. Flagged readings are returned, never dropped.
    """

    time: datetime
    watts: float
    source: str
    bmc_time: datetime | None = None
    min_watts: float | None = None
    max_watts: float | None = None
    avg_watts: float | None = None
    period_s: float | None = None
    energy_j: float | None = None
    flags: SampleFlag = field(default=SampleFlag.NONE)


def decode_dcmi_power_reading(data: bytes | bytearray | list[int]) -> DcmiPowerRecord:
    """Decode the response data (after the completion code) of DCMI Get Power Reading.

    >>> rec = decode_dcmi_power_reading(bytes.fromhex("dc2c01c8009001f401" "00a3e16a" "e8030000" "40"))
    >>> rec.current_watts, rec.min_watts, rec.max_watts, rec.avg_watts, rec.period_s, rec.active
    (300, 200, 400, 500, 1.0, True)
    """
    raw = bytes(data)
    if len(raw) < _DCMI_LAYOUT.size:
        raise BadReading(f"DCMI power reading is {len(raw)} bytes, expected {_DCMI_LAYOUT.size}")
    group, cur, low, high, avg, stamp, period_ms, state = _DCMI_LAYOUT.unpack_from(raw)
    if group != _DCMI_GROUP:
        raise BadReading(f"DCMI group extension is 0x{group:02x}, expected 0xdc")
    return DcmiPowerRecord(
        current_watts=cur,
        min_watts=low,
        max_watts=high,
        avg_watts=avg,
        bmc_time=datetime.fromtimestamp(stamp, UTC),
        period_s=period_ms / 1000.0,
        active=bool(state & _DCMI_ACTIVE_BIT),
    )


def encode_dcmi_power_reading(record: DcmiPowerRecord) -> bytes:
    """The response data a BMC sends for ``record`` (the inverse of the decoder)."""
    return _DCMI_LAYOUT.pack(
        _DCMI_GROUP,
        record.current_watts & 0xFFFF,
        record.min_watts & 0xFFFF,
        record.max_watts & 0xFFFF,
        record.avg_watts & 0xFFFF,
        int(record.bmc_time.timestamp()) & 0xFFFFFFFF,
        round(record.period_s * 1000) & 0xFFFFFFFF,
        _DCMI_ACTIVE_BIT if record.active else 0,
    )


def assess(
    watts: float,
    *,
    received: datetime,
    bmc_time: datetime | None = None,
    previous_bmc_time: datetime | None = None,
    previous_received: datetime | None = None,
    stale_after_s: float = 2.0,
    active: bool = True,
    powered_on: bool | None = None,
    max_watts: float | None = None,
) -> SampleFlag:
    """The quality flags of a reading.

    OUT_OF_RANGE: negative, a 0xFFFF-style sentinel, zero while the host is known to be on, or
    above ``OVER_MAX_FACTOR`` x ``max_watts``. STALE: the BMC repeated its previous timestamp.
    (Timestamps have a resolution of a second or more, so a repeat counts only when the reads
    were received ``stale_after_s`` or more apart, or when ``previous_received`` is unknown.)
    CLOCK_SKEW: the BMC clock is more than ``MAX_CLOCK_SKEW`` from ``received``.
    INACTIVE: the BMC said its measurement is not active.
    """
    flags = SampleFlag.NONE
    if not active:
        flags |= SampleFlag.INACTIVE
    if not math.isnan(watts) and (
        watts < 0
        or int(watts) in SENTINEL_WATTS
        or (watts == 0 and powered_on is True)
        or (max_watts is not None and watts > OVER_MAX_FACTOR * max_watts)
    ):
        flags |= SampleFlag.OUT_OF_RANGE
    if bmc_time is not None:
        apart = (
            math.inf
            if previous_received is None
            else (received - previous_received).total_seconds()
        )
        if bmc_time == previous_bmc_time and apart >= stale_after_s:
            flags |= SampleFlag.STALE
        if abs(bmc_time - received) > MAX_CLOCK_SKEW:
            flags |= SampleFlag.CLOCK_SKEW
    return flags


__all__ = [
    "IPMI_METHODS",
    "METHOD_ALIASES",
    "REDFISH_METHODS",
    "BmcEndpointLike",
    "DcmiPowerRecord",
    "PowerReading",
    "assess",
    "decode_dcmi_power_reading",
    "encode_dcmi_power_reading",
]
