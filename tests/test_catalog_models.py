"""The catalogue's and inventory's values: normalisation, validation details, and secrets."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from marketplace.catalog import Cpu, Listing, Pricing, Sku
from marketplace.documents import load_listing, read_document, validate_data
from marketplace.errors import InvalidInput
from marketplace.inventory import BmcEndpoint, Host, Inventory, Site
from marketplace.store import Store
from tests.conftest import EXAMPLES


def sku(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "slug": "t1.small",
        "name": "Test 1",
        "arch": "x86_64",
        "cpus": [{"model": "Test CPU", "cores": 8}],
        "memory": "32GB",
    }
    return base | changes


# -- architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "arch"),
    [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("AMD64", "x86_64"),
        ("x64", "x86_64"),
        ("arm64", "aarch64"),
        (" ARM64 ", "aarch64"),
        ("aarch64", "aarch64"),
        ("riscv", "riscv64"),
        ("ppc64le", "ppc64le"),
        ("s390x", "s390x"),
        ("other:loongarch64", "other:loongarch64"),
        ("Other:LoongArch64", "other:loongarch64"),
        ("other:e2k-v6", "other:e2k-v6"),
    ],
)
def test_arch_names_and_aliases(written: str, arch: str) -> None:
    assert Sku.model_validate(sku(arch=written)).arch == arch


@pytest.mark.parametrize(
    "bad", ["sparc", "i386", "arm", "other:", "other:a b", "other:x_y", "", 64]
)
def test_unknown_arch_is_refused_with_the_accepted_names(bad: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_data(Sku, sku(arch=bad), "t.yaml")
    [problem] = caught.value.problems
    assert problem.path == "arch"
    assert problem.value == bad
    assert "x86_64" in problem.message or "architecture" in problem.message


def test_arch_alias_gives_the_same_content_hash() -> None:
    a = Sku.model_validate(sku(arch="amd64"))
    b = Sku.model_validate(sku(arch="x86_64"))
    assert a.canonical() == b.canonical()
    assert a.content_hash() == b.content_hash()


# -- traits ------------------------------------------------------------------------------------


def test_traits_are_lowercased_stripped_sorted_and_unique() -> None:
    s = Sku.model_validate(sku(traits=["RDMA", " nvlink ", "rdma", "Infiniband", "sgx"]))
    assert s.traits == ["infiniband", "nvlink", "rdma", "sgx"]


@pytest.mark.parametrize("bad", ["has space", "-leading-dash", "ümlaut", "x" * 41, "", "a/b"])
def test_bad_traits_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_data(Sku, sku(traits=["ok", bad]), "t.yaml")
    assert [p.path for p in caught.value.problems] == ["traits[1]"]


TRAIT = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)


@given(st.lists(st.tuples(TRAIT, st.booleans(), st.sampled_from(["", " ", "  "])), max_size=20))
def test_trait_normalisation_is_canonical(raw: list[tuple[str, bool, str]]) -> None:
    written = [(t.upper() if up else t) + pad for t, up, pad in raw]
    traits = Sku.model_validate(sku(traits=written)).traits
    assert traits == sorted({t for t, _, _ in raw})
    # Normalising again changes nothing, so re-importing an export keeps its content hash.
    assert Sku.model_validate(sku(traits=traits)).traits == traits


# -- sizes, derived figures, hashes ---------------------------------------------------------------


def test_size_forms_of_one_value_are_one_sku() -> None:
    forms = ["512GiB", "549755813888B", 549_755_813_888, "0.5TiB", "524288MiB"]
    hashes = {Sku.model_validate(sku(memory=m)).content_hash() for m in forms}
    assert len(hashes) == 1
    assert Sku.model_validate(sku(memory="512GB")).content_hash() not in hashes


def test_derived_cores_threads_and_accelerators() -> None:
    s = Sku.model_validate(
        sku(
            cpus=[
                {"model": "A", "sockets": 2, "cores": 32, "threads": 64},
                {"model": "B", "cores": 4},
            ],
            accelerators=[
                {"count": 4, "kind": "gpu", "vendor": "v", "model": "g1", "memory": "24GB"},
                {"count": 2, "kind": "fpga", "vendor": "v", "model": "f1", "memory": "80GiB"},
            ],
        )
    )
    assert (s.cores, s.threads) == (2 * 32 + 4, 2 * 64 + 4)
    assert s.accelerator_count == 6
    assert s.accelerator_memory == 80 * 2**30


def test_revision_is_not_content() -> None:
    a = Sku.model_validate(sku(revision=1))
    b = Sku.model_validate(sku(revision=7))
    assert "revision" not in a.canonical()
    assert a.content_hash() == b.content_hash()


def test_threads_default_to_cores_and_may_not_be_fewer() -> None:
    assert Cpu(model="x", cores=8).threads is None
    assert Sku.model_validate(sku()).threads == 8
    with pytest.raises(ValidationError, match=r"threads \(4\) cannot be fewer than cores \(8\)"):
        Cpu(model="x", cores=8, threads=4)


def test_assignment_is_validated_and_parsed() -> None:
    s = Sku.model_validate(sku())
    s.memory = "1TiB"  # type: ignore[assignment]
    assert s.memory == 2**40
    with pytest.raises(ValidationError):
        s.memory = "lots"  # type: ignore[assignment]


def test_listing_fills_in_the_vendor_and_refuses_another() -> None:
    listing = Listing.model_validate({"vendor": "acme", "skus": [sku()]})
    assert listing.skus[0].vendor == "acme"
    with pytest.raises(ValidationError, match="differs from the file's vendor"):
        Listing.model_validate({"vendor": "acme", "skus": [sku(vendor="other")]})


def test_duplicate_slugs_from_python_raise_with_the_path() -> None:
    with pytest.raises(ValidationError, match=r"skus\[1\]\.slug: repeats skus\[0\]\.slug"):
        Listing.model_validate({"vendor": "acme", "skus": [sku(), sku(name="again")]})


# -- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "shown"),
    [("24.00", "24.00"), (24, "24.00"), (24.0, "24.00"), (0.5, "0.50"), ("0", "0.00"), ("0.123456", "0.123456")],
)
def test_prices_are_one_canonical_decimal(written: object, shown: str) -> None:
    # 24, 24.0 (YAML's unquoted 24.00) and "24.00" are the same price and the same content hash
    price = Pricing.model_validate({"on_demand_hourly": written}).on_demand_hourly
    assert price == Decimal(shown) and str(price) == shown


@pytest.mark.parametrize(
    "bad", ["-0.01", "abc", "NaN", "Infinity", True, "1.0000001", "1000000.01"]
)
def test_bad_prices_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        Pricing.model_validate({"on_demand_hourly": bad})


def test_site_price_overrides_the_list_price() -> None:
    p = Pricing.model_validate(
        {"on_demand_hourly": "3.10", "sites": {"ams1": {"on_demand_hourly": "3.40"}, "fra1": {}}}
    )
    assert p.on_demand_at("ams1") == Decimal("3.40")
    assert p.on_demand_at("fra1") == Decimal("3.10")  # an override without a price keeps the list
    assert p.on_demand_at(None) == Decimal("3.10")
    assert p.currency == "USD"


# -- sites ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pue", [0.5, 0.99, 3.01])
def test_pue_outside_one_to_three_is_refused(pue: float) -> None:
    with pytest.raises(ValidationError):
        Site(code="x1", name="X", country="NL", pue=pue)


def test_site_time_zone_must_be_iana() -> None:
    assert Site(code="x1", name="X", country="NL", timezone="Europe/Amsterdam").timezone
    for bad in ["CEST", "Europe/Atlantis", "../etc/passwd", ""]:
        with pytest.raises(ValidationError, match="unknown time zone"):
            Site(code="x1", name="X", country="NL", timezone=bad)


# -- BMC passwords ----------------------------------------------------------------------------

PASSWORD = "s3cr3t-Pa55w0rd"


def bmc(**changes: Any) -> BmcEndpoint:
    data = {"protocol": "ipmi", "address": "192.0.2.9", "username": "admin", "password": PASSWORD}
    return BmcEndpoint.model_validate(data | changes)


def host() -> Host:
    return Host(id="h1", sku="t1.small@1", site="sjc1", bmc=bmc())


def test_password_is_kept_for_the_collector() -> None:
    assert bmc().password.get_secret_value() == PASSWORD


@pytest.mark.parametrize(
    "shown",
    [
        lambda: repr(bmc()),
        lambda: str(bmc()),
        lambda: repr(host()),
        lambda: str(host()),
        lambda: bmc().model_dump_json(),
        lambda: json.dumps(bmc().model_dump(mode="json")),
        lambda: str(bmc().model_dump()),
        lambda: host().model_dump_json(),
        lambda: json.dumps(host().public()),
        lambda: json.dumps(bmc().public()),
        lambda: repr(Inventory(hosts=[host()])),
        lambda: Inventory(hosts=[host()]).model_dump_json(),
        lambda: f"{bmc()!s} {host()!r}",
    ],
    ids=lambda f: "",
)
def test_password_never_shown(shown: Any) -> None:
    assert PASSWORD not in shown()


def test_public_has_no_password_key_at_all() -> None:
    public = host().public()
    assert "password" not in public["bmc"]  # type: ignore[operator]
    assert public["bmc"] == {  # the rest is there, for operators
        "protocol": "ipmi",
        "address": "192.0.2.9",
        "username": "admin",
        "verify_tls": False,
    }


def test_stored_hosts_show_no_password(example_store: Store) -> None:
    written, _ = read_document(EXAMPLES / "inventory" / "three-sites.yaml")
    passwords = {h["id"]: str(h["bmc"]["password"]) for h in written["hosts"] if "bmc" in h}
    hosts = example_store.hosts()
    assert hosts and all(h.bmc is not None for h in hosts)
    for h in hosts:
        secret = passwords[h.id]
        assert secret not in repr(h) + str(h) + h.model_dump_json() + json.dumps(h.public())
        assert h.bmc is not None and h.bmc.password.get_secret_value() == secret
    frame = example_store.hosts_frame().to_csv()
    assert not any(p in frame for p in passwords.values())


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("192.0.2.9", "192.0.2.9"),
        ("2001:DB8::1", "2001:db8::1"),
        ("BMC-1.Example.net", "bmc-1.example.net"),
    ],
)
def test_bmc_address_forms(address: str, stored: str) -> None:
    assert bmc(address=address).address == stored


def test_bmc_default_ports() -> None:
    assert bmc().effective_port == 623
    assert bmc(protocol="redfish").effective_port == 443
    assert bmc(port=6230).effective_port == 6230


def test_host_sku_reference_with_and_without_revision() -> None:
    assert (host().sku_slug, host().sku_revision) == ("t1.small", 1)
    plain = Host(id="h2", sku="t1.small", site="sjc1")
    assert (plain.sku_slug, plain.sku_revision) == ("t1.small", None)
    with pytest.raises(ValidationError):
        Host(id="h3", sku="t1.small@0", site="sjc1")


def test_examples_are_valid_listings() -> None:
    for path in sorted((EXAMPLES / "listings").iterdir()):
        assert load_listing(path).skus
