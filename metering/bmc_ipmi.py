"""Reading power over IPMI with pyghmi: DCMI Get Power Reading, or SDR power sensors.

:class:`IpmiPowerSession` keeps one pyghmi ``Command`` (one RMCP+ session, kept alive by
pyghmi's keepalive) and reads through it; :mod:`metering.bmc` wraps it with timeouts,
detection and error translation. Nothing here logs or shows the password.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyghmi.ipmi import command as ipmi_command

from metering.bmc_reading import decode_dcmi_power_reading
from metering.errors import BadReading, BmcUnsupported
from metering.pyghmi_fixes import install_client_fixes

#: Names BMCs give a whole-system power sensor, tried in this order.
TOTAL_POWER_SENSORS = (
    "Pwr Consumption",
    "Total Power",
    "Sys Power",
    "System Power",
    "Power Consumption",
)
#: Per-supply input power sensors, summed when no whole-system sensor exists.
PSU_INPUT_SENSOR = re.compile(r"^PSU ?\d+ (Input )?Power$", re.IGNORECASE)

_NETFN_DCMI = 0x2C
_DCMI_GET_POWER_READING = 0x02
_DCMI_SYSTEM_POWER_STATISTICS = 0x01
_NETFN_SENSOR = 0x04
_GET_SENSOR_READING = 0x2D


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IpmiRead:
    """What one IPMI read returned, before quality flags are judged."""

    watts: float
    min_watts: float | None = None
    max_watts: float | None = None
    avg_watts: float | None = None
    period_s: float | None = None
    bmc_epoch_s: float | None = None
    active: bool = True


class IpmiPowerSession:
    """One logged-in RMCP+ session to a BMC, reused for every read."""

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: str,
        sensor_names: Sequence[str] | None = None,
    ) -> None:
        install_client_fixes()
        # Logging in happens here: pyghmi's Command constructor blocks until the session is up.
        # Credentials go in as bytes: pyghmi keys its half-open sessions by the values given
        # but deletes them by their encoded form, so str credentials leave a stale session
        # behind after a failure, which every later login with the same credentials reuses.
        self._cmd = ipmi_command.Command(
            bmc=address,
            userid=username.encode(),
            password=password.encode(),
            port=port,
            keepalive=True,
        )
        self._sensor_names = tuple(sensor_names) if sensor_names else None
        # pyghmi SDR sensor records, found once per session.
        self._chosen_sensors: tuple[Any, ...] | None = None

    def read_dcmi(self) -> IpmiRead:
        """The whole DCMI power reading record (current, min, max, avg, period, active)."""
        rsp = self._cmd.xraw_command(
            netfn=_NETFN_DCMI,
            command=_DCMI_GET_POWER_READING,
            data=(0xDC, _DCMI_SYSTEM_POWER_STATISTICS, 0, 0),
        )
        record = decode_dcmi_power_reading(bytes(rsp["data"]))
        return IpmiRead(
            watts=float(record.current_watts),
            min_watts=float(record.min_watts),
            max_watts=float(record.max_watts),
            avg_watts=float(record.avg_watts),
            period_s=record.period_s,
            bmc_epoch_s=record.bmc_time.timestamp(),
            active=record.active,
        )

    def read_sdr(self) -> IpmiRead:
        """Watts from the SDR power sensor(s): one whole-system sensor or the PSUs summed."""
        records = self._chosen_sensors or self._choose_sensors()
        total = 0.0
        for record in records:
            # One Get Sensor Reading per sensor: pyghmi's get_sensor_reading(name) would
            # re-identify the BMC (Get Device ID) on every call, a second round trip per read.
            rsp = self._cmd.xraw_command(
                netfn=_NETFN_SENSOR,
                command=_GET_SENSOR_READING,
                rslun=record.sensor_lun,
                data=(record.sensor_number,),
            )
            reading = record.decode_sensor_reading(self._cmd, bytes(rsp["data"]))
            if reading.unavailable or reading.value is None:
                raise BadReading(f"sensor {record.name!r} has no reading")
            if str(reading.units).strip().lower() not in ("w", "watts"):
                raise BadReading(f"sensor {record.name!r} reads in {reading.units!r}, not watts")
            total += float(reading.value)
        return IpmiRead(watts=total)

    def _choose_sensors(self) -> tuple[Any, ...]:
        repository = self._cmd.init_sdr()
        by_name = {
            repository.sensors[n].name: repository.sensors[n]
            for n in repository.get_sensor_numbers()
        }
        wanted = self._sensor_names or TOTAL_POWER_SENSORS
        for name in wanted:
            if name in by_name:
                self._chosen_sensors = (by_name[name],)
                return self._chosen_sensors
        if self._sensor_names is None:
            supplies = tuple(r for n, r in sorted(by_name.items()) if PSU_INPUT_SENSOR.match(n))
            if supplies:
                self._chosen_sensors = supplies
                return supplies
        raise BmcUnsupported(f"no power sensor among {len(by_name)} SDR sensors")

    def powered_on(self) -> bool | None:
        """Chassis power state (None when the BMC will not say)."""
        state = self._cmd.get_power().get("powerstate")
        return None if state is None else state == "on"

    def close(self, polite: bool = True) -> None:
        """End the session: log out (``polite``) or just forget it (the BMC stopped answering).

        Forgetting clears ``logged`` first, which also makes a read stuck on this session give
        up at once, and takes the session out of pyghmi's routing table so the next login
        starts afresh instead of reusing it.
        """
        session = self._cmd.ipmi_session
        if not polite:
            session.logged = 0
        # Logging out of a session the BMC already dropped must not raise.
        with contextlib.suppress(Exception):
            session.logout()


__all__ = ["PSU_INPUT_SENSOR", "TOTAL_POWER_SENSORS", "IpmiPowerSession", "IpmiRead"]
