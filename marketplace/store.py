"""The marketplace's store: SKU revisions, sites and hosts in SQLite or PostgreSQL.

A thin adapter around SQLAlchemy. Every write is one transaction that either stores all of an
import or nothing (a file with one bad SKU leaves the database exactly as it was). Reads return
the pure values of :mod:`marketplace.catalog` and :mod:`marketplace.inventory`.

    >>> store = Store("sqlite:///:memory:")          # doctest: +SKIP
    >>> store.import_listings(["examples/listings/acme-jpu.yaml"])   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from pydantic import SecretStr
from sqlalchemy import Engine, Table, insert, inspect, select, update
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from marketplace import migrate
from marketplace.catalog import Listing, Sku
from marketplace.db import database_url, load_all_models, make_engine
from marketplace.documents import load_model, validate_data
from marketplace.errors import (
    BookingConflict,
    HwmarketError,
    InvalidInput,
    NotFound,
    Problem,
    StoreError,
)
from marketplace.inventory import BmcEndpoint, Host, HostState, Inventory, Site
from marketplace.query import SkuList, SkuQuery
from marketplace.schema import HostRow, MetroRow, RegionRow, SiteRow, SkuRow
from marketplace.units import plain_decimal

M = TypeVar("M", Listing, Inventory)


@dataclass
class ImportReport:
    """What an import changed. Importing the same file twice gives an all-unchanged report."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)

    def merge(self, other: ImportReport) -> None:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged


class PlacedSite(Site):
    """A site with the metro and region it belongs to."""

    metro: str
    region: str


def _read_all(model: type[M], sources: Sequence[Any]) -> list[tuple[str, M]]:
    """Validate every source (a file, a model value or a dict) before anything is stored;
    raise one :class:`InvalidInput` with the problems of all of them."""
    read: list[tuple[str, M]] = []
    problems: list[Problem] = []
    for src in sources:
        try:
            if isinstance(src, model):
                read.append(("<python>", src))
            elif isinstance(src, dict):
                read.append(("<python>", validate_data(model, src, "<python>")))
            else:
                read.append((str(src), load_model(model, src)))
        except InvalidInput as exc:
            problems += exc.problems
    if problems:
        raise InvalidInput(problems)
    return read


def _table(model: Any) -> Table:
    """The Core table of a model: inserting through it is one executemany (the ORM's bulk insert
    splits batches wherever a row leaves a column None)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


#: deadlock_detected, serialization_failure: PostgreSQL aborted this transaction to let another
#: finish; running it again is the documented remedy.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _is_overlap(exc: IntegrityError) -> bool:
    """Whether the database refused a booking that overlaps another on the same host."""
    if getattr(exc.orig, "sqlstate", None) == "23P01":  # PostgreSQL exclusion_violation
        return True
    return "booking overlaps a live booking" in str(exc.orig)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """The database behind the marketplace (and, through the shared schema, metering and billing).

    ``url`` defaults to ``$HWMARKET_DB`` or ``sqlite:///hwmarket.db``. The schema is brought to
    the current migration on open, so a new SQLite file needs no separate set-up step.
    """

    def __init__(
        self, url: str | None = None, *, engine: Engine | None = None, migrate_schema: bool = True
    ) -> None:
        self.url = database_url(url)
        try:
            self.engine = engine or make_engine(self.url)
        except (ArgumentError, ImportError) as exc:
            shown = self.url.split("@")[-1] if "@" in self.url else self.url
            raise StoreError(
                f"cannot use the database URL ...{shown}: {exc}; expected sqlite:///FILE or "
                "postgresql://USER@HOST/DB"
            ) from None
        if migrate_schema:
            self.init()

    # -- connection and transactions -------------------------------------------------------

    def init(self) -> None:
        """Create or upgrade the schema to the newest migration (idempotent)."""
        load_all_models()
        try:
            migrate.upgrade(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open the database {self.safe_url}: {exc.orig}") from None

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session (a plain transaction, rolled back at the end)."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            raise StoreError(f"database {self.safe_url}: {exc.orig}") from None

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One write transaction: committed if the block ends normally, rolled back otherwise.

        On SQLite it begins with ``BEGIN IMMEDIATE``: the write lock is taken first, so two
        writers queue instead of one failing half-way when it upgrades a read lock.
        """
        try:
            with self.engine.connect() as conn:
                conn.info["begin_mode"] = "IMMEDIATE"
                with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
                    yield session
                    session.flush()
        except HwmarketError:
            raise
        except IntegrityError as exc:
            if _is_overlap(exc):
                raise BookingConflict(
                    "another booking took one of these hosts for an overlapping time; try again"
                ) from None
            raise StoreError(f"the database refused the change: {exc.orig}") from None
        except (OperationalError, DBAPIError) as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
                # Two bookers' exclusion-constraint checks waited on each other (PostgreSQL
                # aborts one): the same race as an overlap, and as retryable.
                raise BookingConflict(
                    "a concurrent booking got in the way (the database broke a deadlock); try again"
                ) from None
            raise StoreError(f"database {self.safe_url}: {exc.orig}") from None

    def dispose(self) -> None:
        self.engine.dispose()

    # -- catalogue --------------------------------------------------------------------------

    def import_listings(
        self, sources: Sequence[str | Path | Listing | dict[str, Any]]
    ) -> ImportReport:
        """Import vendor listings (files or :class:`Listing` values) atomically.

        Every file is validated first and all problems are reported together; then one
        transaction stores new SKUs and new revisions of changed ones (the old revision stays, as
        reservations keep the revision they booked). Unchanged SKUs are left alone.
        """
        listings = _read_all(Listing, sources)
        problems: list[Problem] = []
        report = ImportReport()
        with self.writing() as s:
            slugs = {sku.slug for _, listing in listings for sku in listing.skus}
            current = {
                row.slug: row
                for row in s.scalars(select(SkuRow).where(SkuRow.is_current.is_(True)))
                if row.slug in slugs
            }
            seen: dict[str, str] = {}
            new_rows: list[dict[str, Any]] = []
            retired: list[int] = []
            now = _now()
            for source, listing in listings:
                for i, sku in enumerate(listing.skus):
                    path = f"skus[{i}].slug"
                    if sku.slug in seen:
                        problems.append(
                            Problem(path, f"also listed in {seen[sku.slug]}", sku.slug, source)
                        )
                        continue
                    seen[sku.slug] = source
                    old = current.get(sku.slug)
                    if old is not None and old.vendor != sku.vendor:
                        problems.append(
                            Problem(
                                path, f"slug belongs to vendor {old.vendor!r}", sku.slug, source
                            )
                        )
                        continue
                    digest = sku.content_hash()
                    if old is not None and old.content_hash == digest:
                        report.unchanged += 1
                        continue
                    revision = 1 if old is None else old.revision + 1
                    if old is not None:
                        retired.append(old.id)
                    new_rows.append(_sku_row(sku, revision, digest, now))
                    (report.added if old is None else report.updated).append(
                        f"{sku.slug}@{revision}"
                    )
            if problems:
                raise InvalidInput(problems)
            if retired:
                s.execute(update(SkuRow).where(SkuRow.id.in_(retired)).values(is_current=False))
            if new_rows:
                s.connection().execute(insert(_table(SkuRow)), new_rows)
        return report

    def import_listing(self, source: str | Path | Listing | dict[str, Any]) -> ImportReport:
        """Import one listing file or value; see :meth:`import_listings`."""
        return self.import_listings([source])

    def sku(self, slug: str, revision: int | None = None) -> Sku:
        """A SKU by slug: its current revision, or the one asked for."""
        with self.reading() as s:
            stmt = select(SkuRow).where(SkuRow.slug == slug)
            stmt = (
                stmt.where(SkuRow.revision == revision)
                if revision
                else stmt.where(SkuRow.is_current.is_(True))
            )
            row = s.scalars(stmt).first()
        if row is None:
            what = f"{slug}@{revision}" if revision else slug
            raise NotFound(f"unknown SKU {what!r}; `hwmarket sku list` shows the catalogue")
        return _sku_from_row(row)

    def skus(self, query: SkuQuery | None = None, *, all_revisions: bool = False) -> SkuList:
        """SKUs meeting ``query`` (current revisions unless ``all_revisions``), by slug."""
        query = query or SkuQuery()
        stmt = select(SkuRow)
        if not all_revisions:
            stmt = stmt.where(SkuRow.is_current.is_(True))
        # Narrow in SQL on the copied columns; the pure query then judges the whole SKU.
        if query.slug:
            stmt = stmt.where(SkuRow.slug == query.slug)
        if query.vendor:
            stmt = stmt.where(SkuRow.vendor == query.vendor)
        if query.arch:
            stmt = stmt.where(SkuRow.arch == query.arch)
        if query.min_cores:
            stmt = stmt.where(SkuRow.cores >= query.min_cores)
        if query.min_memory:
            stmt = stmt.where(SkuRow.memory_bytes >= query.min_memory)
        if query.min_accelerators:
            stmt = stmt.where(SkuRow.accelerator_count >= query.min_accelerators)
        if query.min_accelerator_memory:
            stmt = stmt.where(SkuRow.accelerator_memory_bytes >= query.min_accelerator_memory)
        if query.accelerator_kind or query.accelerator_model or query.accelerator_models:
            stmt = stmt.where(SkuRow.accelerator_count > 0)
        if query.site:
            at_site = select(SkuRow.slug).join(HostRow, HostRow.sku_id == SkuRow.id)
            stmt = stmt.where(SkuRow.slug.in_(at_site.where(HostRow.site_code == query.site)))
        stmt = stmt.order_by(SkuRow.slug, SkuRow.revision)
        with self.reading() as s:
            rows = list(s.scalars(stmt))
        return SkuList(sku for sku in map(_sku_from_row, rows) if query.matches(sku))

    # -- inventory --------------------------------------------------------------------------

    def import_inventories(
        self, sources: Sequence[str | Path | Inventory | dict[str, Any]]
    ) -> ImportReport:
        """Import sites and hosts atomically. Re-importing the same file changes nothing; a host
        whose fields changed is updated. Hosts may name sites of the same import or stored ones."""
        inventories = _read_all(Inventory, sources)
        problems: list[Problem] = []
        report = ImportReport()
        with self.writing() as s:
            for _source, inv in inventories:
                report.merge(self._upsert_places(s, inv))
            site_codes = set(s.scalars(select(SiteRow.code)))
            skus_by_slug: dict[str, dict[int, int]] = {}
            current_rev: dict[str, int] = {}
            for row in s.execute(
                select(SkuRow.slug, SkuRow.revision, SkuRow.id, SkuRow.is_current)
            ):
                skus_by_slug.setdefault(row.slug, {})[row.revision] = row.id
                if row.is_current:
                    current_rev[row.slug] = row.revision
            slug_of = {
                sku_id: slug for slug, revs in skus_by_slug.items() for sku_id in revs.values()
            }
            existing = {row.id: row for row in s.execute(select(*_HOST_COLUMNS))}
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            now = _now()
            for source, inv in inventories:
                for i, host in enumerate(inv.hosts):
                    revs = skus_by_slug.get(host.sku_slug)
                    if revs is None:
                        problems.append(
                            Problem(
                                f"hosts[{i}].sku",
                                "unknown SKU; import its listing first",
                                host.sku,
                                source,
                            )
                        )
                        continue
                    if host.site not in site_codes:
                        known = ", ".join(sorted(site_codes)) or "none yet"
                        problems.append(
                            Problem(
                                f"hosts[{i}].site",
                                f"unknown site; known sites: {known}",
                                host.site,
                                source,
                            )
                        )
                        continue
                    old = existing.get(host.id)
                    if host.sku_revision is not None:
                        if host.sku_revision not in revs:
                            problems.append(
                                Problem(
                                    f"hosts[{i}].sku",
                                    f"unknown revision; known: {sorted(revs)}",
                                    host.sku,
                                    source,
                                )
                            )
                            continue
                        sku_id = revs[host.sku_revision]
                    elif old is not None and slug_of.get(old.sku_id) == host.sku_slug:
                        sku_id = old.sku_id  # a machine keeps its revision when the vendor re-lists
                    else:
                        sku_id = revs[current_rev[host.sku_slug]]
                    values = _host_values(host, sku_id)
                    if old is None:
                        inserts.append({**values, "updated_at": now})
                        report.added.append(host.id)
                    elif any(getattr(old, k) != v for k, v in values.items()):
                        updates.append({**values, "updated_at": now})
                        report.updated.append(host.id)
                    else:
                        report.unchanged += 1
            if problems:
                raise InvalidInput(problems)
            if inserts:
                s.connection().execute(insert(_table(HostRow)), inserts)
            if updates:
                s.execute(update(HostRow), updates)
        return report

    def import_inventory(self, source: str | Path | Inventory | dict[str, Any]) -> ImportReport:
        """Import one inventory file or value; see :meth:`import_inventories`."""
        return self.import_inventories([source])

    def _upsert_places(self, s: Session, inv: Inventory) -> ImportReport:
        report = ImportReport()
        for region in inv.regions:
            report.merge(_upsert(s, RegionRow, region.code, {"name": region.name}))
            for metro in region.metros:
                report.merge(
                    _upsert(
                        s, MetroRow, metro.code, {"name": metro.name, "region_code": region.code}
                    )
                )
                for site in metro.sites:
                    values = site.model_dump(exclude={"code"})
                    report.merge(
                        _upsert(s, SiteRow, site.code, {**values, "metro_code": metro.code})
                    )
        s.flush()
        return report

    def sites(self) -> list[PlacedSite]:
        """Every site with its metro and region, by code."""
        stmt = (
            select(SiteRow, MetroRow.region_code)
            .join(MetroRow, MetroRow.code == SiteRow.metro_code)
            .order_by(SiteRow.code)
        )
        with self.reading() as s:
            return [
                PlacedSite(
                    code=row.code,
                    name=row.name,
                    country=row.country,
                    timezone=row.timezone,
                    energy_price_kwh=plain_decimal(row.energy_price_kwh),
                    pue=row.pue,
                    metro=row.metro_code,
                    region=region,
                )
                for row, region in s.execute(stmt)
            ]

    def site(self, code: str) -> PlacedSite:
        for site in self.sites():
            if site.code == code:
                return site
        raise NotFound(f"unknown site {code!r}; `hwmarket site list` shows the sites")

    def hosts(
        self,
        *,
        site: str | None = None,
        sku: str | None = None,
        state: HostState | str | None = None,
    ) -> list[Host]:
        """Hosts, by id, optionally of one site, SKU slug or state. BMC passwords included
        (as secrets): the collector needs them; output code shows ``Host.public()``."""
        stmt = select(HostRow, SkuRow.slug, SkuRow.revision).join(
            SkuRow, SkuRow.id == HostRow.sku_id
        )
        if site:
            stmt = stmt.where(HostRow.site_code == site)
        if sku:
            stmt = stmt.where(SkuRow.slug == sku)
        if state:
            stmt = stmt.where(HostRow.state == str(state))
        with self.reading() as s:
            return [
                _host_from_row(row, slug, rev)
                for row, slug, rev in s.execute(stmt.order_by(HostRow.id))
            ]

    def host(self, host_id: str) -> Host:
        with self.reading() as s:
            found = s.execute(
                select(HostRow, SkuRow.slug, SkuRow.revision)
                .join(SkuRow, SkuRow.id == HostRow.sku_id)
                .where(HostRow.id == host_id)
            ).first()
        if found is None:
            raise NotFound(f"unknown host {host_id!r}; `hwmarket host list` shows the hosts")
        return _host_from_row(*found)

    def hosts_frame(self, *, site: str | None = None) -> pd.DataFrame:
        """Hosts as a DataFrame: id, sku, sku_revision, site, state, bmc_protocol, bmc_address,
        bmc_port (no passwords)."""
        hosts = self.hosts(site=site)
        return pd.DataFrame(
            [
                {
                    "id": h.id,
                    "sku": h.sku_slug,
                    "sku_revision": h.sku_revision,
                    "site": h.site,
                    "state": h.state.value,
                    "bmc_protocol": h.bmc.protocol if h.bmc else None,
                    "bmc_address": h.bmc.address if h.bmc else None,
                    "bmc_port": h.bmc.effective_port if h.bmc else None,
                }
                for h in hosts
            ],
            columns=[
                "id",
                "sku",
                "sku_revision",
                "site",
                "state",
                "bmc_protocol",
                "bmc_address",
                "bmc_port",
            ],
        )

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())


_HOST_COLUMNS = [
    HostRow.id,
    HostRow.sku_id,
    HostRow.site_code,
    HostRow.state,
    HostRow.bmc_protocol,
    HostRow.bmc_address,
    HostRow.bmc_port,
    HostRow.bmc_username,
    HostRow.bmc_password,
    HostRow.bmc_method,
    HostRow.bmc_verify_tls,
]


def _host_values(host: Host, sku_id: int) -> dict[str, Any]:
    bmc = host.bmc
    return {
        "id": host.id,
        "sku_id": sku_id,
        "site_code": host.site,
        "state": host.state.value,
        "bmc_protocol": bmc.protocol if bmc else None,
        "bmc_address": bmc.address if bmc else None,
        "bmc_port": bmc.port if bmc else None,
        "bmc_username": bmc.username if bmc else None,
        "bmc_password": bmc.password.get_secret_value() if bmc else None,
        "bmc_method": bmc.method if bmc else None,
        "bmc_verify_tls": bmc.verify_tls if bmc else False,
    }


def _host_from_row(row: HostRow, slug: str, revision: int) -> Host:
    bmc = None
    if row.bmc_protocol:
        fields: dict[str, Any] = {
            "protocol": row.bmc_protocol,
            "address": row.bmc_address,
            "port": row.bmc_port,
            "username": row.bmc_username,
            "password": SecretStr(row.bmc_password or ""),
            "method": row.bmc_method,
            "verify_tls": row.bmc_verify_tls,
        }
        bmc = BmcEndpoint.model_construct(**fields)
    return Host.model_construct(
        id=row.id, sku=f"{slug}@{revision}", site=row.site_code, state=HostState(row.state), bmc=bmc
    )


def _sku_row(sku: Sku, revision: int, digest: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "slug": sku.slug,
        "revision": revision,
        "is_current": True,
        "vendor": sku.vendor or "",
        "name": sku.name,
        "content_hash": digest,
        "spec": sku.canonical(),
        "arch": sku.arch,
        "cores": sku.cores,
        "memory_bytes": sku.memory,
        "accelerator_count": sku.accelerator_count,
        "accelerator_memory_bytes": sku.accelerator_memory,
        "max_watts": sku.power.max_watts if sku.power else None,
        "created_at": now,
    }


def _sku_from_row(row: SkuRow) -> Sku:
    return Sku.model_validate({**row.spec, "revision": row.revision})


def _upsert(s: Session, model: Any, code: str, values: dict[str, Any]) -> ImportReport:
    row = s.get(model, code)
    if row is None:
        s.add(model(code=code, **values))
        return ImportReport(added=[code])
    if any(getattr(row, k) != v for k, v in values.items()):
        for k, v in values.items():
            setattr(row, k, v)
        return ImportReport(updated=[code])
    return ImportReport(unchanged=1)


__all__ = ["ImportReport", "PlacedSite", "Store"]
