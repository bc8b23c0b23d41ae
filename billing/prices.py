"""The price book: effective-dated machine-time prices and energy tariffs.

A price applies by the time of the usage, not by when rating runs: the price of a host-hour is the
one whose ``[valid_from, valid_to)`` contains the hour's start. Validity bounds are whole UTC
hours, so an hour never straddles two prices.

Which price wins when several match a (customer, SKU, revision, site, hour): a price naming the
customer (a negotiated ``custom_rate``, as on Equinix Metal) beats the list price, and a price
naming the SKU revision beats one for every revision. Two prices of the same specificity that
overlap in time are an error in the book, so the choice is never arbitrary.

Build a book in Python (``PriceBook(currency="USD", prices=[...])``) or load one from YAML, TOML
or JSON with :func:`load_price_book`, which reports every problem of the file at once.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from billing.money import normalise_currency
from marketplace.catalog import report_cross_problems
from marketplace.documents import load_model, parse_document, validate_data
from marketplace.errors import Problem

Term = Literal["on-demand", "reserved-1y", "reserved-3y"]
ReservedTerm = Literal["reserved-1y", "reserved-3y"]
BillableUnit = Literal["second", "minute", "hour"]
TierMode = Literal["graduated", "volume"]

#: Seconds in one billable unit.
UNIT_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600}
TERMS: tuple[str, ...] = ("on-demand", "reserved-1y", "reserved-3y")


def _date_as_midnight(value: Any) -> Any:
    # YAML and TOML give a bare date for `2026-01-01` (JSON a string): that day's start in UTC.
    if isinstance(value, str) and len(value) == 10 and value[4] == value[7] == "-":
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value


def _aware_whole_hour(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timestamp without a time zone; accepted: e.g. 2026-01-01T00:00:00Z")
    value = value.astimezone(dt.UTC)
    if (value.minute, value.second, value.microsecond) != (0, 0, 0):
        raise ValueError("not a whole UTC hour; prices change on hour boundaries")
    return value


UtcHour = Annotated[
    dt.datetime, BeforeValidator(_date_as_midnight), AfterValidator(_aware_whole_hour)
]
Rate = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachinePrice(_Strict):
    """The hourly price of one SKU (optionally one revision) at one site, for a time span.

    ``unit`` is how reserved time is counted before pricing (see :mod:`billing.rating`):
    ``second``, ``minute``, or ``hour`` (each started hour of a contiguous run, as bare-metal
    clouds bill). ``minimum_charge`` is the least amount of one machine-time line.
    """

    id: Name
    sku: Slug
    sku_revision: int | None = Field(default=None, ge=0)
    site: Name
    customer: Name | None = None
    valid_from: UtcHour
    valid_to: UtcHour | None = None
    on_demand_hourly: Rate | None = None
    reserved_hourly: dict[ReservedTerm, Rate] = Field(default_factory=dict)
    unit: BillableUnit = "hour"
    minimum_charge: Rate = Decimal(0)
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> MachinePrice:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        if self.on_demand_hourly is None and not self.reserved_hourly:
            raise ValueError("a price needs on_demand_hourly or reserved_hourly (or both)")
        return self

    def hourly_rate(self, term: str) -> Decimal | None:
        """The hourly rate for a pricing term, or None when this price has none for it."""
        if term == "on-demand":
            return self.on_demand_hourly
        return self.reserved_hourly.get(term)  # type: ignore[call-overload]


class EnergyTier(_Strict):
    """One tier of a tiered energy tariff: kWh up to ``up_to_kwh`` (None: no upper bound)."""

    up_to_kwh: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    per_kwh: Rate


class EnergyTariff(_Strict):
    """The price of facility energy (IT energy x PUE) at one site, per kWh, for a time span.

    Either a flat ``per_kwh`` or ``tiers``: ``graduated`` prices each tier's part at its rate,
    ``volume`` prices all of the period's kWh at the rate of the tier the total falls in.
    """

    id: Name
    site: Name
    customer: Name | None = None
    valid_from: UtcHour
    valid_to: UtcHour | None = None
    per_kwh: Rate | None = None
    tiers: tuple[EnergyTier, ...] = ()
    tier_mode: TierMode = "graduated"
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> EnergyTariff:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        if (self.per_kwh is None) == (not self.tiers):
            raise ValueError("give exactly one of per_kwh or tiers")
        if self.tiers:
            bounds = [t.up_to_kwh for t in self.tiers]
            if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                raise ValueError("only the last tier, and it must, have up_to_kwh empty (no bound)")
            finite = [b for b in bounds if b is not None]
            if any(a >= b for a, b in itertools.pairwise(finite)):
                raise ValueError("tier bounds up_to_kwh must increase")
        return self


def _overlaps(
    a: tuple[dt.datetime, dt.datetime | None], b: tuple[dt.datetime, dt.datetime | None]
) -> bool:
    a_end = a[1] or dt.datetime.max.replace(tzinfo=dt.UTC)
    b_end = b[1] or dt.datetime.max.replace(tzinfo=dt.UTC)
    return a[0] < b_end and b[0] < a_end


class PriceBook(_Strict):
    """Every price of one currency: machine time (``prices``) and energy (``energy``)."""

    currency: str
    prices: tuple[MachinePrice, ...] = ()
    energy: tuple[EnergyTariff, ...] = ()

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return normalise_currency(value)
        except ValueError:
            raise ValueError("unknown currency; accepted: an ISO 4217 code such as USD") from None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> PriceBook:
        problems: list[Problem] = []
        seen: dict[str, str] = {}
        entries: list[tuple[str, MachinePrice | EnergyTariff]] = [
            *((f"prices[{i}]", p) for i, p in enumerate(self.prices)),
            *((f"energy[{i}]", e) for i, e in enumerate(self.energy)),
        ]
        for path, entry in entries:
            if entry.id in seen:
                problems.append(
                    Problem(f"{path}.id", f"duplicate id, also at {seen[entry.id]}", entry.id)
                )
            seen.setdefault(entry.id, path)
        groups: dict[tuple[Any, ...], list[tuple[str, MachinePrice | EnergyTariff]]] = {}
        for path, entry in entries:
            groups.setdefault((type(entry).__name__, *_key(entry)), []).append((path, entry))
        pairs = itertools.chain.from_iterable(itertools.combinations(g, 2) for g in groups.values())
        for (pa, a), (pb, b) in pairs:
            if _overlaps((a.valid_from, a.valid_to), (b.valid_from, b.valid_to)):
                problems.append(
                    Problem(
                        pb,
                        f"overlaps {pa} ({a.id}) in time for the same "
                        "customer/SKU/revision/site; accepted: disjoint [valid_from, valid_to)",
                        b.id,
                    )
                )
        report_cross_problems([(p.path, p.message, p.value) for p in problems], info)
        return self


def _key(entry: MachinePrice | EnergyTariff) -> tuple[Any, ...]:
    if isinstance(entry, MachinePrice):
        return (entry.customer, entry.sku, entry.sku_revision, entry.site)
    return (entry.customer, entry.site)


# --- which price applies to which usage ---------------------------------------------------------

_END_OF_TIME = np.iinfo("int64").max


def _ns(t: dt.datetime | None) -> int:
    return _END_OF_TIME if t is None else int(t.timestamp()) * 1_000_000_000


def _pick(
    pair_key: np.ndarray, pair_hour: np.ndarray, cand: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """For each (key, hour) pair, the best-ranked candidate valid at that hour, or -1."""
    pairs = pd.DataFrame({"key": pair_key, "hour": pair_hour, "pair": np.arange(len(pair_key))})
    joined = pairs.merge(cand, on="key", how="inner")
    valid = (joined["valid_from"] <= joined["hour"]) & (joined["hour"] < joined["valid_to"])
    best = joined.loc[valid].sort_values(["pair", "rank"]).drop_duplicates("pair")
    chosen = np.full(len(pair_key), -1, dtype="int64")
    chosen[best["pair"].to_numpy()] = best["entry"].to_numpy()
    return chosen, chosen < 0


def _resolve(
    pairs: pd.DataFrame,
    key_cols: list[str],
    candidates_of: Any,
    describe: Any,
) -> tuple[np.ndarray, list[Problem]]:
    keys = pairs.drop_duplicates("key").set_index("key")[key_cols]
    rows = [
        (k, entry, rank, _ns(e.valid_from), _ns(e.valid_to))
        for k, *key in keys.itertuples()
        for entry, rank, e in candidates_of(*key)
    ]
    cand = pd.DataFrame(rows, columns=["key", "entry", "rank", "valid_from", "valid_to"])
    pair_key, pair_hour = pairs["key"].to_numpy(), pairs["hour"].to_numpy()
    chosen, missing = _pick(pair_key, pair_hour, cand.astype("int64"))
    problems: list[Problem] = []
    if missing.any():
        gaps = pd.DataFrame({"key": pair_key[missing], "hour": pair_hour[missing]})
        for k, hs in gaps.groupby("key")["hour"]:
            key = [getattr(v, "item", lambda v=v: v)() for v in keys.loc[k]]
            first = pd.Timestamp(int(hs.min()), tz="UTC").isoformat()
            last = pd.Timestamp(int(hs.max()), tz="UTC").isoformat()
            problems.append(
                Problem(
                    "price_book",
                    f"{describe(*key)}: no price for {len(hs)} hour(s) from {first} to {last}",
                    dict(zip(key_cols, key, strict=True)),
                )
            )
    return chosen, problems


def resolve_machine(pairs: pd.DataFrame, book: PriceBook) -> tuple[np.ndarray, list[Problem]]:
    """Index into ``book.prices`` of the machine price of each pair, and every one missing.

    ``pairs`` has one row per distinct (key, hour) of the usage: columns key (int; the same key
    for the same customer, sku, sku_revision, site and term), those five, and hour (int64 ns
    since the epoch, UTC); -1 marks a pair without a price. A
    customer's own price beats the list price and a revision's beats one for all revisions; a
    price without a rate for the row's term is passed over for the next one.
    """
    by_place: dict[tuple[str, str], list[tuple[int, MachinePrice]]] = {}
    for i, p in enumerate(book.prices):
        by_place.setdefault((p.sku, p.site), []).append((i, p))

    def candidates(
        customer: str, sku: str, revision: int, site: str, term: str
    ) -> list[tuple[int, int, MachinePrice]]:
        return [
            (i, 2 * (p.customer is None) + (p.sku_revision is None), p)
            for i, p in by_place.get((sku, site), [])
            if p.customer in (None, customer)
            and p.sku_revision in (None, revision)
            and p.hourly_rate(term) is not None
        ]

    def describe(customer: str, sku: str, revision: int, site: str, term: str) -> str:
        return f"SKU {sku} rev {revision} at site {site}, term {term}, customer {customer}"

    cols = ["customer", "sku", "sku_revision", "site", "term"]
    return _resolve(pairs, cols, candidates, describe)


def resolve_energy(pairs: pd.DataFrame, book: PriceBook) -> tuple[np.ndarray, list[Problem]]:
    """Index into ``book.energy`` of the tariff of each pair, and every one missing.

    ``pairs`` as for :func:`resolve_machine`, with key columns customer and site.
    """
    by_site: dict[str, list[tuple[int, EnergyTariff]]] = {}
    for i, t in enumerate(book.energy):
        by_site.setdefault(t.site, []).append((i, t))

    def candidates(customer: str, site: str) -> list[tuple[int, int, EnergyTariff]]:
        return [
            (i, int(t.customer is None), t)
            for i, t in by_site.get(site, [])
            if t.customer in (None, customer)
        ]

    def describe(customer: str, site: str) -> str:
        return f"energy at site {site}, customer {customer}"

    return _resolve(pairs, ["customer", "site"], candidates, describe)


# --- loading from files -------------------------------------------------------------------------
# The same reader and the same error rules as listings and inventories (marketplace.documents).


def price_book_from_data(data: Any, source: str = "<python>") -> PriceBook:
    """Validate plain data (as parsed from a file) into a :class:`PriceBook`.

    Raises :class:`marketplace.errors.InvalidInput` listing every problem, each naming
    ``source``, the path inside it (``prices[2].on_demand_hourly``), the value and what is
    accepted.
    """
    return validate_data(PriceBook, data, source)


def parse_price_book(
    text: str, fmt: Literal["yaml", "toml", "json"], source: str = "<text>"
) -> PriceBook:
    """Parse a price book from YAML, TOML or JSON text; syntax errors name the line."""
    data, lines = parse_document(text, fmt, source)
    return validate_data(PriceBook, data, source, lines)


def load_price_book(path: str | Path) -> PriceBook:
    """Load a price book file; the format is chosen by suffix (.yaml/.yml, .toml, .json)."""
    return load_model(PriceBook, path)


__all__ = [
    "TERMS",
    "UNIT_SECONDS",
    "BillableUnit",
    "EnergyTariff",
    "EnergyTier",
    "MachinePrice",
    "PriceBook",
    "Term",
    "TierMode",
    "load_price_book",
    "parse_price_book",
    "price_book_from_data",
    "resolve_energy",
    "resolve_machine",
]
