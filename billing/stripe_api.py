"""The Stripe calls the sync makes, as plain dicts in and out, with stripe's errors translated.

One :class:`StripeCalls` wraps a ``stripe.StripeClient``: it paces requests (a shared rate
limit, for Stripe's 100/s live and 25/s test-mode limits), pages through lists, and turns every
``stripe.StripeError`` into :class:`StripeSyncError`. :class:`StripeFlavor` says what the Stripe
at the other end can do: real Stripe and the project's fake do everything; localstripe makes no
one-off invoices, refuses ``period`` on invoice items and has no billing meters.

The client comes from the environment only (``STRIPE_API_KEY``, ``STRIPE_API_BASE``,
``HWMARKET_STRIPE_FLAVOR``), never from files in the repository.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import stripe

from billing.errors import BillingError

Obj = dict[str, Any]

#: Test hooks for crash tests, to kill the sync in its worst window (done in Stripe, not yet
#: recorded): sleep this many seconds right after a Stripe write returns ...
PAUSE_ENV = "HWMARKET_STRIPE_SYNC_PAUSE_S"
#: ... only after the n-th write of this process (default: after every write) ...
PAUSE_AT_ENV = "HWMARKET_STRIPE_SYNC_PAUSE_AT"
#: ... touching this file when the pause begins, so the test knows when to kill.
PAUSE_MARK_ENV = "HWMARKET_STRIPE_SYNC_PAUSE_MARK"
#: Appended to every idempotency key: a new salt is a key Stripe has forgotten (as after 24 h),
#: so a crash test can prove that reconciliation alone prevents duplicates.
KEY_SALT_ENV = "HWMARKET_STRIPE_SYNC_KEY_SALT"


class StripeSyncError(BillingError):
    """Stripe refused a call or could not be reached; the message says which call and why."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class StripeFlavor:
    """What the Stripe at the other end supports (real Stripe: everything)."""

    name: str = "stripe"
    #: One-off invoices: a draft per hwmarket invoice, items created on it, then finalized.
    invoices: bool = True
    #: ``period[start]``/``period[end]`` on invoice items.
    item_period: bool = True
    #: Billing meters and meter events.
    meters: bool = True
    #: ``GET /_fake/meter_events`` lists received events (only the project's fake; real Stripe
    #: has no raw event listing, so a duplicate-identifier answer is what confirms an event).
    meter_event_listing: bool = False


STRIPE = StripeFlavor()
FAKE_STRIPE = StripeFlavor("fake", meter_event_listing=True)
LOCALSTRIPE = StripeFlavor("localstripe", invoices=False, item_period=False, meters=False)
FLAVORS = {f.name: f for f in (STRIPE, FAKE_STRIPE, LOCALSTRIPE)}


def client_from_env(max_network_retries: int = 3) -> stripe.StripeClient:
    """A client from ``STRIPE_API_KEY`` (and ``STRIPE_API_BASE``, e.g. the fake's URL).

    Network errors are retried ``max_network_retries`` times (stripe does not by default).
    """
    key = os.environ.get("STRIPE_API_KEY", "")
    if not key:
        raise StripeSyncError(
            "STRIPE_API_KEY is not set: export the secret key (sk_test_... or sk_live_...)"
        )
    base = os.environ.get("STRIPE_API_BASE")
    return stripe.StripeClient(
        key,
        base_addresses={"api": base} if base else None,
        max_network_retries=max_network_retries,
    )


def flavor_from_env() -> StripeFlavor:
    """``HWMARKET_STRIPE_FLAVOR``: stripe (default), fake or localstripe."""
    name = os.environ.get("HWMARKET_STRIPE_FLAVOR") or "stripe"
    if name not in FLAVORS:
        raise StripeSyncError(f"HWMARKET_STRIPE_FLAVOR={name!r} is not one of {', '.join(FLAVORS)}")
    return FLAVORS[name]


class RateLimit:
    """At most ``per_second`` requests per second across threads (``None``: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this request's slot."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def translate(exc: stripe.StripeError, doing: str) -> StripeSyncError:
    """Stripe's exception as the project's error, naming the call and Stripe's request id."""
    status = exc.http_status
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (
        status is not None and status >= 500
    )
    request_id = f", request {exc.request_id}" if getattr(exc, "request_id", None) else ""
    code = f", code {exc.code}" if exc.code else ""
    where = f"HTTP {status}" if status else "no answer"
    return StripeSyncError(
        f"Stripe refused {doing}: {exc.user_message or str(exc)} ({where}{code}{request_id})",
        http_status=status,
        code=exc.code,
        retryable=retryable,
    )


def _any(params: Obj) -> Any:
    # stripe types each call's params as a TypedDict; ours are built as plain dicts.
    return params


class StripeCalls:
    """The calls the sync makes, paced and translated; results are plain dicts."""

    def __init__(
        self,
        client: stripe.StripeClient,
        flavor: StripeFlavor = STRIPE,
        rate_limit: float | None = None,
    ) -> None:
        self.client = client
        self.flavor = flavor
        self.limit = RateLimit(rate_limit)
        self.requests = 0
        self.writes = 0
        self._count_lock = threading.Lock()

    @staticmethod
    def _key(key: str) -> str:
        salt = os.environ.get(KEY_SALT_ENV)
        return f"{key}-{salt}" if salt else key

    def _call(self, doing: str, fn: Callable[[], Any], *, write: bool = False) -> Any:
        self.limit.wait()
        with self._count_lock:
            self.requests += 1
        try:
            result = fn()
        except stripe.StripeError as exc:
            raise translate(exc, doing) from None
        if write:
            with self._count_lock:
                self.writes += 1
                nth = self.writes
            self._maybe_pause(nth)
        return result

    @staticmethod
    def _maybe_pause(nth: int) -> None:
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        at = os.environ.get(PAUSE_AT_ENV)
        if not pause or (at and int(at) != nth):
            return
        mark = os.environ.get(PAUSE_MARK_ENV)
        if mark:
            with open(mark, "w") as f:
                f.write(str(nth))
        time.sleep(pause)  # a crash test kills here: done in Stripe, not recorded

    @staticmethod
    def _plain(obj: Any) -> Obj:
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

    def _pages(self, doing: str, fetch: Callable[[dict[str, Any]], Any]) -> Iterator[Obj]:
        # Paged by hand (not auto_paging_iter) so every page is paced and translated.
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self._call(doing, lambda: fetch(dict(params)))
            data = [self._plain(o) for o in page.data]
            yield from data
            if not page.has_more or not data:
                return
            params["starting_after"] = data[-1]["id"]

    # -- customers ------------------------------------------------------------------------

    def customers(self) -> Iterator[Obj]:
        """Every Stripe customer (paged)."""
        return self._pages(
            "listing customers", lambda p: self.client.v1.customers.list(params=_any(p))
        )

    def create_customer(self, params: Obj, key: str) -> Obj:
        """POST /v1/customers with an idempotency key."""
        return self._plain(
            self._call(
                f"creating customer {params.get('metadata')}",
                lambda: self.client.v1.customers.create(
                    params=_any(params), options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    # -- invoices and items ---------------------------------------------------------------

    def invoices(self, customer: str) -> Iterator[Obj]:
        """The customer's invoices (paged)."""
        return self._pages(
            f"listing invoices of {customer}",
            lambda p: self.client.v1.invoices.list(params=_any({**p, "customer": customer})),
        )

    def invoice_items(self, customer: str) -> Iterator[Obj]:
        """The customer's invoice items (Stripe: all of them; localstripe: pending ones only)."""
        return self._pages(
            f"listing invoice items of {customer}",
            lambda p: self.client.v1.invoice_items.list(params=_any({**p, "customer": customer})),
        )

    def invoice_lines(self, invoice: str) -> Iterator[Obj]:
        """The lines of a Stripe invoice (paged)."""
        return self._pages(
            f"listing lines of invoice {invoice}",
            lambda p: self.client.v1.invoices.line_items.list(invoice, params=_any(p)),
        )

    def create_invoice(self, params: Obj, key: str) -> Obj:
        """POST /v1/invoices (a draft) with an idempotency key."""
        return self._plain(
            self._call(
                f"creating the draft invoice {params.get('metadata')}",
                lambda: self.client.v1.invoices.create(
                    params=_any(params), options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    def create_invoice_item(self, params: Obj, key: str) -> Obj:
        """POST /v1/invoiceitems with an idempotency key."""
        return self._plain(
            self._call(
                f"creating invoice item {params.get('metadata', {}).get('hwmarket_line_id')}",
                lambda: self.client.v1.invoice_items.create(
                    params=_any(params), options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    def finalize_invoice(self, invoice: str, key: str) -> Obj:
        """POST /v1/invoices/{id}/finalize."""
        return self._plain(
            self._call(
                f"finalizing invoice {invoice}",
                lambda: self.client.v1.invoices.finalize_invoice(
                    invoice, options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    # -- meters ---------------------------------------------------------------------------

    def meters(self) -> Iterator[Obj]:
        """Every billing meter (paged)."""
        return self._pages(
            "listing billing meters", lambda p: self.client.v1.billing.meters.list(params=_any(p))
        )

    def create_meter(self, params: Obj, key: str) -> Obj:
        """POST /v1/billing/meters."""
        return self._plain(
            self._call(
                f"creating billing meter {params['event_name']}",
                lambda: self.client.v1.billing.meters.create(
                    params=_any(params), options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    def create_meter_event(self, params: Obj, key: str) -> Obj:
        """POST /v1/billing/meter_events (``identifier`` makes a repeat a 400)."""
        return self._plain(
            self._call(
                f"sending meter event {params['identifier']}",
                lambda: self.client.v1.billing.meter_events.create(
                    params=_any(params), options={"idempotency_key": self._key(key)}
                ),
                write=True,
            )
        )

    def cancel_meter_event(self, event_name: str, identifier: str, key: str) -> Obj:
        """POST /v1/billing/meter_event_adjustments (type cancel)."""
        return self._plain(
            self._call(
                f"cancelling meter event {identifier}",
                lambda: self.client.v1.billing.meter_event_adjustments.create(
                    params=_any(
                        {
                            "event_name": event_name,
                            "type": "cancel",
                            "cancel": {"identifier": identifier},
                        }
                    ),
                    options={"idempotency_key": self._key(key)},
                ),
                write=True,
            )
        )

    def received_meter_events(self) -> list[Obj]:
        """Every meter event the fake received (``GET /_fake/meter_events``; fake only)."""
        answer = self._call(
            "listing received meter events",
            lambda: self.client.raw_request("get", "/_fake/meter_events"),
        )
        import json

        return list(json.loads(answer.body))


def is_duplicate_event(error: StripeSyncError) -> bool:
    """Whether Stripe refused a meter event because one with its identifier exists already."""
    return error.http_status == 400 and (
        error.code in ("duplicate_meter_event", "resource_already_exists")
        or "already exists with identifier" in str(error)
    )


__all__ = [
    "FAKE_STRIPE",
    "FLAVORS",
    "KEY_SALT_ENV",
    "LOCALSTRIPE",
    "PAUSE_AT_ENV",
    "PAUSE_ENV",
    "PAUSE_MARK_ENV",
    "STRIPE",
    "RateLimit",
    "StripeCalls",
    "StripeFlavor",
    "StripeSyncError",
    "client_from_env",
    "flavor_from_env",
    "is_duplicate_event",
    "translate",
]
