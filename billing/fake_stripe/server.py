"""The HTTP face of the fake: routing, API-key auth, idempotency, request capture, snapshots.

Idempotency as Stripe does it: a POST with an ``Idempotency-Key`` that was already used with the
same method, path and parameters gets the first response again (with ``Idempotent-Replayed:
true``); the same key with other parameters is a 400 ``idempotency_error``. Only successful
results are remembered, as Stripe saves no result for a request that failed validation.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from billing.fake_stripe import invoicing, meters
from billing.fake_stripe.errors import ApiError
from billing.fake_stripe.forms import Params, decode
from billing.fake_stripe.state import Obj, StripeState

Handler = Callable[..., Any]

# (method, path pattern, allowed parameters, operation(state, *path groups, params), writes?)
_ROUTES: list[tuple[str, re.Pattern[str], tuple[str, ...], Handler]] = []


def _route(method: str, pattern: str, allowed: str, handler: Handler) -> None:
    _ROUTES.append((method, re.compile(f"^{pattern}$"), tuple(allowed.split()), handler))


_ID = r"([A-Za-z0-9_\-]+)"
_LIST = "limit starting_after ending_before"
_route("POST", "/v1/customers", "email name description metadata", StripeState.create_customer)
_route(
    "GET",
    "/v1/customers",
    f"{_LIST} email",
    lambda s, p: s.page(
        [
            c
            for c in s.objects["customer"].values()
            if not p.has("email") or c["email"] == p.text("email")
        ],
        p,
        "/v1/customers",
    ),
)
_route("GET", "/v1/customers/search", "query limit page", StripeState.search_customers)
_route("GET", f"/v1/customers/{_ID}", "", lambda s, i, p: s.get("customer", i))
_route(
    "POST", f"/v1/customers/{_ID}", "email name description metadata", StripeState.update_customer
)
_route("POST", "/v1/products", "id name active metadata", StripeState.create_product)
_route("GET", f"/v1/products/{_ID}", "", lambda s, i, p: s.get("product", i))
_route(
    "POST",
    "/v1/prices",
    "currency unit_amount unit_amount_decimal product product_data "
    "recurring lookup_key nickname metadata active",
    StripeState.create_price,
)
_route("GET", "/v1/prices", f"{_LIST} active currency product type", StripeState.list_prices)
_route("GET", f"/v1/prices/{_ID}", "", lambda s, i, p: s.get("price", i))
_route(
    "POST",
    "/v1/invoiceitems",
    "customer amount currency description period metadata invoice "
    "quantity unit_amount_decimal discountable",
    invoicing.create_invoiceitem,
)
_route("GET", "/v1/invoiceitems", f"{_LIST} customer invoice pending", invoicing.list_invoiceitems)
_route("GET", f"/v1/invoiceitems/{_ID}", "", lambda s, i, p: s.get("invoiceitem", i))
_route("DELETE", f"/v1/invoiceitems/{_ID}", "", lambda s, i, p: invoicing.delete_invoiceitem(s, i))
_route(
    "POST",
    "/v1/invoices",
    "customer auto_advance collection_method days_until_due "
    "description metadata pending_invoice_items_behavior currency",
    invoicing.create_invoice,
)
_route("GET", "/v1/invoices", f"{_LIST} customer status", invoicing.list_invoices)
_route("GET", f"/v1/invoices/{_ID}", "", lambda s, i, p: s.get("invoice", i))
_route("GET", f"/v1/invoices/{_ID}/lines", _LIST, invoicing.invoice_lines)
_route("POST", f"/v1/invoices/{_ID}/finalize", "auto_advance", invoicing.finalize_invoice)
_route("POST", f"/v1/invoices/{_ID}/pay", "paid_out_of_band", invoicing.pay_invoice)
_route(
    "POST",
    "/v1/billing/meters",
    "display_name event_name default_aggregation customer_mapping value_settings event_time_window",
    meters.create_meter,
)
_route("GET", "/v1/billing/meters", f"{_LIST} status", meters.list_meters)
_route("GET", f"/v1/billing/meters/{_ID}", "", lambda s, i, p: s.get("meter", i))
_route(
    "GET",
    f"/v1/billing/meters/{_ID}/event_summaries",
    f"{_LIST} customer start_time end_time value_grouping_window",
    meters.event_summaries,
)
_route(
    "POST",
    "/v1/billing/meter_events",
    "event_name payload identifier timestamp",
    meters.create_meter_event,
)
_route(
    "POST",
    "/v1/billing/meter_event_adjustments",
    "event_name type cancel",
    meters.create_meter_event_adjustment,
)


@dataclass
class CapturedRequest:
    """One request as the fake received it: what a contract test pins."""

    method: str
    path: str
    form: list[tuple[str, str]]
    idempotency_key: str | None
    stripe_version: str | None
    status: int = 0


@dataclass
class FakeStripe:
    """The fake's state behind one lock, the idempotency memory and the captured requests."""

    clock: Callable[[], float] = time.time
    api_key: str | None = None
    snapshot: Path | None = None
    state: StripeState = field(init=False)
    requests: list[CapturedRequest] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    idempotency: dict[tuple[str, str], tuple[tuple[Any, ...], int, bytes]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.state = StripeState(self.clock)
        if self.snapshot is not None and self.snapshot.exists():
            self.load(self.snapshot)

    def reset(self) -> None:
        """Forget every object, event, idempotency key and captured request."""
        with self.lock:
            self.state = StripeState(self.clock)
            self.requests.clear()
            self.idempotency.clear()

    def dump(self) -> dict[str, Any]:
        """Everything held, as JSON-ready data (the snapshot format)."""
        with self.lock:
            return {
                "objects": self.state.objects,
                "meter_events": self.state.meter_events,
                "counter": next(self.state.counter),
                "invoice_number": next(self.state.invoice_numbers),
            }

    def load(self, path: Path) -> None:
        """Replace the state with a snapshot written by :meth:`save`."""
        import itertools

        data = json.loads(path.read_text())
        self.state.objects = data["objects"]
        self.state.meter_events = data["meter_events"]
        self.state.counter = itertools.count(data["counter"])
        self.state.invoice_numbers = itertools.count(data["invoice_number"])

    def save(self, path: Path) -> None:
        """Write the state atomically (a temporary file renamed over ``path``)."""
        data = json.dumps(self.dump())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)

    def handle(
        self, method: str, target: str, body: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """One API request -> (status, extra headers, JSON body)."""
        url = urlsplit(target)
        pairs = parse_qsl(body if method == "POST" else url.query, keep_blank_values=True)
        captured = CapturedRequest(
            method, url.path, pairs, headers.get("idempotency-key"), headers.get("stripe-version")
        )
        with self.lock:
            self.requests.append(captured)
            status, extra, payload = self._dispatch(method, url.path, pairs, headers)
            captured.status = status
            if method != "GET" and status == 200 and self.snapshot is not None:
                self.save(self.snapshot)
        return status, extra, payload

    def _dispatch(
        self, method: str, path: str, pairs: list[tuple[str, str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            key = self._authorise(headers.get("authorization", ""))
            idem = headers.get("idempotency-key") if method == "POST" else None
            fingerprint = (method, path, tuple(sorted(pairs)))
            if idem is not None and (key, idem) in self.idempotency:
                seen, status, payload = self.idempotency[(key, idem)]
                if seen != fingerprint:
                    raise ApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{idem}' if you "
                        "meant to execute a different request.",
                        type="idempotency_error",
                    )
                return status, {"Idempotent-Replayed": "true", "Idempotency-Key": idem}, payload
            result = self._call(method, path, decode(pairs))
            payload = json.dumps(result).encode()
            extra = {}
            if idem is not None:
                self.idempotency[(key, idem)] = (fingerprint, 200, payload)
                extra["Idempotency-Key"] = idem
            return 200, extra, payload
        except ApiError as exc:
            return exc.status, {}, json.dumps(exc.body()).encode()

    def _authorise(self, header: str) -> str:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "basic":
            import base64

            credential = base64.b64decode(credential).decode(errors="replace").partition(":")[0]
        elif scheme.lower() != "bearer":
            credential = ""
        if not credential:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if self.api_key is not None and credential != self.api_key:
            raise ApiError(401, f"Invalid API Key provided: {credential[:8]}****")
        return credential

    def _call(self, method: str, path: str, data: dict[str, Any]) -> Obj:
        known_path = False
        for verb, pattern, allowed, handler in _ROUTES:
            found = pattern.match(path)
            if found is None:
                continue
            known_path = True
            if verb == method:
                return handler(self.state, *found.groups(), Params(data, allowed))
        raise ApiError(
            404 if not known_path else 405,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )


def _debug(fake: FakeStripe, method: str, path: str) -> tuple[int, Any] | None:
    """Non-Stripe endpoints under ``/_fake/`` for tests and people looking in."""
    if method == "GET" and path == "/_fake/requests":
        return 200, [r.__dict__ for r in fake.requests]
    if method == "GET" and path == "/_fake/meter_events":
        return 200, list(fake.state.meter_events.values())
    if method == "GET" and path == "/_fake/state":
        return 200, fake.dump()
    if method == "POST" and path == "/_fake/reset":
        fake.reset()
        return 200, {"reset": True}
    return None


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY each answer waits ~40 ms
    # for the client's delayed ACK (a full sync: 20 s instead of 4 s).
    disable_nagle_algorithm = True

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        path = urlsplit(self.path).path
        debug = _debug(self.server.fake, method, path) if path.startswith("/_fake/") else None
        if debug is not None:
            status, data = debug
            payload, extra = json.dumps(data, default=str).encode(), dict[str, str]()
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = self.server.fake.handle(method, self.path, body, headers)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", f"req_fake{id(self):x}")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read captured requests, not a log on stderr


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeStripe) -> None:
        super().__init__(address, _RequestHandler)
        self.fake = fake
