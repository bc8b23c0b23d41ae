"""Quotes, bookings and the life of a reservation, through the store on both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select, text

from marketplace.binding import BindingPolicy, first_fit, match
from marketplace.booking import (
    _calendars,
    _candidates,
    _move_bookings,
    as_request,
    available,
    quote,
    reserve,
)
from marketplace.capacity import capacity, holdings
from marketplace.errors import BookingConflict, InvalidInput, InvalidState, NoCapacity, NotFound
from marketplace.lifecycle import (
    cancel,
    extend,
    fail_host,
    get_reservation,
    list_reservations,
    release,
    reservation_events,
    schedule_maintenance,
)
from marketplace.matching import Demand, HostSlots, Interval, Move, Option
from marketplace.reservations import ReservationState
from marketplace.schema import BookingRow
from marketplace.store import Store
from tests.conftest import EXAMPLES

NOW = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def req(count: int = 1, start: int = 1, end: int = 5, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "customer": "acme",
        "count": count,
        "sku": "c3.small.x86",
        "start": NOW + start * H,
        "end": NOW + end * H,
    }
    base.update(kw)
    return base


def table_rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0
            for t in ("reservations", "bookings", "reservation_events")
        }


def test_quote_books_nothing_and_prices_the_window(example_store: Store) -> None:
    offers = quote(example_store, req(2), now=NOW)
    assert [(o.site, o.sku, o.count, str(o.price)) for o in offers] == [
        ("sjc1", "c3.small.x86", 2, "4.00")
    ]
    assert table_rows(example_store)["reservations"] == 0
    gpu = quote(
        example_store,
        req(1, sku=None, where={"accelerator_kind": "gpu"}, places=["eu", "na"]),
        now=NOW,
    )
    assert [o.site for o in gpu] == ["fra1", "sjc1"]  # preference order kept
    assert str(gpu[0].hourly_price) == "104.00"  # the fra1 price override


def test_reserve_binds_hosts_and_refuses_overcommitment(example_store: Store) -> None:
    r = reserve(example_store, req(3), now=NOW)
    assert r.count == 3 and len(set(r.hosts)) == 3 and r.state_at(NOW) is ReservationState.CONFIRMED
    assert r.state_at(NOW + 2 * H) is ReservationState.ACTIVE
    reserve(example_store, req(1, 2, 3), now=NOW)
    before = table_rows(example_store)
    with pytest.raises(NoCapacity, match=r"0 of 4 free"):
        reserve(example_store, req(1, 2, 4), now=NOW)
    assert table_rows(example_store) == before
    assert not available(example_store, req(1, 2, 4), now=NOW)
    assert available(example_store, req(1, 5, 6), now=NOW)


def test_min_count_and_flexible_start(example_store: Store) -> None:
    reserve(example_store, req(3, 1, 5), now=NOW)
    partial = reserve(example_store, req(3, 2, 3, min_count=1), now=NOW)
    assert partial.count == 1
    flexible = reserve(example_store, req(4, 1, 3, latest_start=NOW + 10 * H), now=NOW)
    assert flexible.start == NOW + 5 * H and flexible.end == NOW + 7 * H


def test_queries_over_many_sites_book_what_every_calendar_would_give(
    example_store: Store,
) -> None:
    """reserve() reads calendars a site at a time; its choice must be match()'s over all of them:
    the first site with room, a later site when the first is full, the best partial grant
    across sites, re-packing when only that makes room; and a flexible start the earliest
    over every site, also when a later site has it."""

    def last_fit(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
        return list(free[-count:])

    # fra1's two m3.large.x86 hosts: one busy for hours 1-3, the other for 3-5, so hours 1-5
    # fit there only after a re-pack; sjc1 has room as it stands, which match() prefers.
    fra1 = {"sku": "m3.large.x86", "places": ["fra1"]}
    reserve(example_store, req(1, 1, 3, **fra1), now=NOW, policy=last_fit)
    reserve(example_store, req(1, 3, 5, **fra1), now=NOW, policy=first_fit)
    x86 = {"vendor": "packetworks"}  # m3.large.x86 at fra1 and sjc2, c3.small.x86 at sjc1
    asks: list[dict[str, Any]] = [
        {"count": 1, "where": x86},  # sjc1 as it stands, not fra1 (first site) after a re-pack
        {"count": 2, "where": x86, "start": 6, "end": 9},  # fra1
        {"count": 2, "where": x86, "start": 6, "end": 9},  # fra1 full: sjc1
        {"count": 2, "where": x86, "places": ["sv"]},  # sjc1, one host left there
        {"count": 3, "where": x86, "min_count": 1},  # the best partial grant: sjc2's two
        {"count": 1, "where": x86},  # sjc1's last host
        {"count": 2, "where": x86, "start": 2, "end": 3},  # nowhere
        {"count": 1, "where": x86},  # only a re-pack at fra1 makes room
        {"count": 2, "where": {"arch": "aarch64"}, "places": ["sjc2", "fra1"]},
        # flexible starts: the earliest over every site, wherever it is
        {"count": 1, "where": x86, "start": 20, "end": 22, "latest_start": NOW + 30 * H},
        {"count": 2, "where": x86, "latest_start": NOW + 20 * H},
        {"count": 2, "where": x86, "latest_start": NOW + 20 * H},
        {"count": 2, "where": x86, "latest_start": NOW + 20 * H},
        {"count": 4, "where": x86, "latest_start": NOW + 20 * H},
        {"count": 4, "where": x86, "latest_start": NOW + 6 * H},
    ]
    sites: list[str | None] = []
    for ask in asks:
        start, end = ask.pop("start", 1), ask.pop("end", 5)
        request = as_request({**req(start=start, end=end, sku=None), **ask})
        with example_store.reading() as s:
            classes = _candidates(s, request)
            every = _calendars(s, classes, NOW)
        window = Interval(request.start, request.end)
        if request.latest_start is not None:
            starts = [
                (st, c.site)
                for c in classes
                if (
                    st := every[c.key].earliest_start(
                        request.count, request.duration, request.start, request.latest_start
                    )
                )
                is not None
            ]
            if not starts:
                with pytest.raises(NoCapacity):
                    reserve(example_store, request, now=NOW)
                sites.append(None)
                continue
            window = Interval(min(starts)[0], min(starts)[0] + request.duration)
        demand = Demand(
            tuple(Option(c.key, request.count) for c in classes),
            window,
            min_fraction=(request.min_count or request.count) / request.count,
        )
        try:
            expected = match(demand, every, now=NOW)
        except NoCapacity:
            with pytest.raises(NoCapacity):
                reserve(example_store, request, now=NOW)
            sites.append(None)
            continue
        got = reserve(example_store, request, now=NOW)
        sites.append(got.site)
        assert (got.site, f"{got.sku}@{got.sku_revision}") == expected.host_class
        assert tuple(got.hosts) == tuple(sorted(expected.host_ids))
        assert (got.start, got.end) == (expected.window.start, expected.window.end)
    assert sites == [
        *["sjc1", "fra1", "sjc1", "sjc1", "sjc2", "sjc1", None, "fra1", "sjc2"],
        *["fra1", "sjc1", "sjc2", "fra1", "sjc1", None],  # flexible: hours 20, 5, 5, 9, 9
    ]


def test_cancel_frees_capacity_at_once(example_store: Store) -> None:
    r = reserve(example_store, req(4), now=NOW)
    with pytest.raises(NoCapacity):
        reserve(example_store, req(1), now=NOW)
    cancelled = cancel(example_store, r.id, now=NOW)
    assert cancelled.state_at(NOW) is ReservationState.CANCELLED
    assert reserve(example_store, req(4), now=NOW).count == 4
    with pytest.raises(InvalidState):
        cancel(example_store, r.id, now=NOW)
    assert holdings(example_store, NOW, NOW + 10 * H)["reservation_id"].nunique() == 1


def test_release_and_extend(example_store: Store) -> None:
    r = reserve(example_store, req(2, 1, 5), now=NOW)
    other = reserve(example_store, req(2, 5, 9), now=NOW)
    assert other.hosts == r.hosts  # best fit: no idle gap between the two
    # the same hosts are taken after 5 h, the other two are not: the extension re-binds
    extended = extend(example_store, r.id, NOW + 7 * H, now=NOW)
    assert extended.end == NOW + 7 * H
    assert set(extended.hosts).isdisjoint(other.hosts)
    reserve(example_store, req(2, 7, 12), now=NOW)  # takes the only two hosts free from 7 h
    before = table_rows(example_store)
    with pytest.raises(NoCapacity):
        extend(example_store, r.id, NOW + 10 * H, now=NOW)
    assert table_rows(example_store) == before
    with pytest.raises(InvalidState):
        release(example_store, r.id, now=NOW)  # not started yet
    released = release(example_store, r.id, now=NOW + 2 * H + dt.timedelta(seconds=17))
    assert released.end == NOW + 2 * H + dt.timedelta(seconds=17)
    assert released.state_at(NOW + 3 * H) is ReservationState.ENDED
    held = holdings(example_store, NOW, NOW + 24 * H)
    mine = held[held.reservation_id == r.id]
    assert (mine.end - mine.start).dt.total_seconds().sum() == 2 * (3600 + 17)
    kinds = [e.kind for e in reservation_events(example_store, r.id, now=NOW + 3 * H)]
    assert kinds == ["confirmed", "extended", "active", "released", "ended"]


def test_failed_host_moves_bookings_exactly(example_store: Store) -> None:
    r = reserve(example_store, req(1, 1, 5), now=NOW)
    victim = r.hosts[0]
    events = fail_host(example_store, victim, now=NOW + 2 * H)
    assert [e.kind for e in events] == ["moved"]
    moved = get_reservation(example_store, r.id)
    assert moved.hosts != [victim] and moved.state_at(NOW + 2 * H) is ReservationState.ACTIVE
    held = holdings(example_store, NOW, NOW + 10 * H).sort_values("start")
    assert list(held.host) == [victim, moved.hosts[0]]
    assert held.end.iloc[0] == held.start.iloc[1] == NOW + 2 * H
    assert (held.end - held.start).dt.total_seconds().sum() == 4 * 3600
    with pytest.raises(InvalidInput, match=r"at most 3"):  # the failed host takes no bookings
        reserve(example_store, req(4, 6, 7), now=NOW)


def test_maintenance_moves_or_degrades(example_store: Store) -> None:
    r = reserve(example_store, req(4, 1, 5), now=NOW)
    events = schedule_maintenance(example_store, r.hosts[0], NOW + 2 * H, NOW + 3 * H, now=NOW)
    assert [e.kind for e in events] == ["degraded"]
    assert "no free c3.small.x86@1 host at sjc1" in events[0].detail["reason"]
    assert get_reservation(example_store, r.id).state_at(NOW + 2 * H) is ReservationState.DEGRADED
    # the maintenance window blocks the host like a booking does
    with pytest.raises(NoCapacity):
        reserve(example_store, req(1, 2, 3), now=NOW)
    assert reserve(example_store, req(4, 6, 7), now=NOW).count == 4


def test_bad_requests_store_nothing(example_store: Store) -> None:
    before = table_rows(example_store)
    bad = [
        (req(start=5, end=5), InvalidInput, "end"),
        (req(start=-48, end=-47), InvalidInput, "in the past"),
        (req(0), InvalidInput, "count must be at least 1"),
        (req(99), InvalidInput, "more machines than any matching site holds"),
        (req(sku="nope.sku"), NotFound, "not in the catalogue"),
        (req(places=["atlantis"]), InvalidInput, "unknown place"),
        (req(sku=None, where={"min_cores": 100000}), InvalidInput, "no SKU"),
        ({**req(), "start": dt.datetime(2031, 1, 1, 1)}, InvalidInput, "timezone"),
    ]
    for request, error, message in bad:
        with pytest.raises(error, match=message):
            reserve(example_store, request, now=NOW)
    assert table_rows(example_store) == before


def test_capacity_levels_and_steps(example_store: Store) -> None:
    reserve(example_store, req(3, 1, 5), now=NOW)
    view = capacity(example_store, NOW, NOW + 6 * H, sku="c3.small.x86")
    assert view.levels.to_dict("records") == [
        {
            "site": "sjc1",
            "sku": "c3.small.x86@1",
            "total": 4,
            "free_whole_window": 1,
            "level": "limited",
        }
    ]
    steps = view.steps
    assert (
        steps.reserved.max() == 3
        and (steps.free + steps.reserved + steps.maintenance == steps.total).all()
    )
    assert list_reservations(example_store, customer="acme", now=NOW)[0].count == 3


# -- re-packing that swaps or rotates bookings between hosts ------------------------------------

#: Pairs of live bookings of one host whose times overlap (must be none).
OVERLAPS = """
SELECT count(*) FROM bookings a JOIN bookings b ON a.host_id = b.host_id AND a.id < b.id
 WHERE NOT a.voided AND NOT b.voided AND a.start_at < b.end_at AND b.start_at < a.end_at
"""

#: name: (bookings {name: (host, start h, end h)}, maintenance [(host, start h, end h)],
#: where each booking must end up). A request for 1 host for [1 h, 3 h) fits only if the
#: bookings move as shown: no host is free for it, no host can be emptied by moving its own
#: bookings where they fit as things stand, and the full re-plan puts the request on rp-h1.
REPACKS: dict[
    str, tuple[dict[str, tuple[str, int, int]], list[tuple[str, int, int]], dict[str, str]]
] = {
    "swap": (
        {"a": ("rp-h1", 2, 4), "b": ("rp-h2", 3, 5)},
        [("rp-h2", 1, 2)],
        {"a": "rp-h2", "b": "rp-h1"},
    ),
    "rotation of three": (
        {"a": ("rp-h1", 2, 4), "b": ("rp-h2", 3, 5), "c": ("rp-h3", 4, 6)},
        [("rp-h2", 1, 2), ("rp-h2", 5, 6), ("rp-h3", 1, 3), ("rp-h3", 6, 7)],
        {"a": "rp-h2", "b": "rp-h3", "c": "rp-h1"},
    ),
}


def rows_of(store: Store, *tables: str) -> list[list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))] for t in tables
        ]


def on_host(host_id: str) -> BindingPolicy:
    """A binding policy that takes ``host_id``: how these tests lay out a calendar."""

    def choose(free: Sequence[HostSlots], count: int, lo: int, hi: int) -> list[HostSlots]:
        return [h for h in free if h.host_id == host_id][:count]

    return choose


def rack(store: Store, hosts: int) -> None:
    """The example listings and one site, rp1, with ``hosts`` c3.small.x86 hosts rp-h1..."""
    store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    site = {"code": "rp1", "name": "Repack 1", "country": "NL", "timezone": "Europe/Amsterdam",
            "energy_price_kwh": "0.20", "pue": 1.3}  # fmt: skip
    store.import_inventory(
        {
            "regions": [{"code": "rp", "name": "Repack",
                         "metros": [{"code": "rpm", "name": "Repack", "sites": [site]}]}],
            "hosts": [{"id": f"rp-h{i}", "sku": "c3.small.x86", "site": "rp1"}
                      for i in range(1, hosts + 1)],
        }
    )  # fmt: skip


def lay_out(store: Store, scenario: str) -> dict[str, str]:
    """The hosts, bookings and maintenance of ``REPACKS[scenario]``; the reservation ids."""
    bookings, maintenance, _ = REPACKS[scenario]
    rack(store, len({h for h, _, _ in bookings.values()}))
    rid = {}
    for name, (host, start, end) in bookings.items():
        r = reserve(store, req(1, start, end, places=["rp1"]), now=NOW, policy=on_host(host))
        assert r.hosts == [host]
        rid[name] = r.id
    for host, start, end in maintenance:
        assert schedule_maintenance(store, host, NOW + start * H, NOW + end * H, now=NOW) == []
    return rid


@pytest.mark.parametrize("scenario", sorted(REPACKS))
def test_repack_that_swaps_or_rotates_bookings_between_hosts(store: Store, scenario: str) -> None:
    """reserve() used to move the bookings one UPDATE at a time, so the first move of a swap
    or a rotation landed on a booking not moved yet: the overlap trigger / exclusion
    constraint refused it every time, and the request failed with BookingConflict after
    MAX_ATTEMPTS "lost races" with no other booker."""
    bookings, maintenance, expected = REPACKS[scenario]
    rid = lay_out(store, scenario)

    new = reserve(store, req(1, 1, 3, places=["rp1"]), now=NOW)

    assert new.hosts == ["rp-h1"]
    assert {name: get_reservation(store, r).hosts[0] for name, r in rid.items()} == expected
    with store.engine.connect() as conn:
        assert conn.execute(text(OVERLAPS)).scalar() == 0
    for name, r in rid.items():
        events = reservation_events(store, r, now=NOW)
        assert [e.kind for e in events] == ["confirmed", "moved"]
        assert events[1].host == expected[name]
        assert events[1].detail["from"] == bookings[name][0]
        assert new.id in events[1].detail["reason"]
    # metering's record: each moved reservation held only its new host, for its whole window
    held = holdings(store, NOW, NOW + 10 * H)
    for name, r in rid.items():
        mine = held[held.reservation_id == r]
        _, start, end = bookings[name]
        assert list(mine.host) == [expected[name]]
        assert (mine.start.iloc[0], mine.end.iloc[0]) == (NOW + start * H, NOW + end * H)
    assert table_rows(store)["bookings"] == len(bookings) + len(maintenance) + 1
    # the database still refuses an overlap, inserted or moved into place
    with pytest.raises(BookingConflict), store.writing() as s:
        s.add(BookingRow(reservation_id=new.id, host_id="rp-h1", kind="reservation",
                         start_at=NOW + 2 * H, end_at=NOW + 4 * H, voided=False))  # fmt: skip
    with pytest.raises(BookingConflict), store.writing() as s:
        moved = s.scalars(select(BookingRow).where(BookingRow.reservation_id == rid["a"])).one()
        moved.host_id = "rp-h1"


def test_repack_on_a_stale_calendar_moves_nothing(store: Store) -> None:
    """On PostgreSQL a booker's calendar can be stale when it writes (read committed): a
    booking it re-packs may have been moved, or cancelled, by a concurrent booker since. Its
    moves must then fail as a lost race (BookingConflict, retried on fresh calendars), not
    move a booking from where it no longer is, nor bring a cancelled one back to life."""
    rid = lay_out(store, "swap")
    with store.reading() as s:
        booking_of = {
            name: str(s.scalars(select(BookingRow.id).where(BookingRow.reservation_id == r)).one())
            for name, r in rid.items()
        }
    cancel(store, rid["b"], now=NOW)
    before = rows_of(store, "bookings", "reservation_events")
    stale = [
        [Move(booking_of["a"], "rp-h2", "rp-h1", Interval(NOW + 2 * H, NOW + 4 * H))],  # not there
        [Move(booking_of["b"], "rp-h2", "rp-h1", Interval(NOW + 3 * H, NOW + 5 * H))],  # cancelled
    ]
    for moves in stale:
        with pytest.raises(BookingConflict, match="moved or cancelled"), store.writing() as s:
            _move_bookings(s, moves, NOW, "a stale re-pack")
    assert rows_of(store, "bookings", "reservation_events") == before
