"""Benchmark: rate one million usage-ledger rows into invoice lines.

Synthetic but shaped like a real month: 2,000 reservations of 1-4 hosts by 50 customers over
November 2026 at 5 sites and 10 SKUs, partial first and last hours, 20 % reserved-1y and 10 %
reserved-3y terms, a mid-month price change, tiered energy, some customers billed in their own
time zone, and 5 % idle operator rows. Prints rows per second of ``billing.rating.rate`` and the
ratio to a plain per-row Decimal loop run in the same process on a 100k-row subset (extrapolated
per row; the loop's cost is linear in rows). Run: ``python bench/billing.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

# Run as `python bench/billing.py`, this file's folder comes first on sys.path and its name
# would shadow the `billing` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from billing.invoices import build_invoices  # noqa: E402
from billing.money import round_amount  # noqa: E402
from billing.prices import EnergyTariff, EnergyTier, MachinePrice, PriceBook  # noqa: E402
from billing.rating import rate  # noqa: E402

SITES = ["ams1", "fra2", "sjc1", "nrt1", "syd3"]
SKUS = [f"sku-{i}" for i in range(10)]
MONTH = pd.Timestamp("2026-11-01T00:00Z")
CHANGE = pd.Timestamp("2026-11-16T00:00Z")


def price_book() -> PriceBook:
    """List prices changing mid-month, two customer rates and tiered energy per site."""
    prices = []
    for s, site in enumerate(SITES):
        for k, sku in enumerate(SKUS):
            base = Decimal("0.35") + Decimal(k) * Decimal("0.17") + Decimal(s) / 50
            for label, start, end, bump in [
                ("a", "2026-01-01T00:00Z", CHANGE, Decimal(0)),
                ("b", CHANGE, None, Decimal("0.03")),
            ]:
                prices.append(
                    MachinePrice(
                        id=f"{sku}-{site}-{label}",
                        sku=sku,
                        site=site,
                        valid_from=start,
                        valid_to=end,
                        on_demand_hourly=base + bump,
                        reserved_hourly={
                            "reserved-1y": base * Decimal("0.7"),
                            "reserved-3y": base * Decimal("0.5"),
                        },
                        unit="second" if k % 3 == 0 else "hour",
                    )
                )
    for cust in ("cust-007", "cust-042"):
        prices.append(
            MachinePrice(
                id=f"{cust}-deal",
                sku="sku-1",
                site="ams1",
                customer=cust,
                valid_from="2026-01-01T00:00Z",
                on_demand_hourly="0.29",
            )
        )
    energy = [
        EnergyTariff(
            id=f"energy-{site}",
            site=site,
            valid_from="2026-01-01T00:00Z",
            tiers=(
                EnergyTier(up_to_kwh=Decimal(5000), per_kwh=Decimal("0.21")),
                EnergyTier(per_kwh=Decimal("0.17")),
            ),
        )
        for site in SITES
    ]
    return PriceBook(currency="USD", prices=prices, energy=energy)


def ledger(rows: int, seed: int = 7) -> pd.DataFrame:
    """About ``rows`` ledger rows for 2,000 reservations (95 %) and idle hosts (5 %)."""
    rng = np.random.default_rng(seed)
    n_res, hours_in_month = 2000, 720
    hosts = rng.integers(1, 5, n_res)
    target = rows * 0.95 / n_res
    duration = np.clip((target / hosts * rng.uniform(0.5, 1.5, n_res)).astype(int), 1, 720)
    start = rng.integers(0, hours_in_month - duration + 1)
    per_res = hosts * duration
    res = np.repeat(np.arange(n_res), per_res)
    offset = np.arange(len(res)) - np.repeat(np.cumsum(per_res) - per_res, per_res)
    host_i = offset // np.repeat(duration, per_res)
    hour_i = offset % np.repeat(duration, per_res)
    reserved = np.full(len(res), 3600.0)
    first_s = rng.uniform(60, 3600, n_res)
    last_s = rng.uniform(60, 3600, n_res)
    reserved[hour_i == 0] = first_s[res[hour_i == 0]]
    is_last = hour_i == np.repeat(duration, per_res) - 1
    reserved[is_last & (hour_i > 0)] = last_s[res[is_last & (hour_i > 0)]]
    customer = rng.integers(0, 50, n_res)
    site = rng.integers(0, len(SITES), n_res)
    sku = rng.integers(0, len(SKUS), n_res)
    term = rng.choice(["on-demand", "reserved-1y", "reserved-3y"], n_res, p=[0.7, 0.2, 0.1])
    watts = rng.uniform(150, 900, len(res))
    n_idle = rows - len(res)
    frame = pd.DataFrame(
        {
            "reservation_id": np.array([f"res-{i:05d}" for i in range(n_res)])[res],
            "customer": np.array([f"cust-{i:03d}" for i in range(50)])[customer][res],
            "host": [
                f"{SITES[s]}-h{r:05d}-{h}" for s, r, h in zip(site[res], res, host_i, strict=True)
            ],
            "sku": np.array(SKUS)[sku][res],
            "sku_revision": 1,
            "site": np.array(SITES)[site][res],
            "hour": MONTH + pd.to_timedelta(start[res] + hour_i, unit="h"),
            "reserved_s": reserved,
            "energy_wh": watts * reserved / 3600,
            "pricing_term": term[res],
        }
    )
    idle = pd.DataFrame(
        {
            "reservation_id": None,
            "customer": "",
            "host": [f"idle-{i % 500}" for i in range(max(n_idle, 0))],
            "sku": "sku-0",
            "sku_revision": 1,
            "site": "ams1",
            "hour": MONTH + pd.to_timedelta(rng.integers(0, 720, max(n_idle, 0)), unit="h"),
            "reserved_s": 0.0,
            "energy_wh": rng.uniform(50, 120, max(n_idle, 0)),
            "pricing_term": None,
        }
    )
    out = pd.concat([frame, idle], ignore_index=True)
    out["energy_uncertainty_wh"] = out["energy_wh"] * 0.02
    out["facility_energy_wh"] = out["energy_wh"] * 1.35
    out["avg_watts"] = out["energy_wh"]
    out["peak_watts"] = out["energy_wh"] * 1.2
    out["version"] = 1
    out["computed_at"] = pd.Timestamp("2026-12-01T01:00Z")
    return out


def per_row_loop(frame: pd.DataFrame, book: PriceBook) -> dict[tuple[str, ...], Decimal]:
    """The naive way: look up a price and compute Decimal money row by row, then round sums.

    Per-second pricing only (no runs), UTC periods: it does less than ``rate`` and is still the
    yardstick a reader would write first.
    """
    by_place: dict[tuple[str, str], list[MachinePrice]] = defaultdict(list)
    for p in book.prices:
        by_place[(p.sku, p.site)].append(p)
    totals: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
    columns = ["reservation_id", "customer", "sku", "site", "hour", "pricing_term"]
    columns += ["reserved_s", "facility_energy_wh"]
    for rid, customer, sku, site, hour, term, seconds, wh in zip(
        *(frame[c].tolist() for c in columns), strict=True
    ):
        if not isinstance(rid, str) or not rid:
            continue
        term = term if isinstance(term, str) else "on-demand"
        at = hour.to_pydatetime()
        best = None
        for p in by_place[(sku, site)]:
            if p.customer not in (None, customer) or p.hourly_rate(term) is None:
                continue
            valid = p.valid_from <= at and (p.valid_to is None or at < p.valid_to)
            if valid and (best is None or (p.customer is not None and best.customer is None)):
                best = p
        assert best is not None
        rate_h = best.hourly_rate(term)
        assert rate_h is not None
        totals[(customer, rid, best.id)] += Decimal(repr(seconds)) * rate_h / 3600
        totals[(customer, site, "energy")] += Decimal(repr(wh)) / 1000 * Decimal("0.2")
    return {k: round_amount(v, "USD") for k, v in totals.items()}


def machine() -> str:
    """CPU model, cores and Python of this machine."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    """Build the ledger, time rating and the per-row loop, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    book = price_book()
    frame = ledger(args.rows)
    zones = {f"cust-{i:03d}": z for i, z in [(3, "Asia/Kolkata"), (9, "America/New_York")]}
    print(f"machine: {machine()}")
    print(f"ledger: {len(frame):,} rows, {frame['reservation_id'].nunique():,} reservations")
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lines = rate(frame, book, customer_timezones=zones)
        best = min(best, time.perf_counter() - t0)
    invoices = build_invoices(lines)
    print(
        f"rate(): {best:.3f} s best of {args.repeat} -> {len(frame) / best:,.0f} rows/s; "
        f"{len(lines):,} lines, {len(invoices)} invoices"
    )
    subset = frame.sample(n=min(args.loop_rows, len(frame)), random_state=1)
    t0 = time.perf_counter()
    per_row_loop(subset, book)
    loop = time.perf_counter() - t0
    loop_rate = len(subset) / loop
    print(
        f"per-row Decimal loop: {len(subset):,} rows in {loop:.3f} s -> {loop_rate:,.0f} rows/s "
        f"(extrapolated to {len(frame):,} rows: {len(frame) / loop_rate:.1f} s)"
    )
    print(f"speed-up of rate() over the per-row loop: {len(frame) / best / loop_rate:.1f}x")


if __name__ == "__main__":
    main()
