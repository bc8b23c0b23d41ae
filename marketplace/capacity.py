"""Capacity views and holdings: what is free, reserved or in maintenance, and who held what.

:func:`capacity` answers the operator's "where will we run out?" per (site, SKU) as a step
function and a level; :func:`holdings` gives metering the exact seconds each reservation held
each host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select

from marketplace.booking import _calendars, _candidates, as_request
from marketplace.matching import Interval
from marketplace.reservations import CapacityLevel
from marketplace.schema import BookingRow, ReservationRow, SkuRow
from marketplace.store import Store

HOLDING_COLUMNS = {
    "reservation_id": "string",
    "customer": "string",
    "host": "string",
    "sku": "string",
    "sku_revision": "int64",
    "site": "string",
    "term": "string",
    "start": "datetime64[ns, UTC]",
    "end": "datetime64[ns, UTC]",
}


def holdings(store: Store, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Which reservation held which host for which seconds in ``[start, end)``: one row per
    booking, clipped to the period (columns ``HOLDING_COLUMNS``). Metering reads this."""
    with store.reading() as s:
        rows = s.execute(
            select(
                BookingRow.reservation_id,
                ReservationRow.customer,
                BookingRow.host_id,
                SkuRow.slug,
                SkuRow.revision,
                ReservationRow.site_code,
                ReservationRow.term,
                BookingRow.start_at,
                BookingRow.end_at,
            )
            .join(ReservationRow, ReservationRow.id == BookingRow.reservation_id)
            .join(SkuRow, SkuRow.id == ReservationRow.sku_id)
            .where(
                BookingRow.kind == "reservation",
                BookingRow.voided.is_(False),
                BookingRow.start_at < end,
                BookingRow.end_at > start,
            )
            .order_by(BookingRow.host_id, BookingRow.start_at)
        ).all()
    frame = pd.DataFrame(
        [
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6], max(r[7], start), min(r[8], end))
            for r in rows
        ],
        columns=list(HOLDING_COLUMNS),
    )
    return frame.astype(HOLDING_COLUMNS)


@dataclass
class CapacityView:
    """Capacity of the (site, SKU) classes asked about for a window.

    ``steps``: one row per class and step of the step function (site, sku, start, end, total,
    free, reserved, maintenance). ``levels``: one row per class (site, sku, total,
    free_whole_window, level), the level as :class:`CapacityLevel` defines it.
    """

    steps: pd.DataFrame
    levels: pd.DataFrame


def capacity(
    store: Store,
    start: dt.datetime,
    end: dt.datetime,
    *,
    sku: str | None = None,
    places: Iterable[str] = (),
) -> CapacityView:
    """Free, reserved and maintenance hosts over ``[start, end)`` per (site, SKU), and levels."""
    request = as_request(
        {
            "customer": "-",
            "count": 1,
            "sku": sku,
            "places": list(places),
            "start": start,
            "end": end,
        }
        if sku
        else {
            "customer": "-",
            "count": 1,
            "where": {},
            "places": list(places),
            "start": start,
            "end": end,
        }
    )
    window = Interval(start, end)
    with store.reading() as s:
        classes = _candidates(s, request, required=False)
        calendars = _calendars(s, classes, start)
    steps, levels = [], []
    for c in classes:
        cal = calendars[c.key]
        profile = pd.DataFrame(cal.capacity_profile(window).columns())
        profile.insert(0, "sku", c.key.sku)
        profile.insert(0, "site", c.site)
        steps.append(profile)
        free = len(cal.free_slots(window.lo, window.hi))
        levels.append(
            {
                "site": c.site,
                "sku": c.key.sku,
                "total": cal.total,
                "free_whole_window": free,
                "level": CapacityLevel.of(free, cal.total).value,
            }
        )
    step_cols = ["site", "sku", "start", "end", "total", "free", "reserved", "maintenance"]
    return CapacityView(
        steps=pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(columns=step_cols),
        levels=pd.DataFrame(levels, columns=["site", "sku", "total", "free_whole_window", "level"]),
    )


__all__ = ["HOLDING_COLUMNS", "CapacityView", "capacity", "holdings"]
