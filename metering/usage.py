"""The usage ledger: each host-hour's energy attributed to the reservation that held the host.

Pure functions of DataFrames; :mod:`metering.ledger` stores the result. Metering knows
reservations only as intervals: the ``holdings`` frame of :func:`marketplace.capacity.holdings`
(which reservation held which host for which seconds).

Each host-hour is cut at the exact second a reservation began, ended, moved hosts or was
released; each piece's energy comes from the samples inside it (:func:`metering.energy.
interval_energy`), not from an hourly average. What no reservation held is the operator's idle
energy, kept as rows with ``reservation_id == ""`` for capacity analysis.

Columns of a ledger frame (``LEDGER_COLUMNS``), one row per (reservation, host, hour):

=======================  ====================  ==============================================
column                   dtype                 meaning
=======================  ====================  ==============================================
reservation_id           string                ``""`` for the operator's idle time
customer                 string                ``""`` for idle rows
host                     string                host id
sku, sku_revision        string, int64         the SKU revision the host is
site                     string                site code
term                     string                on-demand, 1y, 3y ("" for idle rows)
hour                     datetime64[ns, UTC]   the hour's first instant
reserved_s               float64               seconds of the hour this row covers (held, or
                                               idle for idle rows)
measured_s, gap_s        float64               of those, seconds with / without power data
energy_wh                float64               energy at the host (its BMC's reading)
energy_uncertainty_wh    float64               bound on the energy error (see energy_schema)
facility_energy_wh       float64               energy x the site's PUE
avg_watts, peak_watts    float64               measured average and peak power
quality                  string                complete, partial, missing
=======================  ====================  ==============================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketplace.errors import InvalidInput, Problem
from metering.energy import interval_energy

HOUR = pd.Timedelta(hours=1)

LEDGER_COLUMNS: dict[str, str] = {
    "reservation_id": "string",
    "customer": "string",
    "host": "string",
    "sku": "string",
    "sku_revision": "int64",
    "site": "string",
    "term": "string",
    "hour": "datetime64[ns, UTC]",
    "reserved_s": "float64",
    "measured_s": "float64",
    "gap_s": "float64",
    "energy_wh": "float64",
    "energy_uncertainty_wh": "float64",
    "facility_energy_wh": "float64",
    "avg_watts": "float64",
    "peak_watts": "float64",
    "quality": "string",
}

#: Columns of the fleet frame: every host to meter, with what it is and where.
FLEET_COLUMNS = ("host", "sku", "sku_revision", "site", "pue")
HOLDING_KEYS = ("reservation_id", "customer", "host", "start", "end", "term")


def _check_period(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    problems = []
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None:
            problems.append(Problem(name, "needs a timezone-aware time (UTC)", str(t)))
    if problems:
        raise InvalidInput(problems, "period")
    start, end = start.tz_convert("UTC"), end.tz_convert("UTC")
    if end <= start:
        raise InvalidInput(
            [Problem("end", f"must be after start {start.isoformat()}", end.isoformat())], "period"
        )
    if start != start.floor("h") or end != end.floor("h"):
        raise InvalidInput(
            [
                Problem(
                    "start/end",
                    "metering periods are whole UTC hours",
                    (start.isoformat(), end.isoformat()),
                )
            ],
            "period",
        )
    return start, end


def _ns(column: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch of an aware datetime column."""
    return pd.DatetimeIndex(pd.to_datetime(column, utc=True)).as_unit("ns").asi8


def cut_host_hours(
    holdings: pd.DataFrame, fleet: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Cut every fleet host's hours in ``[start, end)`` at the holdings' starts and ends.

    Returns one row per piece: ``host, start, end, hour, reservation_id, customer, term``
    (``""`` where nobody held the host). Holdings of one host never overlap (the store refuses
    it), so each piece has at most one holder.
    """
    start, end = _check_period(start, end)
    missing = [c for c in (*HOLDING_KEYS,) if c not in holdings.columns]
    if missing:
        raise InvalidInput(
            [Problem("holdings", f"missing columns {missing}", list(holdings.columns))]
        )
    hosts = pd.Index(fleet["host"].astype(str).unique())
    unknown = set(holdings["host"].astype(str)) - set(hosts)
    if unknown:
        raise InvalidInput(
            [Problem("holdings.host", "hosts not in the fleet", sorted(unknown)[:5])]
        )
    n_hours = int((end - start) / HOUR)
    t0 = start.value
    hour_ns = HOUR.value
    h = holdings[(holdings["end"] > start) & (holdings["start"] < end)].reset_index(drop=True)
    h_code = hosts.get_indexer(h["host"].astype(str)).astype(np.int64)
    h_start = np.maximum(_ns(h["start"]), t0)
    h_end = np.minimum(_ns(h["end"]), end.value)

    # boundaries per host: every hour edge plus every holding start and end
    grid_code = np.repeat(np.arange(len(hosts), dtype=np.int64), n_hours + 1)
    grid_t = np.tile(t0 + hour_ns * np.arange(n_hours + 1, dtype=np.int64), len(hosts))
    code = np.concatenate([grid_code, h_code, h_code])
    t = np.concatenate([grid_t, h_start, h_end])
    order = np.lexsort((t, code))
    code, t = code[order], t[order]
    keep = np.concatenate([[True], (code[1:] != code[:-1]) | (t[1:] != t[:-1])])
    code, t = code[keep], t[keep]
    same = code[1:] == code[:-1]
    p_code, p_start, p_end = code[:-1][same], t[:-1][same], t[1:][same]

    # the holder of each piece: the host's holding with the last start <= the piece's start,
    # if that holding has not ended by then (pieces and holdings are sorted by host, time)
    holder = np.full(len(p_code), -1, dtype=np.int64)
    h_order = np.lexsort((h_start, h_code))
    hc, hs = h_code[h_order], h_start[h_order]
    for host in np.unique(hc):
        h_lo, h_hi = np.searchsorted(hc, [host, host + 1])
        p_lo, p_hi = np.searchsorted(p_code, [host, host + 1])
        idx = np.searchsorted(hs[h_lo:h_hi], p_start[p_lo:p_hi], side="right") - 1
        cand = h_order[h_lo + np.clip(idx, 0, None)]
        inside = (idx >= 0) & (p_start[p_lo:p_hi] < h_end[cand])
        holder[p_lo:p_hi][inside] = cand[inside]
    hv = h
    taken = holder >= 0
    out = pd.DataFrame(
        {
            "host": pd.array(hosts[p_code], dtype="string"),
            "start": pd.to_datetime(p_start, utc=True),
            "end": pd.to_datetime(p_end, utc=True),
            "hour": pd.to_datetime(t0 + (p_start - t0) // hour_ns * hour_ns, utc=True),
        }
    )
    for col in ("reservation_id", "customer", "term"):
        values = np.full(len(out), "", dtype=object)
        if taken.any():
            values[taken] = hv[col].astype(str).to_numpy(dtype=object)[holder[taken]]
        out[col] = pd.array(values, dtype="string")
    return out


def attribute(
    samples: pd.DataFrame,
    holdings: pd.DataFrame,
    fleet: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    **energy_options: object,
) -> pd.DataFrame:
    """The usage ledger of ``[start, end)`` (whole UTC hours): columns ``LEDGER_COLUMNS``.

    ``fleet`` has ``FLEET_COLUMNS`` (every host to meter, its SKU, site and the site's PUE);
    ``holdings`` the columns of :func:`marketplace.capacity.holdings`; ``samples`` the
    columns of :mod:`metering.samples` (samples just outside the period still anchor segments
    that cross into it). ``energy_options`` go to :func:`metering.energy.interval_energy`.
    """
    missing = [c for c in FLEET_COLUMNS if c not in fleet.columns]
    if missing:
        raise InvalidInput([Problem("fleet", f"missing columns {missing}", list(fleet.columns))])
    pieces = cut_host_hours(holdings, fleet, start, end)
    energy = interval_energy(samples, pieces, **energy_options)  # type: ignore[arg-type]
    keys = ["reservation_id", "host", "hour"]
    energy["reserved_s"] = (energy["end"] - energy["start"]).dt.total_seconds()
    energy["energy_x_s"] = energy["avg_watts"].fillna(0.0) * energy["measured_s"]
    grouped = energy.groupby(keys, sort=True, observed=True).agg(
        customer=("customer", "first"),
        term=("term", "first"),
        reserved_s=("reserved_s", "sum"),
        measured_s=("measured_s", "sum"),
        gap_s=("gap_s", "sum"),
        energy_wh=("energy_wh", "sum"),
        energy_uncertainty_wh=("uncertainty_wh", "sum"),
        peak_watts=("peak_watts", "max"),
        quality=("quality", _combine_quality),
    )
    ledger = grouped.reset_index()
    measured_wh = ledger["energy_wh"]
    ledger["avg_watts"] = np.where(
        ledger["measured_s"] > 0,
        measured_wh * 3600.0 / ledger["measured_s"].where(ledger["measured_s"] > 0, 1.0),
        np.nan,
    )
    info = fleet.assign(host=fleet["host"].astype(str)).drop_duplicates("host").set_index("host")
    host = ledger["host"].astype(str)
    for col in ("sku", "sku_revision", "site"):
        ledger[col] = host.map(info[col]).to_numpy()
    ledger["facility_energy_wh"] = (
        ledger["energy_wh"] * host.map(info["pue"]).astype(float).to_numpy()
    )
    return ledger[list(LEDGER_COLUMNS)].astype(LEDGER_COLUMNS)


def _combine_quality(values: pd.Series) -> str:
    kinds = set(values)
    if kinds == {"complete"}:
        return "complete"
    if kinds == {"missing"}:
        return "missing"
    return "partial"


__all__ = ["FLEET_COLUMNS", "LEDGER_COLUMNS", "attribute", "cut_host_hours"]
