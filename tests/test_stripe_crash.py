"""Crash tests: a sync killed with SIGKILL anywhere, restarted until it completes, leaves Stripe
holding every outbox row exactly once.

Each trial seeds a fresh SQLite store (3 customers x 40 invoice lines, and 200 meter events on
the fake), empties the peer, then runs ``sync`` in a forked child and kills it at a random
moment, three times, before letting a last run finish. In half the trials each run pauses right
after its n-th Stripe write (n random) and before recording it, and signals it
(``HWMARKET_STRIPE_SYNC_PAUSE_*``); the test then kills it, so the kill
lands exactly in that worst window: done in Stripe, unknown to the store. Afterwards Stripe must
hold each line id and meter event identifier once, one customer per hwmarket customer, one
finalized invoice per hwmarket invoice, and the outbox must be all confirmed. In a third of the
trials every restart also uses fresh idempotency keys (``HWMARKET_STRIPE_SYNC_KEY_SALT``), as if
Stripe had forgotten them after 24 hours: reconciliation alone must then prevent duplicates.

The children are forked from this process (everything already imported), which keeps 40+
trials with several restarts each within a few minutes on two cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing import stripe_outbox as outbox
from billing.stripe_api import FLAVORS, KEY_SALT_ENV, PAUSE_AT_ENV, PAUSE_ENV, PAUSE_MARK_ENV
from billing.stripe_sync import sync
from marketplace.store import Store
from tests.peers.localstripe_peer import start_localstripe, wait_until_serving
from tests.peers.peer_process import stop_process
from tests.test_stripe_sync import CUSTOMERS, seed_outbox

pytestmark = [pytest.mark.slow, pytest.mark.peer]

TRIALS = int(os.environ.get("HWMARKET_CRASH_TRIALS", "20"))
KILLS_PER_TRIAL = 3
FORK = multiprocessing.get_context("fork")


def _sync_child(
    db_url: str, api_url: str, flavor: str, concurrency: int, pause: dict[str, str]
) -> None:
    """The forked sync: exit 0 only when it ran to the end with nothing left to do."""
    for name in (PAUSE_ENV, PAUSE_AT_ENV, PAUSE_MARK_ENV, KEY_SALT_ENV):
        os.environ.pop(name, None)
    os.environ.update(pause)
    store = Store(db_url, migrate_schema=False)
    client = stripe.StripeClient(
        "sk_test_crash", base_addresses={"api": api_url}, max_network_retries=2
    )
    report = sync(store, client, flavor=FLAVORS[flavor], concurrency=concurrency)
    os._exit(0 if report.ok else 3)


def _kill(child: Any) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    # A request the child had fully sent may still be served after its death; a restart a day
    # later would come long after that, so let it land before reconciling.
    time.sleep(0.05)


def _run_until_complete(
    db_url: str,
    api_url: str,
    flavor: str,
    rng: random.Random,
    *,
    concurrency: int,
    worst_moment: bool,
    forget_keys: bool,
    mark: Path,
    max_delay: float,
) -> int:
    """Kill the sync ``KILLS_PER_TRIAL`` times, then let it finish; returns the kills made.

    ``worst_moment``: each run pauses right after its n-th Stripe write (n random), before
    recording it, and is killed as soon as it signals the pause. Otherwise it is killed after a
    random time up to ``max_delay`` seconds. ``forget_keys``: every restart uses idempotency
    keys Stripe has never seen, as if it came more than 24 hours later."""
    kills = 0
    for attempt in range(KILLS_PER_TRIAL + 1):
        last = attempt == KILLS_PER_TRIAL
        pause: dict[str, str] = {KEY_SALT_ENV: f"restart{attempt}"} if forget_keys else {}
        if worst_moment and not last:
            mark.unlink(missing_ok=True)
            pause |= {
                PAUSE_ENV: "60",
                PAUSE_AT_ENV: str(rng.randint(1, 60)),
                PAUSE_MARK_ENV: str(mark),
            }
        child = FORK.Process(target=_sync_child, args=(db_url, api_url, flavor, concurrency, pause))
        child.start()
        if last:
            child.join(120)
        elif worst_moment:
            while child.exitcode is None and not mark.exists():
                child.join(0.005)
            if child.exitcode is None:
                _kill(child)
                kills += 1
                continue
        else:
            child.join(rng.uniform(0.02, max_delay))
            if child.exitcode is None:
                _kill(child)
                kills += 1
                continue
        assert child.exitcode == 0, f"sync exited with {child.exitcode}"
        return kills
    raise AssertionError("unreachable")


def _all_confirmed(db_url: str) -> Counter[tuple[str, str]]:
    store = Store(db_url, migrate_schema=False)
    try:
        return Counter(outbox.state_counts(store))
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Two seeded SQLite files (with and without meter events) copied for each trial."""
    folder = tmp_path_factory.mktemp("crash-seed")
    paths = folder / "full.db", folder / "items.db"
    for path, events, finalize in ((paths[0], 200, True), (paths[1], 0, False)):
        store = Store(f"sqlite:///{path}")
        seed_outbox(store, meter_events=events, finalize=finalize)
        store.dispose()
    yield paths


def _expected(template_db: Path) -> dict[str, Any]:
    store = Store(f"sqlite:///{template_db}", migrate_schema=False)
    try:
        rows = outbox.unfinished(store, [*outbox.ITEM_KINDS, *outbox.METER_KINDS])
    finally:
        store.dispose()
    return {
        "items": {r.id for r in rows if r.kind == "invoice_item"},
        "invoices": {r.invoice_id for r in rows if r.kind == "invoice_finalize"},
        "events": {r.id for r in rows if r.kind == "meter_event"},
    }


def _http(method: str, url: str) -> Any:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": "Bearer sk_test_crash"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
    return json.loads(body) if body.strip().startswith((b"{", b"[")) else None


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """The project's fake in its own process (so forked children share no threads with it), on
    a port the OS picks and the fake prints: a port chosen here and bound later could be taken
    meanwhile by another test's server (xdist runs two at once)."""
    code = "from billing.fake_stripe.__main__ import main\nmain(['--port', '0'])\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), f"the fake did not start: {line!r}"
        wait_until_serving(url, proc)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    url, proc = start_localstripe()
    try:
        yield url
    finally:
        stop_process(proc)


def _trial_db(template_db: Path, tmp_path: Path, n: int) -> str:
    path = tmp_path / f"trial-{n}.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


def test_fake_holds_every_item_and_event_once_after_random_kills(
    template: tuple[Path, Path], fake_url: str, tmp_path: Path
) -> None:
    expected = _expected(template[0])
    rng = random.Random(20261126)
    kills = 0
    for n in range(TRIALS):
        _http("POST", f"{fake_url}/_fake/reset")
        db_url = _trial_db(template[0], tmp_path, n)
        kills += _run_until_complete(
            db_url,
            fake_url,
            "fake",
            rng,
            concurrency=(1, 4)[n // 2 % 2],
            worst_moment=n % 2 == 1,
            forget_keys=n % 3 == 2,
            mark=tmp_path / "paused",
            max_delay=1.0,
        )
        state = _http("GET", f"{fake_url}/_fake/state")
        objects = state["objects"]
        items = Counter(
            i["metadata"].get("hwmarket_line_id") for i in objects["invoiceitem"].values()
        )
        assert items == Counter(dict.fromkeys(expected["items"], 1)), f"trial {n}"
        customers = Counter(
            c["metadata"]["hwmarket_customer"] for c in objects["customer"].values()
        )
        assert customers == Counter(dict.fromkeys(CUSTOMERS, 1)), f"trial {n}"
        invoices = Counter(
            i["metadata"]["hwmarket_invoice_id"] for i in objects["invoice"].values()
        )
        assert invoices == Counter(dict.fromkeys(expected["invoices"], 1)), f"trial {n}"
        assert all(i["status"] in ("open", "paid") for i in objects["invoice"].values())
        assert set(state["meter_events"]) == expected["events"], f"trial {n}"
        counts = _all_confirmed(db_url)
        assert {state for _, state in counts} == {"confirmed"}, f"trial {n}: {counts}"
    assert kills >= 2 * TRIALS  # the kills really interrupted syncs, not finished ones


def test_localstripe_holds_every_item_once_after_random_kills(
    template: tuple[Path, Path], localstripe_url: str, tmp_path: Path
) -> None:
    expected = _expected(template[1])
    rng = random.Random(1126)
    client = stripe.StripeClient("sk_test_crash", base_addresses={"api": localstripe_url})
    kills = 0
    for n in range(TRIALS):
        _http("DELETE", f"{localstripe_url}/_config/data")
        db_url = _trial_db(template[1], tmp_path, n)
        kills += _run_until_complete(
            db_url,
            localstripe_url,
            "localstripe",
            rng,
            concurrency=(1, 4)[n // 2 % 2],
            worst_moment=n % 2 == 1,
            forget_keys=n % 3 == 2,
            mark=tmp_path / "paused",
            max_delay=0.4,  # an items-only sync on localstripe is short
        )
        held: Counter[str] = Counter()
        customers: Counter[str] = Counter()
        for cus in client.v1.customers.list(params={"limit": 100}).auto_paging_iter():
            customers[cus.to_dict()["metadata"]["hwmarket_customer"]] += 1
            listing = client.v1.invoice_items.list(params={"customer": cus.id, "limit": 100})
            held.update(
                i.to_dict()["metadata"]["hwmarket_line_id"] for i in listing.auto_paging_iter()
            )
        assert customers == Counter(dict.fromkeys(CUSTOMERS, 1)), f"trial {n}"
        assert held == Counter(dict.fromkeys(expected["items"], 1)), f"trial {n}"
        counts = _all_confirmed(db_url)
        assert {state for _, state in counts} == {"confirmed"}, f"trial {n}: {counts}"
    assert kills >= 2 * TRIALS
