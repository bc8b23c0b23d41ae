"""The store on SQLite and PostgreSQL: imports are atomic and idempotent, revisions are kept."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path

import pytest
from sqlalchemy import func, literal, select

from marketplace.db import UTCDateTime, epoch_ceil, epoch_floor
from marketplace.documents import load_listing
from marketplace.errors import InvalidInput, NotFound
from marketplace.inventory import Host, Inventory
from marketplace.query import SkuQuery
from marketplace.schema import HostRow, SkuRow
from marketplace.store import Store
from tests.conftest import EXAMPLES


def counts(store: Store) -> tuple[int, int]:
    with store.reading() as s:
        return s.scalar(select(func.count()).select_from(SkuRow)) or 0, s.scalar(
            select(func.count()).select_from(HostRow)
        ) or 0


def test_examples_import_and_reimport_changes_nothing(example_store: Store) -> None:
    assert counts(example_store) == (5, 18)
    again = example_store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    assert not again.changed and again.unchanged == 5
    inv = example_store.import_inventory(EXAMPLES / "inventory" / "three-sites.yaml")
    assert not inv.changed
    assert counts(example_store) == (5, 18)


def test_changed_sku_becomes_new_revision_old_one_stays(example_store: Store) -> None:
    listing = load_listing(EXAMPLES / "listings" / "acme-jpu.yaml")
    changed = listing.model_copy(deep=True)
    changed.skus[0].memory = 1536 * 10**9
    report = example_store.import_listing(changed)
    assert report.updated == ["jpu1.8x.large@2"]
    assert example_store.sku("jpu1.8x.large").memory == 1536 * 10**9
    assert example_store.sku("jpu1.8x.large", revision=1).memory == 768 * 10**9
    assert len(example_store.skus(SkuQuery(slug="jpu1.8x.large"), all_revisions=True)) == 2
    # Hosts racked before the change keep the revision they were bought as.
    assert {h.sku for h in example_store.hosts(sku="jpu1.8x.large")} == {"jpu1.8x.large@1"}


def test_bad_sku_stores_nothing(store: Store) -> None:
    good = load_listing(EXAMPLES / "listings" / "x86-1u.yaml")
    data = good.model_dump(mode="json")
    data["skus"].append({**data["skus"][0], "slug": "other.one", "memory": "lots"})
    with pytest.raises(InvalidInput):
        store.import_listing(data)
    assert counts(store) == (0, 0)


def test_slug_of_another_vendor_is_refused(example_store: Store) -> None:
    data = load_listing(EXAMPLES / "listings" / "x86-1u.yaml").model_dump(mode="json")
    data["vendor"] = "impostor"
    for sku in data["skus"]:
        sku["vendor"] = "impostor"
    with pytest.raises(InvalidInput, match="belongs to vendor 'packetworks'"):
        example_store.import_listing(data)


def test_host_update_and_unknown_references(example_store: Store) -> None:
    moved = Inventory(hosts=[Host(id="sjc1-r02-u01", sku="c3.small.x86", site="sjc2")])
    report = example_store.import_inventory(moved)
    assert report.updated == ["sjc1-r02-u01"]
    assert example_store.host("sjc1-r02-u01").site == "sjc2"
    bad = Inventory(
        hosts=[
            Host(id="new-1", sku="nope.sku", site="sjc1"),
            Host(id="new-2", sku="c3.small.x86", site="atlantis1"),
            Host(id="new-3", sku="c3.small.x86@9", site="sjc1"),
        ]
    )
    with pytest.raises(InvalidInput) as info:
        example_store.import_inventory(bad)
    paths = [p.path for p in info.value.problems]
    assert paths == ["hosts[0].sku", "hosts[1].site", "hosts[2].sku"]
    assert "known sites: fra1, sjc1, sjc2" in str(info.value)
    with pytest.raises(NotFound):
        example_store.host("new-1")


def test_capability_queries(example_store: Store) -> None:
    def slugs(**kw: object) -> list[str]:
        return [s.slug for s in example_store.skus(SkuQuery(**kw))]

    assert slugs(arch="aarch64") == ["c3.large.arm64"]
    assert slugs(accelerator_kind="gpu") == ["g4.8x.h100"]
    assert slugs(min_accelerators=8) == ["g4.8x.h100", "jpu1.8x.large"]
    assert slugs(min_accelerator_memory=40 * 10**9) == ["g4.8x.h100"]
    assert slugs(min_cores=64) == ["c3.large.arm64", "g4.8x.h100", "jpu1.8x.large"]
    assert slugs(traits=["rdma"]) == ["g4.8x.h100", "jpu1.8x.large"]
    assert slugs(site="sjc2") == ["c3.large.arm64", "m3.large.x86"]
    from decimal import Decimal

    assert slugs(max_hourly_price=Decimal("3.20")) == [
        "c3.large.arm64",
        "c3.small.x86",
        "m3.large.x86",
    ]
    # jpu1.8x.large lists 24.00 but 26.00 at sjc1
    assert "jpu1.8x.large" in slugs(max_hourly_price=Decimal("25"))
    assert slugs(max_hourly_price=Decimal("25"), site="sjc1") == ["c3.small.x86"]
    frame = example_store.skus(SkuQuery(accelerator_kind="asic")).to_frame()
    assert list(frame["slug"]) == ["jpu1.8x.large"]
    assert frame.loc[0, "accelerator_count"] == 8


def test_sites_and_hosts(example_store: Store) -> None:
    sites = {s.code: s for s in example_store.sites()}
    assert set(sites) == {"sjc1", "sjc2", "fra1"}
    assert (sites["fra1"].metro, sites["fra1"].region) == ("fr", "eu")
    assert len({s.metro for s in sites.values()}) == 2
    frame = example_store.hosts_frame(site="sjc1")
    assert len(frame) == 7 and "bmc_password" not in frame.columns
    host = example_store.host("sjc1-r01-u01")
    assert "example" not in repr(host)
    assert host.bmc is not None and host.bmc.password.get_secret_value() == "example"


def test_failed_import_leaves_sqlite_file_byte_identical(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sqlite_store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    sqlite_store.dispose()  # checkpoint the write-ahead log into the file before hashing it
    db_file = tmp_path / "hwmarket.db"
    before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "vendor: packetworks\nskus:\n  - {slug: c3.small.x86, name: x, arch: x86_64, cpus: [{model: a, cores: 4}], memory: 1GB}\n  - {slug: b, name: y, arch: vax, cpus: [], memory: 1GB}\n"
    )
    with pytest.raises(InvalidInput):
        sqlite_store.import_listings([bad])
    # a valid file whose store-side check fails (foreign vendor) is rolled back too
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(
        "vendor: intruder\nskus:\n  - {slug: new.one, name: x, arch: x86_64, cpus: [{model: a, cores: 4}], memory: 1GB}\n  - {slug: c3.small.x86, name: x, arch: x86_64, cpus: [{model: a, cores: 4}], memory: 1GB}\n"
    )
    with pytest.raises(InvalidInput):
        sqlite_store.import_listings([foreign])
    sqlite_store.dispose()
    assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2031, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(2031, 1, 1, 0, 0, 1, 500, tzinfo=dt.UTC),
        dt.datetime(2031, 1, 1, 0, 0, 1, 999_999, tzinfo=dt.UTC),  # no carry into the next second
        dt.datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 6, 30, 12, 0, 0, 250_000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
)
def test_epoch_seconds_computed_by_the_database_round_as_python_does(
    store: Store, when: dt.datetime
) -> None:
    value = literal(when, UTCDateTime())
    with store.reading() as s:
        down, up = s.execute(select(epoch_floor(value), epoch_ceil(value))).one()
    assert (down, up) == (math.floor(when.timestamp()), math.ceil(when.timestamp()))
    assert type(down) is int and type(up) is int
