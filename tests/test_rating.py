"""Rating: worked examples of each rule, the errors, and a property against a per-row reference."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.errors import PriceMissing
from billing.prices import EnergyTariff, EnergyTier, MachinePrice, PriceBook
from billing.rating import RatedLine, rate
from marketplace.errors import InvalidInput

UTC = dt.UTC
CHANGE = dt.datetime(2026, 11, 30, 22, tzinfo=UTC)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def book(unit: str = "hour", currency: str = "USD", energy: Any = None) -> PriceBook:
    """List prices for c3 at ams1 changing at CHANGE, a revision price, a customer's own rate."""
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    return PriceBook(
        currency=currency,
        prices=[
            MachinePrice(id="c3-old", sku="c3", site="ams1", valid_from=start, valid_to=CHANGE,
                         on_demand_hourly=Decimal("0.50"),
                         reserved_hourly={"reserved-1y": Decimal("0.35")}, unit=unit),
            MachinePrice(id="c3-new", sku="c3", site="ams1", valid_from=CHANGE,
                         on_demand_hourly=Decimal("0.55"),
                         reserved_hourly={"reserved-1y": Decimal("0.37")}, unit=unit),
            MachinePrice(id="c3-rev2", sku="c3", sku_revision=2, site="ams1", valid_from=start,
                         on_demand_hourly=Decimal("0.61"), unit=unit),
            MachinePrice(id="acme-c3", sku="c3", site="ams1", customer="acme", valid_from=start,
                         on_demand_hourly=Decimal("0.45"), unit=unit),
            MachinePrice(id="gpu", sku="gpu", site="ams1", valid_from=start,
                         on_demand_hourly=Decimal("3.333"), unit=unit),
        ],
        energy=energy
        or [EnergyTariff(id="ams-kwh", site="ams1", valid_from=start, per_kwh=Decimal("0.25"))],
    )  # fmt: skip


def row(res: str | None, host: str, hour: str, seconds: float = 3600.0, **extra: Any) -> dict:
    """One ledger row with sensible defaults."""
    values = {
        "reservation_id": res,
        "customer": {"r1": "acme", "r2": "bob", "r3": "bob", "r4": "carol"}.get(res or "", ""),
        "host": host,
        "sku": "c3",
        "sku_revision": 1,
        "site": "ams1",
        "hour": pd.Timestamp(hour, tz="UTC"),
        "reserved_s": seconds,
        "energy_wh": 100.0,
        "energy_uncertainty_wh": 2.0,
        "facility_energy_wh": 130.0,
        "avg_watts": 100.0,
        "peak_watts": 120.0,
        "version": 1,
        "computed_at": pd.Timestamp("2026-12-01T02:00Z"),
    }
    values.update(extra)
    return values


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def machine(lines: list[RatedLine]) -> dict[tuple[str | None, str | None], RatedLine]:
    return {(ln.reservation_id, ln.price_id): ln for ln in lines if ln.kind == "machine_time"}


def test_per_started_hour_bills_each_contiguous_run_rounded_up() -> None:
    # r2 holds h1 10:30-12:15 (1.75 h: 2 hours) and h2 10:30-10:45 + 11:20-11:40 (one run at
    # hourly resolution: 35 min, 1 hour); a gap then starts a new run 14:00-14:10 (1 hour).
    ledger = frame(
        [
            row("r2", "h1", "2026-11-10T10:00", 1800),
            row("r2", "h1", "2026-11-10T11:00", 3600),
            row("r2", "h1", "2026-11-10T12:00", 900),
            row("r2", "h2", "2026-11-10T10:00", 900),
            row("r2", "h2", "2026-11-10T11:00", 1200),
            row("r2", "h2", "2026-11-10T14:00", 600),
        ]
    )
    (line,) = machine(rate(ledger, book())).values()
    assert (line.quantity, line.unit, line.unit_price, line.amount) == (
        4,
        "hour",
        Decimal("0.50"),
        Decimal("2.00"),
    )
    assert line.period_start == _t("2026-11-01T00:00") and line.period_end == _t("2026-12-01T00:00")
    assert (line.usage_start, line.usage_end) == (_t("2026-11-10T10:00"), _t("2026-11-10T15:00"))
    assert "2 host(s)" in line.description


@pytest.mark.parametrize(
    ("unit", "quantity", "amount"),
    [("hour", 3, "1.50"), ("minute", 35 + 20 + 40, "0.79"), ("second", 2100 + 1200 + 2400, "0.79")],
)
def test_units_round_each_run_up(unit: str, quantity: int, amount: str) -> None:
    ledger = frame(
        [
            row("r2", "h1", "2026-11-10T10:00", 2100.0004),  # float noise below 1 ms is absorbed
            row("r2", "h2", "2026-11-10T10:00", 1199.5),
            row("r2", "h2", "2026-11-10T13:00", 2400),
        ]
    )
    (line,) = machine(rate(ledger, book(unit))).values()
    assert line.quantity == quantity
    assert line.amount == Decimal(amount)
    if unit == "second":
        assert line.unit_price == Decimal("0.0001388889")  # shown to 10 places; amount is exact


def test_a_price_change_applies_by_time_and_cuts_runs() -> None:
    hours = pd.date_range("2026-11-30T20:00Z", periods=4, freq="h")  # 20, 21 | 22, 23
    ledger = frame([row("r2", "h1", str(h), 1800 if i == 0 else 3600) for i, h in enumerate(hours)])
    lines = machine(rate(ledger, book()))
    assert lines[("r2", "c3-old")].quantity == 2
    assert lines[("r2", "c3-old")].amount == Decimal("1.00")
    assert lines[("r2", "c3-new")].quantity == 2
    assert lines[("r2", "c3-new")].amount == Decimal("1.10")


def test_precedence_customer_rate_then_revision_then_list_and_terms() -> None:
    ledger = frame(
        [
            row("r1", "h1", "2026-11-10T10:00"),  # acme: its own rate
            row("r2", "h2", "2026-11-10T10:00", sku_revision=2),  # revision price
            row("r3", "h3", "2026-11-10T10:00", pricing_term="reserved-1y"),
            row("r4", "h4", "2026-11-10T10:00", pricing_term=None),
        ]
    )
    lines = machine(rate(ledger, book()))
    assert set(lines) == {("r1", "acme-c3"), ("r2", "c3-rev2"), ("r3", "c3-old"), ("r4", "c3-old")}
    assert lines[("r3", "c3-old")].amount == Decimal("0.35")
    assert lines[("r3", "c3-old")].term == "reserved-1y"
    assert lines[("r4", "c3-old")].term == "on-demand"


def test_a_customer_rate_without_the_term_falls_back_to_the_list_price() -> None:
    ledger = frame([row("r1", "h1", "2026-11-10T10:00", pricing_term="reserved-1y")])
    (line,) = machine(rate(ledger, book())).values()
    assert (line.price_id, line.amount) == ("c3-old", Decimal("0.35"))


def test_idle_rows_are_not_billed_and_the_latest_version_wins() -> None:
    ledger = frame(
        [
            row(None, "h9", "2026-11-10T10:00", 0),
            row("", "h9", "2026-11-10T11:00", 0),
            row("r2", "h1", "2026-11-10T10:00", 600, version=1, facility_energy_wh=50.0),
            row("r2", "h1", "2026-11-10T10:00", 3600, version=2, facility_energy_wh=1000.0),
        ]
    )
    lines = rate(ledger, book("second"))
    assert {ln.customer for ln in lines} == {"bob"}
    (m,) = machine(lines).values()
    assert m.quantity == 3600
    (energy,) = [ln for ln in lines if ln.kind == "energy"]
    assert energy.quantity == Decimal("1.000")
    assert energy.amount == Decimal("0.25")


def test_missing_prices_list_every_combination_and_return_nothing() -> None:
    ledger = frame(
        [
            row("r2", "h1", "2026-11-10T10:00", sku="arm64"),
            row("r2", "h1", "2026-11-10T11:00", sku="arm64"),
            row("r3", "h2", "2026-11-10T10:00", site="fra1"),
            row("r4", "h3", "2026-11-10T10:00", pricing_term="reserved-3y"),
            row("r1", "h4", "2026-11-10T10:00"),  # priced: must not hide the others
        ]
    )
    with pytest.raises(PriceMissing) as caught:
        rate(ledger, book())
    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 4  # three machine combinations and energy at fra1
    assert any("SKU arm64 rev 1 at site ams1" in m and "2 hour(s)" in m for m in messages)
    assert any("term reserved-3y, customer carol" in m for m in messages)
    assert any(m.startswith("energy at site fra1, customer bob") for m in messages)
    assert any(p.value == {"customer": "bob", "site": "fra1"} for p in caught.value.problems)


def test_periods_follow_the_customers_time_zone() -> None:
    # 2026-11-30T19:00Z is 00:30 on 1 December in Kolkata (UTC+05:30).
    ledger = frame([row("r2", "h1", "2026-11-30T18:00"), row("r2", "h1", "2026-11-30T19:00")])
    lines = rate(ledger, book(), customer_timezones={"bob": "Asia/Kolkata"})
    starts = sorted(ln.period_start for ln in lines if ln.kind == "machine_time")
    assert starts == [_t("2026-10-31T18:30"), _t("2026-11-30T18:30")]
    assert {ln.period_end for ln in lines} == {_t("2026-11-30T18:30"), _t("2026-12-31T18:30")}
    with pytest.raises(InvalidInput, match="unknown IANA zone"):
        rate(ledger, book(), customer_timezones={"bob": "Mars/Olympus"})


def test_energy_flat_graduated_and_volume() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    tiers = (
        EnergyTier(up_to_kwh=Decimal(1), per_kwh=Decimal("0.30")),
        EnergyTier(per_kwh=Decimal("0.20")),
    )
    ledger = frame(
        [row("r2", f"h{i}", "2026-11-10T10:00", facility_energy_wh=500.25) for i in range(3)]
    )
    graduated = [EnergyTariff(id="g", site="ams1", valid_from=start, tiers=tiers)]
    lines = [ln for ln in rate(ledger, book(energy=graduated)) if ln.kind == "energy"]
    assert sorted((ln.quantity, ln.unit_price, ln.amount) for ln in lines) == [
        (Decimal("0.501"), Decimal("0.20"), Decimal("0.10")),  # 1500.75 Wh -> 1501 Wh
        (Decimal("1.000"), Decimal("0.30"), Decimal("0.30")),
    ]
    volume = [EnergyTariff(id="v", site="ams1", valid_from=start, tiers=tiers, tier_mode="volume")]
    (line,) = [ln for ln in rate(ledger, book(energy=volume)) if ln.kind == "energy"]
    assert (line.quantity, line.unit_price, line.amount) == (
        Decimal("1.501"),
        Decimal("0.20"),
        Decimal("0.30"),
    )


def test_minimum_charge_and_zero_decimal_currency() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    prices = PriceBook(
        currency="JPY",
        prices=[MachinePrice(id="p", sku="c3", site="ams1", valid_from=start,
                             on_demand_hourly=Decimal("75.5"), unit="minute",
                             minimum_charge=Decimal(50))],
        energy=[EnergyTariff(id="e", site="ams1", valid_from=start, per_kwh=Decimal("31.5"))],
    )  # fmt: skip
    ledger = frame(
        [row("r2", "h1", "2026-11-10T10:00", 60 * 7), row("r3", "h2", "2026-11-10T10:00")]
    )
    lines = rate(ledger, prices)
    amounts = {(ln.reservation_id, ln.kind): ln.amount for ln in lines}
    assert amounts[("r2", "machine_time")] == Decimal(50)  # 7 min x 75.5/60 = 8.8 -> minimum
    assert amounts[("r3", "machine_time")] == Decimal(76)  # 75.5 half-even -> 76
    assert amounts[(None, "energy")] == Decimal(8)  # 0.260 kWh x 31.5 = 8.19
    assert all(ln.amount == ln.amount.to_integral_value() for ln in lines)


def test_ledger_problems_are_reported_together() -> None:
    with pytest.raises(InvalidInput) as caught:
        rate(pd.DataFrame({"customer": ["a"]}), book())
    assert {p.path for p in caught.value.problems} >= {"ledger.reservation_id", "ledger.hour"}
    bad = frame([row("r2", "h1", "2026-11-10T10:00", 4000, pricing_term="spot", site=None)])
    with pytest.raises(InvalidInput) as caught:
        rate(bad, book())
    paths = {p.path for p in caught.value.problems}
    assert paths == {"ledger.pricing_term", "ledger.reserved_s", "ledger.site"}


# --- the property: rate() equals a plain per-row reading of the documented rules ----------------


def _reference(
    ledger: pd.DataFrame, prices: PriceBook, zones: dict[str, str]
) -> dict[tuple, tuple]:
    q = Decimal(1).scaleb(-2)
    by_key: dict[tuple, list] = defaultdict(list)
    energy: dict[tuple, float] = defaultdict(float)
    for r in ledger.to_dict("records"):
        hour = r["hour"].to_pydatetime()
        tz = ZoneInfo(zones.get(r["customer"], "UTC"))
        local = hour.astimezone(tz)
        period = dt.datetime(local.year, local.month, 1, tzinfo=tz).astimezone(UTC)
        term = r.get("pricing_term")
        term = "on-demand" if term is None or pd.isna(term) else term
        fits = [
            p for p in prices.prices
            if p.sku == r["sku"] and p.site == r["site"] and p.customer in (None, r["customer"])
            and p.sku_revision in (None, r["sku_revision"]) and p.hourly_rate(term) is not None
            and p.valid_from <= hour and (p.valid_to is None or hour < p.valid_to)
        ]  # fmt: skip
        price = min(fits, key=lambda p: (p.customer is None, p.sku_revision is None))
        if r["reserved_s"] > 0:
            by_key[(r["reservation_id"], r["host"])].append(
                (hour, r["reserved_s"], price, period, term)
            )
        energy[(r["customer"], period, r["site"])] += r["facility_energy_wh"]
    units: dict[tuple, int] = defaultdict(int)
    for (res, _host), hours in by_key.items():
        hours.sort(key=lambda h: h[0])
        run: list = []
        for h in [*hours, None]:
            if run and (
                h is None or h[0] - run[-1][0] != dt.timedelta(hours=1) or h[2:] != run[-1][2:]
            ):
                unit_s = {"second": 1, "minute": 60, "hour": 3600}[run[0][2].unit]
                seconds = sum(x[1] for x in run)
                units[(res, run[0][2].id, run[0][3], run[0][4])] += max(
                    1, math.ceil((seconds - 1e-3) / unit_s)
                )
                run = []
            if h is not None:
                run.append(h)
    out = {}
    for (res, price_id, period, term), n in units.items():
        p = next(p for p in prices.prices if p.id == price_id)
        per_hour = Decimal(3600 // {"second": 1, "minute": 60, "hour": 3600}[p.unit])
        rate_h = p.hourly_rate(term)
        assert rate_h is not None
        out[(res, price_id, period)] = (n, (n * rate_h / per_hour).quantize(q, ROUND_HALF_EVEN))
    for (customer, period, site), wh in energy.items():
        kwh = Decimal(round(wh)) / 1000
        out[(customer, site, period)] = (kwh, (kwh * Decimal("0.25")).quantize(q, ROUND_HALF_EVEN))  # type: ignore[assignment]
    return out


def _as_reference(lines: list[RatedLine]) -> dict[tuple, tuple]:
    out = {}
    for ln in lines:
        if ln.kind == "machine_time":
            out[(ln.reservation_id, ln.price_id, ln.period_start)] = (ln.quantity, ln.amount)
        else:
            out[(ln.customer, ln.site, ln.period_start)] = (ln.quantity, ln.amount)
    return out


_rows = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2", "r3", "r4"]),
        st.sampled_from(["h1", "h2"]),
        st.integers(0, 7),  # hours from 2026-11-30T18:00Z: crosses CHANGE and the month end
        st.one_of(st.just(3600.0), st.floats(0.0, 3600.0)),
        st.sampled_from([1, 2]),
        st.floats(0.0, 5000.0),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda t: (t[0], t[1], t[2]),
)


@settings(max_examples=40, deadline=None)
@given(
    rows=_rows,
    unit=st.sampled_from(["second", "minute", "hour"]),
    term=st.sampled_from(["on-demand", "reserved-1y", None]),
    tz=st.booleans(),
    seed=st.randoms(),
)
def test_rating_equals_the_per_row_reference_and_ignores_row_order(
    rows: list[tuple], unit: str, term: str | None, tz: bool, seed: Any
) -> None:
    base = pd.Timestamp("2026-11-30T18:00Z")
    records = []
    for res, host, h, seconds, rev, wh in rows:
        # One reservation is one SKU revision and term; the host varies.
        records.append(row(res, f"{res}-{host}", str(base + pd.Timedelta(hours=h)), seconds,
                           sku_revision=rev if res == "r2" else 1,
                           pricing_term=term if res == "r3" else None,
                           facility_energy_wh=wh))  # fmt: skip
    ledger = frame(records)
    zones = {"bob": "America/New_York"} if tz else {}
    prices = book(unit)
    lines = rate(ledger, prices, customer_timezones=zones)
    assert _as_reference(lines) == _reference(ledger, prices, zones)
    shuffled = ledger.sample(frac=1, random_state=seed.randint(0, 2**31))
    assert rate(shuffled, prices, customer_timezones=zones) == lines
    assert len({ln.line_id for ln in lines}) == len(lines)


def test_a_ledger_of_idle_rows_rates_to_nothing() -> None:
    ledger = frame([row(None, "h9", "2026-11-10T10:00", 0), row("", "h9", "2026-11-10T11:00", 0)])
    assert rate(ledger, book()) == []
    assert rate(ledger.iloc[:0], book()) == []
