"""Shared fixtures: the store on SQLite and on PostgreSQL, with one parametrised fixture.

PostgreSQL tests use ``$HWMARKET_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``): each test session creates its own
database there and drops it afterwards. Without a reachable server these tests skip with a
reason saying how to enable them; under ``CI=true`` they fail instead, so CI never passes by
skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from marketplace.db import load_all_models, make_engine
from marketplace.store import Store
from metering.sim_data import shared_data_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED_DATA = shared_data_dir()
PG_URL = os.environ.get(
    "HWMARKET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(condition: bool, reason: str) -> None:
    """Skip locally when a peer is missing, but fail under CI=true (CI must not skip)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    need(
        SHARED_DATA.is_dir(),
        f"the shared data folder {SHARED_DATA} is missing (set HWMARKET_SHARED_DATA)",
    )
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (and xdist worker); dropped after."""
    admin_url = make_url(PG_URL)
    name = f"hwmarket_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(
            admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        need(
            False,
            f"PostgreSQL not reachable at {admin_url.render_as_string(hide_password=True)} ({type(exc).__name__}); "
            "start one or set HWMARKET_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB to run these tests",
        )
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_all_tables(store: Store) -> None:
    metadata = load_all_models()
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def _pg_store(pg_database: str) -> Iterator[Store]:
    store = Store(pg_database)
    yield store
    store.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'hwmarket.db'}")
        yield s
        s.dispose()
    else:
        s = request.getfixturevalue("_pg_store")
        _empty_all_tables(s)
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'hwmarket.db'}")
    yield s
    s.dispose()


@pytest.fixture
def example_store(store: Store) -> Store:
    """The store with the example listings and the three-site inventory imported."""
    store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    store.import_inventory(EXAMPLES / "inventory" / "three-sites.yaml")
    return store


__all__ = ["EXAMPLES", "IN_CI", "ROOT", "SHARED_DATA", "make_engine", "need"]
