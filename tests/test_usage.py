"""Attribution of host-hours to reservations, and the bitemporal ledger in the store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from marketplace.booking import reserve
from marketplace.capacity import holdings
from marketplace.errors import InvalidInput, StoreError
from marketplace.lifecycle import fail_host, release
from marketplace.store import Store
from metering.energy import hourly_energy
from metering.ledger import fleet, meter, usage, write_samples
from metering.schema import UsageRow
from metering.usage import attribute, cut_host_hours

T0 = pd.Timestamp("2031-02-01", tz="UTC")
H = pd.Timedelta(hours=1)
M = pd.Timedelta(minutes=1)


def flat_fleet(*hosts: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"host": list(hosts), "sku": "s", "sku_revision": 1, "site": "x", "pue": 1.25}
    )


def hold(rows: list[tuple[str, str, pd.Timestamp, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "reservation_id": r,
                "customer": f"cust-{r}",
                "host": h,
                "start": a,
                "end": b,
                "term": "on-demand",
            }
            for r, h, a, b in rows
        ]
    )


def ramp_samples(
    host: str, start: pd.Timestamp, end: pd.Timestamp, every: str = "10s"
) -> pd.DataFrame:
    t = pd.date_range(start, end, freq=every)
    watts = 200.0 + 100.0 * np.sin(np.arange(len(t)) / 50.0)
    return pd.DataFrame({"host": host, "time": t, "watts": watts, "flags": 0})


def test_pieces_tile_every_hour_exactly() -> None:
    held = hold([("r1", "a", T0 + 20 * M, T0 + 70 * M), ("r2", "a", T0 + 90 * M, T0 + 5 * H)])
    pieces = cut_host_hours(held, flat_fleet("a", "b"), T0, T0 + 2 * H)
    per_hour = (
        pieces.assign(s=(pieces.end - pieces.start).dt.total_seconds())
        .groupby(["host", "hour"])
        .s.sum()
    )
    assert (per_hour == 3600).all() and len(per_hour) == 4
    a = pieces[pieces.host == "a"]
    assert list(a.reservation_id) == ["", "r1", "r1", "", "r2"]
    assert list(a.start - T0) == [0 * M, 20 * M, 60 * M, 70 * M, 90 * M]


def test_attribution_splits_energy_at_the_exact_second() -> None:
    samples = ramp_samples("a", T0 - 5 * M, T0 + 3 * H)
    held = hold([("r1", "a", T0 + 20 * M + pd.Timedelta(seconds=7), T0 + 130 * M)])
    ledger = attribute(samples, held, flat_fleet("a"), T0, T0 + 3 * H)
    hours = hourly_energy(samples, period=(T0, T0 + 3 * H))
    by_hour = ledger.groupby("hour").energy_wh.sum()
    assert np.allclose(by_hour.to_numpy(), hours.energy_wh.to_numpy(), rtol=1e-9)
    r1 = ledger[ledger.reservation_id == "r1"]
    assert r1.reserved_s.sum() == (130 - 20) * 60 - 7
    assert np.allclose(r1.facility_energy_wh, r1.energy_wh * 1.25)
    # the piece's energy is from its own samples: compare with integrating just that window
    window = samples[(samples.time >= T0 + 60 * M) & (samples.time <= T0 + 120 * M)]
    second_hour = r1[r1.hour == T0 + H].energy_wh.iloc[0]
    expected = np.trapezoid(window.watts, (window.time - T0).dt.total_seconds()) / 3600
    assert second_hour == pytest.approx(expected, rel=1e-9)


def test_bad_periods_are_refused() -> None:
    with pytest.raises(InvalidInput, match="whole UTC hours"):
        cut_host_hours(
            hold([]).reindex(
                columns=["reservation_id", "customer", "host", "start", "end", "term"]
            ),
            flat_fleet("a"),
            T0 + M,
            T0 + H,
        )
    with pytest.raises(InvalidInput, match="after start"):
        cut_host_hours(
            hold([]).reindex(
                columns=["reservation_id", "customer", "host", "start", "end", "term"]
            ),
            flat_fleet("a"),
            T0 + H,
            T0,
        )


def _samples_for(store: Store, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    frames = [
        ramp_samples(h, start, end).assign(source="simulated", watts=lambda f, i=i: f.watts + i)
        for i, h in enumerate(store.hosts_frame()["id"])
    ]
    return pd.concat(frames, ignore_index=True)


def test_ledger_reservations_start_end_move_release_mid_hour(example_store: Store) -> None:
    now = T0.to_pydatetime() - dt.timedelta(hours=1)
    r = reserve(
        example_store,
        {
            "customer": "acme",
            "count": 1,
            "sku": "c3.small.x86",
            "start": T0 + 15 * M,
            "end": T0 + 6 * H,
        },
        now=now,
    )
    first = r.hosts[0]
    fail_host(example_store, first, now=(T0 + 100 * M).to_pydatetime())
    release(example_store, r.id, now=(T0 + 200 * M + pd.Timedelta(seconds=30)).to_pydatetime())
    write_samples(example_store, _samples_for(example_store, T0 - 5 * M, T0 + 4 * H + 5 * M))
    meter(
        example_store,
        T0.to_pydatetime(),
        (T0 + 4 * H).to_pydatetime(),
        now=(T0 + 5 * H).to_pydatetime(),
    )
    led = usage(example_store, T0.to_pydatetime(), (T0 + 4 * H).to_pydatetime())
    mine = led[led.reservation_id == r.id]
    assert mine.reserved_s.sum() == 200 * 60 + 30 - 15 * 60
    assert set(mine.host) == {first, *fail_moved_to(example_store, r.id)}
    # every host-hour is fully covered by reservation rows plus idle rows
    per_host_hour = led.groupby(["host", "hour"]).reserved_s.sum()
    assert (per_host_hour == 3600).all()
    assert len(per_host_hour) == 18 * 4


def fail_moved_to(store: Store, reservation_id: str) -> set[str]:
    held = holdings(store, T0.to_pydatetime(), (T0 + 6 * H).to_pydatetime())
    return set(held[held.reservation_id == reservation_id].host)


def test_remetering_is_idempotent_and_late_samples_version(example_store: Store) -> None:
    t0, t1 = T0.to_pydatetime(), (T0 + 3 * H).to_pydatetime()
    samples = _samples_for(example_store, T0 - 5 * M, T0 + 3 * H + 5 * M)
    late = samples[(samples.time >= T0 + H + 10 * M) & (samples.time < T0 + H + 20 * M)]
    write_samples(example_store, samples.drop(late.index))
    first = meter(example_store, t0, t1, now=t1 + dt.timedelta(hours=1))
    assert first.new_rows == 18 * 3 and first.new_versions == 0
    again = meter(example_store, t0, t1, now=t1 + dt.timedelta(hours=2))
    assert (again.new_rows, again.new_versions, again.unchanged) == (0, 0, 18 * 3)
    write_samples(example_store, late)
    third = meter(example_store, t0, t1, now=t1 + dt.timedelta(hours=3))
    assert third.new_rows == 0 and third.new_versions == 18  # only the hour with late samples
    now_view = usage(example_store, t0, t1)
    before = usage(example_store, t0, t1, as_of=t1 + dt.timedelta(hours=2))
    assert (now_view.version > 1).sum() == 18 and (before.version == 1).all()
    changed = now_view[now_view.version == 2]
    assert (changed.quality == "complete").all()
    assert (before[before.hour == T0 + H].quality == "partial").all()
    # the database refuses a duplicate (key, version) whatever the code does
    row = usage(example_store, t0, t1, all_versions=True).iloc[0]
    with pytest.raises(StoreError), example_store.writing() as s:
        s.execute(
            insert(UsageRow),
            [
                {
                    "reservation_id": row.reservation_id,
                    "host_id": row.host,
                    "hour": row.hour.to_pydatetime(),
                    "version": int(row.version),
                    "computed_at": t1,
                    "customer": "",
                    "sku": "x",
                    "sku_revision": 1,
                    "site": "x",
                    "term": "",
                    "reserved_s": 0.0,
                    "measured_s": 0.0,
                    "gap_s": 0.0,
                    "energy_wh": 0.0,
                    "energy_uncertainty_wh": 0.0,
                    "facility_energy_wh": 0.0,
                    "quality": "missing",
                    "input_digest": "x",
                }
            ],
        )
    assert len(fleet(example_store)) == 18
