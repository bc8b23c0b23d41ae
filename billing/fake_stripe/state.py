"""The fake's objects and what each API call does to them, in memory.

Customers, products, prices, invoice items and invoices follow Stripe's v1 shapes; billing meters,
meter events and their cancellations follow ``/v1/billing/*``. Where Stripe checks something
asynchronously (a meter event for an unknown meter, a cancellation of an unknown identifier),
this fake answers at once with a 400, so a test learns of the mistake where it made it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from billing.fake_stripe.errors import ApiError, missing
from billing.fake_stripe.forms import Params

Obj = dict[str, Any]

#: How far back and ahead a meter event's timestamp may be (Stripe's limits).
EVENT_MAX_AGE_S = 35 * 24 * 3600
EVENT_MAX_AHEAD_S = 5 * 60
_MAX_VALUE_DIGITS = 15
_CURRENCY = re.compile(r"^[a-z]{3}$")


def _matcher(field: str, meta_key: str | None, value: str) -> Callable[[Obj], bool]:
    if meta_key is not None:
        return lambda obj: bool(obj["metadata"].get(meta_key) == value)
    return lambda obj: bool(obj.get(field) == value)


class StripeState:
    """Every object the fake holds; methods are the API operations (params in, object out)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.objects: dict[str, dict[str, Obj]] = {
            k: {} for k in ("customer", "product", "price", "invoiceitem", "invoice", "meter")
        }
        self.meter_events: dict[str, Obj] = {}
        self.counter = itertools.count(1)
        self.invoice_numbers = itertools.count(1)

    # -- helpers -----------------------------------------------------------------------------

    def now(self) -> int:
        """The fake's clock, in whole seconds since the epoch."""
        return int(self.clock())

    def new_id(self, prefix: str) -> str:
        """A fresh id with Stripe's prefix (``cus``, ``in`` ...), unique within this server."""
        return f"{prefix}_fake{next(self.counter):012d}"

    def get(self, kind: str, ident: str, param: str = "id") -> Obj:
        """An object by id, or Stripe's 404."""
        found = self.objects[kind].get(ident)
        if found is None:
            raise missing(kind, ident, param)
        return found

    @staticmethod
    def page(items: list[Obj], params: Params, url: str, newest_first: bool = True) -> Obj:
        """A list object: newest first, ``limit`` (1-100) and ``starting_after`` as in Stripe."""
        if newest_first:
            items = sorted(items, key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
        limit = params.integer("limit", default=10)
        assert limit is not None
        if not 1 <= limit <= 100:
            raise ApiError(400, "Invalid limit: must be between 1 and 100", None, "limit")
        ids = [o["id"] for o in items]
        after, before = params.text("starting_after"), params.text("ending_before")
        for cursor, name in ((after, "starting_after"), (before, "ending_before")):
            if cursor is not None and cursor not in ids:
                raise missing("object", cursor, name)
        if after is not None:
            items = items[ids.index(after) + 1 :]
        elif before is not None:
            items = items[max(0, ids.index(before) - limit) : ids.index(before)]
        return {
            "object": "list",
            "data": items[:limit],
            "has_more": len(items) > limit,
            "url": url,
        }

    @staticmethod
    def currency(params: Params, required: bool = True) -> str | None:
        """A lower-case three-letter currency code."""
        value = params.text("currency", required=required)
        if value is not None and not _CURRENCY.match(value.lower()):
            raise ApiError(400, f"Invalid currency: {value}", "parameter_invalid", "currency")
        return None if value is None else value.lower()

    # -- customers ---------------------------------------------------------------------------

    def create_customer(self, params: Params) -> Obj:
        """POST /v1/customers."""
        obj: Obj = {
            "id": self.new_id("cus"),
            "object": "customer",
            "created": self.now(),
            "email": params.text("email"),
            "name": params.text("name"),
            "description": params.text("description"),
            "metadata": params.metadata(),
            "balance": 0,
            "currency": None,
            "livemode": False,
        }
        self.objects["customer"][obj["id"]] = obj
        return obj

    def update_customer(self, ident: str, params: Params) -> Obj:
        """POST /v1/customers/{id}: name, email, description, metadata (merged; "" deletes)."""
        obj = self.get("customer", ident)
        for field in ("email", "name", "description"):
            if params.has(field):
                obj[field] = params.text(field)
        for key, value in params.metadata().items():
            if value == "":
                obj["metadata"].pop(key, None)
            else:
                obj["metadata"][key] = value
        return obj

    def search_customers(self, params: Params) -> Obj:
        """GET /v1/customers/search: clauses ``field:'value'`` or ``metadata['k']:'v'`` ANDed."""
        query = params.text("query", required=True)
        assert query is not None
        clause = re.compile(
            r"""^\s*(metadata\[['"]([^'"]+)['"]\]|email|name)\s*:\s*['"]([^'"]*)['"]\s*$"""
        )
        tests: list[Callable[[Obj], bool]] = []
        for part in re.split(r"\s+AND\s+", query, flags=re.IGNORECASE):
            found = clause.match(part)
            if found is None:
                raise ApiError(400, f"Invalid search query: {part!r}", "parameter_invalid", "query")
            field, meta_key, value = found.groups()
            tests.append(_matcher(field, meta_key, value))
        hits = [o for o in self.objects["customer"].values() if all(t(o) for t in tests)]
        result = self.page(hits, params, "/v1/customers/search")
        return {**result, "object": "search_result", "next_page": None}

    # -- products and prices -----------------------------------------------------------------

    def create_product(self, params: Params, name: str | None = None) -> Obj:
        """POST /v1/products (and ``product_data`` of a price)."""
        obj: Obj = {
            "id": params.text("id") or self.new_id("prod"),
            "object": "product",
            "created": self.now(),
            "name": name or params.text("name", required=True),
            "active": params.boolean("active", True),
            "metadata": params.metadata(),
            "livemode": False,
        }
        self.objects["product"][obj["id"]] = obj
        return obj

    def create_price(self, params: Params) -> Obj:
        """POST /v1/prices: one-time or recurring (licensed or metered by a billing meter)."""
        currency = self.currency(params)
        if params.has("product"):
            product = self.get("product", params.text("product") or "", "product")["id"]
        else:
            data = params.mapping("product_data")
            if not data.get("name"):
                raise ApiError(
                    400, "Missing required param: product.", "parameter_missing", "product"
                )
            product = self.create_product(Params({}, ()), name=data["name"])["id"]
        amount = params.integer("unit_amount")
        decimal = params.text("unit_amount_decimal")
        if amount is None and decimal is None:
            raise ApiError(
                400, "Missing required param: unit_amount.", "parameter_missing", "unit_amount"
            )
        if amount is not None and amount < 0:
            raise ApiError(
                400, "Invalid unit_amount: must be >= 0", "parameter_invalid", "unit_amount"
            )
        recurring = params.mapping("recurring") or None
        if recurring is not None:
            if recurring.get("interval") not in ("day", "week", "month", "year"):
                raise ApiError(400, "Invalid recurring[interval]", None, "recurring[interval]")
            recurring.setdefault("interval_count", "1")
            recurring["interval_count"] = int(recurring["interval_count"])
            recurring.setdefault("usage_type", "licensed")
            if recurring["usage_type"] == "metered" and "meter" in recurring:
                self.get("meter", recurring["meter"], "recurring[meter]")
        obj: Obj = {
            "id": self.new_id("price"),
            "object": "price",
            "created": self.now(),
            "active": params.boolean("active", True),
            "currency": currency,
            "unit_amount": amount,
            "unit_amount_decimal": decimal if decimal is not None else str(amount),
            "product": product,
            "recurring": recurring,
            "type": "recurring" if recurring else "one_time",
            "billing_scheme": "per_unit",
            "lookup_key": params.text("lookup_key"),
            "nickname": params.text("nickname"),
            "metadata": params.metadata(),
            "livemode": False,
        }
        self.objects["price"][obj["id"]] = obj
        return obj

    def list_prices(self, params: Params) -> Obj:
        """GET /v1/prices: filters active, currency, product, type."""
        items = list(self.objects["price"].values())
        if params.has("active"):
            items = [p for p in items if p["active"] == params.boolean("active", True)]
        for field in ("currency", "product", "type"):
            if params.has(field):
                items = [p for p in items if p[field] == params.text(field)]
        return self.page(items, params, "/v1/prices")
