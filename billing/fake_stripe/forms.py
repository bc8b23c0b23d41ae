"""Stripe's form encoding: ``metadata[key]=v``, ``period[start]=1``, ``expand[0]=x``.

Decoding gives nested dicts; values stay strings (Stripe's API types them per parameter), and
:class:`Params` reads them with the checks and the error messages Stripe gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from billing.fake_stripe.errors import ApiError

_PART = re.compile(r"\[([^\[\]]*)\]")


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested parameters from form pairs; ``a[]`` and ``a[0]`` build lists."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head, *_PART.findall("[" + rest)] if rest else [head]
        node: Any = out
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                    break
                if part == "" or not node or not isinstance(node[-1], dict):
                    node.append({})
                node = node[-1]
                continue
            following = path[i + 1] if not last else None
            if last:
                node[part] = value
            else:
                is_list = following == "" or (following or "").isdigit()
                node = node.setdefault(part, [] if is_list else {})
    return out


class Params:
    """Typed reads of one request's decoded parameters, raising Stripe-shaped errors."""

    def __init__(self, data: dict[str, Any], allowed: Iterable[str]) -> None:
        self.data = data
        known = {*allowed, "expand"}
        for name in data:
            if name not in known:
                raise ApiError(
                    400, f"Received unknown parameter: {name}", "parameter_unknown", name
                )

    def has(self, name: str) -> bool:
        """Whether the request gave ``name`` (possibly empty)."""
        return name in self.data

    def text(self, name: str, required: bool = False, default: str | None = None) -> str | None:
        """A string parameter."""
        value = self.data.get(name)
        if value is None or value == "":
            if required:
                raise ApiError(400, f"Missing required param: {name}.", "parameter_missing", name)
            return default
        if not isinstance(value, str):
            raise ApiError(400, f"Invalid string: {name}", "parameter_invalid_string", name)
        return value

    def integer(self, name: str, required: bool = False, default: int | None = None) -> int | None:
        """An integer parameter (Stripe sends them as decimal text)."""
        value = self.text(name, required)
        if value is None:
            return default
        if not re.fullmatch(r"-?\d+", value):
            raise ApiError(400, f"Invalid integer: {value}", "parameter_invalid_integer", name)
        return int(value)

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean parameter: ``true`` or ``false``."""
        value = self.text(name)
        if value is None:
            return default
        if value not in ("true", "false"):
            raise ApiError(400, f"Invalid boolean: {value}", "parameter_invalid_boolean", name)
        return value == "true"

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str | None:
        """A parameter that must be one of ``options``."""
        value = self.text(name, default=default)
        if value is not None and value not in options:
            message = f"Invalid {name}: must be one of {', '.join(options)}"
            raise ApiError(400, message, None, name)
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        """A hash parameter such as ``metadata``; an empty string clears it."""
        value = self.data.get(name, {})
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise ApiError(400, f"Invalid hash: {name}", "parameter_invalid_hash", name)
        return value

    def metadata(self) -> dict[str, str]:
        """``metadata``: string keys and values, at most 50 keys, keys up to 40 characters."""
        meta = self.mapping("metadata")
        if len(meta) > 50:
            raise ApiError(
                400, "Metadata can have at most 50 keys.", "parameter_invalid", "metadata"
            )
        for key, value in meta.items():
            if len(key) > 40 or not isinstance(value, str) or len(value) > 500:
                raise ApiError(
                    400, f"Invalid metadata[{key}]", "parameter_invalid", f"metadata[{key}]"
                )
        return dict(meta)
