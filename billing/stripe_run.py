"""One sync run: its report, the customer map, and sending rows (in parallel when asked).

A Stripe customer is found before it is created: the whole Stripe customer list is read (paged)
and matched on ``metadata.hwmarket_customer``, so a crash between creating a customer and
recording it never makes a second one. Sends run in worker threads; their results are recorded
one small transaction each, by the calling thread, as they complete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

from billing import stripe_outbox as outbox
from billing.stripe_api import Obj, StripeCalls, StripeSyncError
from billing.stripe_outbox import OutboxEntry
from marketplace.store import Store

#: ``progress(phase, done, total)``: phase is "items" or "meters".
Progress = Callable[[str, int, int], None]
T = TypeVar("T")


@dataclass
class SyncReport:
    """What a sync did and what it could not do (``ok`` when nothing is left unexplained)."""

    flavor: str = "stripe"
    customers_created: int = 0
    customers_matched: int = 0
    invoices_created: int = 0
    items_sent: int = 0
    items_confirmed: int = 0
    invoices_finalized: int = 0
    meters_created: int = 0
    events_sent: int = 0
    events_confirmed: int = 0
    adjustments_sent: int = 0
    adjustments_confirmed: int = 0
    requests: int = 0
    #: Calls Stripe refused or could not take (the rows stay unconfirmed; the next run retries).
    failures: list[str] = field(default_factory=list)
    #: Things found in Stripe that need a person: duplicates, unexpected lines, lost objects.
    problems: list[str] = field(default_factory=list)
    #: Rows this Stripe cannot take (e.g. invoices on localstripe), left pending.
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing odd was found in Stripe."""
        return not self.failures and not self.problems


@dataclass
class SyncRun:
    """The state of one sync: store, Stripe calls, report, customer map, progress."""

    store: Store
    calls: StripeCalls
    report: SyncReport
    concurrency: int = 1
    max_attempts: int = 10
    progress: Progress | None = None
    phase: str = "items"
    done: int = 0
    total: int = 0
    customers: dict[str, str] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    _stripe_customers: dict[str, list[Obj]] | None = None

    def tick(self, n: int = 1) -> None:
        """``n`` more rows handled in this phase."""
        self.done += n
        if self.progress is not None:
            self.progress(self.phase, min(self.done, self.total), self.total)

    def start_phase(self, phase: str, total: int) -> None:
        """Begin counting a phase of ``total`` rows."""
        self.phase, self.done, self.total = phase, 0, total
        if self.progress is not None:
            self.progress(phase, 0, total)

    def fail(
        self,
        rows: Sequence[OutboxEntry],
        error: StripeSyncError | str,
        *,
        outcome_known: bool = True,
    ) -> None:
        """Record a failed attempt on ``rows`` and report it."""
        message = str(error)
        outbox.mark_failed(self.store, [r.id for r in rows], message, outcome_known=outcome_known)
        self.report.failures.append(message)

    def usable(self, rows: Sequence[OutboxEntry]) -> list[OutboxEntry]:
        """Rows still worth trying (``max_attempts`` failed attempts make a person look)."""
        keep = [r for r in rows if r.attempts < self.max_attempts]
        for r in rows:
            if r.attempts >= self.max_attempts:
                self.report.failures.append(
                    f"outbox row {r.id} failed {r.attempts} times; fix its last_error, then "
                    "reset attempts to 0 to try again"
                )
        return keep

    def stripe_customer(self, customer: str) -> str:
        """The Stripe customer of a hwmarket customer: recorded, found by metadata, or created."""
        known = self.customers.get(customer)
        if known is not None:
            return known
        if self._stripe_customers is None:
            listing: dict[str, list[Obj]] = {}
            for c in self.calls.customers():
                hid = (c.get("metadata") or {}).get("hwmarket_customer")
                if hid:
                    listing.setdefault(hid, []).append(c)
            # Kept only once read to the end: a half-read list could hide a customer.
            self._stripe_customers = listing
        found = sorted(
            self._stripe_customers.get(customer, []), key=lambda c: (c.get("created", 0), c["id"])
        )
        if found:
            if len(found) > 1:
                self.report.problems.append(
                    f"Stripe holds {len(found)} customers for {customer!r} "
                    f"({', '.join(c['id'] for c in found)}); using the oldest, {found[0]['id']}"
                )
            stripe_id = str(found[0]["id"])
            self.report.customers_matched += 1
        else:
            created = self.calls.create_customer(
                {"name": customer, "metadata": {"hwmarket_customer": customer}},
                key=f"hwm-cus-{customer}",
            )
            stripe_id = str(created["id"])
            self._stripe_customers.setdefault(customer, []).append(created)
            self.report.customers_created += 1
        outbox.record_customer(self.store, customer, stripe_id)
        self.customers[customer] = stripe_id
        return stripe_id

    def send_all(
        self,
        rows: Sequence[OutboxEntry],
        send: Callable[[OutboxEntry], T],
        record: Callable[[OutboxEntry, T], None],
        refused: Callable[[OutboxEntry, StripeSyncError], None],
    ) -> None:
        """``send`` each row (``concurrency`` at a time); ``record`` or ``refused`` each answer
        in this thread, one small transaction each, as the answers come."""
        if self.concurrency <= 1 or len(rows) <= 1:
            for row in rows:
                try:
                    answer = send(row)
                except StripeSyncError as exc:
                    refused(row, exc)
                else:
                    record(row, answer)
                self.tick()
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="stripe-sync") as pool:
            futures: dict[Any, OutboxEntry] = {pool.submit(send, r): r for r in rows}
            for future in as_completed(futures):
                row = futures[future]
                try:
                    answer = future.result()
                except StripeSyncError as exc:
                    refused(row, exc)
                else:
                    record(row, answer)
                self.tick()


__all__ = ["Progress", "SyncReport", "SyncRun"]
