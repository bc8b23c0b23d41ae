"""Capability queries: which SKUs have what a customer needs.

A :class:`SkuQuery` is a conjunction of requirements. It is pure: :meth:`SkuQuery.matches` judges
one :class:`~marketplace.catalog.Sku`; the store uses it after narrowing candidates in SQL.
The command line's ``--where`` text parses into one::

    >>> q = SkuQuery.parse("arch=aarch64 cores>=64 trait=rdma accelerator.kind=gpu")
    >>> q.arch, q.min_cores, q.traits, q.accelerator_kind
    ('aarch64', 64, ['rdma'], 'gpu')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from marketplace.catalog import ARCH_ALIASES, Sku
from marketplace.errors import InvalidInput, Problem
from marketplace.units import parse_size


class SkuQuery(BaseModel):
    """What a SKU must have. Unset fields do not constrain."""

    model_config = ConfigDict(extra="forbid")

    slug: str | None = None
    vendor: str | None = None
    arch: str | None = None
    accelerator_kind: str | None = None
    accelerator_model: str | None = None
    #: Accept any of these accelerator models (an ``A|B`` list, as in the Alibaba trace's specs).
    accelerator_models: list[str] | None = None
    min_accelerators: int | None = None
    min_accelerator_memory: int | None = None
    min_cores: int | None = None
    min_memory: int | None = None
    traits: list[str] = []
    site: str | None = None
    max_hourly_price: Decimal | None = None

    @field_validator("arch")
    @classmethod
    def _arch_alias(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower()
        return ARCH_ALIASES.get(name, name)

    def matches(self, sku: Sku) -> bool:
        """Whether ``sku`` meets every requirement (price at ``site`` when one is given)."""
        if self.slug is not None and sku.slug != self.slug:
            return False
        if self.vendor is not None and sku.vendor != self.vendor:
            return False
        if self.arch is not None and sku.arch != self.arch:
            return False
        if not self._accelerators_match(sku):
            return False
        if self.min_cores is not None and sku.cores < self.min_cores:
            return False
        if self.min_memory is not None and sku.memory < self.min_memory:
            return False
        if self.traits and not set(self.traits) <= set(sku.traits):
            return False
        return self.max_hourly_price is None or (
            sku.pricing is not None and sku.pricing.on_demand_at(self.site) <= self.max_hourly_price
        )

    def _accelerators_match(self, sku: Sku) -> bool:
        wanted = self.accelerator_kind or self.accelerator_model or self.accelerator_models
        parts = [
            a
            for a in sku.accelerators
            if (self.accelerator_kind is None or a.kind == self.accelerator_kind)
            and (
                self.accelerator_model is None or a.model.lower() == self.accelerator_model.lower()
            )
            and (
                self.accelerator_models is None
                or a.model.lower() in {m.lower() for m in self.accelerator_models}
            )
            and (
                self.min_accelerator_memory is None
                or (a.memory or 0) >= self.min_accelerator_memory
            )
        ]
        if (wanted or self.min_accelerator_memory is not None) and not parts:
            return False
        count = (
            sum(a.count for a in parts)
            if (wanted or self.min_accelerator_memory)
            else sku.accelerator_count
        )
        return self.min_accelerators is None or count >= self.min_accelerators

    def describe(self) -> str:
        """The query in the ``--where`` syntax, for messages."""
        terms = [f"{k}={v}" for k, v in self.model_dump(exclude_defaults=True).items()]
        return " ".join(terms) or "(any SKU)"

    @classmethod
    def parse(cls, text: str, source: str = "--where") -> SkuQuery:
        """Parse ``key=value`` / ``key>=value`` terms separated by spaces or commas.

        Keys: slug, vendor, arch, accelerator.kind, accelerator.model (``A|B`` for any of
        several), accelerators>=N, accelerator.memory>=SIZE, cores>=N, memory>=SIZE, trait=T
        (repeatable), site, price<=AMOUNT.
        """
        fields: dict[str, Any] = {"traits": []}
        problems = []
        for term in filter(None, re.split(r"[\s,]+", text.strip())):
            m = re.fullmatch(r"([a-z._]+)(>=|<=|=)(.+)", term)
            if not m:
                problems.append(
                    Problem(term, "expected key=value, key>=value or key<=value", term, source)
                )
                continue
            key, op, value = m.groups()
            try:
                _apply_term(fields, key, op, value)
            except (ValueError, InvalidOperation) as exc:
                problems.append(Problem(key, str(exc) or "bad value", value, source))
        if problems:
            raise InvalidInput(problems, source)
        return cls(**fields)


_TERMS: dict[tuple[str, str], tuple[str, Callable[[str], Any]]] = {
    ("slug", "="): ("slug", str),
    ("vendor", "="): ("vendor", str),
    ("arch", "="): ("arch", str),
    ("accelerator.kind", "="): ("accelerator_kind", str),
    ("accelerators", ">="): ("min_accelerators", int),
    ("gpus", ">="): ("min_accelerators", int),
    ("accelerator.memory", ">="): ("min_accelerator_memory", parse_size),
    ("cores", ">="): ("min_cores", int),
    ("memory", ">="): ("min_memory", parse_size),
    ("site", "="): ("site", str),
    ("price", "<="): ("max_hourly_price", Decimal),
}


def _apply_term(fields: dict[str, Any], key: str, op: str, value: str) -> None:
    if key == "trait" and op == "=":
        fields["traits"].append(value.lower())
    elif key == "accelerator.model" and op == "=":
        models = value.split("|")
        if len(models) == 1:
            fields["accelerator_model"] = value
        else:
            fields["accelerator_models"] = models
    elif (key, op) in _TERMS:
        name, convert = _TERMS[(key, op)]
        fields[name] = convert(value)
    else:
        known = sorted({f"{k}{o}" for k, o in _TERMS} | {"trait=", "accelerator.model="})
        raise ValueError(f"unknown term {key}{op}; accepted: {', '.join(known)}")


def find(skus: Iterable[Sku], query: SkuQuery) -> list[Sku]:
    """The SKUs among ``skus`` that meet ``query``, in the order given."""
    return [s for s in skus if query.matches(s)]


SKU_FRAME_COLUMNS = {
    "slug": "string",
    "revision": "Int64",
    "vendor": "string",
    "name": "string",
    "arch": "string",
    "cores": "int64",
    "threads": "int64",
    "memory": "int64",
    "accelerator_kind": "string",
    "accelerator_model": "string",
    "accelerator_count": "int64",
    "accelerator_memory": "int64",
    "idle_watts": "Int64",
    "max_watts": "Int64",
    "traits": "object",
    "currency": "string",
    "on_demand_hourly": "object",
}


def skus_frame(skus: Sequence[Sku]) -> pd.DataFrame:
    """One row per SKU with the columns of ``SKU_FRAME_COLUMNS`` (sizes in bytes, prices Decimal)."""
    rows = [
        {
            "slug": s.slug,
            "revision": s.revision,
            "vendor": s.vendor,
            "name": s.name,
            "arch": s.arch,
            "cores": s.cores,
            "threads": s.threads,
            "memory": s.memory,
            "accelerator_kind": s.accelerators[0].kind.value if s.accelerators else None,
            "accelerator_model": s.accelerators[0].model if s.accelerators else None,
            "accelerator_count": s.accelerator_count,
            "accelerator_memory": s.accelerator_memory,
            "idle_watts": s.power.idle_watts if s.power else None,
            "max_watts": s.power.max_watts if s.power else None,
            "traits": list(s.traits),
            "currency": s.pricing.currency if s.pricing else None,
            "on_demand_hourly": s.pricing.on_demand_hourly if s.pricing else None,
        }
        for s in skus
    ]
    return pd.DataFrame(rows, columns=list(SKU_FRAME_COLUMNS)).astype(SKU_FRAME_COLUMNS)


class SkuList(list[Sku]):
    """A list of SKUs that also converts to a DataFrame (``to_frame()``)."""

    def to_frame(self) -> pd.DataFrame:
        return skus_frame(self)


__all__ = ["SKU_FRAME_COLUMNS", "SkuList", "SkuQuery", "find", "skus_frame"]
