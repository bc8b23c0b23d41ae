"""The fleet collector: poll many BMCs at once, on time, and keep failures as data.

pyghmi is blocking, so each poll runs in a bounded thread pool and each :class:`BmcClient`
bounds its own read with a timeout: one slow or dead BMC holds one worker for at most its
timeout and never delays the others' polls. A poll that fails is retried a bounded number of
times with a short backoff, then recorded as a gap with its cause; a BMC that keeps failing is
polled less and less often (exponential backoff up to ``max_backoff_s``) instead of hammered.
Sessions are kept alive between polls (one client per BMC). Samples and failures go to a
:class:`Sink` in batches: the store (bulk inserts) or a Parquet dataset partitioned by day.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from metering.bmc import BmcClient, BmcTarget
from metering.bmc_reading import PowerReading
from metering.errors import BmcError

#: With spread polling, due times fall on a grid of this many seconds.
SPREAD_TICK_S = 0.1
#: Causes of a failed poll that a quick retry may cure.
RETRYABLE = frozenset({"timeout", "unreachable"})


@dataclass(frozen=True)
class PollTarget:
    """One host to poll: its id, how to reach its BMC, and its SKU's maximum power."""

    host: str
    bmc: BmcTarget


@dataclass
class PollResult:
    """What one poll of one host gave: a reading, or the classified cause of its failure."""

    host: str
    due: dt.datetime
    started: dt.datetime
    elapsed_s: float
    reading: PowerReading | None = None
    cause: str | None = None
    error: str | None = None
    attempts: int = 1
    method: str | None = None

    @property
    def ok(self) -> bool:
        return self.reading is not None

    @property
    def late_s(self) -> float:
        return max(0.0, (self.started - self.due).total_seconds())

    def public(self) -> dict[str, Any]:
        """The ``collect --once --format json`` object: host, ok, watts, source, error, elapsed_s."""
        watts = None
        if self.reading is not None and not math.isnan(self.reading.watts):
            watts = self.reading.watts
        return {
            "host": self.host,
            "ok": self.ok,
            "watts": watts,
            "source": self.reading.source if self.reading else None,
            "error": self.cause,
            "elapsed_s": round(self.elapsed_s, 4),
        }


class Sink(Protocol):
    """Where polled samples and failures go."""

    def write(self, results: Sequence[PollResult]) -> None: ...


def sample_frame(results: Iterable[PollResult]) -> pd.DataFrame:
    """The samples (``metering.samples`` columns) of the successful polls."""
    rows = [
        {
            "host": r.host,
            "time": r.reading.time,
            "watts": r.reading.watts,
            "source": r.reading.source,
            "flags": int(r.reading.flags),
            "bmc_time": r.reading.bmc_time,
            "min_watts": r.reading.min_watts,
            "max_watts": r.reading.max_watts,
            "avg_watts": r.reading.avg_watts,
            "period_s": r.reading.period_s,
            "energy_j": r.reading.energy_j,
        }
        for r in results
        if r.reading is not None
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "host",
            "time",
            "watts",
            "source",
            "flags",
            "bmc_time",
            "min_watts",
            "max_watts",
            "avg_watts",
            "period_s",
            "energy_j",
        ],
    )
    for col in ("time", "bmc_time"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def failure_frame(results: Iterable[PollResult]) -> pd.DataFrame:
    rows = [
        {
            "host": r.host,
            "time": r.started,
            "cause": r.cause,
            "message": r.error or "",
            "elapsed_s": r.elapsed_s,
        }
        for r in results
        if not r.ok
    ]
    frame = pd.DataFrame(rows, columns=["host", "time", "cause", "message", "elapsed_s"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


class ParquetSink:
    """Samples to ``DIR/samples/date=YYYY-MM-DD/part-*.parquet`` (a dataset pandas, DuckDB and
    Dask read as one), failures to ``DIR/failures/...`` alike."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, results: Sequence[PollResult]) -> None:
        for name, frame in (
            ("samples", sample_frame(results)),
            ("failures", failure_frame(results)),
        ):
            if frame.empty:
                continue
            for day, part in frame.groupby(frame["time"].dt.strftime("%Y-%m-%d")):
                folder = self.root / name / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                part.to_parquet(folder / f"part-{uuid.uuid4().hex[:12]}.parquet", index=False)


@dataclass
class RoundStats:
    """Counters of one polling round, for the live status and the benchmark."""

    due: int = 0
    polled: int = 0
    ok: int = 0
    failed: int = 0
    skipped_backoff: int = 0
    skipped_busy: int = 0
    late: int = 0


@dataclass
class CollectorStats:
    """Totals of a run: on-time ratio = polls that started within ``late_after_s`` of their due
    time and finished before the next one, over polls due."""

    rounds: int = 0
    due: int = 0
    polled: int = 0
    ok: int = 0
    failed: int = 0
    on_time: int = 0
    skipped_backoff: int = 0
    skipped_busy: int = 0
    causes: dict[str, int] = field(default_factory=dict)

    @property
    def on_time_ratio(self) -> float:
        return self.on_time / self.due if self.due else 1.0


@dataclass
class _HostState:
    failures: int = 0
    next_allowed: float = 0.0
    busy: bool = False


class Collector:
    """Polls ``targets`` through kept-alive :class:`BmcClient` sessions.

    ``timeout_s`` bounds each read; ``retries`` quick retries (after ``retry_backoff_s``,
    doubling) follow a timeout or an unreachable BMC; after ``retries`` the poll is a failure.
    A BMC with ``k`` consecutive failed polls is next polled no sooner than
    ``min(every_s * 2**(k-1), max_backoff_s)`` later. ``workers`` bounds the threads.
    """

    def __init__(
        self,
        targets: Sequence[PollTarget],
        *,
        sink: Sink | None = None,
        timeout_s: float = 5.0,
        retries: int = 1,
        retry_backoff_s: float = 0.25,
        max_backoff_s: float = 300.0,
        workers: int | None = None,
        late_after_s: float = 1.0,
    ) -> None:
        self.targets = list(targets)
        self.sink = sink
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.late_after_s = late_after_s
        self._clients = {t.host: BmcClient(t.bmc, timeout_s=timeout_s) for t in self.targets}
        self._state = {t.host: _HostState() for t in self.targets}
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(256, max(4, len(self.targets))), thread_name_prefix="poll"
        )
        self._lock = threading.Lock()

    # -- one poll ---------------------------------------------------------------------------

    def _poll(self, host: str, due: dt.datetime) -> PollResult:
        client = self._clients[host]
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                reading = client.read()
                return PollResult(
                    host,
                    due,
                    started,
                    time.perf_counter() - t0,
                    reading=reading,
                    attempts=attempt,
                    method=client.method,
                )
            except BmcError as exc:
                if exc.cause in RETRYABLE and attempt <= self.retries:
                    time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                return PollResult(
                    host,
                    due,
                    started,
                    time.perf_counter() - t0,
                    cause=exc.cause,
                    error=str(exc)[:500],
                    attempts=attempt,
                    method=client.method,
                )
            except Exception as exc:  # a bug in a dependency must not stop the fleet's polling
                return PollResult(
                    host,
                    due,
                    started,
                    time.perf_counter() - t0,
                    cause="bad-reading",
                    error=f"{type(exc).__name__}: {exc}"[:500],
                    attempts=attempt,
                )

    def _finish(self, result: PollResult, every_s: float) -> None:
        with self._lock:
            st = self._state[result.host]
            st.busy = False
            if result.ok:
                st.failures = 0
                st.next_allowed = 0.0
            else:
                st.failures += 1
                if result.cause == "auth" or st.failures > 1:
                    wait = min(every_s * 2 ** (st.failures - 1), self.max_backoff_s)
                    st.next_allowed = time.monotonic() + wait

    # -- rounds -----------------------------------------------------------------------------

    def _submit(
        self, target: PollTarget, due: dt.datetime, every_s: float, stats: RoundStats
    ) -> Future[PollResult] | None:
        """Start one poll of ``target`` unless it is backing off or its last poll still runs."""
        stats.due += 1
        with self._lock:
            st = self._state[target.host]
            if st.busy:
                stats.skipped_busy += 1
                return None
            if st.next_allowed > time.monotonic():
                stats.skipped_backoff += 1
                return None
            st.busy = True
        fut = self._pool.submit(self._poll, target.host, due)
        fut.add_done_callback(lambda f: self._finish(f.result(), every_s))
        stats.polled += 1
        return fut

    def submit_round(
        self, due: dt.datetime, every_s: float, stats: RoundStats
    ) -> list[Future[PollResult]]:
        """Start one poll of every host that is due (not backing off, not still busy)."""
        futures = [self._submit(t, due, every_s, stats) for t in self.targets]
        return [f for f in futures if f is not None]

    def poll_once(self) -> list[PollResult]:
        """Poll every host once, concurrently; return when all polls have ended."""
        due = dt.datetime.now(dt.UTC)
        futures = self.submit_round(due, self.timeout_s, RoundStats())
        results = [f.result() for f in futures]
        if self.sink is not None:
            self.sink.write(results)
        return results

    def run(
        self,
        every_s: float,
        duration_s: float,
        *,
        spread: bool = True,
        on_round: Callable[[int, RoundStats, CollectorStats], None] | None = None,
        stop: threading.Event | None = None,
    ) -> CollectorStats:
        """Poll every host every ``every_s`` seconds for ``duration_s``; write each round's
        results in one batch as the round ends. Returns totals, with the on-time ratio.

        With ``spread`` (the default) the hosts' due times are spread evenly over the interval
        (host ``i`` of ``n`` is due ``i/n`` of the way into each round, rounded down to a
        multiple of ``SPREAD_TICK_S``), as Prometheus spreads
        its scrapes: the BMCs, the network and this process see a steady trickle of polls
        instead of a burst of ``n`` at once. ``spread=False`` makes every host due at the start
        of each round (samples aligned in time, at the price of the burst).
        """
        stats = CollectorStats()
        stop = stop or threading.Event()
        n = len(self.targets)
        # Spread offsets fall on a grid of SPREAD_TICK_S: the polls of one tick start together
        # (one wake-up of this thread and of pyghmi's I/O thread serves several polls).
        tick = min(SPREAD_TICK_S, every_s)
        offsets = [(every_s * i / n) // tick * tick if spread else 0.0 for i in range(n)]
        start = time.monotonic()
        wall0 = dt.datetime.now(dt.UTC)
        rounds = max(1, int(duration_s // every_s))
        pending: list[Future[PollResult]] = []
        for k in range(rounds):
            rs = RoundStats()
            round_start = start + k * every_s
            for target, offset in zip(self.targets, offsets, strict=True):
                delay = round_start + offset - time.monotonic()
                if delay > 0.001 and stop.wait(delay):
                    break
                due = wall0 + dt.timedelta(seconds=k * every_s + offset)
                fut = self._submit(target, due, every_s, rs)
                if fut is not None:
                    pending.append(fut)
            stats.rounds += 1
            stats.due += rs.due
            stats.skipped_backoff += rs.skipped_backoff
            stats.skipped_busy += rs.skipped_busy
            if stop.is_set():
                break
            pending = self._drain(pending, stats, every_s, final=False)
            if on_round:
                on_round(k, rs, stats)
        self._drain(pending, stats, every_s, final=True)
        return stats

    def _drain(
        self,
        pending: list[Future[PollResult]],
        stats: CollectorStats,
        every_s: float,
        *,
        final: bool,
    ) -> list[Future[PollResult]]:
        done = [f for f in pending if final or f.done()]
        rest = [f for f in pending if not (final or f.done())]
        results = [f.result() for f in done]
        for r in results:
            stats.polled += 1
            if r.ok:
                stats.ok += 1
            else:
                stats.failed += 1
                stats.causes[r.cause or "?"] = stats.causes.get(r.cause or "?", 0) + 1
            if r.late_s <= self.late_after_s and r.late_s + r.elapsed_s <= every_s:
                stats.on_time += 1
        if results and self.sink is not None:
            self.sink.write(results)
        return rest

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Collector",
    "CollectorStats",
    "ParquetSink",
    "PollResult",
    "PollTarget",
    "RoundStats",
    "Sink",
    "failure_frame",
    "sample_frame",
]
