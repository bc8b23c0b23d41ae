"""The ``hwmarket`` command line (typer + rich).

The marketplace's commands live here; ``metering`` and ``billing`` add theirs through the
``hwmarket.cli`` entry-point group (a function taking the typer app), because the marketplace may
not import them. Errors print on stderr with a non-zero exit; data goes to stdout.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from marketplace.catalog import Sku
from marketplace.console import OutputFormat, emit, emit_one, err, out
from marketplace.documents import json_schema
from marketplace.errors import HwmarketError
from marketplace.query import SkuQuery
from marketplace.store import Store
from marketplace.units import format_size, format_speed

app = typer.Typer(
    name="hwmarket",
    help="Sell heterogeneous hardware as a service: catalogue, reservations, metering, billing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sku_app = typer.Typer(
    help="The SKU catalogue: import vendor listings, list and show SKUs.", no_args_is_help=True
)
inventory_app = typer.Typer(
    help="Sites and hosts from an operator's inventory file.", no_args_is_help=True
)
site_app = typer.Typer(help="Sites (regions contain metros contain sites).", no_args_is_help=True)
host_app = typer.Typer(help="Hosts: physical machines at sites.", no_args_is_help=True)
app.add_typer(sku_app, name="sku")
app.add_typer(inventory_app, name="inventory")
app.add_typer(site_app, name="site")
app.add_typer(host_app, name="host")

FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]

F = TypeVar("F", bound=Callable[..., Any])


class State:
    db: str | None = None
    _store: Store | None = None

    @classmethod
    def store(cls) -> Store:
        if cls._store is None:
            cls._store = Store(cls.db)
        return cls._store


@app.callback()
def _main(
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="HWMARKET_DB", help="database URL (default sqlite:///hwmarket.db)"
        ),
    ] = None,
) -> None:
    State.db = db
    State._store = None


def store() -> Store:
    """The store the global ``--db`` option names (opened, and migrated, on first use)."""
    return State.store()


def fails_cleanly(fn: F) -> F:
    """Turn hwmarket errors into a message on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HwmarketError as exc:
            err.print(f"[bold red]error:[/] {type(exc).__name__}: ", end="", highlight=False)
            sys.stderr.write(f"{exc}\n")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# -- init and schemas ------------------------------------------------------------------------


@app.command()
@fails_cleanly
def init() -> None:
    """Create or upgrade the database schema (safe to run again)."""
    s = store()
    err.print(f"store ready at {s.safe_url}")


@app.command()
@fails_cleanly
def schema(kind: Annotated[str, typer.Argument(help="listing or inventory")]) -> None:
    """Print the JSON Schema of a listing or inventory file, for editors to validate against."""
    sys.stdout.write(json.dumps(json_schema(kind), indent=2) + "\n")


# -- SKUs ----------------------------------------------------------------------------------


def sku_record(sku: Sku) -> dict[str, Any]:
    """A SKU as one flat row for tables and CSV."""
    accel = ", ".join(f"{a.count}x {a.model}" for a in sku.accelerators)
    price = f"{sku.pricing.on_demand_hourly} {sku.pricing.currency}" if sku.pricing else ""
    return {
        "slug": sku.slug,
        "revision": sku.revision,
        "vendor": sku.vendor,
        "name": sku.name,
        "arch": sku.arch,
        "cores": sku.cores,
        "memory": sku.memory,
        "memory_h": format_size(sku.memory),
        "accelerators": accel,
        "nics": ", ".join(f"{n.count}x {format_speed(n.speed)}" for n in sku.nics),
        "max_watts": sku.power.max_watts if sku.power else None,
        "traits": sku.traits,
        "on_demand_hourly": price,
    }


TABLE_SKU_COLUMNS = [
    "slug",
    "revision",
    "vendor",
    "arch",
    "cores",
    "memory_h",
    "accelerators",
    "traits",
    "on_demand_hourly",
]


@sku_app.command("import")
@fails_cleanly
def sku_import(
    files: Annotated[list[Path], typer.Argument(help="listing files (.yaml, .toml, .json)")],
) -> None:
    """Import vendor listings atomically: all files are stored, or none."""
    report = store().import_listings(files)
    err.print(
        f"{len(report.added)} new SKUs, {len(report.updated)} new revisions, {report.unchanged} unchanged"
    )
    for name in report.added + report.updated:
        out.print(f"  {name}")


def query_options(
    where: str | None,
    arch: str | None,
    accelerator: str | None,
    min_accelerators: int | None,
    min_cores: int | None,
    min_memory: str | None,
    trait: list[str] | None,
    site: str | None,
    max_price: str | None,
) -> SkuQuery:
    """A :class:`SkuQuery` from ``--where`` text and the individual filter options."""
    query = SkuQuery.parse(where) if where else SkuQuery()
    terms = {
        "arch": arch,
        "accelerator.kind": accelerator,
        "accelerators": min_accelerators,
        "cores": min_cores,
        "memory": min_memory,
        "site": site,
        "price": max_price,
    }
    ops = {"accelerators": ">=", "cores": ">=", "memory": ">=", "price": "<="}
    extra = " ".join(f"{k}{ops.get(k, '=')}{v}" for k, v in terms.items() if v is not None)
    extra += "".join(f" trait={t}" for t in trait or [])
    if extra.strip():
        more = SkuQuery.parse(extra, source="options")
        query = query.model_copy(update=more.model_dump(exclude_defaults=True))
        if trait and query.traits != more.traits:
            query.traits = sorted(set(query.traits) | set(more.traits))
    return query


@sku_app.command("list")
@fails_cleanly
def sku_list(
    fmt: FormatOpt = OutputFormat.table,
    where: Annotated[
        str | None, typer.Option(help="e.g. 'arch=aarch64 cores>=64 trait=rdma'")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="x86_64, aarch64, riscv64 ...")] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="accelerator kind: gpu, tpu, fpga, asic")
    ] = None,
    min_accelerators: Annotated[
        int | None, typer.Option(help="at least this many accelerators")
    ] = None,
    min_cores: Annotated[int | None, typer.Option(help="at least this many cores")] = None,
    min_memory: Annotated[
        str | None, typer.Option(help="at least this much memory, e.g. 256GB")
    ] = None,
    trait: Annotated[list[str] | None, typer.Option(help="required trait (repeatable)")] = None,
    site: Annotated[str | None, typer.Option(help="offered at this site (has hosts there)")] = None,
    max_price: Annotated[str | None, typer.Option(help="on-demand price per hour at most")] = None,
    all_revisions: Annotated[
        bool, typer.Option("--all-revisions", help="include old revisions")
    ] = False,
) -> None:
    """List SKUs, optionally filtered by capability."""
    query = query_options(
        where, arch, accelerator, min_accelerators, min_cores, min_memory, trait, site, max_price
    )
    skus = store().skus(query, all_revisions=all_revisions)
    emit(
        [sku_record(s) for s in skus],
        fmt,
        columns=TABLE_SKU_COLUMNS if fmt is OutputFormat.table else None,
        title="SKUs",
        json_records=[s.model_dump(mode="json") for s in skus],
    )


@sku_app.command("show")
@fails_cleanly
def sku_show(
    slug: str,
    revision: Annotated[int | None, typer.Option(help="a past revision")] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Show one SKU in full."""
    sku = store().sku(slug, revision)
    if fmt is OutputFormat.json:
        emit_one(sku.model_dump(mode="json"), fmt)
    else:
        emit_one(
            sku_record(sku) | {"description": sku.description},
            fmt,
            title=f"{sku.slug}@{sku.revision}",
        )


# -- inventory, sites, hosts ----------------------------------------------------------------


@inventory_app.command("import")
@fails_cleanly
def inventory_import(files: Annotated[list[Path], typer.Argument(help="inventory files")]) -> None:
    """Import regions, metros, sites and hosts atomically (re-importing changes nothing)."""
    report = store().import_inventories(files)
    err.print(
        f"{len(report.added)} added, {len(report.updated)} updated, {report.unchanged} unchanged"
    )


@site_app.command("list")
@fails_cleanly
def site_list(fmt: FormatOpt = OutputFormat.table) -> None:
    """List sites with their metro, region, electricity price and PUE."""
    rows = [s.model_dump(mode="json") for s in store().sites()]
    emit(rows, fmt, title="Sites")


@host_app.command("list")
@fails_cleanly
def host_list(
    fmt: FormatOpt = OutputFormat.table,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    sku: Annotated[str | None, typer.Option(help="only this SKU slug")] = None,
    state: Annotated[
        str | None, typer.Option(help="available, maintenance, failed, retired")
    ] = None,
) -> None:
    """List hosts (BMC passwords are never shown)."""
    hosts = store().hosts(site=site, sku=sku, state=state)
    flat = [
        {
            "id": h.id,
            "sku": h.sku,
            "site": h.site,
            "state": h.state.value,
            "bmc": f"{h.bmc.protocol}://{h.bmc.address}:{h.bmc.effective_port}" if h.bmc else "",
        }
        for h in hosts
    ]
    emit(flat, fmt, title="Hosts", json_records=[h.public() for h in hosts])


def _register_reservations() -> None:
    from marketplace import cli_reservations

    cli_reservations.register(app, fails_cleanly)
    cli_reservations.register_host_commands(host_app, fails_cleanly)


_register_reservations()


def _register_extensions() -> None:
    for ep in entry_points(group="hwmarket.cli"):
        try:
            ep.load()(app)
        except Exception as exc:  # a broken extension must not take the whole CLI down
            err.print(f"[yellow]warning:[/] command group {ep.name!r} failed to load: {exc}")


_register_extensions()


def main() -> None:
    app()


__all__ = ["app", "fails_cleanly", "main", "query_options", "store"]
