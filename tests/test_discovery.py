"""Hardware discovery from real documents: nvidia-smi's XML and the Alibaba openb node list."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.catalog import Listing
from marketplace.discovery import (
    accelerator_from_nvidia_smi,
    skus_from_alibaba_nodes,
    skus_from_node_rows,
)
from marketplace.errors import InvalidInput
from marketplace.inventory import Inventory
from marketplace.query import SkuQuery
from marketplace.store import Store

MiB = 2**20
GiB = 2**30


@pytest.fixture(scope="module")
def h100_path(shared_data: Path) -> Path:
    return shared_data / "power" / "nvidia-smi-q.h100.xml"


@pytest.fixture(scope="module")
def nodes_path(shared_data: Path) -> Path:
    return shared_data / "traces" / "alibaba-openb-2023" / "openb_node_list_all_node.csv"


@pytest.fixture(scope="module")
def nodes(nodes_path: Path) -> pd.DataFrame:
    return pd.read_csv(nodes_path, keep_default_na=False)


@pytest.fixture(scope="module")
def openb(nodes_path: Path) -> tuple[Listing, Inventory]:
    return skus_from_alibaba_nodes(nodes_path)


def edited(h100_path: Path, edit: str) -> str:
    """The real H100 document with one edit applied, as XML text."""
    tree = ET.parse(h100_path)
    root = tree.getroot()
    gpu = root.find("gpu")
    assert gpu is not None
    if edit == "two-gpus":
        root.append(copy.deepcopy(gpu))
        root.find("attached_gpus").text = "2"  # type: ignore[union-attr]
    elif edit == "two-gpus-one-attached":
        root.append(copy.deepcopy(gpu))
    elif edit == "mixed-models":
        other = copy.deepcopy(gpu)
        other.find("product_name").text = "NVIDIA A100-SXM4-80GB"  # type: ignore[union-attr]
        root.append(other)
        root.find("attached_gpus").text = "2"  # type: ignore[union-attr]
    elif edit == "old-power-layout":
        readings = gpu.find("gpu_power_readings")
        assert readings is not None
        readings.tag = "power_readings"
        readings.find("default_power_limit").text = "N/A"  # type: ignore[union-attr]
        readings.find("max_power_limit").text = "650.00 W"  # type: ignore[union-attr]
    elif edit == "no-power":
        readings = gpu.find("gpu_power_readings")
        assert readings is not None
        for element in readings:
            element.text = "N/A"
    elif edit == "nvswitch":
        gpu.find("fabric/state").text = "Completed"  # type: ignore[union-attr]
    elif edit == "no-memory":
        gpu.remove(gpu.find("fb_memory_usage"))  # type: ignore[arg-type]
    elif edit == "bad-memory":
        gpu.find("fb_memory_usage/total").text = "lots"  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")


# -- nvidia-smi ------------------------------------------------------------------------------


def test_h100_document_gives_the_real_accelerator(h100_path: Path) -> None:
    gpu = accelerator_from_nvidia_smi(h100_path)
    assert (gpu.count, gpu.kind, gpu.vendor) == (1, "gpu", "nvidia")
    assert gpu.model == "NVIDIA H100 80GB HBM3"
    assert gpu.memory == 81559 * MiB
    assert gpu.tdp_watts == 700
    assert gpu.interconnect == "PCIe Gen5 x16"
    assert accelerator_from_nvidia_smi(str(h100_path)) == gpu
    assert accelerator_from_nvidia_smi(h100_path.read_text()) == gpu


def test_every_gpu_element_counts(h100_path: Path) -> None:
    gpu = accelerator_from_nvidia_smi(edited(h100_path, "two-gpus"))
    assert gpu.count == 2 and gpu.memory == 81559 * MiB


@pytest.mark.parametrize(
    ("edit", "tdp", "interconnect"),
    [
        ("old-power-layout", 650, "PCIe Gen5 x16"),
        ("no-power", None, "PCIe Gen5 x16"),
        ("nvswitch", 700, "NVLink (NVSwitch fabric)"),
    ],
)
def test_power_limit_and_link_follow_the_document(
    h100_path: Path, edit: str, tdp: int | None, interconnect: str
) -> None:
    gpu = accelerator_from_nvidia_smi(edited(h100_path, edit))
    assert gpu.tdp_watts == tdp
    assert gpu.interconnect == interconnect


@pytest.mark.parametrize(
    ("edit", "element"),
    [
        ("no-memory", "nvidia_smi_log/gpu[0]/fb_memory_usage/total"),
        ("bad-memory", "nvidia_smi_log/gpu[0]/fb_memory_usage/total"),
        ("mixed-models", "nvidia_smi_log/gpu/product_name"),
        ("two-gpus-one-attached", "nvidia_smi_log/attached_gpus"),
    ],
)
def test_errors_name_the_file_and_the_element(
    h100_path: Path, tmp_path: Path, edit: str, element: str
) -> None:
    path = tmp_path / "smi.xml"
    path.write_text(edited(h100_path, edit))
    with pytest.raises(InvalidInput) as caught:
        accelerator_from_nvidia_smi(path)
    assert [(p.source, p.path) for p in caught.value.problems] == [(str(path), element)]
    assert str(path) in str(caught.value) and element in str(caught.value)


def test_unreadable_or_foreign_documents_are_invalid_input(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<nvidia_smi_log>\n<gpu>\n</nvidia_smi_log>\n")
    with pytest.raises(InvalidInput, match="not well-formed") as caught:
        accelerator_from_nvidia_smi(broken)
    assert caught.value.problems[0].line == 3
    with pytest.raises(InvalidInput, match="expected an nvidia_smi_log"):
        accelerator_from_nvidia_smi("<html><body/></html>")
    with pytest.raises(InvalidInput, match="no <gpu> element"):
        accelerator_from_nvidia_smi(
            "<nvidia_smi_log><attached_gpus>0</attached_gpus></nvidia_smi_log>"
        )
    with pytest.raises(InvalidInput, match="cannot read"):
        accelerator_from_nvidia_smi(tmp_path / "missing.xml")


# -- the Alibaba openb node list ---------------------------------------------------------------


def test_every_node_becomes_a_host_of_its_shape(
    openb: tuple[Listing, Inventory], nodes: pd.DataFrame
) -> None:
    listing, inventory = openb
    groups = nodes.groupby(["cpu_milli", "memory_mib", "gpu", "model"]).size()
    assert len(inventory.hosts) == len(nodes) == 1523
    assert len(listing.skus) == len(groups)
    assert [s.code for _, _, s in inventory.sites()] == ["openb1"]
    assert all(h.site == "openb1" and h.bmc is None for h in inventory.hosts)
    shape_of = {
        sku.slug: (
            sku.cores * 1000,
            sku.memory // MiB,
            sku.accelerator_count,
            sku.accelerators[0].model if sku.accelerators else "",
        )
        for sku in listing.skus
    }
    hosts_per_shape = Counter(shape_of[h.sku] for h in inventory.hosts)
    assert hosts_per_shape == dict(groups.items())
    sku_of_node = {h.id: shape_of[h.sku] for h in inventory.hosts}
    for sn, *shape in nodes[["sn", "cpu_milli", "memory_mib", "gpu", "model"]].itertuples(
        index=False
    ):
        assert sku_of_node[str(sn)] == tuple(shape)


def test_openb_skus_carry_what_the_trace_and_public_specs_say(
    openb: tuple[Listing, Inventory],
) -> None:
    skus = {s.slug: s for s in openb[0].skus}
    v100 = skus["openb.c64.m256g.8x-v100m16"]
    assert (v100.vendor, v100.arch, v100.cores, v100.memory) == (
        "alibaba-openb",
        "x86_64",
        64,
        256 * GiB,
    )
    assert v100.cpus[0].sockets == 1 and v100.cpus[0].model == "unknown (Alibaba openb)"
    (gpu,) = v100.accelerators
    assert (gpu.count, gpu.kind, gpu.vendor, gpu.model, gpu.memory) == (
        8,
        "gpu",
        "nvidia",
        "V100M16",
        16 * GiB,
    )
    g2 = skus["openb.c96.m384g.8x-g2"].accelerators[0]
    assert (g2.vendor, g2.model, g2.memory) == ("undisclosed", "G2", None)
    assert skus["openb.c128.m1024g.1x-a10"].accelerators[0].memory == 24 * GiB
    assert skus["openb.c32.m256g"].accelerators == []
    assert all(s.pricing is None for s in skus.values())


def test_openb_imports_atomically_and_twice_changes_nothing(
    store: Store, openb: tuple[Listing, Inventory], nodes: pd.DataFrame
) -> None:
    listing, inventory = openb
    bad_host = inventory.hosts[0].model_copy(
        update={"id": "stray-node", "sku": "openb.no-such-sku"}
    )
    broken = inventory.model_copy(update={"hosts": [*inventory.hosts, bad_host]})
    store.import_listings([listing])
    with pytest.raises(InvalidInput, match="unknown SKU"):
        store.import_inventories([broken])
    assert store.hosts() == [] and store.sites() == []

    first = store.import_inventories([inventory])
    assert len(first.added) == 1523 + 3  # hosts, and the region, metro and site
    stored = store.hosts()
    assert len(stored) == 1523 and len(store.skus()) == len(listing.skus)

    again_listing = store.import_listings([listing])
    again_inventory = store.import_inventories([inventory])
    assert not again_listing.changed and again_listing.unchanged == len(listing.skus)
    assert not again_inventory.changed
    assert store.hosts() == stored

    eight_v100 = store.skus(SkuQuery(accelerator_models=["V100M16", "V100M32"], min_accelerators=8))
    expected = nodes[nodes.model.str.startswith("V100") & (nodes.gpu >= 8)]
    assert len(eight_v100) == len(expected.groupby(["cpu_milli", "memory_mib", "model"]))
    assert sum(len(store.hosts(sku=s.slug)) for s in eight_v100) == len(expected)


def test_a_listing_clashing_with_another_vendor_stores_nothing(
    store: Store, openb: tuple[Listing, Inventory]
) -> None:
    listing = openb[0]
    thief = Listing(
        vendor="someone-else", skus=[listing.skus[0].model_copy(update={"vendor": None})]
    )
    with pytest.raises(InvalidInput, match="also listed in"):
        store.import_listings([listing, thief])
    assert len(store.skus()) == 0


def test_bad_node_rows_name_the_line_and_column() -> None:
    rows = [
        {"sn": "n0", "cpu_milli": "32000", "memory_mib": "65536", "gpu": "0", "model": ""},
        {"sn": "n1", "cpu_milli": "32500", "memory_mib": "65536", "gpu": "0", "model": ""},
        {"sn": "n2", "cpu_milli": "32000", "memory_mib": "lots", "gpu": "2", "model": "T4"},
        {"sn": "n3", "cpu_milli": "32000", "memory_mib": "65536", "gpu": "2", "model": ""},
    ]
    with pytest.raises(InvalidInput) as caught:
        skus_from_node_rows(rows, source="nodes.csv")
    found = [(p.source, p.line, p.path) for p in caught.value.problems]
    assert found == [
        ("nodes.csv", 3, "cpu_milli"),
        ("nodes.csv", 4, "memory_mib"),
        ("nodes.csv", 5, "model"),
    ]


def test_a_node_list_without_its_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu,memory\nn0,32,64\n")
    with pytest.raises(InvalidInput, match="missing columns") as caught:
        skus_from_alibaba_nodes(path)
    assert caught.value.problems[0].source == str(path)


node_rows = st.lists(
    st.tuples(
        st.integers(1, 256).map(lambda c: c * 1000),
        st.one_of(st.integers(1, 2048).map(lambda g: g * 1024), st.integers(1, 2**21)),
        st.sampled_from(
            [(0, ""), (1, "T4"), (2, "G1"), (8, "V100M32"), (8, "v100-m32"), (4, "A10")]
        ),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(node_rows)
def test_one_sku_per_distinct_shape_and_every_host_on_its_own(
    shapes: list[tuple[int, int, tuple[int, str]]],
) -> None:
    rows = [
        {"sn": f"n{i}", "cpu_milli": str(c), "memory_mib": str(m), "gpu": str(g), "model": model}
        for i, (c, m, (g, model)) in enumerate(shapes)
    ]
    listing, inventory = skus_from_node_rows(rows)
    assert len(listing.skus) == len({(c, m, g, model) for c, m, (g, model) in shapes})
    skus = {s.slug: s for s in listing.skus}
    hosts = {h.id: h for h in inventory.hosts}
    assert len(hosts) == len(rows)
    for i, (cpu_milli, memory_mib, (gpus, model)) in enumerate(shapes):
        sku = skus[hosts[f"n{i}"].sku]
        assert (sku.cores * 1000, sku.memory, sku.accelerator_count) == (
            cpu_milli,
            memory_mib * MiB,
            gpus,
        )
        assert [a.model for a in sku.accelerators] == ([model] if gpus else [])
