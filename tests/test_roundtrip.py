"""Listing -> store -> export -> listing gives the same SKUs, and re-importing changes nothing.

Hypothesis writes listings as vendors do: varied architectures (aliases too), CPUs, drives, NICs,
accelerators, power envelopes, traits and prices with site overrides; sizes as SI or IEC strings
("3.84TB", "512GiB") or integers; files in YAML, TOML or JSON. Each example gets a fresh SQLite
file; one PostgreSQL variant runs fewer examples.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from marketplace.catalog import Listing
from marketplace.cli import app
from marketplace.documents import load_listing
from marketplace.store import Store
from tests.conftest import _empty_all_tables
from tests.test_malformed import store_snapshot

SI = [("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12), ("P", 10**15)]
IEC = [("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40), ("Pi", 2**50)]
ARCHES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "other:loongarch64": "other:loongarch64",
}

WORDS = (
    st.text(
        alphabet=st.sampled_from(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -+/.,()\u00e9\u00b5\u2013\u00d7"
        ),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
SLUG_PART = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
CODE = st.from_regex(r"[a-z]{2,4}[0-9]{1,2}", fullmatch=True)
TRAIT = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True)


@st.composite
def slugs(draw: st.DrawFn) -> str:
    parts = draw(st.lists(SLUG_PART, min_size=1, max_size=4))
    seps = draw(st.lists(st.sampled_from(".-"), min_size=len(parts) - 1, max_size=len(parts) - 1))
    return parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))


@st.composite
def amounts(
    draw: st.DrawFn, lo: int, hi: int, units: list[tuple[str, int]], suffixes: list[str]
) -> tuple[object, int]:
    """A quantity between ``lo`` and ``hi`` written with a unit, or as an integer: (written, exact)."""
    if draw(st.integers(0, 4)) == 0:
        n = draw(st.integers(lo, hi))
        return n, n
    usable = [(p, f) for p, f in units if -(-lo // f) <= hi // f]
    prefix, factor = draw(st.sampled_from(usable))
    whole = draw(st.integers(-(-lo // factor), hi // factor))
    number = Decimal(whole)
    places = draw(st.integers(0, 2))
    if places:
        trial = number + Decimal(draw(st.integers(1, 10**places - 1))) / 10**places
        if lo <= trial * factor <= hi and (trial * factor) == (trial * factor).to_integral_value():
            number = trial
    space = draw(st.sampled_from(["", " "]))
    return f"{number:f}{space}{prefix}{draw(st.sampled_from(suffixes))}", int(number * factor)


def sizes(lo: int, hi: int) -> st.SearchStrategy[tuple[object, int]]:
    return amounts(lo, hi, SI + IEC, ["B"])


SPEEDS = amounts(
    10**6, 16 * 10**11, [("M", 10**6), ("G", 10**9), ("T", 10**12)], ["bps", "bit/s", "b/s"]
)
MONEY = st.decimals(
    min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False
).map(str)


@st.composite
def cpus(draw: st.DrawFn) -> dict[str, Any]:
    cores = draw(st.integers(1, 128))
    cpu: dict[str, Any] = {"model": draw(WORDS), "sockets": draw(st.integers(1, 4)), "cores": cores}
    if draw(st.booleans()):
        cpu["threads"] = draw(st.integers(cores, min(4 * cores, 4096)))
    if draw(st.booleans()):
        cpu["base_ghz"] = str(draw(st.decimals(min_value="0.5", max_value="5", places=2)))
    return cpu


@st.composite
def site_prices(draw: st.DrawFn) -> dict[str, Any]:
    price: dict[str, Any] = {}
    if draw(st.booleans()):
        price["on_demand_hourly"] = draw(MONEY)
    terms = draw(st.lists(st.sampled_from(["1y", "3y"]), unique=True))
    if terms:
        price["reserved_hourly"] = {t: draw(MONEY) for t in terms}
    return price


@st.composite
def skus(draw: st.DrawFn, slug: str, vendor: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A SKU as written in a listing, and the exact values the store must give back."""
    arch = draw(st.sampled_from(sorted(ARCHES)))
    memory, memory_bytes = draw(sizes(2**20, 64 * 2**40))
    sku: dict[str, Any] = {
        "slug": slug,
        "name": draw(WORDS),
        "arch": arch,
        "cpus": draw(st.lists(cpus(), min_size=1, max_size=3)),
        "memory": memory,
    }
    want: dict[str, Any] = {"arch": ARCHES[arch], "memory": memory_bytes}
    if draw(st.booleans()):
        sku["vendor"] = vendor
    if draw(st.booleans()):
        sku["description"] = draw(WORDS)
    drives = []
    for size, exact in draw(st.lists(sizes(10**9, 10**15), max_size=3)):
        drives.append(
            {
                "count": draw(st.integers(1, 24)),
                "size": size,
                "type": draw(st.sampled_from(["nvme", "ssd", "hdd"])),
                "role": draw(st.sampled_from(["boot", "storage", "cache"])),
            }
        )
        want.setdefault("drive_sizes", []).append(exact)
    nics = []
    for speed, exact in draw(st.lists(SPEEDS, max_size=3)):
        nics.append({"count": draw(st.integers(1, 8)), "speed": speed})
        want.setdefault("nic_speeds", []).append(exact)
    accelerators = []
    for _ in range(draw(st.integers(0, 2))):
        acc: dict[str, Any] = {
            "count": draw(st.integers(1, 16)),
            "kind": draw(st.sampled_from(["gpu", "tpu", "fpga", "asic", "other"])),
            "vendor": draw(WORDS),
            "model": draw(WORDS),
        }
        if draw(st.booleans()):
            acc["memory"], exact = draw(sizes(2**20, 16 * 2**40))
            want.setdefault("accelerator_memory", []).append(exact)
        if draw(st.booleans()):
            acc["tdp_watts"] = draw(st.integers(1, 10_000))
        if draw(st.booleans()):
            acc["interconnect"] = draw(WORDS)
        accelerators.append(acc)
    for key, items in (("drives", drives), ("nics", nics), ("accelerators", accelerators)):
        if items or draw(st.booleans()):
            sku[key] = items
    if draw(st.booleans()):
        idle = draw(st.integers(1, 50_000))
        sku["power"] = {"idle_watts": idle, "max_watts": draw(st.integers(idle, 100_000))}
    traits = draw(st.lists(TRAIT, max_size=5))
    if traits:
        sku["traits"] = traits
        want["traits"] = sorted(set(traits))
    if draw(st.booleans()):
        pricing: dict[str, Any] = {"on_demand_hourly": draw(MONEY)}
        if draw(st.booleans()):
            pricing["currency"] = draw(st.sampled_from(["USD", "EUR", "JPY"]))
        terms = draw(st.lists(st.sampled_from(["1y", "3y"]), unique=True))
        if terms:
            pricing["reserved_hourly"] = {t: draw(MONEY) for t in terms}
        sites = draw(st.dictionaries(CODE, site_prices(), max_size=3))
        if sites:
            pricing["sites"] = sites
        sku["pricing"] = pricing
    return sku, want


@st.composite
def listings(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """One or two vendors' listings with distinct slugs, and the exact values per slug."""
    vendors = draw(st.lists(WORDS, min_size=1, max_size=2, unique=True))
    all_slugs = draw(st.lists(slugs(), min_size=len(vendors), max_size=4, unique=True))
    files: list[dict[str, Any]] = []
    wants: dict[str, dict[str, Any]] = {}
    for i, vendor in enumerate(vendors):
        mine = all_slugs[i :: len(vendors)]
        entries = []
        for slug in mine:
            sku, want = draw(skus(slug, vendor))
            entries.append(sku)
            wants[slug] = want | {"vendor": vendor}
        files.append({"vendor": vendor, "skus": entries})
    return files, wants


def write_listing(data: dict[str, Any], folder: Path, name: str, fmt: str) -> Path:
    path = folder / f"{name}.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    elif fmt == "toml":
        path.write_text(tomli_w.dumps(without_nulls(data)), encoding="utf-8")
    else:
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def without_nulls(value: Any) -> Any:
    """TOML has no null: an exported ``"power": null`` is written by leaving the key out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def check_exact_values(exported: list[dict[str, Any]], wants: dict[str, dict[str, Any]]) -> None:
    """The store kept what the vendor wrote: bytes, bits per second, names normalised."""
    assert sorted(s["slug"] for s in exported) == sorted(wants)
    for sku in exported:
        want = wants[sku["slug"]]
        assert sku["revision"] == 1
        assert sku["vendor"] == want["vendor"]
        assert sku["arch"] == want["arch"]
        assert sku["memory"] == want["memory"]
        assert [d["size"] for d in sku["drives"]] == want.get("drive_sizes", [])
        assert [n["speed"] for n in sku["nics"]] == want.get("nic_speeds", [])
        memories = [a["memory"] for a in sku["accelerators"] if a["memory"] is not None]
        assert memories == want.get("accelerator_memory", [])
        assert sku["traits"] == want.get("traits", [])
        if sku["pricing"] is not None:
            assert isinstance(sku["pricing"]["on_demand_hourly"], str)


def canonical_of(files: list[Path]) -> dict[str, dict[str, Any]]:
    return {s.slug: s.canonical() for f in files for s in load_listing(f).skus}


def without_revision(exported: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["slug"]: {k: v for k, v in s.items() if k != "revision"} for s in exported}


def as_listings(exported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export grouped back into one listing per vendor."""
    by_vendor: dict[str, list[dict[str, Any]]] = {}
    for sku in exported:
        by_vendor.setdefault(sku["vendor"], []).append(sku)
    return [{"vendor": v, "skus": s} for v, s in by_vendor.items()]


@contextmanager
def fresh_folder() -> Iterator[Path]:
    # Function-scoped fixtures are not reset between Hypothesis examples: make one per example.
    # A memory-backed folder where there is one: SQLite's fsyncs dominate the run time otherwise.
    where = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="hwmarket-roundtrip-", dir=where) as tmp:
        yield Path(tmp)


ROUNDTRIP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = st.sampled_from(["yaml", "toml", "json"])


def roundtrip_through_store(store: Store, folder: Path, case: Any, fmt: str) -> None:
    files_data, wants = case
    files = [write_listing(d, folder, f"listing{i}", fmt) for i, d in enumerate(files_data)]
    report = store.import_listings(files)
    assert sorted(report.added) == sorted(f"{slug}@1" for slug in wants)

    exported = [s.model_dump(mode="json") for s in store.skus()]
    check_exact_values(exported, wants)
    assert without_revision(exported) == canonical_of(files)
    # The export is itself a valid listing with the same content.
    again = [Listing.model_validate(d) for d in as_listings(exported)]
    assert {s.slug: s.canonical() for lst in again for s in lst.skus} == canonical_of(files)

    before = store_snapshot(store)
    for data in as_listings(exported):
        report = store.import_listing(data)
        assert not report.changed and report.unchanged == len(data["skus"])
    assert store_snapshot(store) == before


@ROUNDTRIP
@given(listings(), FORMATS)
def test_listing_store_export_roundtrip_sqlite(case: Any, fmt: str) -> None:
    with fresh_folder() as folder:
        store = Store(f"sqlite:///{folder / 'hwmarket.db'}")
        try:
            roundtrip_through_store(store, folder, case, fmt)
        finally:
            store.dispose()


@pytest.mark.postgres
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listings(), FORMATS)
def test_listing_store_export_roundtrip_postgresql(_pg_store: Store, case: Any, fmt: str) -> None:
    _empty_all_tables(_pg_store)
    with fresh_folder() as folder:
        roundtrip_through_store(_pg_store, folder, case, fmt)


# Each example starts the store four times through the CLI: fewer examples keep the run short.
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listings(), FORMATS)
def test_listing_cli_export_roundtrip(case: Any, fmt: str) -> None:
    files_data, wants = case
    runner = CliRunner()
    with fresh_folder() as folder:
        db = ["--db", f"sqlite:///{folder / 'hwmarket.db'}"]
        files = [write_listing(d, folder, f"listing{i}", fmt) for i, d in enumerate(files_data)]
        result = runner.invoke(app, [*db, "sku", "import", *map(str, files)])
        assert result.exit_code == 0, result.output
        assert f"{len(wants)} new SKUs" in result.stderr

        listed = runner.invoke(app, [*db, "sku", "list", "--format", "json"])
        assert listed.exit_code == 0, listed.output
        exported = json.loads(listed.stdout)
        check_exact_values(exported, wants)
        assert without_revision(exported) == canonical_of(files)

        exports = []
        for i, data in enumerate(as_listings(exported)):
            exports.append(write_listing(data, folder, f"export{i}", fmt))
        again = runner.invoke(app, [*db, "sku", "import", *map(str, exports)])
        assert again.exit_code == 0, again.output
        assert f"0 new SKUs, 0 new revisions, {len(wants)} unchanged" in again.stderr
        assert runner.invoke(app, [*db, "sku", "list", "--format", "json"]).stdout == listed.stdout
