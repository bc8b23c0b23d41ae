"""The price book: strict loading from YAML/TOML/JSON with every problem named, and its rules."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.prices import (
    EnergyTariff,
    EnergyTier,
    MachinePrice,
    PriceBook,
    load_price_book,
    parse_price_book,
)
from marketplace.errors import InvalidInput

YAML_BOOK = """\
currency: usd
prices:
  - id: c3-ams-2026
    sku: c3-small
    site: ams1
    valid_from: 2026-01-01
    valid_to: 2026-07-01T00:00:00Z
    on_demand_hourly: 0.50
    reserved_hourly: {reserved-1y: 0.35, reserved-3y: 0.25}
    unit: hour
    minimum_charge: 0.10
  - id: c3-ams-acme
    sku: c3-small
    sku_revision: 2
    site: ams1
    customer: acme
    valid_from: 2026-01-01T00:00:00+02:00
    on_demand_hourly: "0.40"
    unit: second
energy:
  - id: ams-energy
    site: ams1
    valid_from: 2026-01-01
    tiers:
      - {up_to_kwh: 1000, per_kwh: 0.30}
      - {per_kwh: 0.20}
    tier_mode: volume
"""

TOML_BOOK = """\
currency = "usd"

[[prices]]
id = "c3-ams-2026"
sku = "c3-small"
site = "ams1"
valid_from = 2026-01-01
valid_to = 2026-07-01T00:00:00Z
on_demand_hourly = "0.50"
reserved_hourly = { reserved-1y = "0.35", reserved-3y = "0.25" }
unit = "hour"
minimum_charge = "0.10"

[[prices]]
id = "c3-ams-acme"
sku = "c3-small"
sku_revision = 2
site = "ams1"
customer = "acme"
valid_from = 2026-01-01T00:00:00+02:00
on_demand_hourly = "0.40"
unit = "second"

[[energy]]
id = "ams-energy"
site = "ams1"
valid_from = 2026-01-01
tier_mode = "volume"
tiers = [{ up_to_kwh = 1000, per_kwh = "0.30" }, { per_kwh = "0.20" }]
"""


def _json_book() -> str:
    return json.dumps(
        {
            "currency": "usd",
            "prices": [
                {
                    "id": "c3-ams-2026",
                    "sku": "c3-small",
                    "site": "ams1",
                    "valid_from": "2026-01-01T00:00:00Z",
                    "valid_to": "2026-07-01T00:00:00Z",
                    "on_demand_hourly": 0.50,
                    "reserved_hourly": {"reserved-1y": 0.35, "reserved-3y": 0.25},
                    "unit": "hour",
                    "minimum_charge": 0.10,
                },
                {
                    "id": "c3-ams-acme",
                    "sku": "c3-small",
                    "sku_revision": 2,
                    "site": "ams1",
                    "customer": "acme",
                    "valid_from": "2026-01-01T00:00:00+02:00",
                    "on_demand_hourly": "0.40",
                    "unit": "second",
                },
            ],
            "energy": [
                {
                    "id": "ams-energy",
                    "site": "ams1",
                    "valid_from": "2026-01-01",
                    "tiers": [{"up_to_kwh": 1000, "per_kwh": 0.30}, {"per_kwh": 0.20}],
                    "tier_mode": "volume",
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [("book.yaml", YAML_BOOK), ("book.toml", TOML_BOOK), ("book.json", _json_book())],
)
def test_the_three_formats_load_the_same_book(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    book = load_price_book(path)
    assert book.currency == "USD"
    first, custom = book.prices
    assert first.on_demand_hourly == Decimal("0.50")
    assert first.hourly_rate("reserved-1y") == Decimal("0.35")
    assert first.hourly_rate("on-demand") == Decimal("0.50")
    assert first.valid_from == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert first.minimum_charge == Decimal("0.10")
    assert custom.valid_from == dt.datetime(2025, 12, 31, 22, tzinfo=dt.UTC)
    assert custom.hourly_rate("reserved-3y") is None
    assert book.energy[0].tiers[0].up_to_kwh == Decimal(1000)
    assert book == load_price_book(_write(tmp_path, "again.yaml", YAML_BOOK))


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_every_problem_is_reported_at_once_with_file_path_value_and_what_is_accepted(
    tmp_path: Path,
) -> None:
    bad = YAML_BOOK.replace("unit: hour", "unit: day").replace(
        "    minimum_charge: 0.10", "    minimum_charge: -1\n    colour: red"
    )
    bad = bad.replace("sku_revision: 2", "sku_revision: two")
    path = _write(tmp_path, "prices.yaml", bad)
    with pytest.raises(InvalidInput) as caught:
        load_price_book(path)
    problems = {p.path: p for p in caught.value.problems}
    assert set(problems) == {
        "prices[0].unit",
        "prices[0].minimum_charge",
        "prices[0].colour",
        "prices[1].sku_revision",
    }
    assert all(p.source == str(path) for p in problems.values())
    assert problems["prices[0].unit"].value == "day"
    assert "'second', 'minute' or 'hour'" in problems["prices[0].unit"].message
    assert problems["prices[0].colour"].value == "red"
    assert "accepted keys: id, sku, sku_revision" in problems["prices[0].colour"].message
    assert problems["prices[0].minimum_charge"].value == -1
    assert "greater than or equal to 0" in problems["prices[0].minimum_charge"].message
    # YAML problems also name the line of the key (or of the entry that lacks one).
    lines = bad.splitlines()
    for where, problem in problems.items():
        assert problem.line is not None
        assert lines[problem.line - 1].strip().startswith(where.rsplit(".", 1)[1])
    text = str(caught.value)
    assert text.startswith(f"4 problems in {path}")
    assert "prices[1].sku_revision" in text


def test_a_missing_key_and_an_unknown_top_level_key_are_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_price_book("prices: []\ndiscounts: []\n", "yaml", "top.yaml")
    problems = {p.path: p.message for p in caught.value.problems}
    assert problems["currency"] == "required key is missing"
    assert problems["discounts"].startswith("unknown key 'discounts'; accepted keys: currency, prices, energy")


@pytest.mark.parametrize(
    ("fmt", "text", "line"),
    [
        ("yaml", "currency: USD\nprices:\n  - id: a\n    sku: b: c\n", 4),
        ("toml", 'currency = "USD"\n\n[[prices]]\nid = \n', 4),
        ("json", '{\n  "currency": "USD",\n  "prices": [,]\n}', 3),
    ],
)
def test_syntax_errors_name_the_line(fmt: str, text: str, line: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_price_book(text, fmt, f"broken.{fmt}")  # type: ignore[arg-type]
    (problem,) = caught.value.problems
    assert problem.line == line
    assert problem.source == f"broken.{fmt}"
    assert f"broken.{fmt}:{line}" in str(caught.value)


def test_overlapping_prices_and_duplicate_ids_are_errors_naming_both_entries() -> None:
    text = YAML_BOOK.replace("    valid_to: 2026-07-01T00:00:00Z\n", "").replace(
        "id: c3-ams-acme", "id: c3-ams-2026"
    )
    text += """\
  - id: ams-energy-2
    site: ams1
    valid_from: 2026-03-01
    per_kwh: 0.25
"""
    with pytest.raises(InvalidInput) as caught:
        parse_price_book(text, "yaml", "o.yaml")
    messages = [(p.path, p.message) for p in caught.value.problems]
    lines = {p.path: p.line or 0 for p in caught.value.problems}
    assert text.splitlines()[lines["prices[1].id"] - 1].strip() == "- id: c3-ams-2026"
    assert text.splitlines()[lines["energy[1]"] - 1].strip() == "- id: ams-energy-2"
    assert ("prices[1].id", "duplicate id, also at prices[0]") in messages
    overlap = [m for m in messages if m[0] == "energy[1]"]
    assert overlap and "overlaps energy[0] (ams-energy)" in overlap[0][1]
    # Different specificity (a customer's own rate over the list price) is not an overlap.
    assert not [m for m in messages if m[0] == "prices[1]"]


@pytest.mark.parametrize(
    ("valid_from", "message"),
    [
        ("2026-01-01T00:00:00", "without a time zone"),
        ("2026-01-01T00:30:00Z", "not a whole UTC hour"),
    ],
)
def test_validity_must_be_aware_whole_hours(valid_from: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MachinePrice(id="p", sku="s", site="x", valid_from=valid_from, on_demand_hourly=Decimal(1))


def test_a_price_needs_a_rate_and_an_end_after_its_start() -> None:
    with pytest.raises(ValidationError, match="on_demand_hourly or reserved_hourly"):
        MachinePrice(id="p", sku="s", site="x", valid_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ValidationError, match="valid_to must be after valid_from"):
        MachinePrice(
            id="p",
            sku="s",
            site="x",
            valid_from=dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
            valid_to=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            on_demand_hourly=Decimal(1),
        )


def test_energy_tiers_must_be_well_formed() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValidationError, match="exactly one of per_kwh or tiers"):
        EnergyTariff(id="e", site="x", valid_from=start)
    with pytest.raises(ValidationError, match="only the last tier"):
        EnergyTariff(
            id="e",
            site="x",
            valid_from=start,
            tiers=(EnergyTier(up_to_kwh=Decimal(10), per_kwh=Decimal(1)),),
        )
    with pytest.raises(ValidationError, match="must increase"):
        EnergyTariff(
            id="e",
            site="x",
            valid_from=start,
            tiers=(
                EnergyTier(up_to_kwh=Decimal(10), per_kwh=Decimal(1)),
                EnergyTier(up_to_kwh=Decimal(5), per_kwh=Decimal(1)),
                EnergyTier(per_kwh=Decimal(1)),
            ),
        )


def test_unknown_currency_and_wrong_file_type() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_price_book("currency: ZZZ\n", "yaml", "c.yaml")
    assert caught.value.problems[0].path == "currency"
    assert caught.value.problems[0].value == "ZZZ"
    with pytest.raises(InvalidInput, match=r"accepted: \.yaml, \.yml, \.toml, \.json"):
        load_price_book("prices.ini")


def test_a_book_built_in_python_is_frozen_and_checked() -> None:
    book = PriceBook(
        currency="jpy",
        prices=[
            MachinePrice(
                id="p",
                sku="gpu-8x",
                site="nrt1",
                valid_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                on_demand_hourly=Decimal(1200),
            )
        ],
    )
    assert book.currency == "JPY"
    with pytest.raises(ValidationError):
        book.prices[0].on_demand_hourly = Decimal(1)  # type: ignore[misc]
