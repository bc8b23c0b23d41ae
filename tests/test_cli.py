"""The ``hwmarket`` command line: the real console script and typer's runner, on SQLite files.

Data goes to stdout (tables, JSON with the listing's keys, CSV); messages and errors go to stderr
with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner, Result

from marketplace.catalog import Sku
from marketplace.cli import app
from marketplace.documents import read_document
from marketplace.store import Store
from tests.conftest import EXAMPLES, ROOT

HWMARKET = Path(sys.executable).parent / "hwmarket"
LISTINGS = sorted((EXAMPLES / "listings").iterdir())
INVENTORY = EXAMPLES / "inventory" / "three-sites.yaml"
CORPUS = Path(__file__).resolve().parent / "malformed"
# The example inventory is shared (metering points its BMCs at simulators): read, don't hard-code.
INVENTORY_DATA: dict[str, Any] = read_document(INVENTORY)[0]
HOSTS: list[dict[str, Any]] = INVENTORY_DATA["hosts"]
PLACES = sum(
    1 + len(r["metros"]) + sum(len(m["sites"]) for m in r["metros"])
    for r in INVENTORY_DATA["regions"]
)


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    if env is None or "HWMARKET_DB" not in env:
        full_env.pop("HWMARKET_DB", None)
    return subprocess.run(
        [str(HWMARKET), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


class Cli:
    """typer's in-process runner bound to one database (fast, for the many output checks)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str | Path) -> Result:
        return self.runner.invoke(app, ["--db", self.url, *map(str, args)])

    def ok(self, *args: str | Path) -> Result:
        result = self(*args)
        assert result.exit_code == 0, f"{args}: {result.stderr}{result.exception!r}"
        return result

    def json(self, *args: str | Path) -> Any:
        return json.loads(self.ok(*args, "--format", "json").stdout)

    def slugs(self, *args: str | Path) -> set[str]:
        return {s["slug"] for s in self.json("sku", "list", *args)}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    yield Cli(f"sqlite:///{tmp_path / 'cli.db'}")


def load_examples(cli: Cli) -> Cli:
    cli.ok("sku", "import", *LISTINGS)
    cli.ok("inventory", "import", INVENTORY)
    return cli


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The examples imported once; the tests using it only read."""
    return load_examples(Cli(f"sqlite:///{tmp_path_factory.mktemp('cli') / 'loaded.db'}"))


# -- through the real console script ---------------------------------------------------------


def test_init_creates_the_schema_and_is_safe_to_repeat(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    first = run("--db", f"sqlite:///{db}", "init")
    assert first.returncode == 0, first.stderr
    assert f"store ready at sqlite:///{db}" in " ".join(first.stderr.split())
    assert first.stdout == ""
    assert {"skus", "hosts", "sites"} <= set(Store(f"sqlite:///{db}").table_names())
    assert Cli(f"sqlite:///{db}").ok("init").exit_code == 0


def test_import_then_list_end_to_end(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'e2e.db'}"
    imported = run("--db", db, "sku", "import", *LISTINGS)
    assert imported.returncode == 0, imported.stderr
    assert "5 new SKUs, 0 new revisions, 0 unchanged" in imported.stderr
    assert "jpu1.8x.large@1" in imported.stdout
    listed = run("--db", db, "sku", "list", "--format", "json", "--trait", "rdma")
    assert listed.returncode == 0, listed.stderr
    assert {s["slug"] for s in json.loads(listed.stdout)} == {"jpu1.8x.large", "g4.8x.h100"}


def test_hwmarket_db_environment_variable_names_the_database(tmp_path: Path) -> None:
    db = tmp_path / "from-env.db"
    env = {"HWMARKET_DB": f"sqlite:///{db}"}
    assert run("sku", "import", LISTINGS[0], env=env).returncode == 0
    assert db.exists()
    listed = run("sku", "list", "--format", "json", env=env)
    assert [s["slug"] for s in json.loads(listed.stdout)] == ["jpu1.8x.large"]
    # --db wins over the environment.
    other = CliRunner().invoke(
        app, ["--db", f"sqlite:///{tmp_path / 'other.db'}", "sku", "list", "-f", "json"], env=env
    )
    assert other.exit_code == 0 and json.loads(other.stdout) == []


def test_errors_exit_non_zero_with_a_message_on_stderr(tmp_path: Path) -> None:
    bad = run(
        "--db",
        f"sqlite:///{tmp_path / 'err.db'}",
        "sku",
        "import",
        CORPUS / "listing-bad-memory-unit.yaml",
    )
    assert bad.returncode == 1
    assert "listing-bad-memory-unit.yaml:7 at skus[0].memory" in bad.stderr
    assert "'768XB'" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""


def test_error_exit_codes_in_process(cli: Cli) -> None:
    missing = cli("sku", "show", "nope.nope")
    assert missing.exit_code == 1
    assert "NotFound" in missing.stderr and "'nope.nope'" in missing.stderr

    unreadable = CliRunner().invoke(
        app, ["--db", "sqlite:////nonexistent/folder/x.db", "sku", "list"]
    )
    assert unreadable.exit_code == 1
    assert "StoreError" in unreadable.stderr

    usage = cli("sku", "list", "--format", "xml")
    assert usage.exit_code == 2 and "xml" in usage.stderr


@pytest.mark.parametrize("url", ["nosuchdb://somewhere/x", "not a url at all"])
def test_a_bad_database_url_is_an_error_message_not_a_traceback(url: str) -> None:
    result = CliRunner().invoke(app, ["--db", url, "sku", "list"])
    assert result.exit_code == 1, f"raised {result.exception!r} instead of a message"
    assert "error:" in result.stderr


def test_database_password_is_not_shown_when_the_server_is_unreachable() -> None:
    result = CliRunner().invoke(
        app, ["--db", "postgresql://hw:topsecret-pw@127.0.0.1:9/x", "sku", "list"]
    )
    assert result.exit_code == 1
    assert "StoreError" in result.stderr
    assert "topsecret-pw" not in result.stderr + result.stdout


# -- schemas ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    found = {}
    for kind in ("listing", "inventory"):
        result = CliRunner().invoke(app, ["schema", kind])
        assert result.exit_code == 0, result.stderr
        found[kind] = json.loads(result.stdout)
    return found


def test_schema_through_the_console_script() -> None:
    result = run("schema", "listing")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["title"] == "hwmarket listing file"


@pytest.mark.parametrize("kind", ["listing", "inventory"])
def test_schema_is_valid_json_schema(schemas: dict[str, dict[str, Any]], kind: str) -> None:
    schema = schemas[kind]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", [*LISTINGS, INVENTORY], ids=lambda p: p.name)
def test_examples_validate_against_the_schema(
    schemas: dict[str, dict[str, Any]], path: Path
) -> None:
    kind = "inventory" if path == INVENTORY else "listing"
    data, _ = read_document(path)
    errors = list(jsonschema.Draft202012Validator(schemas[kind]).iter_errors(data))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    "name",
    [
        "listing-unknown-key-typo.yaml",
        "listing-bad-memory-unit.yaml",
        "listing-bad-nic-speed.toml",
        "listing-negative-count.json",
        "listing-bad-currency.yaml",
        "listing-bad-slug.toml",
        "listing-bad-drive-type.yaml",
        "listing-missing-fields.yaml",
        "inventory-bad-bmc-protocol.yaml",
        "inventory-bad-bmc-port.toml",
        "inventory-pue-half.json",
        "inventory-unknown-key.yaml",
    ],
)
def test_schema_refuses_what_the_loader_refuses(
    schemas: dict[str, dict[str, Any]], name: str
) -> None:
    """Editors validating against the schema flag the same files the importer refuses."""
    data, _ = read_document(CORPUS / name)
    validator = jsonschema.Draft202012Validator(schemas[name.split("-")[0]])
    assert not validator.is_valid(data)


def test_unknown_schema_kind_fails(cli: Cli) -> None:
    result = cli("schema", "invoice")
    assert result.exit_code == 1
    assert "unknown schema 'invoice'" in result.stderr


# -- SKUs ---------------------------------------------------------------------------------------


def test_sku_import_reports_new_then_unchanged(cli: Cli) -> None:
    first = cli.ok("sku", "import", *LISTINGS)
    assert "5 new SKUs" in first.stderr
    assert sorted(first.stdout.split()) == sorted(
        ["jpu1.8x.large@1", "c3.large.arm64@1", "g4.8x.h100@1", "c3.small.x86@1", "m3.large.x86@1"]
    )
    again = cli.ok("sku", "import", *LISTINGS)
    assert "0 new SKUs, 0 new revisions, 5 unchanged" in again.stderr
    assert again.stdout == ""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), {"jpu1.8x.large", "c3.large.arm64", "g4.8x.h100", "c3.small.x86", "m3.large.x86"}),
        (("--arch", "aarch64"), {"c3.large.arm64"}),
        (("--accelerator", "gpu"), {"g4.8x.h100"}),
        (("--accelerator", "asic"), {"jpu1.8x.large"}),
        (("--min-accelerators", "8"), {"jpu1.8x.large", "g4.8x.h100"}),
        (("--min-cores", "64"), {"jpu1.8x.large", "c3.large.arm64", "g4.8x.h100"}),
        (("--min-memory", "1TB"), {"g4.8x.h100"}),
        # 256GiB is more than 256GB: the SI SKU falls out, the IEC one stays.
        (("--min-memory", "256GiB"), {"c3.large.arm64", "g4.8x.h100", "jpu1.8x.large"}),
        (
            ("--min-memory", "256GB"),
            {"c3.large.arm64", "g4.8x.h100", "jpu1.8x.large", "m3.large.x86"},
        ),
        (("--trait", "rdma"), {"jpu1.8x.large", "g4.8x.h100"}),
        (("--trait", "rdma", "--trait", "nvlink"), {"g4.8x.h100"}),
        (("--site", "sjc2"), {"c3.large.arm64", "m3.large.x86"}),
        (("--max-price", "2"), {"c3.small.x86", "c3.large.arm64"}),
        # At fra1 the H100 box costs its site price, 104.00, above the limit.
        (
            ("--site", "fra1", "--max-price", "100"),
            {"m3.large.x86", "c3.large.arm64", "jpu1.8x.large"},
        ),
        (("--where", "arch=x86_64 cores>=32"), {"jpu1.8x.large", "g4.8x.h100", "m3.large.x86"}),
        (("--where", "arch=x86_64", "--min-cores", "100"), {"g4.8x.h100"}),
        (("--where", "accelerator.memory>=80GB"), {"g4.8x.h100"}),
        (("--arch", "riscv64"), set()),
    ],
)
def test_sku_list_filters(loaded: Cli, options: tuple[str, ...], expected: set[str]) -> None:
    assert loaded.slugs(*options) == expected


def test_sku_list_accepts_the_arch_aliases_listings_accept(loaded: Cli) -> None:
    """A listing may say arm64 or amd64; a customer's query may too."""
    assert loaded.slugs("--arch", "arm64") == {"c3.large.arm64"}
    assert loaded.slugs("--where", "arch=amd64 cores>=100") == {"g4.8x.h100"}


def test_sku_list_bad_filter_fails(loaded: Cli) -> None:
    result = loaded("sku", "list", "--where", "colour=blue")
    assert result.exit_code == 1
    assert "unknown term colour=" in result.stderr and "'blue'" in result.stderr
    bad_size = loaded("sku", "list", "--min-memory", "lots")
    assert bad_size.exit_code == 1 and "'lots'" in bad_size.stderr


def test_sku_list_json_keeps_listing_keys_bytes_bps_and_price_strings(loaded: Cli) -> None:
    exported = {s["slug"]: s for s in loaded.json("sku", "list")}
    for path in LISTINGS:
        data, _ = read_document(path)
        for written in data["skus"]:
            out = exported[written["slug"]]
            assert set(written) <= set(out) <= set(Sku.model_fields)
    jpu = exported["jpu1.8x.large"]
    assert jpu["memory"] == 768 * 10**9
    assert [d["size"] for d in jpu["drives"]] == [3_840_000_000_000, 480 * 10**9]
    assert jpu["nics"] == [{"count": 2, "speed": 100 * 10**9}]
    assert jpu["accelerators"][0]["memory"] == 32 * 10**9
    assert jpu["pricing"] == {
        "currency": "USD",
        "on_demand_hourly": "24.00",
        "reserved_hourly": {"1y": "18.00", "3y": "14.50"},
        "sites": {"sjc1": {"on_demand_hourly": "26.00", "reserved_hourly": {}}},
    }
    assert jpu["revision"] == 1 and jpu["vendor"] == "acme-silicon"
    h100 = exported["g4.8x.h100"]
    assert h100["memory"] == 2 * 2**40
    assert h100["accelerators"][0]["memory"] == 81559 * 2**20
    assert [n["speed"] for n in h100["nics"]] == [400 * 10**9, 100 * 10**9]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_sku_list_csv(loaded: Cli) -> None:
    rows = {r["slug"]: r for r in csv_rows(loaded.ok("sku", "list", "--format", "csv").stdout)}
    assert set(rows) == loaded.slugs()
    arm = rows["c3.large.arm64"]
    assert arm["memory"] == str(256 * 2**30)
    assert arm["memory_h"] == "256GiB"
    assert arm["cores"] == "80"
    assert arm["traits"] == "arm, sve"
    assert arm["on_demand_hourly"] == "1.50 USD"
    assert rows["jpu1.8x.large"]["accelerators"] == "8x JPU v1"


def test_table_and_csv_show_speeds_and_sizes_correctly(loaded: Cli) -> None:
    rows = {r["slug"]: r for r in csv_rows(loaded.ok("sku", "list", "-f", "csv").stdout)}
    assert rows["c3.small.x86"]["nics"] == "2x 10Gbps"
    assert rows["g4.8x.h100"]["nics"] == "8x 400Gbps, 2x 100Gbps"
    assert rows["jpu1.8x.large"]["nics"] == "2x 100Gbps"


def test_sku_list_table(loaded: Cli) -> None:
    table = loaded.ok("sku", "list", "--arch", "x86_64").stdout
    assert "SKUs" in table
    for slug in ["jpu1.8x.large", "g4.8x.h100", "c3.small.x86", "m3.large.x86"]:
        assert slug in table
    assert "c3.large.arm64" not in table
    assert "2TiB" in table and "98.32 USD" in table


def test_sku_show(loaded: Cli) -> None:
    shown = loaded.json("sku", "show", "g4.8x.h100")
    assert shown == Store(loaded.url).sku("g4.8x.h100").model_dump(mode="json")
    table = loaded.ok("sku", "show", "c3.small.x86").stdout
    assert "c3.small.x86@1" in table and "the workhorse for web and CI fleets" in table
    one = csv_rows(loaded.ok("sku", "show", "m3.large.x86", "--format", "csv").stdout)
    assert [r["slug"] for r in one] == ["m3.large.x86"]
    gone = loaded("sku", "show", "g4.8x.h100", "--revision", "2")
    assert gone.exit_code == 1 and "g4.8x.h100@2" in gone.stderr


def test_sku_list_all_revisions_after_a_change(cli: Cli, tmp_path: Path) -> None:
    loaded = load_examples(cli)
    data, _ = read_document(EXAMPLES / "listings" / "gpu-8x-h100.json")
    data["skus"][0]["memory"] = "4TiB"
    changed = tmp_path / "h100-4tib.json"
    changed.write_text(json.dumps(data))
    result = loaded.ok("sku", "import", changed)
    assert "0 new SKUs, 1 new revisions, 0 unchanged" in result.stderr
    both = loaded.json("sku", "list", "--all-revisions", "--where", "slug=g4.8x.h100")
    assert [(s["revision"], s["memory"]) for s in both] == [(1, 2 * 2**40), (2, 4 * 2**40)]
    assert loaded.json("sku", "show", "g4.8x.h100", "--revision", "1")["memory"] == 2 * 2**40


# -- inventory, sites, hosts --------------------------------------------------------------------


def test_inventory_import_and_reimport(cli: Cli) -> None:
    cli.ok("sku", "import", *LISTINGS)
    first = cli.ok("inventory", "import", INVENTORY)
    total = PLACES + len(HOSTS)  # regions, metros, sites and hosts
    assert f"{total} added, 0 updated, 0 unchanged" in first.stderr
    again = cli.ok("inventory", "import", INVENTORY)
    assert f"0 added, 0 updated, {total} unchanged" in again.stderr


def test_inventory_import_before_listing_fails_and_names_the_sku(cli: Cli) -> None:
    result = cli("inventory", "import", INVENTORY)
    assert result.exit_code == 1
    assert "three-sites.yaml at hosts[0].sku: unknown SKU" in result.stderr
    assert cli.json("site", "list") == []  # all or nothing: no sites without their hosts


def test_site_list(loaded: Cli) -> None:
    sites = {s["code"]: s for s in loaded.json("site", "list")}
    assert set(sites) == {"sjc1", "sjc2", "fra1"}
    fra = sites["fra1"]
    assert (fra["metro"], fra["region"], fra["country"]) == ("fr", "eu", "DE")
    assert fra["timezone"] == "Europe/Berlin"
    assert Decimal(fra["energy_price_kwh"]) == Decimal("0.22")
    assert fra["pue"] == pytest.approx(1.20)
    rows = csv_rows(loaded.ok("site", "list", "--format", "csv").stdout)
    assert sorted(r["code"] for r in rows) == ["fra1", "sjc1", "sjc2"]
    assert "Frankfurt 1" in loaded.ok("site", "list").stdout


def bmc_url(bmc: dict[str, Any]) -> str:
    port = bmc.get("port") or (623 if bmc["protocol"] == "ipmi" else 443)
    return f"{bmc['protocol']}://{bmc['address']}:{port}"


def test_host_list_by_site_without_passwords(loaded: Cli) -> None:
    hosts = loaded.json("host", "list", "--site", "fra1")
    written = sorted((h for h in HOSTS if h["site"] == "fra1"), key=lambda h: h["id"])
    assert written, "the example inventory has hosts at fra1"
    assert [h["id"] for h in hosts] == [h["id"] for h in written]
    for got, want in zip(hosts, written, strict=True):
        assert got["sku"] == f"{want['sku']}@1"
        assert got["bmc"]["protocol"] == want["bmc"]["protocol"]
        assert got["bmc"]["username"] == want["bmc"]["username"]
        assert "password" not in got["bmc"]
    passwords = {h["bmc"]["password"] for h in HOSTS if "bmc" in h}
    for fmt in ("json", "csv", "table"):
        out = loaded.ok("host", "list", "--format", fmt).stdout
        assert "password" not in out
        assert not any(str(p) in out for p in passwords)


def test_host_list_filters_and_formats(loaded: Cli) -> None:
    rows = csv_rows(loaded.ok("host", "list", "--sku", "c3.small.x86", "-f", "csv").stdout)
    written = sorted((h for h in HOSTS if h["sku"] == "c3.small.x86"), key=lambda h: h["id"])
    assert [r["id"] for r in rows] == [h["id"] for h in written]
    assert [r["bmc"] for r in rows] == [bmc_url(h["bmc"]) for h in written]
    assert loaded.json("host", "list", "--state", "maintenance") == []
    assert len(loaded.json("host", "list")) == len(HOSTS)
    sjc2 = loaded.ok("host", "list", "--site", "sjc2").stdout
    assert all(h["id"] in sjc2 for h in HOSTS if h["site"] == "sjc2")
    assert not any(h["id"] in sjc2 for h in HOSTS if h["site"] != "sjc2")
