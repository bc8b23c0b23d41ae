"""The SKU catalogue's values: what a vendor's machine type is, typed and normalised.

A :class:`Sku` is one machine type as a vendor lists it: CPUs, memory, drives, NICs, accelerators
(first-class parts, unlike Equinix Metal's plans), its power envelope, free traits and list prices.
Sizes are written as people write them ("768GB", "512GiB", "3.84TB", "25Gbps") and stored as
integer bytes / bits per second. A :class:`Listing` is a vendor's file of SKUs.

This module is pure: no database, no files. ``marketplace.documents`` reads files into these
models; ``marketplace.store`` keeps them.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from marketplace.units import SIZE_FORMS, SPEED_FORMS, parse_size, parse_speed, plain_decimal


def report_cross_problems(problems: list[tuple[str, str, object]], info: ValidationInfo) -> None:
    """Report problems that involve several items (duplicates ...), with their exact paths.

    A file loader passes ``context={"problems": []}`` and gets them back with their paths; from
    plain Python the first one is raised as a ``ValueError``.
    """
    if not problems:
        return
    sink = info.context.get("problems") if isinstance(info.context, dict) else None
    if sink is not None:
        sink.extend(problems)
        return
    path, message, value = problems[0]
    raise ValueError(f"{path}: {message} (got {value!r})")


class StrictModel(BaseModel):
    """Unknown keys are errors (typo protection); values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _bounded(lo: int, hi: int, what: str) -> Any:
    def check(n: int) -> int:
        if not lo <= n <= hi:
            raise ValueError(f"{what} must be between {lo:,} and {hi:,}")
        return n

    return check


def _size_schema(lo: int, hi: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgGtTpP]i?)?(B|bytes?)\s*$"},
                {"type": "integer", "minimum": lo, "maximum": hi},
            ],
            "description": SIZE_FORMS,
        }
    )


def _size_in_range(lo: int, hi: int) -> Any:
    def parse(value: object) -> int:
        n = parse_size(value)
        if not lo <= n <= hi:
            raise ValueError(
                f"size out of range: accepted {_human(lo)} to {_human(hi)} ({SIZE_FORMS})"
            )
        return n

    return parse


def _human(n: int) -> str:
    from marketplace.units import format_size

    return format_size(n)


def _speed_in_range(value: object) -> int:
    n = parse_speed(value)
    if not 10**6 <= n <= 16 * 10**11:
        raise ValueError(f"speed out of range: accepted 1Mbps to 1.6Tbps ({SPEED_FORMS})")
    return n


MemorySize = Annotated[
    int, BeforeValidator(_size_in_range(2**20, 64 * 2**40)), _size_schema(2**20, 64 * 2**40)
]
DriveSize = Annotated[
    int, BeforeValidator(_size_in_range(10**9, 10**15)), _size_schema(10**9, 10**15)
]
AcceleratorMemory = Annotated[
    int, BeforeValidator(_size_in_range(2**20, 16 * 2**40)), _size_schema(2**20, 16 * 2**40)
]
BitRate = Annotated[
    int,
    BeforeValidator(_speed_in_range),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[kKmMgGtT]?(bps|bit/s|b/s)\s*$"},
                {"type": "integer", "minimum": 10**6, "maximum": 16 * 10**11},
            ],
            "description": SPEED_FORMS,
        }
    ),
]


def _money(value: object) -> Decimal:
    if isinstance(value, bool):
        raise ValueError('expected a price such as "24.00" (a decimal string)')
    if isinstance(value, float):
        value = repr(value)  # YAML's unquoted 24.00 arrives as a float; keep its digits
    try:
        amount = Decimal(str(value)) if isinstance(value, (int, str)) else value
    except ArithmeticError:
        amount = None
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError('expected a price such as "24.00" (a decimal string)')
    if amount < 0:
        raise ValueError("a price cannot be negative")
    if amount.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValueError("a price has at most 6 decimal places")
    if amount > Decimal("1000000"):
        raise ValueError("a price per hour above 1,000,000 is not accepted")
    return plain_decimal(amount)  # 24, 24.0 and "24.00" are one price: 24.00


Money = Annotated[
    Decimal,
    BeforeValidator(_money),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^\d+(\.\d{1,6})?$"}, {"type": "number"}],
            "description": 'a non-negative decimal amount, best written as a string: "24.00"',
        }
    ),
]

#: One line of text: no control characters (a NUL would be stored by SQLite, refused by PostgreSQL).
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
SLUG_PATTERN = r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$"
CODE_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
#: What a person is told when a value does not match one of the patterns below.
PATTERN_HELP = {
    SLUG_PATTERN: "a slug is lowercase letters and digits separated by single dots or dashes, "
    "such as 'c3.large-arm'",
    CODE_PATTERN: "a code is lowercase letters and digits separated by single dashes or "
    "underscores, such as 'sjc1'",
    r"^[A-Z]{3}$": "a currency is a three-letter ISO 4217 code in capitals, such as 'USD'",
    r"^[A-Z]{2}$": "a country is a two-letter ISO 3166 code in capitals, such as 'US'",
    NO_CONTROL: "text without control characters (tabs, newlines, NUL ...)",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a trait is letters, digits, '_', '.' and '-', such as 'rdma'",
}

Slug = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN, min_length=1, max_length=64),
    Field(description="lowercase letters and digits separated by single dots or dashes"),
]
Code = Annotated[
    str,
    StringConstraints(pattern=CODE_PATTERN, min_length=1, max_length=32),
]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_CONTROL)
]
Trait = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=40
    ),
]


class Arch(StrEnum):
    """Instruction-set architectures with a name of their own; others are ``other:NAME``."""

    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    RISCV64 = "riscv64"
    PPC64LE = "ppc64le"
    S390X = "s390x"


ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "riscv": "riscv64"}


def _arch(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an architecture name")
    name = value.strip().lower()
    name = ARCH_ALIASES.get(name, name)
    if name in {a.value for a in Arch}:
        return name
    if name.startswith("other:") and len(name) > 6 and name[6:].replace("-", "").isalnum():
        return name
    accepted = ", ".join(a.value for a in Arch)
    raise ValueError(f"unknown architecture; accepted: {accepted}, or other:NAME")


ArchName = Annotated[
    str,
    BeforeValidator(_arch),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": [a.value for a in Arch]},
                {"type": "string", "pattern": r"^other:[a-z0-9-]+$"},
            ],
            "description": "x86_64, aarch64, riscv64, ppc64le, s390x, or other:NAME",
        }
    ),
]


class Cpu(StrictModel):
    """A CPU model fitted ``sockets`` times; cores and threads are per socket."""

    model: Name
    sockets: Annotated[int, Field(ge=1, le=16)] = 1
    cores: Annotated[int, Field(ge=1, le=1024, description="cores per socket")]
    threads: Annotated[int | None, Field(ge=1, le=4096, description="threads per socket")] = None
    base_ghz: Annotated[Decimal | None, Field(gt=0, le=10, decimal_places=3)] = None

    @model_validator(mode="after")
    def _threads_at_least_cores(self) -> Cpu:
        if self.threads is not None and self.threads < self.cores:
            raise ValueError(f"threads ({self.threads}) cannot be fewer than cores ({self.cores})")
        return self


class Drive(StrictModel):
    count: Annotated[int, Field(ge=1, le=1024)] = 1
    size: DriveSize
    type: Literal["nvme", "ssd", "hdd"]
    role: Literal["boot", "storage", "cache"] = "storage"


class Nic(StrictModel):
    count: Annotated[int, Field(ge=1, le=64)] = 1
    speed: BitRate


class AcceleratorKind(StrEnum):
    GPU = "gpu"
    TPU = "tpu"
    FPGA = "fpga"
    ASIC = "asic"
    OTHER = "other"


class Accelerator(StrictModel):
    """Accelerators are first-class parts of a SKU: how many, what, how much memory, what power."""

    count: Annotated[int, Field(ge=1, le=256)]
    kind: AcceleratorKind
    vendor: Name
    model: Name
    memory: AcceleratorMemory | None = None
    tdp_watts: Annotated[int | None, Field(ge=1, le=10_000)] = None
    interconnect: Annotated[str | None, StringConstraints(max_length=100, pattern=NO_CONTROL)] = (
        None
    )


class PowerEnvelope(StrictModel):
    """The machine's power at idle and at most, in watts at the wall (what its BMC reports)."""

    idle_watts: Annotated[int, Field(ge=1, le=100_000)]
    max_watts: Annotated[int, Field(ge=1, le=100_000)]

    @model_validator(mode="after")
    def _idle_below_max(self) -> PowerEnvelope:
        if self.idle_watts > self.max_watts:
            raise ValueError(
                f"idle_watts ({self.idle_watts}) cannot exceed max_watts ({self.max_watts})"
            )
        return self


Term = Literal["1y", "3y"]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class SitePrice(StrictModel):
    """A per-site override of the list price."""

    on_demand_hourly: Money | None = None
    reserved_hourly: dict[Term, Money] = Field(default_factory=dict)


class Pricing(StrictModel):
    """List prices per hour; the billing package's price book is what invoices use."""

    currency: Currency = "USD"
    on_demand_hourly: Money
    reserved_hourly: dict[Term, Money] = Field(default_factory=dict)
    sites: dict[Code, SitePrice] = Field(default_factory=dict)

    def on_demand_at(self, site: str | None) -> Decimal:
        """The on-demand hourly list price at ``site`` (its override, else the base price)."""
        override = self.sites.get(site) if site else None
        if override and override.on_demand_hourly is not None:
            return override.on_demand_hourly
        return self.on_demand_hourly


class Sku(StrictModel):
    """A vendor's machine type. ``revision`` is set by the store: a changed SKU is a new revision."""

    slug: Slug
    name: Name
    vendor: Annotated[
        str | None, StringConstraints(min_length=1, max_length=100, pattern=NO_CONTROL)
    ] = None
    description: Annotated[
        str, StringConstraints(max_length=2000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")
    ] = ""
    revision: Annotated[int | None, Field(ge=1)] = None
    arch: ArchName
    cpus: Annotated[list[Cpu], Field(min_length=1, max_length=8)]
    memory: MemorySize
    drives: list[Drive] = Field(default_factory=list, max_length=32)
    nics: list[Nic] = Field(default_factory=list, max_length=16)
    accelerators: list[Accelerator] = Field(default_factory=list, max_length=8)
    power: PowerEnvelope | None = None
    traits: list[Trait] = Field(default_factory=list, max_length=64)
    pricing: Pricing | None = None

    @field_validator("traits")
    @classmethod
    def _traits_sorted_unique(cls, traits: list[str]) -> list[str]:
        return sorted(set(traits))

    # Derived figures used by queries and the store's index columns.
    @property
    def cores(self) -> int:
        return sum(c.cores * c.sockets for c in self.cpus)

    @property
    def threads(self) -> int:
        return sum((c.threads or c.cores) * c.sockets for c in self.cpus)

    @property
    def accelerator_count(self) -> int:
        return sum(a.count for a in self.accelerators)

    @property
    def accelerator_memory(self) -> int:
        """Memory of one accelerator (the largest, when a SKU mixes kinds), in bytes."""
        return max((a.memory or 0 for a in self.accelerators), default=0)

    def canonical(self) -> dict[str, Any]:
        """The SKU's content as plain JSON values, without its revision: equal content, equal dict."""
        return self.model_dump(mode="json", exclude={"revision"})

    def content_hash(self) -> str:
        """A stable hash of :meth:`canonical`: the store makes a new revision when it changes."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class Listing(StrictModel):
    """A vendor's listing file: the vendor's name and its SKUs."""

    vendor: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_CONTROL)]
    skus: Annotated[list[Sku], Field(min_length=1, max_length=100_000)]

    @model_validator(mode="after")
    def _vendor_and_unique_slugs(self, info: ValidationInfo) -> Listing:
        problems: list[tuple[str, str, object]] = []
        seen: dict[str, int] = {}
        for i, sku in enumerate(self.skus):
            if sku.vendor is None:
                sku.vendor = self.vendor
            elif sku.vendor != self.vendor:
                problems.append(
                    (
                        f"skus[{i}].vendor",
                        f"differs from the file's vendor {self.vendor!r}",
                        sku.vendor,
                    )
                )
            if sku.slug in seen:
                problems.append(
                    (
                        f"skus[{i}].slug",
                        f"repeats skus[{seen[sku.slug]}].slug; slugs are unique",
                        sku.slug,
                    )
                )
            seen.setdefault(sku.slug, i)
        report_cross_problems(problems, info)
        return self


__all__ = [
    "Accelerator",
    "AcceleratorKind",
    "Arch",
    "Cpu",
    "Drive",
    "Listing",
    "Nic",
    "PowerEnvelope",
    "Pricing",
    "SitePrice",
    "Sku",
]
