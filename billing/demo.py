"""``hwmarket demo``: the main job end to end on the embedded default (SQLite, nothing to start).

It lives in ``billing`` because it walks the whole flow (catalogue -> reservations -> power ->
metering -> invoices), and only the top package may import all three. Each step is a function
that takes the :class:`DemoRun` and adds to it, so the notebooks can re-run parts of it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from marketplace.console import err, out
from marketplace.store import Store

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@dataclass
class DemoRun:
    """The demo's work folder, its store, and what each step measured."""

    workdir: Path
    examples: Path = EXAMPLES
    store: Store = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.workdir / "hwmarket.db"


def step_catalogue(run: DemoRun) -> None:
    """Create the SQLite store and import the example listings and the three-site inventory."""
    listings = sorted(
        p
        for p in (run.examples / "listings").iterdir()
        if p.suffix in {".yaml", ".yml", ".toml", ".json"}
    )
    run.store = Store(f"sqlite:///{run.db_path}")
    report = run.store.import_listings(listings)
    inv = run.store.import_inventory(run.examples / "inventory" / "three-sites.yaml")
    err.print(
        f"  {len(listings)} listings: {len(report.added)} SKUs; inventory: {len(inv.added)} sites and hosts"
    )

    table = Table(title="Catalogue")
    for col in ("SKU", "vendor", "arch", "cores", "memory", "accelerators", "on-demand / h"):
        table.add_column(col)
    from marketplace.units import format_size

    for sku in run.store.skus():
        accel = ", ".join(f"{a.count}x {a.model}" for a in sku.accelerators) or "-"
        price = f"{sku.pricing.on_demand_hourly} {sku.pricing.currency}" if sku.pricing else "-"
        table.add_row(
            sku.slug,
            sku.vendor or "",
            sku.arch,
            str(sku.cores),
            format_size(sku.memory),
            accel,
            price,
        )
    out.print(table)

    hosts = run.store.hosts_frame()
    per_site = hosts.pivot_table(
        index="site", columns="sku", values="id", aggfunc="count", fill_value=0
    )
    sites = {s.code: s for s in run.store.sites()}
    table = Table(title="Hosts per site")
    table.add_column("site")
    table.add_column("metro / region")
    for slug in per_site.columns:
        table.add_column(str(slug), justify="right")
    for code, row in per_site.iterrows():
        s = sites[str(code)]
        table.add_row(
            f"{s.code} ({s.name})", f"{s.metro} / {s.region}", *(str(int(v)) for v in row)
        )
    out.print(table)


STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("catalogue and inventory", step_catalogue),
]


def run_demo(workdir: Path, examples: Path = EXAMPLES, fresh: bool = True) -> DemoRun:
    """Run every step in ``workdir`` (emptied first when ``fresh``); return what was made."""
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = DemoRun(workdir=workdir, examples=examples)
    for i, (title, step) in enumerate(STEPS, 1):
        err.print(f"[bold]step {i}/{len(STEPS)}:[/] {title}")
        start = time.perf_counter()
        step(run)
        run.timings[title] = time.perf_counter() - start
    err.print(f"done in {sum(run.timings.values()):.1f} s; store: {run.db_path}")
    return run


__all__ = ["STEPS", "DemoRun", "run_demo"]
