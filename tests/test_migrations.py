"""The schema the migrations build equals the one the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from marketplace.db import load_all_models
from marketplace.store import Store


def test_migrated_schema_equals_models(store: Store) -> None:
    metadata = load_all_models()
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == [], f"migrations and models disagree: {diff}"


def test_init_twice_changes_nothing(store: Store) -> None:
    before = store.table_names()
    store.init()
    assert store.table_names() == before
    assert "alembic_version" in before and "hosts" in before
