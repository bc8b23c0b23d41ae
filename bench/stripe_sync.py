"""Benchmark: Stripe sync throughput against the project's fake, by concurrency and rate limit.

Seeds a fresh SQLite outbox per configuration (C customers, each with one invoice of N lines
and its finalization, plus E meter events), runs ``billing.stripe_sync.sync`` against the fake
(in its own process, emptied between runs) and prints rows/s and requests/s. A month-end run
against Stripe is then bounded by Stripe's rate limits (100 read + 100 write requests/s live, 25
in test mode) and by its round trip: the last columns project the same run on Stripe from the
measured requests per row, the rate limit and ``--stripe-rtt-ms`` (a model, not a measurement).

Run: ``python bench/stripe_sync.py [--customers 20 --items 50 --events 2000]
[--concurrency 1 4 8] [--rate-limit 0 25 100]`` (rate limit 0: none).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# Run as `python bench/stripe_sync.py`, this folder comes first on sys.path; keep `bench` and
# the packages importable from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stripe  # noqa: E402

from billing import stripe_outbox as outbox  # noqa: E402
from billing.stripe_sync import FAKE_STRIPE, METERS, sync  # noqa: E402
from marketplace.store import Store  # noqa: E402

LIVE_LIMIT, TEST_LIMIT = 100, 25


def _describe_machine() -> None:
    try:
        from bench.machine import describe_machine
    except ImportError:
        import platform

        print(f"machine: {platform.processor()} {platform.python_version()}")
        return
    describe_machine()


def seed(store: Store, customers: int, items: int, events: int) -> int:
    """An outbox shaped like month-end: invoices with their lines, meter events by the hour."""
    now = int(time.time())
    rows: list[dict[str, Any]] = []
    for c in range(customers):
        customer, invoice = f"cust-{c:04d}", f"inv-2026-11-{c:04d}"
        line_ids, total = [], 0
        for i in range(items):
            line_id = f"ln-{c:04d}-{i:04d}"
            amount = 500 + 7 * i
            line_ids.append(line_id)
            total += amount
            rows.append(
                {
                    "id": line_id,
                    "kind": "invoice_item",
                    "customer": customer,
                    "invoice_id": invoice,
                    "payload": {
                        "invoice_id": invoice,
                        "amount_minor": amount,
                        "currency": "usd",
                        "description": f"line {i}",
                        "period_start": now - 30 * 86400,
                        "period_end": now - 86400,
                        "metadata": {"hwmarket_line_id": line_id, "hwmarket_invoice_id": invoice},
                    },
                }
            )
        rows.append(
            {
                "id": "fin_" + invoice,
                "kind": "invoice_finalize",
                "customer": customer,
                "invoice_id": invoice,
                "payload": {
                    "invoice_id": invoice,
                    "number": f"HWM-{c:04d}",
                    "currency": "usd",
                    "total_minor": total,
                    "item_ids": line_ids,
                },
            }
        )
    names = list(METERS.values())
    for n in range(events):
        c, metric = n % customers, n // customers % 2
        hour = (now // 3600 - 1 - n // (2 * customers)) * 3600
        rows.append(
            {
                "id": f"hwm-cust-{c:04d}-{hour}-{metric}-v1",
                "kind": "meter_event",
                "customer": f"cust-{c:04d}",
                "invoice_id": None,
                "payload": {
                    "event_name": names[metric],
                    "customer": f"cust-{c:04d}",
                    "value": 3600,
                    "timestamp": hour,
                },
            }
        )
    return outbox.add_rows(store, rows)


def start_fake(port: int) -> subprocess.Popen[bytes]:
    """The fake in its own process."""
    code = (
        "from billing.fake_stripe.__main__ import main\n"
        f"main(['--port', '{port}'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/state", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the fake did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--items", type=int, default=50, help="invoice lines per customer")
    parser.add_argument("--events", type=int, default=2000, help="meter events")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rate-limit", type=float, nargs="+", default=[0, 25])
    parser.add_argument("--stripe-rtt-ms", type=float, default=250.0)
    parser.add_argument("--port", type=int, default=12199)
    args = parser.parse_args()
    _describe_machine()
    rows_total = args.customers * (args.items + 1) + args.events
    print(
        f"outbox: {args.customers} customers x {args.items} lines + finalize, "
        f"{args.events} meter events = {rows_total} rows"
    )
    fake = start_fake(args.port)
    url = f"http://127.0.0.1:{args.port}"
    header = (
        f"{'conc':>4} {'limit/s':>7} {'seconds':>8} {'rows/s':>8} {'req/s':>7} {'req/row':>7}"
        f" | {'Stripe live s*':>15} {'Stripe test s*':>15}"
    )
    print(header)
    try:
        for limit in args.rate_limit:
            for conc in args.concurrency:
                urllib.request.urlopen(
                    urllib.request.Request(f"{url}/_fake/reset", method="POST"), timeout=10
                ).close()
                with tempfile.TemporaryDirectory() as tmp:
                    store = Store(f"sqlite:///{tmp}/bench.db")
                    seeded = seed(store, args.customers, args.items, args.events)
                    client = stripe.StripeClient(
                        "sk_test_bench", base_addresses={"api": url}, max_network_retries=2
                    )
                    t0 = time.perf_counter()
                    report = sync(
                        store,
                        client,
                        flavor=FAKE_STRIPE,
                        concurrency=conc,
                        rate_limit=limit or None,
                    )
                    seconds = time.perf_counter() - t0
                    store.dispose()
                if not report.ok:
                    raise SystemExit(f"sync failed: {report.failures[:3]} {report.problems[:3]}")
                per_row = report.requests / seeded
                rtt = args.stripe_rtt_ms / 1000
                live = max(report.requests / LIVE_LIMIT, report.requests * rtt / conc)
                test = max(report.requests / TEST_LIMIT, report.requests * rtt / conc)
                print(
                    f"{conc:>4} {limit or '-':>7} {seconds:>8.2f} {seeded / seconds:>8.0f} "
                    f"{report.requests / seconds:>7.0f} {per_row:>7.2f}"
                    f" | {live:>15.0f} {test:>15.0f}"
                )
    finally:
        fake.terminate()
        fake.wait(5)
    print(
        f"* projected, not measured: max(requests / limit, requests x {args.stripe_rtt_ms:.0f} ms"
        " / concurrency), limit 100/s live (reads and writes counted apart) and 25/s in test mode"
    )


if __name__ == "__main__":
    main()
