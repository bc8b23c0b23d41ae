"""Catalogue import: the store's atomic imports against raw DB-API inserts, and query latency.

Builds a synthetic but realistic catalogue (SKUs of several vendors across architectures, CPUs,
accelerators and prices; hosts over ~20 sites, popular SKUs racked more), then on SQLite (a temp
file) and PostgreSQL (a temp database at $HWMARKET_BENCH_PG_URL):

1. times ``Store.import_listings`` + ``Store.import_inventories`` of pydantic values into a fresh
   database (validation of the values themselves is shown apart: a file loader pays it too);
2. times a raw DB-API ``executemany`` of the same rows into the same tables of another fresh,
   migrated database, with the row values computed beforehand (the floor the store is measured
   against), and checks that both databases then hold the same rows;
3. times ``Store.skus(SkuQuery(...))`` for a few capability queries (p50/p99).

    python -m bench.catalog_import [--skus 5000] [--hosts 100000] [--no-postgres] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from bench.machine import describe_machine
from marketplace.catalog import Accelerator, Cpu, Drive, Listing, Nic, PowerEnvelope, Pricing, Sku
from marketplace.inventory import BmcEndpoint, Host, Inventory, Metro, Region, Site
from marketplace.query import SkuQuery
from marketplace.schema import HostRow, MetroRow, RegionRow, SiteRow, SkuRow
from marketplace.store import Store

PG_URL = os.environ.get(
    "HWMARKET_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

Row = tuple[Any, ...]
GiB = 2**30

# -- a synthetic, realistic catalogue ---------------------------------------------------------

VENDORS = ["acme", "northwind", "contoso", "globex", "initech", "hooli", "vandelay", "tyrell"]
#: (arch, CPU model, cores per socket, threads per core, GHz, weight)
CPUS = [
    ("x86_64", "AMD EPYC 9654", 96, 2, "2.4", 8),
    ("x86_64", "AMD EPYC 7763", 64, 2, "2.45", 6),
    ("x86_64", "AMD EPYC 9754", 128, 2, "2.25", 3),
    ("x86_64", "Intel Xeon Platinum 8480+", 56, 2, "2.0", 8),
    ("x86_64", "Intel Xeon Gold 6338", 32, 2, "2.0", 6),
    ("aarch64", "Ampere Altra Max M128-30", 128, 1, "3.0", 5),
    ("aarch64", "NVIDIA Grace", 72, 1, "3.1", 3),
    ("aarch64", "AWS Graviton3", 64, 1, "2.6", 2),
    ("riscv64", "SiFive P550", 4, 1, "1.4", 1),
    ("ppc64le", "IBM POWER10", 15, 8, "3.5", 1),
    ("other:jpu", "Acme JPU host controller", 16, 1, "2.0", 1),
]
#: (kind, vendor, model, memory GiB, TDP W, interconnect, counts, hourly price per part)
ACCELERATORS = [
    ("gpu", "nvidia", "H100 80GB HBM3", 80, 700, "NVLink (NVSwitch fabric)", [8], "4.20"),
    ("gpu", "nvidia", "A100 80GB PCIe", 80, 300, "PCIe Gen4 x16", [1, 2, 4, 8], "1.80"),
    ("gpu", "nvidia", "L40S", 48, 350, "PCIe Gen4 x16", [1, 2, 4, 8], "1.10"),
    ("gpu", "nvidia", "T4", 16, 70, "PCIe Gen3 x16", [1, 2, 4], "0.35"),
    ("gpu", "amd", "Instinct MI300X", 192, 750, "Infinity Fabric", [8], "3.90"),
    ("tpu", "google", "TPU v5e", 16, 200, "ICI", [4, 8], "1.20"),
    ("fpga", "amd", "Alveo U55C", 16, 150, "PCIe Gen4 x16", [1, 2, 4], "0.90"),
    ("asic", "acme", "JPU-1", 64, 400, "JLink", [2, 4, 8], "2.50"),
]
TRAITS = ["rdma", "sriov", "secure-boot", "tpm2", "ecc", "nvme-of", "infiniband", "sev-snp", "tdx"]
MEMORY_GIB = [64, 128, 256, 384, 512, 768, 1024, 1536, 2048]


def synthetic_sku(i: int, rng: random.Random) -> Sku:
    """One plausible machine type: CPUs, memory, drives, NICs, maybe accelerators, prices."""
    arch, model, cores, tpc, ghz, _ = rng.choices(CPUS, weights=[c[5] for c in CPUS])[0]
    sockets = rng.choice([1, 2]) if cores >= 32 else 1
    accelerators = []
    if rng.random() < 0.4:
        kind, vendor, amodel, mem, tdp, link, counts, _price = rng.choice(ACCELERATORS)
        accelerators.append(
            Accelerator(count=rng.choice(counts), kind=kind, vendor=vendor, model=amodel,
                        memory=mem * GiB, tdp_watts=tdp, interconnect=link)
        )  # fmt: skip
    memory = rng.choice(MEMORY_GIB[2:] if accelerators else MEMORY_GIB)
    idle = 80 + 40 * sockets + sum(a.count * 50 for a in accelerators)
    peak = 150 + 250 * sockets + sum(a.count * (a.tdp_watts or 0) for a in accelerators)
    hourly = Decimal("0.006") * cores * sockets + Decimal("0.0015") * memory
    for a in accelerators:
        hourly += a.count * Decimal(next(x[7] for x in ACCELERATORS if x[2] == a.model))
    hourly = hourly.quantize(Decimal("0.0001"))
    sites = {
        f"s{n:02d}": {"on_demand_hourly": hourly * Decimal("1.1")}
        for n in range(2)
        if rng.random() < 0.1
    }
    family = "g" if accelerators else ("m" if memory >= 1024 else "c")
    return Sku(
        slug=f"{family}{rng.randint(1, 4)}.{('x' if arch == 'x86_64' else arch[:3].replace(':', ''))}{i:05d}",
        name=f"{model} x{sockets}, {memory} GiB" + (f", {accelerators[0].count}x {accelerators[0].model}" if accelerators else ""),
        arch=arch,
        cpus=[Cpu(model=model, sockets=sockets, cores=cores, threads=cores * tpc, base_ghz=Decimal(ghz))],
        memory=memory * GiB,
        drives=[Drive(size=480 * 10**9, type="nvme", role="boot")]
        + ([Drive(count=rng.choice([2, 4, 8]), size=rng.choice([3_840, 7_680, 16_000]) * 10**9,
                  type=rng.choice(["nvme", "ssd", "hdd"]))] if rng.random() < 0.7 else []),
        nics=[Nic(count=2, speed=rng.choice(["25Gbps", "100Gbps"]))]
        + ([Nic(count=8, speed="400Gbps")] if accelerators and accelerators[0].count == 8 else []),
        accelerators=accelerators,
        power=PowerEnvelope(idle_watts=idle, max_watts=peak) if rng.random() < 0.9 else None,
        traits=rng.sample(TRAITS, rng.randint(0, 4)),
        pricing=Pricing(on_demand_hourly=hourly,
                        reserved_hourly={"1y": hourly * Decimal("0.7"), "3y": hourly * Decimal("0.5")},
                        sites=sites),
    )  # fmt: skip


def catalogue(
    n_skus: int, n_hosts: int, n_sites: int, rng: random.Random
) -> tuple[list[Listing], Inventory]:
    """Listings (one per vendor) and an inventory: ``n_sites`` sites in 4 regions, hosts spread
    over SKUs by a Zipf-like popularity, each SKU racked at 1-6 sites, 90 % with a BMC."""
    skus = [synthetic_sku(i, rng) for i in range(n_skus)]
    by_vendor: dict[str, list[Sku]] = {}
    for i, sku in enumerate(skus):
        by_vendor.setdefault(VENDORS[i % len(VENDORS)], []).append(sku)
    listings = [Listing(vendor=v, skus=s) for v, s in by_vendor.items()]
    codes = [f"s{n:02d}" for n in range(n_sites)]
    regions = [
        Region(code=f"r{r}", name=f"Region {r}", metros=[
            Metro(code=f"r{r}m{m}", name=f"Metro {r}.{m}", sites=[
                Site(code=c, name=f"Site {c}", country=rng.choice(["US", "NL", "DE", "JP", "SG"]),
                     energy_price_kwh=Decimal(rng.randint(60, 300)) / 1000, pue=rng.uniform(1.1, 1.6))
                for k, c in enumerate(codes) if k % 8 == r * 2 + m
            ]) for m in range(2)
        ]) for r in range(4)
    ]  # fmt: skip
    weights = [1 / (rank + 1) ** 0.8 for rank in range(n_skus)]
    racked = {s.slug: rng.sample(codes, rng.randint(1, min(6, n_sites))) for s in skus}
    hosts = []
    for n, sku in enumerate(rng.choices(skus, weights=weights, k=n_hosts)):
        site = rng.choice(racked[sku.slug])
        bmc = None
        if rng.random() < 0.9:
            protocol = rng.choice(["ipmi", "redfish"])
            bmc = BmcEndpoint(protocol=protocol, address=f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}",
                              username="admin", password=f"pw-{rng.getrandbits(48):012x}",
                              verify_tls=protocol == "redfish")  # fmt: skip
        hosts.append(Host(id=f"{site}-{n:06d}", sku=sku.slug, site=site, bmc=bmc))
    return listings, Inventory(regions=regions, hosts=hosts)


def capability_queries(sites: list[str]) -> list[tuple[str, SkuQuery]]:
    """Capability questions a customer asks of the catalogue."""
    return [
        ("8 GPUs with >= 80 GiB each", SkuQuery(accelerator_kind="gpu", min_accelerators=8, min_accelerator_memory=80 * GiB)),
        ("aarch64, >= 64 cores, >= 256 GiB", SkuQuery(arch="aarch64", min_cores=64, min_memory=256 * GiB)),
        (f"H100 at {sites[3]} under 40/h", SkuQuery(accelerator_model="H100 80GB HBM3", site=sites[3], max_hourly_price=Decimal("40"))),
        ("x86_64, >= 512 GiB, rdma", SkuQuery(arch="x86_64", min_memory=512 * GiB, traits=["rdma"])),
        ("one vendor's whole catalogue", SkuQuery(vendor="acme")),
    ]  # fmt: skip


def raw_rows(listings: list[Listing], inventory: Inventory, dialect: str) -> dict[str, list[Row]]:
    """The rows the store writes, as DB-API parameters of ``dialect`` (computed before timing).

    Host rows carry the SKU slug where the table has ``sku_id``: the ids exist only after the
    SKUs are inserted, so resolving them is part of the timed raw work, as in any real import.
    """
    stamp: Any = dt.datetime.now(dt.UTC)
    if dialect == "sqlite":  # what SQLAlchemy's UTCDateTime and Numeric write on SQLite
        stamp = stamp.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows: dict[str, list[Row]] = {"regions": [], "metros": [], "sites": [], "skus": [], "hosts": []}
    for region in inventory.regions:
        rows["regions"].append((region.code, region.name))
        for metro in region.metros:
            rows["metros"].append((metro.code, region.code, metro.name))
            for s in metro.sites:
                price = float(s.energy_price_kwh) if dialect == "sqlite" else s.energy_price_kwh
                rows["sites"].append((s.code, metro.code, s.name, s.country, s.timezone, price, s.pue))  # fmt: skip
    for sku in (sku for listing in listings for sku in listing.skus):
        rows["skus"].append(
            (sku.slug, 1, True, sku.vendor, sku.name, sku.content_hash(), json.dumps(sku.canonical()),
             sku.arch, sku.cores, sku.memory, sku.accelerator_count, sku.accelerator_memory,
             sku.power.max_watts if sku.power else None, stamp)
        )  # fmt: skip
    for h in inventory.hosts:
        b = h.bmc
        bmc = (b.protocol, b.address, b.port, b.username, b.password.get_secret_value(), b.method,
               b.verify_tls) if b else (None,) * 6 + (False,)  # fmt: skip
        rows["hosts"].append((h.id, h.sku_slug, h.site, h.state.value, *bmc, stamp))
    return rows


COLUMNS = {
    "regions": "code, name",
    "metros": "code, region_code, name",
    "sites": "code, metro_code, name, country, timezone, energy_price_kwh, pue",
    "skus": "slug, revision, is_current, vendor, name, content_hash, spec, arch, cores, "
    "memory_bytes, accelerator_count, accelerator_memory_bytes, max_watts, created_at",
    "hosts": "id, sku_id, site_code, state, bmc_protocol, bmc_address, bmc_port, bmc_username, "
    "bmc_password, bmc_method, bmc_verify_tls, updated_at",
}


def raw_insert(store: Store, rows: dict[str, list[Row]]) -> None:
    """One transaction of ``executemany`` per table through the driver's own connection."""
    mark = "?" if store.engine.dialect.name == "sqlite" else "%s"
    conn = store.engine.raw_connection()
    try:
        cur = conn.cursor()
        if store.engine.dialect.name == "sqlite":
            cur.execute("BEGIN IMMEDIATE")  # hwmarket's engine leaves BEGIN to the caller
        for table in ("regions", "metros", "sites", "skus"):
            n = COLUMNS[table].count(",") + 1
            sql = f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({', '.join([mark] * n)})"
            cur.executemany(sql, rows[table])
        cur.execute("SELECT slug, id FROM skus")
        ids = dict(cur.fetchall())
        hosts = [(r[0], ids[r[1]], *r[2:]) for r in rows["hosts"]]
        sql = f"INSERT INTO hosts ({COLUMNS['hosts']}) VALUES ({', '.join([mark] * 12)})"
        cur.executemany(sql, hosts)
        conn.commit()
    finally:
        conn.close()


#: Columns that differ between two correct imports: when they ran and the surrogate SKU ids.
UNCOMPARED = {"created_at", "updated_at", "sku_id"}


def contents(store: Store) -> dict[str, list[Row]]:
    """Every row an import wrote, bar ``UNCOMPARED`` (hosts name their SKU by slug), in order."""
    out: dict[str, list[Row]] = {}
    with store.reading() as s:
        for model, order in [(RegionRow, RegionRow.code), (MetroRow, MetroRow.code),
                             (SiteRow, SiteRow.code), (SkuRow, SkuRow.slug)]:  # fmt: skip
            table = model.__table__
            cols = [
                c for c in table.c if c.name not in UNCOMPARED and c is not SkuRow.__table__.c.id
            ]
            out[model.__tablename__] = [tuple(r) for r in s.execute(select(*cols).order_by(order))]
        cols = [c for c in HostRow.__table__.c if c.name not in UNCOMPARED]
        stmt = select(*cols, SkuRow.slug).join(SkuRow, SkuRow.id == HostRow.sku_id)
        out["hosts"] = [tuple(r) for r in s.execute(stmt.order_by(HostRow.id))]
    return out


@contextmanager
def databases(backend: str, workdir: Path) -> Iterator[Callable[[], Store]]:
    """Yield a factory of fresh, migrated stores; drop them all at the end."""
    made: list[Store] = []
    if backend == "sqlite":

        def fresh() -> Store:
            made.append(Store(f"sqlite:///{workdir / f'bench-{len(made)}.db'}"))
            return made[-1]

        try:
            yield fresh
        finally:
            for s in made:
                s.dispose()
        return
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def fresh_pg() -> Store:
        names.append(f"hwmarket_bench_{uuid.uuid4().hex[:10]}")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{names[-1]}"'))
        url = make_url(PG_URL).set(database=names[-1]).render_as_string(hide_password=False)
        made.append(Store(url))
        return made[-1]

    try:
        yield fresh_pg
    finally:
        for s in made:
            s.dispose()
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def timed(best: dict[str, tuple[float, float]], phase: str) -> Iterator[None]:
    """Keep the best wall and client-CPU time of ``phase`` (CPU excludes a server's work)."""
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    old = best.get(phase, (wall, cpu))
    best[phase] = (min(old[0], wall), min(old[1], cpu))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_backend(
    backend: str, listings: list[Listing], inventory: Inventory, args: argparse.Namespace
) -> None:
    """Time the store, the raw floor and the queries on one backend; print the figures."""
    print(f"\n== {backend} ==")
    with tempfile.TemporaryDirectory() as tmp, databases(backend, Path(tmp)) as fresh:
        rows = raw_rows(listings, inventory, "sqlite" if backend == "sqlite" else "postgresql")
        best: dict[str, tuple[float, float]] = {}  # phase -> best (wall, client CPU) seconds
        store = raw = None
        for _ in range(args.repeat):
            store, raw = fresh(), fresh()
            profile = cProfile.Profile() if args.profile else None
            with timed(best, "store total"):
                with timed(best, "listings"):
                    if profile:
                        profile.enable()
                    store.import_listings(listings)
                with timed(best, "inventories"):
                    store.import_inventories([inventory])
                if profile:
                    profile.disable()
            with timed(best, "raw"):
                raw_insert(raw, rows)
            if profile:
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
                print(out.getvalue())
        assert store is not None and raw is not None
        same = contents(store) == contents(raw)
        n_skus = sum(len(listing.skus) for listing in listings)
        print(f"{'(best of ' + str(args.repeat) + ')':<46}{'wall':>9}  {'client CPU':>10}")
        for label, phase in [
            (f"store import_listings ({n_skus:,} SKUs)", "listings"),
            (f"store import_inventories ({len(inventory.hosts):,} hosts)", "inventories"),
            ("store total", "store total"),
            ("raw DB-API executemany of the same rows", "raw"),
        ]:
            print(f"{label:<46}{best[phase][0]:7.3f} s  {best[phase][1]:8.3f} s")
        ratio = [best["store total"][i] / best["raw"][i] for i in (0, 1)]
        print(f"{'ratio store / raw':<46}{ratio[0]:7.2f} x  {ratio[1]:8.2f} x")
        print(f"{'both databases hold the same rows':<46}{same}")
        if not same:
            raise SystemExit("the raw insert and the store wrote different rows: fix the bench")
        query_latency(store, inventory, args.query_repeat)


def query_latency(store: Store, inventory: Inventory, repeat: int) -> None:
    """p50/p99 wall time of each capability query, and its median client CPU (on a shared
    machine the wall tail is mostly waiting for a core; the CPU time is the query's own cost)."""
    sites = sorted({s.code for _, _, s in inventory.sites()})
    everything: list[float] = []
    print(f"capability queries ({repeat} runs each, after one warm-up):")
    for label, query in capability_queries(sites):
        found = len(store.skus(query))
        walls, cpus = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            store.skus(query)
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.process_time() - c0) * 1000)
        everything += walls
        print(
            f"  {label:<34} {found:5d} SKUs  p50 {percentile(walls, 0.5):7.1f} ms"
            f"  p99 {percentile(walls, 0.99):7.1f} ms  CPU p50 {percentile(cpus, 0.5):6.1f} ms"
        )
    print(
        f"  {'all queries':<34} {'':10}  p50 {percentile(everything, 0.5):7.1f} ms"
        f"  p99 {percentile(everything, 0.99):7.1f} ms"
    )


def main() -> None:
    """Parse the options, build the catalogue, run each backend and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=5_000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--repeat", type=int, default=1, help="imports per backend; best is shown")
    parser.add_argument("--query-repeat", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="cProfile the store's imports")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    describe_machine()
    t0 = time.perf_counter()
    listings, inventory = catalogue(args.skus, args.hosts, args.sites, random.Random(args.seed))
    t1 = time.perf_counter()
    data = inventory.model_dump()
    t2 = time.perf_counter()
    Inventory.model_validate(data)
    t3 = time.perf_counter()
    print(
        f"catalogue: {args.skus:,} SKUs of {len(listings)} vendors, {len(inventory.hosts):,} hosts "
        f"at {len(inventory.sites())} sites (built and validated in {t1 - t0:.1f} s)"
    )
    print(
        f"validating the inventory as a loaded file would (pydantic): {t3 - t2:.3f} s (not in the store's time)"
    )
    for backend in ["sqlite"] + ([] if args.no_postgres else ["postgresql"]):
        run_backend(backend, listings, inventory, args)


if __name__ == "__main__":
    main()
