"""The command line through the whole flow, as a user types it: reserve, capacity, collect from
simulated BMCs over real IPMI, meter, usage, invoices (JSON contracts included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from marketplace.cli import app
from tests.conftest import EXAMPLES
from tests.peers.bmc_peers import SimFleetProcess

runner = CliRunner()


def hw(db: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert hw(url, "sku", "import", *map(str, sorted((EXAMPLES / "listings").iterdir())))[0] == 0
    assert hw(url, "inventory", "import", str(EXAMPLES / "inventory" / "three-sites.yaml"))[0] == 0
    return url


NOW = ["--now", "2031-05-01T00:00Z"]


def test_quote_reserve_and_the_life_of_a_reservation(db: str) -> None:
    code, out, _ = hw(
        db,
        "quote",
        "--customer",
        "acme",
        "-n",
        "2",
        "--sku",
        "c3.small.x86",
        "--start",
        "2031-05-01T10:00Z",
        "--end",
        "2031-05-01T12:00Z",
        "-f",
        "json",
        *NOW,
    )
    assert code == 0 and json.loads(out)[0]["price"] == "2.00"
    code, out, _ = hw(
        db,
        "reserve",
        "--customer",
        "acme",
        "-n",
        "4",
        "--sku",
        "c3.small.x86",
        "--site",
        "sjc1",
        "--start",
        "2031-05-01T10:00Z",
        "--end",
        "2031-05-01T12:00Z",
        "-f",
        "json",
        *NOW,
    )
    r = json.loads(out)
    assert (
        code == 0
        and {"id", "customer", "state", "start", "end", "hosts"} <= set(r)
        and len(r["hosts"]) == 4
    )
    assert r["state"] == "confirmed"
    code, _, err = hw(
        db,
        "reserve",
        "--customer",
        "b",
        "-n",
        "1",
        "--sku",
        "c3.small.x86",
        "--start",
        "2031-05-01T11:00Z",
        "--end",
        "2031-05-01T12:00Z",
        *NOW,
    )
    assert code == 1 and "NoCapacity" in err and "0 of 4 free" in err
    code, out, _ = hw(
        db,
        "capacity",
        "--sku",
        "c3.small.x86",
        "--start",
        "2031-05-01T10:00Z",
        "--end",
        "2031-05-01T12:00Z",
        "-f",
        "json",
    )
    assert code == 0 and json.loads(out) == [
        {
            "site": "sjc1",
            "sku": "c3.small.x86@1",
            "total": 4,
            "free_whole_window": 0,
            "level": "unavailable",
        }
    ]
    code, out, _ = hw(
        db, "reservation", "extend", r["id"], "--end", "2031-05-01T13:00Z", "-f", "json", *NOW
    )
    assert code == 0 and json.loads(out)["end"].startswith("2031-05-01T13:00")
    code, out, _ = hw(
        db, "reservation", "show", r["id"], "-f", "json", "--now", "2031-05-01T11:00Z"
    )
    shown = json.loads(out)
    assert shown["state"] == "active" and [e["kind"] for e in shown["events"]] == [
        "confirmed",
        "extended",
        "active",
    ]
    code, out, _ = hw(
        db, "reservation", "release", r["id"], "-f", "json", "--now", "2031-05-01T11:30Z"
    )
    assert code == 0 and json.loads(out)["state"] == "ended"
    code, out, _ = hw(db, "reservation", "list", "--customer", "acme", "-f", "json", *NOW)
    assert [x["id"] for x in json.loads(out)] == [r["id"]]
    code, _, err = hw(
        db,
        "reserve",
        "--customer",
        "b",
        "-n",
        "1",
        "--sku",
        "c3.small.x86",
        "--start",
        "2031-05-01T11:00",
        "--end",
        "2031-05-01T12:00Z",
        *NOW,
    )
    assert code == 1 and "time zone" in err


def _import_sim_hosts(db: str, fleet: SimFleetProcess, tmp_path: Path) -> None:
    """Hosts sim-0 .. sim-N at sjc1 whose BMCs are the simulated fleet's."""
    inv = tmp_path / "sim.yaml"
    inv.write_text(
        "hosts:\n"
        + "".join(
            f"  - {{id: sim-{i}, sku: c3.small.x86, site: sjc1, bmc: {{protocol: ipmi, address: 127.0.0.1, port: {ep.port}, username: admin, password: {fleet.password}}}}}\n"
            for i, ep in enumerate(fleet.endpoints)
        )
    )
    assert hw(db, "inventory", "import", str(inv))[0] == 0


def test_collect_once_json_over_real_ipmi(db: str, tmp_path: Path) -> None:
    # The BMCs run in a child process, as real ones run elsewhere: a BMC that never answers
    # must cost its poll no more than its timeout.
    fleet = SimFleetProcess(3)
    try:
        fleet.set_fault(fleet.base_port + 2, "drop")
        _import_sim_hosts(db, fleet, tmp_path)
        code, out, err = hw(
            db,
            "collect",
            "--once",
            "--host",
            "sim-0",
            "--host",
            "sim-1",
            "--host",
            "sim-2",
            "--timeout",
            "1",
            "--retries",
            "0",
            "-f",
            "json",
        )
    finally:
        fleet.stop()
    rows = {r["host"]: r for r in json.loads(out)}
    assert code == 0, err
    assert set(rows["sim-0"]) == {"host", "ok", "watts", "source", "error", "elapsed_s"}
    assert rows["sim-0"]["ok"] and rows["sim-0"]["source"] == "dcmi" and rows["sim-0"]["watts"] > 0
    assert (
        not rows["sim-2"]["ok"]
        and rows["sim-2"]["error"] == "timeout"
        and rows["sim-2"]["elapsed_s"] < 3
    )
    assert fleet.password not in out + err


def test_collect_every_json_totals_and_bmc_status(db: str, tmp_path: Path) -> None:
    fleet = SimFleetProcess(3, faults={2: "drop"})
    try:
        _import_sim_hosts(db, fleet, tmp_path)
        code, out, err = hw(
            db, "collect", "--every", "1s", "--duration", "2s",
            "--host", "sim-0", "--host", "sim-1", "--host", "sim-2",
            "--timeout", "3", "--retries", "0", "-f", "json",
        )  # fmt: skip
    finally:
        fleet.stop()
    assert code == 0, err
    totals = json.loads(out)
    assert totals["hosts"] == 3 and totals["rounds"] == 2
    # 3 s timeouts: a login on a loaded CI machine can take more than half a second. The
    # dead BMC's first poll outlasts the 1 s interval, so its second is skipped as busy.
    assert totals["ok"] == 4 and totals["failed"] == 1 and totals["causes"] == {"timeout": 1}
    assert totals["skipped_busy"] == 1
    code, out, err = hw(db, "bmc", "status", "-f", "json")
    assert code == 0, err
    status = {r["host"]: r for r in json.loads(out)}
    assert set(status) == {"sim-0", "sim-1", "sim-2"}
    assert status["sim-0"]["method"] == "dcmi" and status["sim-0"]["consecutive_failures"] == 0
    assert status["sim-2"]["last_error"].startswith("timeout")
    assert fleet.password not in out + err


def test_meter_usage_and_invoices(db: str, tmp_path: Path) -> None:
    hw(
        db,
        "reserve",
        "--customer",
        "acme",
        "-n",
        "1",
        "--sku",
        "c3.small.x86",
        "--start",
        "2031-05-01T01:00Z",
        "--end",
        "2031-05-01T03:00Z",
        *NOW,
    )
    samples = tmp_path / "samples.csv"
    lines = ["host,time,watts"] + [
        f"sjc1-r02-u0{h},2031-05-01T{t // 60:02d}:{t % 60:02d}:00Z,{200 + h}"
        for h in (1, 2)
        for t in range(0, 240)
    ]
    samples.write_text("\n".join(lines) + "\n")
    assert hw(db, "samples", "import", str(samples))[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("host,time,watts\nsjc1-r02-u01,2031-05-01T00:00:00,12\n")
    code, _, err = hw(db, "samples", "import", str(bad))
    assert code == 1 and "time zone" in err
    assert hw(db, "meter", "--start", "2031-05-01T00:00Z", "--end", "2031-05-01T04:00Z")[0] == 0
    code, out, _ = hw(db, "usage", "--period", "2031-05", "--no-idle", "-f", "json")
    rows = json.loads(out)
    assert (
        code == 0
        and {r["reservation_id"] for r in rows} != {""}
        and sum(r["reserved_s"] for r in rows) == 7200
    )
    code, out, _ = hw(db, "usage", "--period", "2031-05", "-f", "csv")
    assert out.splitlines()[0].startswith("reservation_id,customer,host,sku")
    code, out, err = hw(db, "invoice", "build", "--period", "2031-05", "--finalize", "-f", "json")
    invoices = json.loads(out)
    assert code == 0, err
    assert invoices[0]["status"] == "finalized" and invoices[0]["total"] == str(
        sum(__import__("decimal").Decimal(ln["amount"]) for ln in invoices[0]["lines"])
    )
    code, out, _ = hw(db, "invoice", "show", invoices[0]["number"], "-f", "html")
    assert code == 0 and "<html" in out.lower()
