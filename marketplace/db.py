"""The one SQLAlchemy ``MetaData`` of hwmarket and how to open a database.

All three packages declare their tables on :class:`Base`, so one Alembic history covers them.
Times are stored as timezone-aware UTC (:class:`UTCDateTime`); money as ``Numeric``.
"""

from __future__ import annotations

import datetime as dt
import os
from importlib.metadata import entry_points
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

DEFAULT_URL = "sqlite:///hwmarket.db"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by marketplace, metering and billing tables."""

    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zones: values are stored naive in UTC and given back aware. Naive
    datetimes are refused on the way in, so local times can never slip into the store.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: hwmarket stores timezone-aware UTC only")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class epoch_floor(FunctionElement[int]):
    """Whole seconds since the epoch of a :class:`UTCDateTime` column, rounded down, computed by
    the database: reading thousands of booking times as integers skips building (and
    re-zoning) a datetime for each."""

    type = BigInteger()
    inherit_cache = True


class epoch_ceil(FunctionElement[int]):
    """Like :class:`epoch_floor`, rounded up (an end rounds outward, as matching's intervals do)."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_floor)
def _epoch_floor(element: epoch_floor, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(floor(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_ceil)
def _epoch_ceil(element: epoch_ceil, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(ceil(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


# SQLite keeps UTCDateTime as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]': the first 19
# characters are the whole second (strftime('%s') would round a fraction to milliseconds,
# which can carry into the next second), the rest is the fraction, if any.
@compiles(epoch_floor, "sqlite")
def _epoch_floor_sqlite(element: epoch_floor, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"CAST(strftime('%s', substr({value}, 1, 19)) AS INTEGER)"


@compiles(epoch_ceil, "sqlite")
def _epoch_ceil_sqlite(element: epoch_ceil, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return (
        f"(CAST(strftime('%s', substr({value}, 1, 19)) AS INTEGER)"
        f" + (CAST(substr({value}, 20) AS REAL) > 0))"
    )


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$HWMARKET_DB``, else ``sqlite:///hwmarket.db``."""
    return url or os.environ.get("HWMARKET_DB") or DEFAULT_URL


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with hwmarket's settings.

    SQLite: write-ahead logging, foreign keys on, a busy timeout so concurrent writers queue instead of failing, and
    transactions begun explicitly (pysqlite's own BEGIN handling is switched off) so a booking
    can take the write lock first with ``BEGIN IMMEDIATE``.
    A plain ``postgresql://`` URL is routed to psycopg 3.
    """
    url = database_url(url)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if ":memory:" not in url:
                # WAL: readers never block the writer, and a commit needs no fsync of the
                # whole file (synchronous=NORMAL keeps the database consistent on power loss,
                # losing at most the last commits since a checkpoint).
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            mode = conn.info.pop("begin_mode", "")
            conn.exec_driver_sql(f"BEGIN {mode}".strip())

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def load_all_models() -> MetaData:
    """Import every package's table modules (entry-point group ``hwmarket.models``).

    ``marketplace`` cannot import ``metering`` or ``billing`` (dependencies point one way), so
    they announce their table modules through entry points; migrations and ``init`` call this to
    see the whole schema.
    """
    from marketplace import schema as _schema  # noqa: F401

    for ep in entry_points(group="hwmarket.models"):
        ep.load()
    return Base.metadata


__all__ = [
    "DEFAULT_URL",
    "Base",
    "UTCDateTime",
    "database_url",
    "epoch_ceil",
    "epoch_floor",
    "load_all_models",
    "make_engine",
]
