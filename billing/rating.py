"""Rating: usage ledger x price book -> rated invoice lines. Pure, vectorised, Decimal per line.

The usage ledger (see :data:`LEDGER_COLUMNS`) has one row per (reservation, host, UTC hour).
Rating groups it with pandas first and only then computes money, in ``Decimal``, once per line.

The rules, exactly:

* Idle rows (empty ``reservation_id``) are not billed. When a ``version`` column is present,
  only the highest version of each (reservation, host, hour) counts.
* Periods are calendar months, in UTC or in the customer's time zone (``customer_timezones``);
  an hour belongs to the period, and to the price, that contains the hour's start.
* Machine time. A *run* is a maximal sequence of consecutive clock hours in which one
  reservation held one host (``reserved_s > 0``), cut where the price or the period changes.
  A run's billed quantity is ``ceil(run seconds / unit seconds)`` in the price's unit (second,
  minute, hour), at least 1 (a 1 ms tolerance absorbs float noise, so 3600.0004 s is one hour).
  So ``unit: hour`` bills every *started* hour of a contiguous run: 10:30-12:15 is 2 hours, but
  10:30-10:45 plus 11:20-11:40 (one run at hourly resolution) is 1. One line per
  (customer, period, reservation, SKU, revision, site, term, price) sums its hosts' runs.
  ``amount = round(quantity x hourly rate / units per hour)``; the shown unit price is the hourly
  rate per unit, which for seconds and minutes is a repeating decimal and is shown to 10 places.
  A price's ``minimum_charge`` is the least amount of such a line.
* Energy. Facility watt-hours (energy x site PUE) are summed per (customer, site, period, tariff)
  and counted to the whole Wh (half even) as kWh. A flat tariff gives one line; ``volume`` tiers
  one line at the rate of the tier the total falls in; ``graduated`` tiers one line per tier used.
* Money: every line amount is rounded once to the currency's minor unit, half to even
  (:mod:`billing.money`). A missing price fails with every missing combination
  (:class:`~billing.errors.PriceMissing`); nothing partial is returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from billing.errors import PriceMissing
from billing.money import EXACT, round_amount
from billing.prices import (
    TERMS,
    UNIT_SECONDS,
    EnergyTariff,
    MachinePrice,
    PriceBook,
    resolve_energy,
    resolve_machine,
)
from marketplace.errors import InvalidInput, Problem

#: Columns rating needs from the usage ledger, and what they hold.
LEDGER_COLUMNS: dict[str, str] = {
    "reservation_id": "str; empty or None for idle (operator) rows, which are not billed",
    "customer": "str",
    "host": "str",
    "sku": "str, SKU slug",
    "sku_revision": "int",
    "site": "str",
    "hour": "datetime64[ns, UTC], the hour's start",
    "reserved_s": "float, seconds of the hour the reservation held the host",
    "facility_energy_wh": "float, energy x site PUE",
}
#: Optional ledger columns: ``pricing_term`` (default on-demand) and ``version`` (latest wins).
OPTIONAL_LEDGER_COLUMNS: dict[str, str] = {
    "pricing_term": "str: on-demand, reserved-1y or reserved-3y",
    "version": "int; of several versions of a (reservation, host, hour) the highest counts",
}

LineKind = Literal["machine_time", "energy", "adjustment", "credit"]
_HOUR_NS = 3_600_000_000_000
_TOLERANCE_S = 1e-3


@dataclass(frozen=True, slots=True)
class RatedLine:
    """One invoice line: what is charged, how much of it, at what price, for what amount.

    ``line_id`` is deterministic: the same usage and prices rate to the same id, which is what
    adjustments and the Stripe outbox key on. Adjustment lines name what they correct in
    ``corrects_line_id`` and ``corrects_period_start``.
    """

    line_id: str
    customer: str
    period_start: dt.datetime
    period_end: dt.datetime
    kind: LineKind
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    currency: str
    description: str
    reservation_id: str | None = None
    sku: str | None = None
    sku_revision: int | None = None
    site: str | None = None
    term: str | None = None
    price_id: str | None = None
    usage_start: dt.datetime | None = None
    usage_end: dt.datetime | None = None
    corrects_line_id: str | None = None
    corrects_period_start: dt.datetime | None = None


def line_id(*parts: object) -> str:
    """A deterministic line identifier: a hash of the parts that make a line what it is."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return "ln_" + hashlib.sha256(text.encode()).hexdigest()[:24]


def rate(
    ledger: pd.DataFrame,
    book: PriceBook,
    *,
    customer_timezones: Mapping[str, str] | None = None,
) -> list[RatedLine]:
    """Rate a usage ledger against a price book into invoice lines (machine time and energy).

    ``customer_timezones`` maps a customer to an IANA zone whose calendar months are its
    periods (default UTC). Lines come sorted by customer, period, kind and line id.
    Raises :class:`InvalidInput` for a malformed ledger and :class:`PriceMissing` listing every
    (customer, SKU, revision, site, term, hours) or (customer, site, hours) without a price.
    """
    usage, vocab = _billable(ledger)
    if usage.empty:
        return []
    usage["period"], usage["period_end"] = _periods(usage, vocab, customer_timezones or {})
    machine_cols = ["customer", "sku", "sku_revision", "site", "term"]
    codes, pairs = _pairs(usage, vocab, machine_cols)
    chosen, machine_missing = resolve_machine(pairs, book)
    usage["price"] = chosen[codes]
    codes, pairs = _pairs(usage, vocab, ["customer", "site"])
    chosen, energy_missing = resolve_energy(pairs, book)
    usage["tariff"] = chosen[codes]
    if machine_missing or energy_missing:
        raise PriceMissing(machine_missing + energy_missing)
    lines = _machine_lines(usage, vocab, book) + _energy_lines(usage, vocab, book)
    order = {"machine_time": 0, "energy": 1}
    lines.sort(key=lambda ln: (ln.customer, ln.period_start, order[ln.kind], ln.line_id))
    return lines


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(column)
    return codes.astype("int64"), np.asarray(uniques, dtype=object)


def _combine(*codes: np.ndarray) -> np.ndarray:
    """Dense int64 codes of the tuples of several arrays (each made dense first: no overflow)."""
    out = pd.factorize(codes[0])[0].astype("int64")
    for values in codes[1:]:
        c = pd.factorize(values)[0].astype("int64")
        out = pd.factorize(out * (int(c.max(initial=0)) + 1) + c)[0].astype("int64")
    return out


def _billable(ledger: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Billable rows as integer codes (plus the values the codes stand for), checked."""
    missing = [c for c in LEDGER_COLUMNS if c not in ledger.columns]
    if missing:
        raise InvalidInput(
            [
                Problem(f"ledger.{c}", f"required column is missing ({LEDGER_COLUMNS[c]})")
                for c in missing
            ]
        )
    problems: list[Problem] = []
    res, res_values = _codes(ledger["reservation_id"])
    billed = res >= 0
    billed &= ~np.isin(res, np.flatnonzero(res_values == ""))
    hour = ledger["hour"]
    if not isinstance(hour.dtype, pd.DatetimeTZDtype):
        problems.append(Problem("ledger.hour", "accepted: datetime64[ns, UTC]", str(hour.dtype)))
        hour_ns = np.zeros(len(ledger), dtype="int64")
    else:
        hour_ns = np.asarray(hour.dt.tz_convert("UTC").dt.as_unit("ns").array.asi8)
    vocab: dict[str, np.ndarray] = {"reservation_id": res_values}
    frame: dict[str, np.ndarray] = {"reservation_id": res}
    for col in ("customer", "host", "sku", "sku_revision", "site"):
        frame[col], vocab[col] = _codes(ledger[col])
        empty = int(np.count_nonzero(frame[col][billed] < 0))
        if empty:
            problems.append(Problem(f"ledger.{col}", f"empty in {empty} billable row(s)", None))
    if isinstance(hour.dtype, pd.DatetimeTZDtype) and hour[billed].isna().any():
        problems.append(Problem("ledger.hour", "empty (NaT) in billable rows", None))
    if "pricing_term" in ledger.columns:
        term, term_values = _codes(ledger["pricing_term"].replace("", None))
        bad = sorted(str(t) for t in term_values if t not in TERMS)
        if bad:
            problems.append(
                Problem("ledger.pricing_term", f"unknown term; accepted: {', '.join(TERMS)}", bad)
            )
        term_values = np.append(term_values, "on-demand").astype(object)
        frame["term"] = np.where(term < 0, len(term_values) - 1, term)
        vocab["term"] = term_values
    else:
        frame["term"] = np.zeros(len(ledger), dtype="int64")
        vocab["term"] = np.array(["on-demand"], dtype=object)
    reserved = ledger["reserved_s"].to_numpy(dtype=float)
    if billed.any():
        low, high = np.nanmin(reserved[billed]), np.nanmax(reserved[billed])
        if low < 0 or high > 3600 + _TOLERANCE_S:
            shown = float(low if low < 0 else high)
            problems.append(Problem("ledger.reserved_s", "accepted: 0 to 3600 seconds", shown))
    if problems:
        raise InvalidInput(problems)
    frame["hour"] = hour_ns
    frame["reserved_s"] = np.nan_to_num(reserved)
    frame["facility_wh"] = np.nan_to_num(ledger["facility_energy_wh"].to_numpy(dtype=float))
    if "version" in ledger.columns:
        frame["version"] = ledger["version"].to_numpy()
    usage = pd.DataFrame({k: v[billed] for k, v in frame.items()})
    if "version" in usage.columns:
        # Several versions of one (reservation, host, hour): the latest correction wins.
        key = _combine(*(usage[c].to_numpy() for c in ("reservation_id", "host", "hour")))
        if int(key.max(initial=-1)) + 1 < len(key):  # dense codes: fewer codes than rows
            latest = usage.assign(_k=key).sort_values("version", kind="stable")
            usage = latest.drop_duplicates("_k", keep="last").drop(columns="_k")
    return usage.reset_index(drop=True), vocab


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """For dense codes 0..n-1, the first row holding each code."""
    first = np.empty(int(codes.max()) + 1, dtype="int64")
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # later writes win: the first row
    return first


def _pairs(
    usage: pd.DataFrame, vocab: dict[str, np.ndarray], key_cols: list[str]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Per row, the code of its distinct (key, hour) pair; and those pairs, decoded."""
    key = _combine(*(usage[c].to_numpy() for c in key_cols))
    pair_code = _combine(key, usage["hour"].to_numpy())
    first = _first_rows(pair_code)
    rows = usage.iloc[first]
    pairs = pd.DataFrame({"key": key[first], "hour": rows["hour"].to_numpy()})
    for c in key_cols:
        pairs[c] = vocab[c][rows[c].to_numpy()]
    return pair_code, pairs


def _periods(
    usage: pd.DataFrame, vocab: dict[str, np.ndarray], zones: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Period start and end (UTC ns) of each row, computed once per (zone, hour) pair."""
    problems: list[Problem] = []
    infos: dict[str, ZoneInfo] = {"UTC": ZoneInfo("UTC")}
    for customer, zone in zones.items():
        try:
            infos[zone] = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(f"customer_timezones[{customer}]", "unknown IANA zone", zone))
    if problems:
        raise InvalidInput(problems)
    zone_names = sorted(infos)
    zone_of_customer = np.array(
        [zone_names.index(zones.get(c, "UTC")) for c in vocab["customer"]], dtype="int64"
    )
    hour = usage["hour"].to_numpy()
    pair = _combine(zone_of_customer[usage["customer"].to_numpy()], hour)
    first = _first_rows(pair)
    starts = np.empty(len(first), dtype="int64")
    ends = np.empty(len(first), dtype="int64")
    zone_rows = zone_of_customer[usage["customer"].to_numpy()[first]]
    for i, (z, hour_ns) in enumerate(zip(zone_rows, hour[first], strict=True)):
        tz = infos[zone_names[z]]
        local = dt.datetime.fromtimestamp(int(hour_ns) // 1_000_000_000, tz)
        after = dt.datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=tz)
        starts[i] = int(dt.datetime(local.year, local.month, 1, tzinfo=tz).timestamp()) * 10**9
        ends[i] = int(after.timestamp()) * 10**9
    return starts[pair], ends[pair]


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(ns) / 1e9, dt.UTC).replace(microsecond=0)


def _machine_lines(
    usage: pd.DataFrame, vocab: dict[str, np.ndarray], book: PriceBook
) -> list[RatedLine]:
    u = usage.loc[usage["reserved_s"].to_numpy() > 0]
    if u.empty:
        return []
    u = u.iloc[
        np.lexsort((u["hour"].to_numpy(), u["host"].to_numpy(), u["reservation_id"].to_numpy()))
    ]
    res, host, hour = (u[c].to_numpy() for c in ("reservation_id", "host", "hour"))
    price, period = u["price"].to_numpy(), u["period"].to_numpy()
    new_run = np.ones(len(u), dtype=bool)
    new_run[1:] = (
        (res[1:] != res[:-1])
        | (host[1:] != host[:-1])
        | (hour[1:] - hour[:-1] != _HOUR_NS)
        | (price[1:] != price[:-1])
        | (period[1:] != period[:-1])
    )
    run = np.cumsum(new_run) - 1
    run_seconds = np.bincount(run, weights=u["reserved_s"].to_numpy())
    first = np.flatnonzero(new_run)
    last = np.append(first[1:], len(u)) - 1
    unit_s = np.array([UNIT_SECONDS[p.unit] for p in book.prices], dtype=float)[price[first]]
    units = np.maximum(1, np.ceil((run_seconds - _TOLERANCE_S) / unit_s)).astype("int64")
    runs = u.iloc[first].assign(units=units, end=hour[last])
    keys = ["customer", "period", "period_end", "reservation_id", "sku", "sku_revision", "site"]
    keys += ["term", "price"]
    grouped = runs.groupby(keys, sort=False).agg(
        units=("units", "sum"), hosts=("host", "nunique"), start=("hour", "min"), end=("end", "max")
    )
    lines = []
    columns = (grouped[c].to_numpy().tolist() for c in ("units", "hosts", "start", "end"))
    for key, units, hosts, start, end in zip(grouped.index, *columns, strict=True):
        c, p_start, p_end, r, k, v, s, t, pi = key
        customer, reservation, sku = (
            vocab["customer"][c],
            vocab["reservation_id"][r],
            vocab["sku"][k],
        )
        revision, site, term = int(vocab["sku_revision"][v]), vocab["site"][s], vocab["term"][t]
        p: MachinePrice = book.prices[pi]
        hourly = p.hourly_rate(term)
        assert hourly is not None  # resolve_machine only picks prices with a rate for the term
        per_hour = Decimal(3600 // UNIT_SECONDS[p.unit])
        quantity = Decimal(units)
        amount = round_amount(
            EXACT.divide(EXACT.multiply(quantity, hourly), per_hour), book.currency
        )
        amount = max(amount, round_amount(p.minimum_charge, book.currency))
        unit_price = EXACT.divide(hourly, per_hour)
        if unit_price.as_tuple().exponent < -10:  # type: ignore[operator]
            unit_price = unit_price.quantize(Decimal("1e-10"))
        lines.append(
            RatedLine(
                line_id=line_id(
                    "machine_time",
                    customer,
                    _utc(p_start).isoformat(),
                    reservation,
                    sku,
                    revision,
                    site,
                    term,
                    p.id,
                ),
                customer=customer,
                period_start=_utc(p_start),
                period_end=_utc(p_end),
                kind="machine_time",
                quantity=quantity,
                unit=p.unit,
                unit_price=unit_price,
                amount=amount,
                currency=book.currency,
                description=f"{sku} rev {revision} at {site}, {term}, {hosts} host(s): "
                f"{quantity} {p.unit}(s) at {hourly} per hour",
                reservation_id=reservation,
                sku=sku,
                sku_revision=revision,
                site=site,
                term=term,
                price_id=p.id,
                usage_start=_utc(start),
                usage_end=_utc(end + _HOUR_NS),
            )
        )
    return lines


def _tier_charges(t: EnergyTariff, kwh: Decimal) -> list[tuple[str, Decimal, Decimal]]:
    """(label, kWh, rate) per charged part of ``kwh`` under tariff ``t``."""
    if t.per_kwh is not None:
        return [("", kwh, t.per_kwh)]
    if t.tier_mode == "volume":
        for i, tier in enumerate(t.tiers):
            if tier.up_to_kwh is None or kwh <= tier.up_to_kwh:
                return [(f"tier {i + 1}", kwh, tier.per_kwh)]
    parts, below = [], Decimal(0)
    for i, tier in enumerate(t.tiers):
        top = kwh if tier.up_to_kwh is None else min(kwh, tier.up_to_kwh)
        if top > below:
            parts.append((f"tier {i + 1}", top - below, tier.per_kwh))
        below = max(below, top)
    return parts or [("tier 1", kwh, t.tiers[0].per_kwh)]  # zero kWh: one empty line


def _energy_lines(
    usage: pd.DataFrame, vocab: dict[str, np.ndarray], book: PriceBook
) -> list[RatedLine]:
    keys = ["customer", "period", "period_end", "site", "tariff"]
    grouped = usage.groupby(keys, sort=False).agg(
        wh=("facility_wh", "sum"), start=("hour", "min"), end=("hour", "max")
    )
    lines = []
    columns = (grouped[c].to_numpy().tolist() for c in ("wh", "start", "end"))
    for key, wh, start, end in zip(grouped.index, *columns, strict=True):
        c, p_start, p_end, s, ti = key
        customer, site = vocab["customer"][c], vocab["site"][s]
        t = book.energy[ti]
        # Energy is counted to the whole watt-hour; float sums carry no more than that.
        kwh = Decimal(round(wh)).scaleb(-3)
        for label, qty, per_kwh in _tier_charges(t, kwh):
            lines.append(
                RatedLine(
                    line_id=line_id(
                        "energy", customer, _utc(p_start).isoformat(), site, t.id, label
                    ),
                    customer=customer,
                    period_start=_utc(p_start),
                    period_end=_utc(p_end),
                    kind="energy",
                    quantity=qty,
                    unit="kWh",
                    unit_price=per_kwh,
                    amount=round_amount(EXACT.multiply(qty, per_kwh), book.currency),
                    currency=book.currency,
                    description=f"facility energy at {site}{', ' + label if label else ''}: "
                    f"{qty} kWh at {per_kwh} per kWh",
                    site=site,
                    price_id=t.id,
                    usage_start=_utc(start),
                    usage_end=_utc(end + _HOUR_NS),
                )
            )
    return lines


__all__ = ["LEDGER_COLUMNS", "OPTIONAL_LEDGER_COLUMNS", "LineKind", "RatedLine", "line_id", "rate"]
