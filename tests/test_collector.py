"""The fleet collector against simulated BMCs in a child process (real IPMI over UDP).

What is checked: a hanging BMC among healthy ones leaves the healthy ones' polls on time
(measured per poll), a failed poll is a recorded gap with its cause and ends within its
timeout, a dead BMC is backed off, a refused password is not retried, polls are spread over
the interval, and both sinks (the store with its per-BMC status table, and a Parquet dataset
partitioned by day) hold what was polled. No password reaches a log or a result.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

from marketplace.store import Store
from metering.bmc import BmcTarget
from metering.collector import Collector, ParquetSink, PollResult, PollTarget
from metering.ledger import StoreSink, bmc_status, read_samples
from tests.peers.bmc_peers import SimFleetProcess

pytestmark = pytest.mark.peer

HEALTHY = 5
DEAD = HEALTHY  # the index of the BMC that never answers


class Recorder:
    """A sink that keeps every result it is given."""

    def __init__(self) -> None:
        self.results: list[PollResult] = []

    def write(self, results: Sequence[PollResult]) -> None:
        self.results.extend(results)


@pytest.fixture
def fleet() -> Iterator[SimFleetProcess]:
    """Five healthy BMCs and one that never answers, in a child process."""
    sims = SimFleetProcess(HEALTHY + 1, faults={DEAD: "drop"})
    try:
        yield sims
    finally:
        sims.stop()


def _targets(fleet: SimFleetProcess, password: str | None = None) -> list[PollTarget]:
    return [
        PollTarget(
            f"h{i}",
            BmcTarget("ipmi", ep.address, ep.port, ep.username, password or fleet.password),
        )
        for i, ep in enumerate(fleet.endpoints)
    ]


@pytest.mark.slow
def test_a_hanging_bmc_leaves_the_healthy_ones_on_time(
    fleet: SimFleetProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = Recorder()
    every, timeout = 4.0, 1.5  # generous: CI runs this beside another test worker
    with Collector(_targets(fleet), sink=sink, timeout_s=timeout, retries=1) as collector:
        collector.poll_once()  # logins, outside the measured rounds
        sink.results.clear()
        stats = collector.run(every, 3 * every)
    healthy = [r for r in sink.results if r.host != f"h{DEAD}"]
    dead = [r for r in sink.results if r.host == f"h{DEAD}"]
    hang_s = 2 * timeout + collector.retry_backoff_s  # how long each poll of the dead BMC lasts
    # Every healthy BMC was polled every round, and each poll started within a second of its
    # due time and ended before the next one was due ...
    assert len(healthy) == 3 * HEALTHY
    assert all(r.ok and r.reading is not None and r.reading.source == "dcmi" for r in healthy)
    assert max(r.late_s for r in healthy) <= collector.late_after_s
    assert max(r.late_s + r.elapsed_s for r in healthy) <= every
    # ... and none waited behind the dead BMC's poll, which lasts hang_s.
    assert max(r.late_s + r.elapsed_s for r in healthy) < hang_s
    # The dead BMC's polls are gaps with their cause, each over within its timeout per attempt.
    assert dead and all(not r.ok and r.cause == "timeout" for r in dead)
    assert all(r.attempts == 2 for r in dead)
    assert max(r.elapsed_s for r in dead) < hang_s + 0.5
    assert stats.failed == len(dead) and stats.ok == len(healthy)
    assert stats.causes == {"timeout": len(dead)}
    assert fleet.password not in caplog.text


def test_polls_are_spread_over_the_interval(fleet: SimFleetProcess) -> None:
    sink = Recorder()
    targets = _targets(fleet)[:HEALTHY]
    with Collector(targets, sink=sink, timeout_s=2.0) as collector:
        collector.run(1.0, 1.0)
    due = sorted(r.due for r in sink.results)
    offsets = [(d - due[0]).total_seconds() for d in due]
    assert len(set(offsets)) == HEALTHY  # one tick each: five hosts over one second
    assert offsets[-1] == pytest.approx(0.8, abs=1e-6)  # host 4 of 5, on the 100 ms grid
    with Collector(targets, sink=(burst := Recorder()), timeout_s=2.0) as collector:
        collector.run(1.0, 1.0, spread=False)
    assert len({r.due for r in burst.results}) == 1


@pytest.mark.slow
def test_a_dead_bmc_is_backed_off_while_the_others_are_polled(fleet: SimFleetProcess) -> None:
    sink = Recorder()
    with Collector(_targets(fleet), sink=sink, timeout_s=1.0, retries=0) as collector:
        stats = collector.run(1.5, 9.0)
    polls = pd.Series([r.host for r in sink.results]).value_counts()
    assert all(polls[f"h{i}"] >= 5 for i in range(HEALTHY))  # of 6 rounds
    # Failures 1 and 2 come one round apart; after the k-th (k >= 2) the next poll waits
    # 1.5 * 2**(k-1) s: polled at 0 and 1.5 s, then not before 5.5 s, then not before 13 s.
    assert polls[f"h{DEAD}"] <= 3
    assert stats.skipped_backoff >= 3


def test_a_refused_password_is_not_retried(fleet: SimFleetProcess) -> None:
    port = fleet.endpoints[0].port
    before = fleet.stats(port)["open_session_requests"]
    targets = _targets(fleet, password="not-the-password")[:1]
    with Collector(targets, timeout_s=3.0, retries=3) as collector:
        first = collector.poll_once()
        logins = 1
        if first[0].cause != "auth":
            logins = 2
            # Seen once in a loaded full CI run, not reproduced alone: the login failed for
            # another reason first (cause "error"; pyghmi's handshake under retransmission?).
            # A non-auth failure is not backed off, so the next poll tries again.
            first = collector.poll_once()
        second = collector.poll_once()  # backing off after a refusal: not polled at all
    assert [r.cause for r in first] == ["auth"] and second == [], first[0].error
    assert first[0].attempts == 1
    assert "not-the-password" not in (first[0].error or "")
    # pyghmi proposes SHA-256 first and falls back to SHA-1: two open-session requests for
    # the one login attempt, none for the second poll.
    assert fleet.stats(port)["open_session_requests"] - before <= 2 * logins


def test_parquet_sink_partitions_samples_and_failures_by_day(
    fleet: SimFleetProcess, tmp_path: Path
) -> None:
    sink = ParquetSink(tmp_path)
    with Collector(_targets(fleet), sink=sink, timeout_s=3.0, retries=0) as collector:
        results = collector.poll_once()
    day = results[0].started.strftime("%Y-%m-%d")
    assert [p.name for p in (tmp_path / "samples").iterdir()] == [f"date={day}"]
    samples = pd.read_parquet(tmp_path / "samples")
    failures = pd.read_parquet(tmp_path / "failures")
    assert sorted(samples["host"]) == [f"h{i}" for i in range(HEALTHY)]
    assert (samples["source"] == "dcmi").all() and (samples["watts"] > 0).all()
    assert str(samples["time"].dt.tz) == "UTC"
    assert list(failures["host"]) == [f"h{DEAD}"] and list(failures["cause"]) == ["timeout"]


def test_store_sink_keeps_samples_failures_and_each_bmcs_status(
    fleet: SimFleetProcess, sqlite_store: Store
) -> None:
    t0 = dt.datetime.now(dt.UTC)
    sink = StoreSink(sqlite_store)
    # 3 s: the first poll logs in, which a loaded CI machine can slow down
    with Collector(_targets(fleet), sink=sink, timeout_s=3.0, retries=0) as collector:
        collector.poll_once()
        collector.poll_once()
    samples = read_samples(sqlite_store, t0, dt.datetime.now(dt.UTC))
    assert samples.groupby("host").size().to_dict() == {f"h{i}": 2 for i in range(HEALTHY)}
    status = bmc_status(sqlite_store).set_index("host")
    assert set(status.index) == {f"h{i}" for i in range(HEALTHY + 1)}
    healthy = status.loc["h0"]
    assert healthy["method"] == "dcmi" and healthy["consecutive_failures"] == 0
    assert pd.Timestamp(healthy["last_success"]) >= pd.Timestamp(t0)
    dead = status.loc[f"h{DEAD}"]
    assert dead["consecutive_failures"] == 2 and dead["last_error"].startswith("timeout")
    assert pd.isna(dead["last_success"])
