"""Random sequences of bookings and host events keep the reservation invariants, on both databases.

A hypothesis state machine racks hosts, reserves (by SKU or capability query, anywhere or at
named places, fixed or flexible windows, all-or-some), accepts quotes, cancels, extends,
releases, fails hosts, schedules maintenance, books into gaps that only re-packing can use,
and moves a simulated clock. An expected error (NoCapacity, InvalidInput, InvalidState,
NotFound) must leave every table exactly as it was; BookingConflict is not expected, as there
is no other booker to lose a race to. After every step, from SQL and from the API:

- no host has two overlapping live bookings, and no live booking sits on a host outside its
  reservation's (site, SKU) class or outside its window;
- at no instant are more live bookings on a (site, SKU) class than it has hosts;
- a confirmed reservation holds exactly ``count`` distinct hosts at every instant of its window
  (a degraded or released one at most ``count``; a cancelled one none); ``holdings`` agrees
  with the bookings (checked at the end of each run);
- a failed host holds no reservation after it failed (maintenance blocks may stay);
- the capacity view's steps tile the window, reserved + maintenance + free == total hosts, and
  at every instant of a step its reserved / maintenance counts are the hosts live bookings of
  each kind cover (several bookings on one host in a step, back to back, count once).

Examples (20 steps each): SQLite 300 with ``CI=true`` (60 locally), each on a copy of one
migrated template file; PostgreSQL 60 (20 locally) on the session database, emptied per
example. On this machine (2 shared cores, Intel Xeon, Python 3.11, load average ~2.5) the CI
setting took 81 s (SQLite) + 35 s (PostgreSQL), the local one 16 s + 10 s.

Bugs the machine found are pinned by the tests at the end of this module.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, text

from marketplace.admission import HostSlots
from marketplace.binding import BindingPolicy, best_fit, first_fit, random_fit
from marketplace.booking import quote, reserve
from marketplace.capacity import capacity, holdings
from marketplace.errors import (
    InvalidInput,
    InvalidState,
    NoCapacity,
    NotFound,
)
from marketplace.lifecycle import (
    cancel,
    extend,
    fail_host,
    get_reservation,
    list_reservations,
    release,
    schedule_maintenance,
)
from marketplace.reservations import ReservationState
from marketplace.schema import BookingRow, HostRow, ReservationRow, SkuRow
from marketplace.store import Store
from tests.conftest import EXAMPLES, IN_CI, _empty_all_tables

T0 = dt.datetime(2031, 5, 4, 9, 0, tzinfo=dt.UTC)
UNIT = dt.timedelta(minutes=30)
MAX_HOSTS = 10
EXPECTED = (NoCapacity, InvalidInput, InvalidState, NotFound)
TABLES = ("hosts", "reservations", "bookings", "reservation_events")

settings.register_profile(
    "booking-stateful",
    max_examples=300 if IN_CI else 60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "booking-stateful-pg",
    settings.get_profile("booking-stateful"),
    max_examples=60 if IN_CI else 20,
)

SITES = {"sjc1": ("sv", "na"), "fra1": ("fr", "eu")}
SKUS = ["c3.small.x86", "m3.large.x86"]
#: What a request may ask for: a SKU (with or without revision) or a capability query.
WHATS: list[dict[str, Any]] = [
    {"sku": "c3.small.x86"},
    {"sku": "m3.large.x86@1"},
    {"where": {"arch": "x86_64"}},  # both SKUs
    {"where": {"min_cores": 32}},  # m3.large.x86 only
    {"where": {"traits": ["sgx"]}},  # c3.small.x86 only
    {"where": {"accelerator_kind": "gpu"}},  # listed, never racked here: InvalidInput
    {"sku": "g4.8x.h100"},  # listed, no hosts: NotFound
]
#: Requests may come in any offset; the store keeps UTC.
ZONES = [
    dt.UTC,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(-dt.timedelta(hours=8)),
]
#: Hosts to rack: one or two groups of 1-4 hosts of a SKU at a site.
RACKS = st.lists(
    st.tuples(st.sampled_from(SKUS), st.sampled_from(sorted(SITES)), st.integers(1, 4)),
    min_size=1,
    max_size=2,
)


def last_fit(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
    """The last free hosts: the opposite of first fit, so bookings spread over the class."""
    return list(free)[-count:]


#: How to pick among free hosts: other policies than best fit leave gaps to re-pack.
POLICIES: st.SearchStrategy[BindingPolicy] = st.sampled_from(
    [best_fit, first_fit, last_fit]
) | st.randoms(use_true_random=False).map(random_fit)
PLACES: list[list[str]] = [[], ["sjc1"], ["eu"], ["fra1", "na"], ["sv"], ["any"]]
#: count, what, places, start (units from now), skew (s), time zone, length (units).
Ask = tuple[int, dict[str, Any], list[str], int, int, dt.tzinfo, int]
ASKS = st.tuples(
    st.sampled_from([1, 1, 2, 2, 3, 4]),
    st.sampled_from(WHATS),
    st.sampled_from(PLACES),
    st.integers(-1, 12),
    st.sampled_from([0, 0, -120]),
    st.sampled_from(ZONES),
    st.integers(1, 8),
)

OVERLAPS = """
SELECT count(*) FROM bookings a JOIN bookings b ON a.host_id = b.host_id AND a.id < b.id
 WHERE NOT a.voided AND NOT b.voided AND a.start_at < b.end_at AND b.start_at < a.end_at
"""
#: Live bookings at whose start their class holds more live bookings than hosts (the peak of
#: a step function is reached at some step's start, so checking the starts suffices).
OVERCOMMITTED = """
SELECT count(*) FROM bookings b JOIN hosts h ON h.id = b.host_id
 WHERE NOT b.voided
   AND (SELECT count(*) FROM bookings b2 JOIN hosts h2 ON h2.id = b2.host_id
         WHERE NOT b2.voided AND h2.site_code = h.site_code AND h2.sku_id = h.sku_id
           AND b2.start_at <= b.start_at AND b.start_at < b2.end_at)
     > (SELECT count(*) FROM hosts h3 WHERE h3.site_code = h.site_code AND h3.sku_id = h.sku_id)
"""
#: Live bookings on a host of another class than their reservation's, or outside its window.
MISPLACED = """
SELECT count(*) FROM bookings b JOIN hosts h ON h.id = b.host_id
  JOIN reservations r ON r.id = b.reservation_id
 WHERE NOT b.voided AND (h.site_code <> r.site_code OR h.sku_id <> r.sku_id
                         OR b.start_at < r.start_at OR b.end_at > r.end_at)
"""
#: A booking is a reservation's or a maintenance block, never both or neither.
MISKINDED = """
SELECT count(*) FROM bookings
 WHERE (kind = 'reservation') <> (reservation_id IS NOT NULL)
    OR kind NOT IN ('reservation', 'maintenance')
"""


def inventory(hosts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """An inventory of the two sites (in two regions) and ``(id, sku, site)`` hosts."""
    regions: dict[str, dict[str, Any]] = {}
    for site, (metro, region) in SITES.items():
        r = regions.setdefault(region, {"code": region, "name": region, "metros": []})
        r["metros"].append(
            {
                "code": metro,
                "name": metro,
                "sites": [
                    {
                        "code": site,
                        "name": site,
                        "country": "US" if region == "na" else "DE",
                        "timezone": "UTC",
                        "energy_price_kwh": "0.15",
                        "pue": 1.3,
                    }
                ],
            }
        )
    return {
        "regions": list(regions.values()),
        "hosts": [{"id": h, "sku": sku, "site": site} for h, sku, site in hosts],
    }


def snapshot(store: Store) -> dict[str, list[Any]]:
    """Every row of the tables a booking operation may touch, in key order."""
    with store.engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
            for t in TABLES
        }


class Reservations(RuleBasedStateMachine):
    """Hosts, reservations and a clock; the store under test is opened by ``open_store``."""

    hosts = Bundle("hosts")
    reservations = Bundle("reservations")

    def __init__(
        self, open_store: Callable[[], Store], close_store: Callable[[Store], None]
    ) -> None:
        super().__init__()
        self.store = open_store()
        self._close = close_store
        self.now = T0
        self.host_count = 0
        self.failed_at: dict[str, dt.datetime] = {}

    def teardown(self) -> None:
        try:
            self.holdings_agree_with_bookings()
        finally:
            self._close(self.store)

    def holdings_agree_with_bookings(self) -> None:
        """What metering reads (``holdings``) is the live bookings' seconds, per reservation.
        Checked once per run, at its end: it is a pandas read, slower than the rest."""
        with self.store.reading() as s:
            live = s.execute(
                select(BookingRow.reservation_id, BookingRow.start_at, BookingRow.end_at).where(
                    BookingRow.voided.is_(False), BookingRow.kind == "reservation"
                )
            ).all()
        expected: dict[str, float] = {}
        for b in live:
            expected[b.reservation_id] = (
                expected.get(b.reservation_id, 0) + (b.end_at - b.start_at).total_seconds()
            )
        held = holdings(self.store, T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=30))
        seconds = (held.end - held.start).dt.total_seconds().groupby(held.reservation_id).sum()
        assert {str(k): float(v) for k, v in seconds.items()} == expected

    def attempt(self, name: str, operation: Callable[[], Any]) -> Any:
        """Run ``operation``; an expected error must have changed nothing (returns None)."""
        before = snapshot(self.store)
        try:
            result = operation()
        except EXPECTED as exc:
            at = f" at {exc.problems[0].path}" if isinstance(exc, InvalidInput) else ""
            event(f"{name}: {type(exc).__name__}{at}")
            assert snapshot(self.store) == before, "a refused operation changed the database"
            return None
        if isinstance(result, list) and name != "quote":  # a host event's moves and degradations
            event(f"{name}: {' '.join(sorted({e.kind for e in result})) or 'nothing in the way'}")
        else:
            event(f"{name}: done")
        return result

    # -- rules --------------------------------------------------------------------------------

    @initialize(target=hosts, groups=RACKS)
    def rack_first_hosts(self, groups: list[tuple[str, str, int]]) -> Any:
        return self.add_hosts(groups)

    @rule(target=hosts, groups=RACKS)
    def add_hosts(self, groups: list[tuple[str, str, int]]) -> Any:
        new = []
        for sku, site, n in groups:
            for _ in range(min(n, MAX_HOSTS - self.host_count)):
                self.host_count += 1
                new.append((f"{site}-h{self.host_count:02d}", sku, site))
        if new:
            report = self.store.import_inventory(inventory(new))
            assert {h for h, _, _ in new} <= set(report.added)
        return multiple(*(h for h, _, _ in new))

    @rule(target=reservations, ask=ASKS, policy=POLICIES)
    def book(self, ask: Ask, policy: BindingPolicy) -> Any:
        """A fixed window, all or nothing; the other policies spread bookings over the hosts,
        which leaves the gaps that make later best-fit bookings re-pack."""
        return self._book(ask, None, some=False, policy=policy)

    @rule(target=reservations, ask=ASKS, flex=st.integers(0, 8), some=st.booleans())
    def book_flexibly(self, ask: Ask, flex: int, some: bool) -> Any:
        """A start anywhere in ``flex`` units, and/or fewer hosts than asked."""
        return self._book(ask, flex, some=some)

    def _book(
        self, ask: Ask, flex: int | None, *, some: bool, policy: BindingPolicy = best_fit
    ) -> Any:
        count, what, places, start, skew, zone, length = ask
        begin = (self.now + start * UNIT + dt.timedelta(seconds=skew)).astimezone(zone)
        request: dict[str, Any] = {
            "customer": "acme",
            "count": count,
            "places": places,
            "start": begin,
            "end": begin + length * UNIT,
            **what,
        }
        if flex is not None:
            request["latest_start"] = begin + flex * UNIT
        if some:
            request["min_count"] = 1
        r = self.attempt(
            "reserve", lambda: reserve(self.store, request, now=self.now, policy=policy)
        )
        if r is None:
            return multiple()
        assert (1 if some else count) <= r.count <= count and len(set(r.hosts)) == r.count
        assert r.end - r.start == length * UNIT and begin <= r.start <= begin + (flex or 0) * UNIT
        return r.id

    @rule(
        target=reservations,
        site=st.sampled_from(sorted(SITES)),
        sku=st.sampled_from(SKUS),
        start=st.integers(0, 8),
    )
    def book_into_gaps(self, site: str, sku: str, start: int) -> Any:
        """One host early and one late on different hosts, then one for the whole span: it
        fits only if best fit re-packs the late booking next to the early one."""
        begin = self.now + start * UNIT
        made = []
        for lo, hi, policy in [(2, 3, first_fit), (0, 1, last_fit), (0, 3, best_fit)]:
            request = {"customer": "initech", "count": 1, "sku": sku, "places": [site],
                       "start": begin + lo * UNIT, "end": begin + hi * UNIT}  # fmt: skip
            r = self.attempt("reserve into gaps", partial(reserve, self.store, request,
                                                          now=self.now, policy=policy))  # fmt: skip
            made += [r.id] if r else []
        return multiple(*made)

    @rule(
        target=reservations,
        count=st.integers(1, 3),
        sku=st.sampled_from(SKUS),
        start=st.integers(0, 8),
    )
    def accept_quote(self, count: int, sku: str, start: int) -> Any:
        begin = self.now + start * UNIT
        request = {
            "customer": "globex",
            "count": count,
            "sku": sku,
            "start": begin,
            "end": begin + 4 * UNIT,
        }
        before = snapshot(self.store)
        offers = self.attempt("quote", lambda: quote(self.store, request, now=self.now))
        assert snapshot(self.store) == before, "a quote wrote to the database"
        if not offers:
            return multiple()
        # Nothing changed since the quote, so what it offered can be booked as offered.
        r = reserve(self.store, offers[0], now=self.now)
        assert (r.site, r.count, r.start, r.end) == (
            offers[0].site,
            offers[0].count,
            offers[0].start,
            offers[0].end,
        )
        return r.id

    @rule(rid=reservations)
    def cancel_it(self, rid: str) -> None:
        r = self.attempt("cancel", lambda: cancel(self.store, rid, now=self.now))
        assert r is None or r.state_at(self.now) in (
            ReservationState.CANCELLED,
            ReservationState.ENDED,
        )

    @rule(rid=reservations)
    def release_it(self, rid: str) -> None:
        r = self.attempt("release", lambda: release(self.store, rid, now=self.now))
        # released at its very first second it held nothing: that is a cancellation
        assert r is None or r.state_at(self.now) in (
            ReservationState.ENDED,
            ReservationState.CANCELLED,
        )

    @rule(rid=reservations, by=st.integers(1, 6))
    def extend_it(self, rid: str, by: int) -> None:
        old = get_reservation(self.store, rid)
        r = self.attempt(
            "extend", lambda: extend(self.store, rid, old.end + by * UNIT, now=self.now)
        )
        assert r is None or r.end == old.end + by * UNIT

    @rule(host=hosts)
    def fail(self, host: str) -> None:
        self.attempt("fail_host", lambda: fail_host(self.store, host, now=self.now))
        self.failed_at.setdefault(host, self.now)

    @rule(
        host=hosts,
        start=st.integers(0, 10),
        skew=st.sampled_from([0, -120]),
        length=st.integers(1, 6),
    )
    def maintain(self, host: str, start: int, skew: int, length: int) -> None:
        begin = self.now + start * UNIT + dt.timedelta(seconds=skew)
        self.attempt(
            "maintenance",
            lambda: schedule_maintenance(
                self.store, host, begin, begin + length * UNIT, now=self.now
            ),
        )

    @rule(
        step=st.sampled_from(
            [dt.timedelta(minutes=1), dt.timedelta(minutes=17), UNIT, 2 * UNIT, 6 * UNIT]
        )
    )
    def advance(self, step: dt.timedelta) -> None:
        self.now += step

    @rule(
        rid=reservations,
        into=st.sampled_from(
            [dt.timedelta(0), dt.timedelta(seconds=1), dt.timedelta(minutes=7), UNIT]
        ),
    )
    def advance_into(self, rid: str, into: dt.timedelta) -> None:
        """Move the clock to a moment inside a reservation (when that is not in the past)."""
        self.now = max(self.now, get_reservation(self.store, rid).start + into)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def bookings_are_sound_in_sql(self) -> None:
        with self.store.engine.connect() as conn:
            for name, sql in [
                ("overlapping", OVERLAPS),
                ("over-committed", OVERCOMMITTED),
                ("misplaced", MISPLACED),
                ("mis-kinded", MISKINDED),
            ]:
                assert conn.execute(text(sql)).scalar() == 0, f"{name} bookings"

    @invariant()
    def reservations_hold_their_hosts(self) -> None:
        with self.store.reading() as s:
            rows = s.execute(
                select(ReservationRow.id, ReservationRow.count, ReservationRow.state)
            ).all()
            live = s.execute(
                select(
                    BookingRow.reservation_id,
                    BookingRow.host_id,
                    BookingRow.start_at,
                    BookingRow.end_at,
                ).where(BookingRow.voided.is_(False))
            ).all()
        by_rsv: dict[str, list[Any]] = {}
        for b in live:
            if b.reservation_id is not None:
                by_rsv.setdefault(b.reservation_id, []).append(b)
                failed = self.failed_at.get(b.host_id)
                assert failed is None or b.end_at <= failed, f"failed host {b.host_id} still booked"
        api = {r.id: r for r in list_reservations(self.store, now=self.now)}
        assert set(api) == {r.id for r in rows}
        for rid, count, state in rows:
            r = api[rid]
            mine = by_rsv.get(rid, [])
            if state == ReservationState.CANCELLED:
                assert not mine, f"cancelled {rid} still holds hosts"
                continue
            exact = state == ReservationState.CONFIRMED
            for lo, hi, hosts in pieces(r.start, r.end, mine):
                assert len(hosts) == len(set(hosts)), f"{rid} holds a host twice at {lo}"
                assert len(hosts) <= count and (not exact or len(hosts) == count), (
                    f"{state} {rid} holds {len(hosts)} of {count} hosts in [{lo}, {hi})"
                )
            if exact:
                assert len(r.hosts) == count
                assert r.state_at(self.now) in (
                    ReservationState.CONFIRMED,
                    ReservationState.ACTIVE,
                    ReservationState.ENDED,
                )

    @invariant()
    def capacity_agrees_with_bookings(self) -> None:
        if not self.host_count:
            return  # no class yet: capacity() refuses the query (see the report)
        lo, hi = self.now, self.now + 16 * UNIT
        view = capacity(self.store, lo, hi)
        with self.store.reading() as s:
            hosts = s.execute(
                select(HostRow.id, HostRow.site_code, HostRow.sku_id, HostRow.state)
            ).all()
            slugs = {
                r.id: f"{r.slug}@{r.revision}"
                for r in s.execute(select(SkuRow.id, SkuRow.slug, SkuRow.revision))
            }
            live = s.execute(
                select(
                    BookingRow.host_id, BookingRow.kind, BookingRow.start_at, BookingRow.end_at
                ).where(
                    BookingRow.voided.is_(False), BookingRow.start_at < hi, BookingRow.end_at > lo
                )
            ).all()
        usable: dict[tuple[str, str], set[str]] = {}
        for h in hosts:
            usable.setdefault((h.site_code, slugs[h.sku_id]), set())
            if h.state == "available":
                usable[(h.site_code, slugs[h.sku_id])].add(h.id)
        assert sorted(zip(view.levels.site, view.levels.sku, strict=True)) == sorted(usable)
        by_class: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record in view.steps.to_dict("records"):
            row = {str(k): v for k, v in record.items()}
            by_class.setdefault((row["site"], row["sku"]), []).append(row)
        for (site, sku), steps in by_class.items():
            ours = usable[(site, sku)]
            ours_live = [x for x in live if x.host_id in ours]
            starts = [step["start"].to_pydatetime() for step in steps]
            ends = [step["end"].to_pydatetime() for step in steps]
            assert starts[0] == lo and ends[-1] == hi and starts[1:] == ends[:-1], (
                f"steps of {site} {sku} do not tile the window"
            )
            for a, b, step in zip(starts, ends, steps, strict=True):
                assert step["total"] == len(ours)
                assert step["free"] + step["reserved"] + step["maintenance"] == step["total"]
                # A step's counts hold at every instant of it: at its start and at each edge of
                # a booking inside it, count the hosts each kind of booking covers.
                edges = {a} | {t for x in ours_live for t in (x.start_at, x.end_at) if a < t < b}
                for t in edges:
                    on = [x for x in ours_live if x.start_at <= t < x.end_at]
                    held = len({x.host_id for x in on if x.kind == "reservation"})
                    blocked = len({x.host_id for x in on if x.kind == "maintenance"})
                    counted = (step["reserved"], step["maintenance"])
                    assert counted == (held, blocked), f"{site} {sku} at {t}"


def pieces(
    start: dt.datetime, end: dt.datetime, bookings: list[Any]
) -> Iterator[tuple[dt.datetime, dt.datetime, list[str]]]:
    """``[lo, hi)`` pieces of ``[start, end)`` between booking edges, with the hosts held."""
    edges = sorted(
        {start, end} | {t for b in bookings for t in (b.start_at, b.end_at) if start < t < end}
    )
    for lo, hi in itertools.pairwise(edges):
        yield lo, hi, [b.host_id for b in bookings if b.start_at <= lo and hi <= b.end_at]


# -- running it on SQLite and PostgreSQL ------------------------------------------------------


def machine_on(
    open_store: Callable[[], Store], close_store: Callable[[Store], None]
) -> type[Reservations]:
    """The machine class whose every run opens its store with ``open_store``."""

    class On(Reservations):
        def __init__(self) -> None:
            super().__init__(open_store, close_store)

    return On


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file with the example listings, copied for every example."""
    path = tmp_path_factory.mktemp("stateful") / "template.db"
    store = Store(f"sqlite:///{path}")
    store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    store.dispose()  # the last connection checkpoints the WAL into the file
    return path


def test_reservations_stay_consistent_on_sqlite(sqlite_template: Path, tmp_path: Path) -> None:
    def open_store() -> Store:
        path = tmp_path / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(sqlite_template, path)
        return Store(f"sqlite:///{path}", migrate_schema=False)

    def close_store(store: Store) -> None:
        store.dispose()
        Path(store.engine.url.database or "").unlink()

    run_state_machine_as_test(
        machine_on(open_store, close_store), settings=settings.get_profile("booking-stateful")
    )


@pytest.mark.postgres
def test_reservations_stay_consistent_on_postgresql(_pg_store: Store) -> None:
    def open_store() -> Store:
        _empty_all_tables(_pg_store)
        _pg_store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
        return _pg_store

    run_state_machine_as_test(
        machine_on(open_store, lambda _: None), settings=settings.get_profile("booking-stateful-pg")
    )


# -- bugs the machine found (fixed; these keep them fixed) --------------------------------------

NOW = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def small_x86(count: int, start: int, end: int) -> dict[str, Any]:
    """A request for c3.small.x86 hosts (sjc1 has 4) from ``start`` to ``end`` hours after NOW."""
    return {"customer": "acme", "count": count, "sku": "c3.small.x86", "start": NOW + start * H,
            "end": NOW + end * H}  # fmt: skip


@pytest.mark.parametrize("end_it", [release, cancel])
def test_release_at_the_exact_start(example_store: Store, end_it: Callable[..., Any]) -> None:
    """Releasing (or cancelling) at the reservation's first second holds nothing; today it
    sets ``end_at = start_at`` and the CHECK ``end_at > start_at`` turns it into StoreError.
    Fix: lifecycle._release_in, when ``now <= row.start_at``, void the live bookings instead
    of cutting them and leave ``end_at`` as it was (as cancel does before the start)."""
    r = reserve(example_store, small_x86(2, 1, 3), now=NOW)
    ended = end_it(example_store, r.id, now=NOW + H)
    assert ended.state_at(NOW + H) in (ReservationState.CANCELLED, ReservationState.ENDED)
    assert not (holdings(example_store, NOW, NOW + 4 * H).reservation_id == r.id).any()
    assert reserve(example_store, small_x86(4, 1, 2), now=NOW + H).count == 4


def test_maintenance_over_in_the_past(example_store: Store) -> None:
    """A maintenance window inside the 5-minute grace but already over is refused as
    InvalidInput; today ``start`` is clamped to ``now`` after the ``end > start`` check, the
    row gets ``start_at > end_at`` and the CHECK makes it StoreError. Fix:
    lifecycle.schedule_maintenance, check ``end > max(start, now)`` after clamping."""
    before = snapshot(example_store)
    minute = dt.timedelta(minutes=1)
    with pytest.raises(InvalidInput, match="end"):
        schedule_maintenance(example_store, "sjc1-r02-u01", NOW - 4 * minute, NOW - minute, now=NOW)
    assert snapshot(example_store) == before
