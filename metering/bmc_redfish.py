"""Reading power over Redfish with pyghmi: EnvironmentMetrics, legacy Power, energy sensors.

:class:`RedfishPowerSession` keeps one pyghmi redfish ``Command`` (one authenticated web
client) and reads the chassis resources through that same client (``cmd.wc``): pyghmi itself
reads only EnvironmentMetrics, never the legacy ``Power`` resource nor energy sensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyghmi.redfish import command as redfish_command

from metering.errors import BadReading, BmcAuthFailed, BmcUnsupported

_JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class RedfishRead:
    """What one Redfish read returned, before quality flags are judged."""

    watts: float
    min_watts: float | None = None
    max_watts: float | None = None
    avg_watts: float | None = None
    period_s: float | None = None
    energy_j: float | None = None
    energy_reset: datetime | None = None


def _accept_any_certificate(certificate: bytes) -> bool:
    # BMCs ship self-signed certificates; callers who can pin one pass their own check.
    return True


class RedfishPowerSession:
    """One authenticated Redfish client to a BMC, reused for every read."""

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: str,
        timeout_s: float,
        verify_certificate: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._cmd = redfish_command.Command(
            address,
            username,
            password,
            verifycallback=verify_certificate or _accept_any_certificate,
            port=port,
        )
        # Later requests honour our read timeout (pyghmi's default is 60 s per request).
        self._cmd.wc.mytimeout = timeout_s
        self._chassis: list[dict[str, Any]] | None = None

    def _get(self, url: str) -> dict[str, Any]:
        body, status = self._cmd.wc.grab_json_response_with_status(url)
        if status == 401 or status == 403:
            raise BmcAuthFailed(f"Redfish refused the credentials (HTTP {status}) for {url}")
        if status == 404:
            raise BmcUnsupported(f"Redfish resource {url} does not exist")
        if status < 200 or status >= 300 or not isinstance(body, dict):
            raise BadReading(f"Redfish answered HTTP {status} for {url}")
        return body

    def chassis(self) -> list[dict[str, Any]]:
        """Every chassis resource (fetched once per session)."""
        if self._chassis is None:
            collection = self._get("/redfish/v1/Chassis")
            self._chassis = [self._get(m["@odata.id"]) for m in collection.get("Members", [])]
        return self._chassis

    def _linked(self, key: str) -> list[str]:
        return [c[key]["@odata.id"] for c in self.chassis() if "@odata.id" in c.get(key, {})]

    def read_environment(self) -> RedfishRead:
        """``Chassis/*/EnvironmentMetrics`` ``PowerWatts.Reading`` of the first chassis with one."""
        for url in self._linked("EnvironmentMetrics"):
            reading = self._get(url).get("PowerWatts", {}).get("Reading")
            if reading is not None:
                return RedfishRead(watts=_number(reading, url))
        raise BmcUnsupported("no chassis has EnvironmentMetrics.PowerWatts")

    def read_legacy(self) -> RedfishRead:
        """``Chassis/*/Power`` ``PowerControl[0]``: PowerConsumedWatts and PowerMetrics."""
        for url in self._linked("Power"):
            for control in self._get(url).get("PowerControl", []):
                consumed = control.get("PowerConsumedWatts")
                if consumed is None:
                    continue
                metrics = control.get("PowerMetrics") or {}
                interval = metrics.get("IntervalInMin")
                return RedfishRead(
                    watts=_number(consumed, url),
                    min_watts=_optional(metrics.get("MinConsumedWatts"), url),
                    max_watts=_optional(metrics.get("MaxConsumedWatts"), url),
                    avg_watts=_optional(metrics.get("AverageConsumedWatts"), url),
                    period_s=None if interval is None else 60.0 * _number(interval, url),
                )
        raise BmcUnsupported("no chassis has Power.PowerControl[].PowerConsumedWatts")

    def read_energy(self) -> RedfishRead:
        """The chassis ``EnergykWh`` sensor: cumulative joules and the counter's reset time."""
        for url in self._energy_sensor_urls():
            sensor = self._get(url)
            if sensor.get("ReadingType") != "EnergykWh" or sensor.get("Reading") is None:
                continue
            reset = sensor.get("SensorResetTime")
            return RedfishRead(
                watts=float("nan"),
                energy_j=_number(sensor["Reading"], url) * _JOULES_PER_KWH,
                energy_reset=_parse_time(reset, url) if reset else None,
            )
        raise BmcUnsupported("no chassis has an EnergykWh sensor")

    def _energy_sensor_urls(self) -> list[str]:
        urls: list[str] = []
        for url in self._linked("EnvironmentMetrics"):
            source = self._get(url).get("EnergykWh", {}).get("DataSourceUri")
            if source:
                urls.append(source)
        for url in self._linked("Sensors"):
            members = [m["@odata.id"] for m in self._get(url).get("Members", [])]
            urls += [m for m in members if m not in urls]
        return urls

    def powered_on(self) -> bool | None:
        """System power state (None when the BMC will not say)."""
        state = self._cmd.get_power().get("powerstate")
        return None if state is None else state == "on"

    def close(self, polite: bool = True) -> None:
        """Drop the cached chassis list (requests here use per-request basic auth)."""
        self._chassis = None


def _number(value: Any, url: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadReading(f"{url}: expected a number, got {type(value).__name__}")
    return float(value)


def _optional(value: Any, url: str) -> float | None:
    return None if value is None else _number(value, url)


def _parse_time(text: Any, url: str) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as err:
        raise BadReading(f"{url}: unreadable time {text!r}") from err


__all__ = ["RedfishPowerSession", "RedfishRead"]
