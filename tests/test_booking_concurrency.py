"""Never double-book: 8 processes x 200 concurrent attempts on a scarce SKU, on both databases.

Afterwards an SQL self-join counts overlapping live bookings of a host (must be 0), every failed
attempt must have failed with NoCapacity or BookingConflict (nothing else, nothing stored), and
every stored reservation must hold exactly its count of hosts.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import random
from collections import Counter

import pytest
from sqlalchemy import text

from marketplace.booking import reserve
from marketplace.errors import BookingConflict, NoCapacity
from marketplace.store import Store

PROCESSES = 8
ATTEMPTS = 200
T0 = dt.datetime(2031, 3, 1, tzinfo=dt.UTC)
NOW = T0 - dt.timedelta(hours=1)


def _worker(url: str, seed: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = Store(url, migrate_schema=False)
    rng = random.Random(seed)
    outcome: Counter[str] = Counter()
    for _ in range(ATTEMPTS):
        start = T0 + dt.timedelta(hours=rng.randrange(0, 72))
        end = start + dt.timedelta(hours=rng.randrange(1, 8))
        try:
            reserve(
                store,
                {
                    "customer": f"c{seed}",
                    "count": rng.choice([1, 1, 2]),
                    "sku": "c3.small.x86",
                    "places": ["sjc1"],
                    "start": start,
                    "end": end,
                },
                now=NOW,
            )
            outcome["ok"] += 1
        except NoCapacity:
            outcome["no_capacity"] += 1
        except BookingConflict:
            outcome["conflict"] += 1
        except Exception as exc:  # anything else is a defect the test must show
            outcome[f"unclean:{type(exc).__name__}:{exc}"[:200]] += 1
    store.dispose()
    out.put(dict(outcome))


OVERLAPS = """
SELECT count(*) FROM bookings a JOIN bookings b
  ON a.host_id = b.host_id AND a.id < b.id
 WHERE NOT a.voided AND NOT b.voided AND a.start_at < b.end_at AND b.start_at < a.end_at
"""
COUNT_MISMATCH = """
SELECT count(*) FROM reservations r
 WHERE r.count <> (SELECT count(*) FROM bookings b WHERE b.reservation_id = r.id AND NOT b.voided)
"""


@pytest.mark.slow
def test_eight_processes_never_double_book(example_store: Store) -> None:
    url = example_store.engine.url.render_as_string(hide_password=False)
    example_store.dispose()
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_worker, args=(url, seed, out)) for seed in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    total: Counter[str] = Counter()
    for r in results:
        total.update(r)
    unclean = {k: v for k, v in total.items() if k.startswith("unclean")}
    assert not unclean, f"attempts that failed uncleanly: {unclean}"
    assert sum(total.values()) == PROCESSES * ATTEMPTS
    assert total["ok"] > 0 and total["no_capacity"] > 0, total  # the SKU really was scarce
    with example_store.engine.connect() as conn:
        assert conn.execute(text(OVERLAPS)).scalar() == 0
        assert conn.execute(text(COUNT_MISMATCH)).scalar() == 0
        stored = conn.execute(text("SELECT count(*) FROM reservations")).scalar()
    assert stored == total["ok"], "a failed attempt left a reservation behind"
    print(f"{example_store.engine.dialect.name}: {dict(total)}")
