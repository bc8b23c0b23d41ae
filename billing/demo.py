"""``hwmarket demo``: the main job end to end on the embedded default (SQLite, nothing to start).

It lives in ``billing`` because it walks the whole flow (catalogue -> reservations -> power ->
metering -> invoices -> Stripe), and only the top package may import all three. Each step is a
function of the :class:`DemoRun`, so notebooks can re-run parts of it. Seeds are fixed: two runs
give the same reservations and the same totals (the live IPMI window is a few seconds of real
readings of the same power models, too short to move a cent).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketplace.booking import quote, reserve
from marketplace.capacity import capacity, holdings
from marketplace.console import err, out
from marketplace.errors import InvalidInput, NoCapacity
from marketplace.inventory import Inventory
from marketplace.lifecycle import cancel, extend, fail_host
from marketplace.store import Store
from marketplace.units import format_size
from metering.sim_data import shared_data_dir

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TRACE = Path("traces/alibaba-openb-2023/openb_pod_list_gpuspec33.csv")
MONTH = "2026-11"
MONTH_START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MONTH_END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
#: The host whose BMC the demo serves over Redfish (sushy-static); the others speak IPMI.
REDFISH_HOST = "sjc1-r03-u01"


@dataclass
class DemoRun:
    """The demo's work folder, its store, and what each step made and measured."""

    workdir: Path
    examples: Path = EXAMPLES
    data: Path = field(default_factory=shared_data_dir)
    live_rounds: int = 4
    store: Store = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def db_path(self) -> Path:
        return self.workdir / "hwmarket.db"

    @property
    def outputs(self) -> Path:
        return self.workdir / "outputs"


@contextmanager
def progress(title: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(n)``."""
    with Progress(
        TextColumn(f"  {title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


# -- 1. catalogue and inventory ---------------------------------------------------------------


def step_catalogue(run: DemoRun) -> None:
    """Create the SQLite store; import the example listings and the three-site inventory; point
    the hosts' BMCs at free loopback ports where the simulated BMCs will listen."""
    from metering.demo_ports import free_tcp_port, free_udp_block

    listings = sorted(
        p
        for p in (run.examples / "listings").iterdir()
        if p.suffix in {".yaml", ".yml", ".toml", ".json"}
    )
    run.store = Store(f"sqlite:///{run.db_path}")
    report = run.store.import_listings(listings)
    inventory = run.store.import_inventory(run.examples / "inventory" / "three-sites.yaml")
    hosts = run.store.hosts()
    base = free_udp_block(len(hosts))
    moved = []
    for i, h in enumerate(hosts):
        assert h.bmc is not None
        port = free_tcp_port() if h.id == REDFISH_HOST else base + i
        bmc = h.bmc.model_copy(
            update={
                "protocol": "redfish" if h.id == REDFISH_HOST else "ipmi",
                "address": "127.0.0.1",
                "port": port,
            }
        )
        moved.append(h.model_copy(update={"bmc": bmc}))
    run.store.import_inventory(Inventory(hosts=moved))
    run.facts["bmc_base_port"] = base
    err.print(
        f"  {len(listings)} listings, {len(report.added)} SKUs; {len(hosts)} hosts at {len(run.store.sites())} sites ({len(inventory.added)} records)"
    )

    table = Table(title="Catalogue")
    for col in ("SKU", "vendor", "arch", "cores", "memory", "accelerators", "on-demand / h"):
        table.add_column(col)
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
    frame = run.store.hosts_frame()
    per_site = frame.pivot_table(
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


# -- 2. a month of customers' requests --------------------------------------------------------


def step_reservations(run: DemoRun) -> None:
    """Replay a slice of the Alibaba GPU trace as a month of quotes and bookings, with a few
    cancellations, an extension and a host failure that moves a booking."""
    from billing.demo_workload import trace_requests

    trace = run.data / TRACE
    if not trace.exists():
        raise InvalidInput(f"the Alibaba trace is missing (set HWMARKET_SHARED_DATA): {trace}")
    requests = trace_requests(trace, MONTH_START)
    outcome: Counter[str] = Counter()
    booked: list[tuple[dt.datetime, Any]] = []
    to_cancel: list[tuple[dt.datetime, str]] = []
    failure_after = MONTH_START + dt.timedelta(days=14)
    planned_failure: tuple[dt.datetime, str] | None = None
    extended = failed = False
    with progress("requests", len(requests)) as advance:
        for req in requests:
            now = req.arrival
            for when, rid in sorted(to_cancel):
                if when <= now:
                    cancel(run.store, rid, now=when)
                    outcome["cancelled"] += 1
            to_cancel = [(w, r) for w, r in to_cancel if w > now]
            if planned_failure is not None and planned_failure[0] <= now:
                failed = _fail_host_if_movable(run, *planned_failure)
                planned_failure = None
            if quote(run.store, req.request, now=now):
                outcome["quoted"] += 1
            try:
                r = reserve(run.store, req.request, now=now)
                outcome["booked"] += 1
                booked.append((now, r))
                if r.start - now >= dt.timedelta(hours=6) and outcome["cancel-planned"] < 4:
                    to_cancel.append((r.start - dt.timedelta(hours=2), r.id))
                    outcome["cancel-planned"] += 1
                if (
                    not extended
                    and now > MONTH_START + dt.timedelta(days=10)
                    and r.end - r.start >= dt.timedelta(hours=2)
                ):
                    try:
                        extend(run.store, r.id, r.end + dt.timedelta(hours=6), now=now)
                        extended = True
                        outcome["extended"] += 1
                    except NoCapacity:
                        pass
                if (
                    not failed
                    and planned_failure is None
                    and now > failure_after
                    and r.end - r.start >= dt.timedelta(hours=2)
                ):
                    planned_failure = (r.start + dt.timedelta(minutes=30), r.hosts[0])
            except NoCapacity:
                outcome["rejected: no capacity"] += 1
            except InvalidInput:
                outcome["rejected: too large for any site"] += 1
            advance(1)
    run.facts["requests"] = dict(outcome) | {"total": len(requests)}
    err.print("  " + ", ".join(f"{k}: {v}" for k, v in outcome.items() if k != "cancel-planned"))


def _fail_host_if_movable(run: DemoRun, at: dt.datetime, host: str) -> bool:
    """Fail ``host`` at ``at`` if another host of its SKU at its site is free for the rest of
    its current booking (so the demo shows a booking moving); otherwise leave it alone."""
    held = holdings(run.store, at, MONTH_END)
    current = held[(held["host"] == host) & (held["start"] <= at)]
    if current.empty:
        return False
    booking = current.iloc[0]
    view = capacity(
        run.store,
        at,
        booking["end"].to_pydatetime(),
        sku=str(booking["sku"]),
        places=[str(booking["site"])],
    )
    if int(view.levels["free_whole_window"].sum()) == 0:
        return False
    events = fail_host(run.store, host, now=at, reason="demo: PSU failure")
    kinds = [e.kind for e in events]
    run.facts["host_failure"] = {"host": host, "at": at.isoformat(), "events": kinds}
    err.print(
        f"  host {host} failed at {at:%Y-%m-%d %H:%M}: {', '.join(kinds) or 'nothing to move'}"
    )
    return True


# -- 3. power: live through real IPMI and Redfish, the rest simulated ---------------------------


def step_power(run: DemoRun) -> None:
    """Serve each host's power model from simulated BMCs on loopback (IPMI, one Redfish), collect
    live readings for a few seconds, then fill the rest of the month from the same models."""
    from billing.demo_power import host_models, simulated_ipmi_bmcs, simulated_samples
    from metering.collector import Collector, PollTarget
    from metering.ledger import StoreSink, poll_targets, read_samples
    from metering.redfish_mockup import MockupPower
    from metering.redfish_server import serve_mockup

    hosts = run.store.hosts_frame()
    envelopes = {}
    for slug in hosts["sku"].unique():
        sku = run.store.sku(str(slug))
        assert sku.power is not None
        envelopes[str(slug)] = (float(sku.power.idle_watts), float(sku.power.max_watts))
    held = holdings(run.store, MONTH_START, MONTH_END)
    models = host_models(hosts, envelopes, held)
    ordered = [models[h] for h in sorted(models)]
    targets: list[PollTarget] = poll_targets(run.store)
    now = time.time()
    redfish = serve_mockup(
        run.workdir / "redfish",
        MockupPower(
            environment_watts=round(float(models[REDFISH_HOST].watts([now])[0]), 1),
            legacy_watts=round(float(models[REDFISH_HOST].watts([now])[0]) + 3, 1),
        ),
        port=next(t.bmc.port for t in targets if t.host == REDFISH_HOST),
    )
    try:
        with (
            simulated_ipmi_bmcs(ordered, run.facts["bmc_base_port"], "example"),
            Collector(targets, sink=StoreSink(run.store), timeout_s=2.0, retries=1) as collector,
        ):
            stats = collector.run(1.0, float(run.live_rounds))
    finally:
        redfish.stop()
    live = read_samples(run.store, MONTH_START, MONTH_END)
    windows = {
        str(h): (g["time"].min().to_pydatetime(), g["time"].max().to_pydatetime())
        for h, g in live.groupby("host")
    }
    simulated = simulated_samples(
        models,
        MONTH_START - dt.timedelta(minutes=5),
        MONTH_END + dt.timedelta(minutes=5),
        300,
        skip=windows,
    )
    run.samples = pd.concat(
        [simulated, live.drop(columns=["min_watts", "max_watts", "energy_j"])], ignore_index=True
    )
    run.facts["samples"] = {
        "live": len(live),
        "live_hosts": len(windows),
        "live_sources": dict(Counter(live["source"].astype(str))),
        "simulated": len(simulated),
        "polls": stats.polled,
        "failed_polls": stats.failed,
        "on_time": round(stats.on_time_ratio, 4),
    }
    run.outputs.mkdir(parents=True, exist_ok=True)
    run.samples.to_parquet(run.outputs / "samples.parquet", index=False)
    err.print(
        f"  live: {len(live)} samples from {len(windows)} BMCs over real IPMI/Redfish on 127.0.0.1 "
        f"({', '.join(f'{k}: {v}' for k, v in run.facts['samples']['live_sources'].items())}; "
        f"{stats.failed} failed polls, {stats.on_time_ratio:.0%} on time)"
    )
    err.print(
        f"  simulated: {len(simulated)} samples from the same power models (source=simulated, flagged SIMULATED)"
    )


# -- 4. metering, invoices, Stripe ----------------------------------------------------------------


def step_meter(run: DemoRun) -> None:
    """Meter the month into the usage ledger (every host-hour, split at reservations' seconds)."""
    from metering.ledger import meter

    hours = int((MONTH_END - MONTH_START).total_seconds() // 3600)
    with progress("metering hours", hours) as advance:
        done = [0]

        def tick(n: int, _total: int) -> None:
            advance(n - done[0])
            done[0] = n

        report = meter(
            run.store,
            MONTH_START,
            MONTH_END,
            samples=run.samples,
            now=MONTH_END + dt.timedelta(hours=1),
            progress=tick,
        )
    run.facts["ledger"] = {
        "rows": report.new_rows,
        "versions": report.new_versions,
        "unchanged": report.unchanged,
    }
    err.print(f"  ledger: {report.new_rows} rows for {hours} hours ({report.unchanged} unchanged)")


def step_invoices(run: DemoRun) -> None:
    """Rate the month at list prices, build and finalize one invoice per customer, sync Stripe."""
    from billing.invoicing import build, finalize, price_book_from_catalogue

    book = price_book_from_catalogue(run.store)
    at = MONTH_END + dt.timedelta(hours=2)
    report = build(run.store, MONTH, book, now=at)
    invoices = finalize(run.store, MONTH, now=at)
    run.facts["invoices"] = {i.customer: str(i.total) for i in invoices}
    err.print(
        f"  {len(invoices)} invoices finalized, {sum(len(i.lines) for i in invoices)} lines ({report.adjustment_lines} adjustments)"
    )
    run.facts["stripe"] = _sync_stripe(run)


def _sync_stripe(run: DemoRun) -> dict[str, Any]:
    """Send the outbox to Stripe's test mode when STRIPE_API_KEY is set, else to the project's
    Stripe-shaped server on loopback (a real HTTP server driven by the official client)."""
    import os

    from billing.fake_stripe import serve
    from billing.stripe_sync import client_from_env, sync

    server = None
    saved = {
        k: os.environ.get(k)
        for k in ("STRIPE_API_KEY", "STRIPE_API_BASE", "HWMARKET_STRIPE_FLAVOR")
    }
    if not os.environ.get("STRIPE_API_KEY"):
        server = serve(api_key="sk_test_hwmarket_demo")
        os.environ.update(
            STRIPE_API_KEY="sk_test_hwmarket_demo",
            STRIPE_API_BASE=server.url,
            HWMARKET_STRIPE_FLAVOR="fake",
        )
    try:
        report = sync(run.store, client_from_env(), mode="items", concurrency=4)
    finally:
        if server is not None:
            server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    summary: dict[str, Any] = {
        "target": "the project's Stripe-shaped server" if server else "Stripe (STRIPE_API_KEY)",
        "customers": report.customers_created + report.customers_matched,
        "invoice items": report.items_sent,
        "invoices finalized": report.invoices_finalized,
        "requests": report.requests,
        "ok": report.ok,
    }
    err.print("  Stripe: " + ", ".join(f"{k}: {v}" for k, v in summary.items()))
    if not report.ok:
        err.print(
            f"  [yellow]Stripe sync left work: {report.failures[:3] + report.problems[:3]}[/]"
        )
    return summary


# -- 5. summary and outputs ------------------------------------------------------------------------


def step_summary(run: DemoRun) -> None:
    """Print capacity, utilisation, energy and revenue; write CSV/Parquet/JSON and an HTML invoice."""
    from billing.invoices import render_html, to_csv, to_json
    from billing.invoicing import list_invoices
    from metering.ledger import usage

    ledger = usage(run.store, MONTH_START, MONTH_END)
    invoices = list_invoices(run.store, period=MONTH)
    run.outputs.mkdir(parents=True, exist_ok=True)
    ledger.to_parquet(run.outputs / "usage_ledger.parquet", index=False)
    ledger.to_csv(run.outputs / "usage_ledger.csv", index=False)
    (run.outputs / "invoices.csv").write_text(to_csv(invoices))
    (run.outputs / "invoices.json").write_text(to_json(invoices))
    biggest = max(invoices, key=lambda i: i.total)
    html_path = run.outputs / f"invoice-{biggest.number}.html"
    html_path.write_text(render_html(biggest))

    view = capacity(run.store, MONTH_END - dt.timedelta(days=7), MONTH_END)
    table = Table(title="Capacity levels, last week of the month")
    for col in ("site", "SKU", "hosts", "free all week", "level"):
        table.add_column(col)
    for r in view.levels.itertuples(index=False):
        table.add_row(str(r.site), str(r.sku), str(r.total), str(r.free_whole_window), str(r.level))
    out.print(table)

    held = ledger[ledger["reservation_id"] != ""]
    util = (
        held.groupby(["site", "sku"])["reserved_s"].sum()
        / ledger.groupby(["site", "sku"])["reserved_s"].sum()
    ).fillna(0)
    energy = ledger.groupby("site").agg(
        energy_kwh=("energy_wh", "sum"),
        bound_kwh=("energy_uncertainty_wh", "sum"),
        facility_kwh=("facility_energy_wh", "sum"),
    )
    idle = ledger[ledger["reservation_id"] == ""].groupby("site")["energy_wh"].sum()
    table = Table(title="Utilisation and energy, " + MONTH)
    for col in ("site", "SKU", "utilisation"):
        table.add_column(col)
    keys: list[Any] = util.index.tolist()
    for (where, what), u in zip(keys, util.tolist(), strict=True):
        table.add_row(str(where), str(what), f"{float(u):.1%}")
    out.print(table)
    table = Table(title="Energy per site (measured at the BMC; facility = x PUE)")
    for col in ("site", "energy kWh", "± bound kWh", "facility kWh", "idle kWh"):
        table.add_column(col, justify="right")
    rows: dict[Any, Any] = energy.to_dict("index")
    for site, e in rows.items():
        table.add_row(
            str(site),
            f"{e['energy_kwh'] / 1000:,.1f}",
            f"{e['bound_kwh'] / 1000:,.2f}",
            f"{e['facility_kwh'] / 1000:,.1f}",
            f"{float(idle.get(site, 0.0)) / 1000:,.1f}",
        )
    out.print(table)
    table = Table(title="Revenue per customer, " + MONTH)
    for col in ("customer", "invoice", "lines", "total"):
        table.add_column(col)
    for inv in sorted(invoices, key=lambda i: i.customer):
        table.add_row(
            inv.customer, inv.number or "", str(len(inv.lines)), f"{inv.total} {inv.currency}"
        )
    out.print(table)
    total = sum((i.total for i in invoices), start=type(invoices[0].total)(0)) if invoices else 0
    run.facts["revenue_total"] = str(total)
    (run.outputs / "summary.json").write_text(json.dumps(run.facts, indent=2, default=str))
    err.print(
        f"  outputs in {run.outputs}: usage_ledger.parquet/.csv, invoices.csv/.json, samples.parquet, {html_path.name}"
    )


STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("catalogue and inventory", step_catalogue),
    ("a month of requests from the Alibaba GPU trace", step_reservations),
    ("power: live BMCs on loopback, the rest simulated", step_power),
    ("metering the month", step_meter),
    ("invoices and Stripe", step_invoices),
    ("summary", step_summary),
]


def run_demo(
    workdir: Path, examples: Path = EXAMPLES, *, fresh: bool = True, live_rounds: int = 4
) -> DemoRun:
    """Run every step in ``workdir`` (emptied first when ``fresh``); return what was made."""
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = DemoRun(workdir=workdir, examples=examples, live_rounds=live_rounds)
    for i, (title, step) in enumerate(STEPS, 1):
        err.print(f"[bold]step {i}/{len(STEPS)}:[/] {title}")
        start = time.perf_counter()
        step(run)
        run.timings[title] = time.perf_counter() - start
    err.print(
        f"done in {sum(run.timings.values()):.1f} s; store: {run.db_path}; revenue {run.facts.get('revenue_total')} USD"
    )
    return run


__all__ = ["MONTH", "STEPS", "DemoRun", "run_demo"]
