"""Where machines live: regions contain metros contain sites; hosts are racked at sites.

Pure values, like the catalogue. A host's BMC password is a secret: it never appears in reprs,
logs, exceptions or command output (pydantic's ``SecretStr`` shows ``**********``).
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from marketplace.catalog import Code, Money, Name, Slug, StrictModel, report_cross_problems

HostId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", min_length=1, max_length=64),
    Field(description="the host's id or serial: letters, digits, '.', '_', ':' and '-'"),
]
SkuRef = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*(@[1-9][0-9]*)?$", max_length=72),
    Field(description="a SKU slug, optionally pinned to a revision: 'c3.small' or 'c3.small@2'"),
]


class Site(StrictModel):
    """A data-centre site: where hosts are racked, with its electricity price and PUE."""

    code: Code
    name: Name
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    timezone: str = "UTC"
    energy_price_kwh: Money = Decimal("0")
    pue: Annotated[float, Field(ge=1.0, le=3.0, description="power usage effectiveness")] = 1.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                "unknown time zone; use an IANA name such as Europe/Amsterdam"
            ) from exc
        return value


class Metro(StrictModel):
    code: Code
    name: Name
    sites: list[Site] = Field(default_factory=list)


class Region(StrictModel):
    code: Code
    name: Name
    metros: list[Metro] = Field(default_factory=list)


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


class BmcEndpoint(StrictModel):
    """How to reach a host's baseboard management controller out of band."""

    protocol: Literal["ipmi", "redfish"]
    address: str
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: SecretStr
    method: (
        Literal["dcmi", "sdr", "redfish-environment", "redfish-legacy", "energy-counter"] | None
    ) = Field(default=None, description="force one way of reading power instead of detecting it")
    verify_tls: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if _HOSTNAME.match(value):
                return value.lower()
        raise ValueError("expected an IP address or a host name")

    @property
    def effective_port(self) -> int:
        return self.port or (623 if self.protocol == "ipmi" else 443)

    def public(self) -> dict[str, object]:
        """The endpoint without its password, for output."""
        return self.model_dump(mode="json", exclude={"password"}, exclude_none=True)


class HostState(StrEnum):
    AVAILABLE = "available"
    MAINTENANCE = "maintenance"
    FAILED = "failed"
    RETIRED = "retired"


class Host(StrictModel):
    """A physical machine: its id, its SKU (slug, revision), its site, state and BMC."""

    id: HostId
    sku: SkuRef
    site: Code
    state: HostState = HostState.AVAILABLE
    bmc: BmcEndpoint | None = None

    @property
    def sku_slug(self) -> str:
        return self.sku.split("@", 1)[0]

    @property
    def sku_revision(self) -> int | None:
        return int(self.sku.split("@", 1)[1]) if "@" in self.sku else None

    def public(self) -> dict[str, object]:
        """The host as output shows it: no password."""
        data = self.model_dump(mode="json", exclude={"bmc"})
        if self.bmc is not None:
            data["bmc"] = self.bmc.public()
        return data


class Inventory(StrictModel):
    """An operator's inventory file: regions (with metros and sites), hosts, or both."""

    regions: list[Region] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list, max_length=1_000_000)

    @model_validator(mode="after")
    def _unique_codes(self, info: ValidationInfo) -> Inventory:
        problems: list[tuple[str, str, object]] = []
        seen: dict[tuple[str, str], str] = {}

        def once(kind: str, code: str, path: str) -> None:
            if (kind, code) in seen:
                problems.append(
                    (path, f"repeats {seen[(kind, code)]}; {kind} codes are unique", code)
                )
            else:
                seen[(kind, code)] = path

        for r, region in enumerate(self.regions):
            once("region", region.code, f"regions[{r}].code")
            for m, metro in enumerate(region.metros):
                once("metro", metro.code, f"regions[{r}].metros[{m}].code")
                for s, site in enumerate(metro.sites):
                    once("site", site.code, f"regions[{r}].metros[{m}].sites[{s}].code")
        host_seen: dict[str, int] = {}
        for h, host in enumerate(self.hosts):
            if host.id in host_seen:
                problems.append(
                    (
                        f"hosts[{h}].id",
                        f"repeats hosts[{host_seen[host.id]}].id; host ids are unique",
                        host.id,
                    )
                )
            host_seen.setdefault(host.id, h)
        report_cross_problems(problems, info)
        return self

    def sites(self) -> list[tuple[Region, Metro, Site]]:
        return [(r, m, s) for r in self.regions for m in r.metros for s in m.sites]


__all__ = ["BmcEndpoint", "Host", "HostState", "Inventory", "Metro", "Region", "Site", "Slug"]
