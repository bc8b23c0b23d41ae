"""Metering's store: power samples in and out, and the bitemporal usage ledger.

Thin adapters around :mod:`metering.schema`; the decisions are in the pure modules
(:mod:`metering.energy`, :mod:`metering.usage`). The ledger is append-only: re-metering an
hour with the same inputs writes nothing, late samples give affected rows a new ``version``, and
:func:`usage` reads the newest version as known at any moment (``as_of``), so billing can see
both what it invoiced and what changed since.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from marketplace.capacity import holdings
from marketplace.errors import InvalidInput, Problem
from marketplace.store import Store
from metering.samples import OPTIONAL_SAMPLE_COLUMNS, SAMPLE_COLUMNS, SOURCES
from metering.schema import PowerSampleRow, UsageRow
from metering.usage import LEDGER_COLUMNS, attribute

#: Samples this far outside a metering period are read too: they anchor segments crossing in.
SAMPLE_MARGIN = pd.Timedelta(minutes=15)
BATCH = 20_000

Progress = Callable[[int, int], None]


# -- samples ----------------------------------------------------------------------------------


def check_samples(frame: pd.DataFrame, source: str = "samples") -> pd.DataFrame:
    """The frame with ``SAMPLE_COLUMNS`` typed, or :class:`InvalidInput` naming what is wrong.

    Accepts ``flags`` and ``source`` missing (0 and ``import``). Naive times, unknown sources,
    non-numeric or infinite watts are refused with the rows named; NaN watts are allowed (a
    failed read) and negative ones are kept and flagged by the energy kernel.
    """
    frame = frame.copy()
    if "flags" not in frame.columns:
        frame["flags"] = 0
    if "source" not in frame.columns:
        frame["source"] = "import"
    problems = [
        Problem(c, "required column is missing", list(frame.columns), source)
        for c in ("host", "time", "watts")
        if c not in frame.columns
    ]
    if problems:
        raise InvalidInput(problems, source)
    times = pd.to_datetime(frame["time"], errors="coerce", utc=False)
    if getattr(times.dt, "tz", None) is None:
        raise InvalidInput(
            [
                Problem(
                    "time",
                    "times need a time zone (UTC), e.g. 2026-11-01T10:00:00Z",
                    str(frame["time"].iloc[0]) if len(frame) else None,
                    source,
                )
            ],
            source,
        )
    bad_time = times.isna()
    watts = pd.to_numeric(frame["watts"], errors="coerce")
    bad_watts = (watts.isna() & frame["watts"].notna()) | np.isinf(watts.fillna(0.0))
    bad_source = ~frame["source"].isin(SOURCES)
    bad_host = frame["host"].isna() | (frame["host"].astype(str).str.len() == 0)
    for mask, col, what in (
        (bad_time, "time", "not a time"),
        (bad_watts, "watts", "not a finite number of watts"),
        (bad_source, "source", f"unknown source; accepted: {', '.join(SOURCES)}"),
        (bad_host, "host", "host is missing"),
    ):
        if mask.any():
            rows = list(np.flatnonzero(mask.to_numpy())[:5])
            problems.append(
                Problem(
                    f"rows {rows}{'...' if mask.sum() > 5 else ''}.{col}",
                    what,
                    frame.loc[mask, col].iloc[0],
                    source,
                )
            )
    if problems:
        raise InvalidInput(problems, source)
    frame["time"] = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    frame["watts"] = watts.astype("float64")
    for col, dtype in OPTIONAL_SAMPLE_COLUMNS.items():
        if col in frame.columns:
            frame[col] = (
                pd.to_datetime(frame[col], utc=True)
                if dtype.startswith("datetime")
                else pd.to_numeric(frame[col], errors="coerce")
            )
    return frame.astype({k: v for k, v in SAMPLE_COLUMNS.items()})


def write_samples(store: Store, samples: pd.DataFrame, *, known_hosts: bool = True) -> int:
    """Insert samples in batches; a sample already stored (host, time, source) is skipped.

    With ``known_hosts`` every host must exist in the inventory. Returns the rows offered.
    """
    frame = check_samples(samples)
    if known_hosts and len(frame):
        known = set(store.hosts_frame()["id"])
        unknown = sorted(set(frame["host"].astype(str)) - known)
        if unknown:
            raise InvalidInput(
                [
                    Problem(
                        "host",
                        f"unknown hosts (first {min(5, len(unknown))} of {len(unknown)})",
                        unknown[:5],
                    )
                ],
                "samples",
            )
    cols = [c for c in (*SAMPLE_COLUMNS, *OPTIONAL_SAMPLE_COLUMNS) if c in frame.columns]
    records = frame[cols].rename(columns={"host": "host_id"})
    records = records.astype(object).where(records.notna(), None)
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in records.to_dict("records")
    ]
    for r in rows:
        for k in ("time", "bmc_time"):
            if r.get(k) is not None:
                r[k] = r[k].to_pydatetime()
    with store.writing() as s:
        dialect = s.get_bind().dialect.name
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = make(PowerSampleRow).on_conflict_do_nothing(
            index_elements=["host_id", "time", "source"]
        )
        for start in range(0, len(rows), BATCH):
            s.execute(stmt, rows[start : start + BATCH])
    return len(rows)


_SAMPLE_READ_COLUMNS = [
    "host",
    "time",
    "watts",
    "source",
    "flags",
    "min_watts",
    "max_watts",
    "energy_j",
]


def read_samples(
    store: Store, start: dt.datetime, end: dt.datetime, hosts: Sequence[str] | None = None
) -> pd.DataFrame:
    """Samples with ``start <= time < end`` (optionally of some hosts), ``SAMPLE_COLUMNS`` plus
    the optional ones, sorted by host and time."""
    cols = [
        PowerSampleRow.host_id.label("host"),
        PowerSampleRow.time,
        PowerSampleRow.watts,
        PowerSampleRow.source,
        PowerSampleRow.flags,
        PowerSampleRow.min_watts,
        PowerSampleRow.max_watts,
        PowerSampleRow.energy_j,
    ]
    stmt = select(*cols).where(PowerSampleRow.time >= start, PowerSampleRow.time < end)
    if hosts is not None:
        stmt = stmt.where(PowerSampleRow.host_id.in_(list(hosts)))
    with store.reading() as s:
        frame = pd.DataFrame(
            s.execute(stmt.order_by(PowerSampleRow.host_id, PowerSampleRow.time)).all(),
            columns=_SAMPLE_READ_COLUMNS,
        )
    frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ns, UTC]")
    return frame.astype(
        {
            "host": "string",
            "watts": "float64",
            "source": "string",
            "flags": "int64",
            "min_watts": "float64",
            "max_watts": "float64",
            "energy_j": "float64",
        }
    )


# -- the ledger -------------------------------------------------------------------------------


def fleet(store: Store) -> pd.DataFrame:
    """Every host with its SKU revision, site and the site's PUE (``metering.usage.FLEET_COLUMNS``)."""
    hosts = store.hosts_frame()
    pue = {s.code: s.pue for s in store.sites()}
    return pd.DataFrame(
        {
            "host": hosts["id"].astype(str),
            "sku": hosts["sku"].astype(str),
            "sku_revision": hosts["sku_revision"].astype("int64"),
            "site": hosts["site"].astype(str),
            "pue": hosts["site"].map(pue).astype(float),
        }
    )


@dataclass
class MeterReport:
    """What a metering run wrote: new rows, new versions of changed rows, rows unchanged."""

    hours: int = 0
    new_rows: int = 0
    new_versions: int = 0
    unchanged: int = 0
    changed_keys: list[tuple[str, str, dt.datetime]] = field(default_factory=list)


_DIGEST_COLUMNS = [c for c in LEDGER_COLUMNS if c not in ("reservation_id", "host", "hour")]


def _digests(ledger: pd.DataFrame) -> np.ndarray:
    rounded = ledger[_DIGEST_COLUMNS].copy()
    for col in rounded.columns:
        if rounded[col].dtype == "float64":
            rounded[col] = rounded[col].round(6)
    texts = ("|".join(map(str, row)) for row in rounded.itertuples(index=False))
    return np.array([hashlib.sha256(t.encode()).hexdigest() for t in texts])


def meter(
    store: Store,
    start: dt.datetime,
    end: dt.datetime,
    *,
    now: dt.datetime | None = None,
    samples: pd.DataFrame | None = None,
    progress: Progress | None = None,
    chunk: dt.timedelta = dt.timedelta(days=1),
    **energy_options: Any,
) -> MeterReport:
    """Compute and store the usage ledger for ``[start, end)`` (whole UTC hours), a chunk at a
    time (``progress(done_hours, total_hours)`` after each). Samples come from the store unless
    given. Idempotent: unchanged rows write nothing; changed rows get the next version."""
    for name, t in (("start", start), ("end", end)):
        if t.tzinfo is None:
            raise InvalidInput(
                [Problem(name, "needs a timezone-aware time (UTC)", t.isoformat())], "meter"
            )
    if end <= start:
        raise InvalidInput(
            [Problem("end", f"must be after start {start.isoformat()}", end.isoformat())], "meter"
        )
    now = now or dt.datetime.now(dt.UTC)
    hosts = fleet(store)
    total_hours = int((end - start).total_seconds() // 3600)
    report = MeterReport(hours=total_hours)
    t = start
    while t < end:
        t_next = min(t + chunk, end)
        held = holdings(store, t, t_next)
        lo, hi = pd.Timestamp(t) - SAMPLE_MARGIN, pd.Timestamp(t_next) + SAMPLE_MARGIN
        if samples is None:
            part = read_samples(store, lo.to_pydatetime(), hi.to_pydatetime())
        else:
            part = samples[(samples["time"] >= lo) & (samples["time"] < hi)]
        ledger = attribute(
            part, held, hosts, pd.Timestamp(t), pd.Timestamp(t_next), **energy_options
        )
        _store_versions(store, ledger, t, t_next, now, report)
        t = t_next
        if progress:
            progress(int((t - start).total_seconds() // 3600), total_hours)
    return report


def _store_versions(
    store: Store,
    ledger: pd.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    report: MeterReport,
) -> None:
    digests = _digests(ledger)
    with store.writing() as s:
        latest = (
            select(
                UsageRow.reservation_id,
                UsageRow.host_id,
                UsageRow.hour,
                func.max(UsageRow.version).label("v"),
            )
            .where(UsageRow.hour >= start, UsageRow.hour < end)
            .group_by(UsageRow.reservation_id, UsageRow.host_id, UsageRow.hour)
            .subquery()
        )
        existing = {
            (r.reservation_id, r.host_id, _aware(r.hour)): (r.version, r.input_digest)
            for r in s.execute(
                select(
                    UsageRow.reservation_id,
                    UsageRow.host_id,
                    UsageRow.hour,
                    UsageRow.version,
                    UsageRow.input_digest,
                ).join(
                    latest,
                    (UsageRow.reservation_id == latest.c.reservation_id)
                    & (UsageRow.host_id == latest.c.host_id)
                    & (UsageRow.hour == latest.c.hour)
                    & (UsageRow.version == latest.c.v),
                )
            )
        }
        rows = []
        records = ledger.astype(object).where(ledger.notna(), None).to_dict("records")
        for rec, digest in zip(records, digests, strict=True):
            key = (rec["reservation_id"], rec["host"], rec["hour"].to_pydatetime())
            old = existing.get(key)
            if old is not None and old[1] == digest:
                report.unchanged += 1
                continue
            version = 1 if old is None else old[0] + 1
            if old is None:
                report.new_rows += 1
            else:
                report.new_versions += 1
                report.changed_keys.append(key)
            row = {
                k: rec[k]
                for k in LEDGER_COLUMNS
                if k not in ("host", "hour", "energy_uncertainty_wh")
            }
            row.update(
                host_id=rec["host"],
                hour=key[2],
                version=version,
                computed_at=now,
                input_digest=digest,
                energy_uncertainty_wh=rec["energy_uncertainty_wh"],
            )
            rows.append(row)
        for i in range(0, len(rows), BATCH):
            s.execute(insert(UsageRow), rows[i : i + BATCH])


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def usage(
    store: Store,
    start: dt.datetime,
    end: dt.datetime,
    *,
    as_of: dt.datetime | None = None,
    include_idle: bool = True,
    all_versions: bool = False,
) -> pd.DataFrame:
    """The ledger for hours in ``[start, end)``: ``LEDGER_COLUMNS`` plus ``version`` and
    ``computed_at``. By default the newest version of each row; ``as_of`` gives the ledger as it
    was known then (bitemporal), ``all_versions`` every version."""
    stmt = select(UsageRow).where(UsageRow.hour >= start, UsageRow.hour < end)
    if as_of is not None:
        stmt = stmt.where(UsageRow.computed_at <= as_of)
    if not include_idle:
        stmt = stmt.where(UsageRow.reservation_id != "")
    with store.reading() as s:
        rows = s.scalars(
            stmt.order_by(
                UsageRow.hour, UsageRow.host_id, UsageRow.reservation_id, UsageRow.version
            )
        ).all()
        data = [
            {
                **{c: getattr(r, c) for c in LEDGER_COLUMNS if c not in ("host",)},
                "host": r.host_id,
                "version": r.version,
                "computed_at": r.computed_at,
            }
            for r in rows
        ]
    columns = [*LEDGER_COLUMNS, "version", "computed_at"]
    frame = pd.DataFrame(data, columns=columns)
    if not all_versions and len(frame):
        frame = frame.drop_duplicates(["reservation_id", "host", "hour"], keep="last")
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True)
    frame["computed_at"] = pd.to_datetime(frame["computed_at"], utc=True)
    return frame.astype({**LEDGER_COLUMNS, "version": "int64"}).reset_index(drop=True)


__all__ = [
    "MeterReport",
    "check_samples",
    "fleet",
    "meter",
    "read_samples",
    "usage",
    "write_samples",
]


# -- the collector's store sink --------------------------------------------------------------


def poll_targets(
    store: Store, *, site: str | None = None, hosts: Sequence[str] | None = None
) -> list[Any]:
    """What to poll: every host with a BMC (of ``site``, or the ``hosts`` named), each with its
    SKU's maximum power so readings above 1.5x of it are flagged out of range."""
    import dataclasses

    from metering.bmc import BmcTarget
    from metering.collector import PollTarget

    wanted = set(hosts) if hosts else None
    found = [
        h
        for h in store.hosts(site=site)
        if h.bmc is not None and (wanted is None or h.id in wanted)
    ]
    if wanted is not None and len(found) != len(wanted):
        missing = sorted(wanted - {h.id for h in found})
        raise InvalidInput([Problem("--host", "unknown hosts, or hosts without a BMC", missing)])
    max_watts: dict[str, float | None] = {}
    targets = []
    for h in found:
        if h.sku not in max_watts:
            sku = store.sku(h.sku_slug, h.sku_revision)
            max_watts[h.sku] = float(sku.power.max_watts) if sku.power else None
        target = dataclasses.replace(BmcTarget.from_endpoint(h.bmc), max_watts=max_watts[h.sku])  # type: ignore[arg-type]
        targets.append(PollTarget(h.id, target))
    return targets


class StoreSink:
    """Writes a round's samples (bulk insert), failures, and each BMC's status to the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, results: Sequence[Any]) -> None:
        from metering.collector import sample_frame
        from metering.schema import BmcStatusRow, PollFailureRow

        samples = sample_frame(results)
        if len(samples):
            write_samples(self.store, samples, known_hosts=False)
        failures = [
            {
                "host_id": r.host,
                "time": r.started,
                "cause": r.cause,
                "message": r.error or "",
                "elapsed_s": r.elapsed_s,
            }
            for r in results
            if not r.ok
        ]
        now = dt.datetime.now(dt.UTC)
        with self.store.writing() as s:
            if failures:
                s.execute(insert(PollFailureRow), failures)
            for r in results:
                row = s.get(BmcStatusRow, r.host) or BmcStatusRow(
                    host_id=r.host, consecutive_failures=0
                )
                row.method = r.method or row.method
                row.updated_at = now
                if r.ok:
                    row.last_success = r.reading.time
                    row.consecutive_failures = 0
                else:
                    row.last_error = f"{r.cause}: {r.error}"[:500]
                    row.last_error_at = r.started
                    row.consecutive_failures = (row.consecutive_failures or 0) + 1
                s.add(row)


def bmc_status(store: Store) -> pd.DataFrame:
    """The per-BMC status table: host, method, last_success, last_error, last_error_at,
    consecutive_failures."""
    from metering.schema import BmcStatusRow

    with store.reading() as s:
        rows = s.scalars(select(BmcStatusRow).order_by(BmcStatusRow.host_id)).all()
        return pd.DataFrame(
            [
                {
                    "host": r.host_id,
                    "method": r.method,
                    "last_success": r.last_success,
                    "last_error": r.last_error,
                    "last_error_at": r.last_error_at,
                    "consecutive_failures": r.consecutive_failures,
                }
                for r in rows
            ],
            columns=[
                "host",
                "method",
                "last_success",
                "last_error",
                "last_error_at",
                "consecutive_failures",
            ],
        )


__all__ = [
    "MeterReport",
    "StoreSink",
    "bmc_status",
    "check_samples",
    "fleet",
    "meter",
    "poll_targets",
    "read_samples",
    "usage",
    "write_samples",
]
