"""A corpus of malformed listings and inventories: each is refused, explained, and stores nothing.

Every file in ``tests/malformed/`` declares in ``expectations.yaml`` which problems it must be
refused with (path, value, message, line). For each file the store is imported into and must come
out byte-for-byte as it went in: on SQLite the database file's sha256, on PostgreSQL every table's
rows. A few files go through the real ``hwmarket`` console script too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, Text, cast, select

from marketplace.errors import _MISSING, InvalidInput, Problem
from marketplace.store import Store
from tests.conftest import EXAMPLES, ROOT

CORPUS = Path(__file__).resolve().parent / "malformed"
EXPECTATIONS: dict[str, dict[str, Any]] = yaml.safe_load(
    (CORPUS / "expectations.yaml").read_text(encoding="utf-8")
)
HWMARKET = Path(sys.executable).parent / "hwmarket"


@dataclass(frozen=True)
class Expected:
    """One problem a corpus file must be refused with."""

    path: str
    messages: tuple[str, ...]
    value: Any = _MISSING
    check_value: bool = False
    line: int | None = None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Expected:
        message = entry["message"]
        messages = tuple(message) if isinstance(message, list) else (message,)
        if entry.get("missing"):
            return cls(entry["path"], messages, _MISSING, True, entry.get("line"))
        return cls(entry["path"], messages, entry.get("value"), "value" in entry, entry.get("line"))

    def found_in(self, problems: list[Problem]) -> bool:
        return any(self.matches(p) for p in problems)

    def matches(self, p: Problem) -> bool:
        if p.path != self.path or not all(m in p.message for m in self.messages):
            return False
        if self.check_value and not _same_value(p.value, self.value):
            return False
        return self.line is None or p.line == self.line


def _same_value(got: Any, want: Any) -> bool:
    if want is _MISSING or got is _MISSING:
        return got is want
    # YAML in the expectations and TOML/JSON in the corpus agree on these types.
    return type(got) is type(want) and got == want


def store_snapshot(store: Store) -> object:
    """Everything the store holds, to compare before and after a refused import.

    SQLite: the sha256 of the database file, with the engine disposed so no connection holds
    unflushed pages. PostgreSQL: every table's rows, ordered by primary key.
    """
    if store.engine.dialect.name == "sqlite":
        store.dispose()
        db_file = Path(str(store.engine.url.database))
        return hashlib.sha256(db_file.read_bytes()).hexdigest()
    meta = MetaData()
    meta.reflect(store.engine)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            order: list[Any] = list(table.primary_key.columns) or [
                cast(c, Text) for c in table.columns
            ]
            rows[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return rows


def importer(store: Store, name: str) -> Callable[[list[Path]], object]:
    return store.import_listings if name.startswith("listing") else store.import_inventories


def import_examples(store: Store) -> None:
    store.import_listings(sorted((EXAMPLES / "listings").iterdir()))
    store.import_inventory(EXAMPLES / "inventory" / "three-sites.yaml")


def test_corpus_is_broad_and_fully_declared() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "expectations.yaml"}
    assert len(files) >= 30
    assert files == set(EXPECTATIONS), "every corpus file needs expectations, and vice versa"
    assert {Path(f).suffix for f in files} == {".yaml", ".toml", ".json"}
    assert any(f.startswith("listing") for f in files)
    assert any(f.startswith("inventory") for f in files)
    for name, spec in EXPECTATIONS.items():
        assert spec["problems"], f"{name} declares no problem"


def test_snapshot_sees_a_change(store: Store) -> None:
    """The before/after comparison below would be worthless if a real change went unseen."""
    store.import_listing(EXAMPLES / "listings" / "x86-1u.yaml")
    before = store_snapshot(store)
    store.import_listing(EXAMPLES / "listings" / "acme-jpu.yaml")
    assert store_snapshot(store) != before


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_malformed_file_is_refused_and_stores_nothing(store: Store, name: str) -> None:
    spec = EXPECTATIONS[name]
    if spec.get("examples"):
        import_examples(store)
    else:
        # Something in the store, so "nothing changed" is not trivially an empty database.
        store.import_listing(EXAMPLES / "listings" / "x86-1u.yaml")
    before = store_snapshot(store)

    with pytest.raises(InvalidInput) as caught:
        importer(store, name)([CORPUS / name])

    problems = caught.value.problems
    shown = "\n".join(map(str, problems))
    for entry in spec["problems"]:
        want = Expected.of(entry)
        assert want.found_in(problems), f"{name}: expected {want}\nreported:\n{shown}"
    if "count" in spec:
        assert len(problems) == spec["count"], f"{name}: reported:\n{shown}"
    for p in problems:
        assert p.source is not None and Path(p.source).name == name
    # The rendered error a person reads names the file and, for each problem, path and value.
    rendered = str(caught.value)
    assert name in rendered
    for p in problems:
        assert p.path in rendered
        if p.value is not _MISSING:
            assert repr(p.value)[:30] in rendered

    assert store_snapshot(store) == before


SECRET_FILES = sorted(n for n, spec in EXPECTATIONS.items() if spec.get("secrets"))


@pytest.mark.parametrize("name", SECRET_FILES)
def test_bmc_passwords_never_appear_in_errors(sqlite_store: Store, name: str) -> None:
    """A wrongly typed or misspelt password key is still a password: never echo it back."""
    import_examples(sqlite_store)
    with pytest.raises(InvalidInput) as caught:
        importer(sqlite_store, name)([CORPUS / name])
    result = _hwmarket(str(sqlite_store.engine.url), "inventory", "import", CORPUS / name)
    assert result.returncode != 0
    for secret in EXPECTATIONS[name]["secrets"]:
        assert secret not in str(caught.value), "a BMC password is echoed in the error"
        assert secret not in repr(caught.value.problems), "a BMC password is kept in a Problem"
        assert secret not in result.stderr + result.stdout, "the CLI prints a BMC password"


def test_problems_of_several_files_are_reported_together(store: Store) -> None:
    before = store_snapshot(store)
    files = ["listing-bad-memory-unit.yaml", "listing-bad-nic-speed.toml", "listing-empty.json"]
    good = EXAMPLES / "listings" / "acme-jpu.yaml"
    with pytest.raises(InvalidInput) as caught:
        store.import_listings([good, *(CORPUS / f for f in files)])
    sources = {Path(p.source or "").name for p in caught.value.problems}
    assert sources == set(files)
    # The good file in the same import is not stored either: all or nothing.
    assert store_snapshot(store) == before
    assert store.skus() == []


def test_a_slug_in_two_files_of_one_import_is_refused(store: Store) -> None:
    listing = EXAMPLES / "listings" / "x86-1u.yaml"
    before = store_snapshot(store)
    with pytest.raises(InvalidInput) as caught:
        store.import_listings([listing, listing])
    assert any(
        p.path == "skus[0].slug" and "also listed in" in p.message and p.value == "c3.small.x86"
        for p in caught.value.problems
    )
    assert store_snapshot(store) == before


def _hwmarket(db: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("HWMARKET_DB", None)
    return subprocess.run(
        [str(HWMARKET), "--db", db, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("listing-many-errors.yaml", "sku"),
        ("listing-toml-syntax.toml", "sku"),
        ("inventory-unknown-site.yaml", "inventory"),
        ("inventory-bad-bmc-port.toml", "inventory"),
    ],
)
def test_cli_import_of_malformed_file_fails_and_explains(
    sqlite_store: Store, name: str, command: str
) -> None:
    import_examples(sqlite_store)
    before = store_snapshot(sqlite_store)
    result = _hwmarket(str(sqlite_store.engine.url), command, "import", CORPUS / name)
    assert result.returncode != 0
    assert "InvalidInput" in result.stderr
    assert "Traceback" not in result.stderr
    for entry in EXPECTATIONS[name]["problems"]:
        want = Expected.of(entry)
        assert f"{name}" in result.stderr
        assert want.path in result.stderr
        if want.check_value and want.value is not _MISSING:
            assert str(want.value) in result.stderr
        if want.line is not None:
            assert f"{name}:{want.line}" in result.stderr
    assert result.stdout == ""
    assert store_snapshot(sqlite_store) == before
