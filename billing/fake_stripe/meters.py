"""Billing meters, meter events, their cancellation, and event summaries.

Meter event rules, as Stripe states them: ``identifier`` is unique (a repeat is a 400);
``timestamp`` may be at most 35 days in the past and 5 minutes in the future; the value is a whole
number of at most 15 digits; the payload names the customer under the meter's
``customer_mapping[event_payload_key]`` (default ``stripe_customer_id``) and the value under
``value_settings[event_payload_key]`` (default ``value``).
"""

from __future__ import annotations

import re

from billing.fake_stripe.errors import ApiError
from billing.fake_stripe.forms import Params
from billing.fake_stripe.state import (
    _MAX_VALUE_DIGITS,
    EVENT_MAX_AGE_S,
    EVENT_MAX_AHEAD_S,
    Obj,
    StripeState,
)

_FORMULAS = ("sum", "count", "last")


def create_meter(state: StripeState, params: Params) -> Obj:
    """POST /v1/billing/meters."""
    display_name = params.text("display_name", required=True)
    event_name = params.text("event_name", required=True)
    formula = params.mapping("default_aggregation").get("formula")
    if formula is None:
        raise ApiError(
            400,
            "Missing required param: default_aggregation[formula].",
            "parameter_missing",
            "default_aggregation[formula]",
        )
    if formula not in _FORMULAS:
        raise ApiError(400, f"Invalid formula: {formula}", None, "default_aggregation[formula]")
    if any(
        m["event_name"] == event_name and m["status"] == "active"
        for m in state.objects["meter"].values()
    ):
        raise ApiError(
            400, f"An active meter with event_name {event_name} already exists.", None, "event_name"
        )
    mapping = params.mapping("customer_mapping")
    value_settings = params.mapping("value_settings")
    now = state.now()
    meter: Obj = {
        "id": state.new_id("mtr"),
        "object": "billing.meter",
        "created": now,
        "updated": now,
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": params.choice("event_time_window", ("day", "hour")),
        "default_aggregation": {"formula": formula},
        "customer_mapping": {
            "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
            "type": mapping.get("type", "by_id"),
        },
        "value_settings": {"event_payload_key": value_settings.get("event_payload_key", "value")},
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "livemode": False,
    }
    state.objects["meter"][meter["id"]] = meter
    return meter


def list_meters(state: StripeState, params: Params) -> Obj:
    """GET /v1/billing/meters: filter status."""
    items = list(state.objects["meter"].values())
    if params.has("status"):
        items = [m for m in items if m["status"] == params.text("status")]
    return state.page(items, params, "/v1/billing/meters")


def _meter_for(state: StripeState, event_name: str) -> Obj:
    for meter in state.objects["meter"].values():
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    raise ApiError(
        400,
        f"No active meter was found with event_name '{event_name}'.",
        "resource_missing",
        "event_name",
    )


def create_meter_event(state: StripeState, params: Params) -> Obj:
    """POST /v1/billing/meter_events."""
    event_name = params.text("event_name", required=True)
    assert event_name is not None
    meter = _meter_for(state, event_name)
    payload = params.mapping("payload")
    now = state.now()
    timestamp = params.integer("timestamp", default=now)
    assert timestamp is not None
    if timestamp < now - EVENT_MAX_AGE_S:
        raise ApiError(
            400,
            "Timestamp must be within the past 35 calendar days.",
            "timestamp_too_far_in_past",
            "timestamp",
        )
    if timestamp > now + EVENT_MAX_AHEAD_S:
        raise ApiError(
            400,
            "Timestamp must not be more than 5 minutes in the future.",
            "timestamp_in_future",
            "timestamp",
        )
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    for key in (customer_key, value_key):
        if not payload.get(key):
            raise ApiError(
                400,
                f"Missing required param: payload[{key}].",
                "parameter_missing",
                f"payload[{key}]",
            )
    value = payload[value_key]
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"-?\d+", value)
        or (len(value.lstrip("-").lstrip("0")) > _MAX_VALUE_DIGITS)
    ):
        raise ApiError(
            400,
            f"payload[{value_key}] must be a whole number of at most 15 digits.",
            "parameter_invalid_integer",
            f"payload[{value_key}]",
        )
    identifier = params.text("identifier") or state.new_id("mev")
    if identifier in state.meter_events:
        raise ApiError(
            400,
            f"An event already exists with identifier {identifier}.",
            "duplicate_meter_event",
            "identifier",
        )
    event: Obj = {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": dict(payload),
        "timestamp": timestamp,
    }
    state.meter_events[identifier] = {**event, "meter": meter["id"], "cancelled": False}
    return event


def create_meter_event_adjustment(state: StripeState, params: Params) -> Obj:
    """POST /v1/billing/meter_event_adjustments: ``type=cancel`` with ``cancel[identifier]``."""
    event_name = params.text("event_name", required=True)
    kind = params.choice("type", ("cancel",), "cancel")
    identifier = params.mapping("cancel").get("identifier")
    if not identifier:
        raise ApiError(
            400,
            "Missing required param: cancel[identifier].",
            "parameter_missing",
            "cancel[identifier]",
        )
    event = state.meter_events.get(identifier)
    if event is None or event["event_name"] != event_name:
        raise ApiError(
            400,
            f"No meter event with identifier '{identifier}' for event_name '{event_name}'.",
            "resource_missing",
            "cancel[identifier]",
        )
    event["cancelled"] = True
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": kind,
    }


def event_summaries(state: StripeState, meter_id: str, params: Params) -> Obj:
    """GET /v1/billing/meters/{id}/event_summaries: customer, [start_time, end_time), window."""
    meter = state.get("meter", meter_id)
    customer = params.text("customer", required=True)
    start = params.integer("start_time", required=True)
    end = params.integer("end_time", required=True)
    assert start is not None and end is not None
    window = params.choice("value_grouping_window", ("hour", "day"))
    step = {"hour": 3600, "day": 86400}.get(window or "", end - start) or 1
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    events = [
        e
        for e in state.meter_events.values()
        if e["meter"] == meter_id
        and not e["cancelled"]
        and e["payload"].get(customer_key) == customer
        and start <= e["timestamp"] < end
    ]
    summaries = []
    for lo in range(start, end, step):
        inside = sorted(
            (e for e in events if lo <= e["timestamp"] < lo + step), key=lambda e: e["timestamp"]
        )
        values = [int(e["payload"][value_key]) for e in inside]
        formula = meter["default_aggregation"]["formula"]
        aggregated = {"sum": sum(values), "count": len(values)}.get(
            formula, values[-1] if values else 0
        )
        summaries.append(
            {
                "id": f"mtrusg_{meter_id}_{customer}_{lo}",
                "object": "billing.meter_event_summary",
                "aggregated_value": float(aggregated),
                "start_time": lo,
                "end_time": min(lo + step, end),
                "livemode": False,
                "meter": meter_id,
            }
        )
    url = f"/v1/billing/meters/{meter_id}/event_summaries"
    return state.page(summaries, params, url, newest_first=False)
