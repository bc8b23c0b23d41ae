"""Sizes and speeds as people write them ("768GB", "512GiB", "3.84TB", "25Gbps").

SI prefixes are powers of 1000 (GB = 10^9 bytes), IEC prefixes powers of 1024 (GiB = 2^30
bytes), as the standards say and as vendors' data sheets mean. Values are stored as integer bytes
or integer bits per second, so nothing is lost and comparisons are exact.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_IEC = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}

_SIZE = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<prefix>[kKmMgGtTpP]i?)?(?P<unit>B|bytes?)?\s*$"
)
_SPEED = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<prefix>[kKmMgGtT])?(?P<unit>bps|bit/s|b/s)\s*$"
)

SIZE_FORMS = "a size such as '768GB', '512GiB', '3.84TB' or an integer number of bytes"
SPEED_FORMS = "a speed such as '25Gbps', '100Gbps', '1Gbps' or an integer number of bits per second"


def _scale(num: str, factor: int) -> int:
    try:
        value = Decimal(num) * factor
    except InvalidOperation as exc:  # the regex makes this unreachable; keep the message anyway
        raise ValueError(f"not a number: {num!r}") from exc
    if value != value.to_integral_value():
        raise ValueError(f"{num} x {factor} is not a whole number")
    return int(value)


def parse_size(value: object) -> int:
    """Return a size in bytes from ``"768GB"``, ``"512GiB"``, ``"3.84TB"`` or an integer.

    >>> parse_size("512GiB")
    549755813888
    >>> parse_size("3.84TB")
    3840000000000
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_FORMS}")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {SIZE_FORMS}")
    m = _SIZE.match(value)
    if not m or (m.group("prefix") is None and m.group("unit") is None):
        raise ValueError(f"expected {SIZE_FORMS}")
    prefix = (m.group("prefix") or "").lower()
    factor = _IEC[prefix] if prefix.endswith("i") else _SI[prefix]
    return _scale(m.group("num"), factor)


def parse_speed(value: object) -> int:
    """Return a speed in bits per second from ``"25Gbps"`` or an integer.

    >>> parse_speed("25Gbps")
    25000000000
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SPEED_FORMS}")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {SPEED_FORMS}")
    m = _SPEED.match(value)
    if not m:
        raise ValueError(f"expected {SPEED_FORMS}")
    return _scale(m.group("num"), _SI[(m.group("prefix") or "").lower()])


def format_size(n: int) -> str:
    """A short human form: IEC when the value is a whole number of GiB/TiB, else SI.

    >>> format_size(549755813888)
    '512GiB'
    >>> format_size(3840000000000)
    '3.84TB'
    """
    for suffix, factor in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    for suffix, factor in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= factor:
            return _trim(f"{Decimal(n) / factor:f}") + suffix
    return f"{n}B"


def _trim(text: str) -> str:
    """``'3.840'`` -> ``'3.84'``, ``'10'`` stays ``'10'`` (only decimals lose zeros)."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_speed(bps: int) -> str:
    """``25000000000`` -> ``'25Gbps'``."""
    for suffix, factor in (("Tbps", 10**12), ("Gbps", 10**9), ("Mbps", 10**6)):
        if bps >= factor:
            return _trim(f"{Decimal(bps) / factor:f}") + suffix
    return f"{bps}bps"


def plain_decimal(value: Decimal) -> Decimal:
    """Drop the trailing zeros a NUMERIC(18, 6) column adds: ``0.500000`` -> ``0.50``.

    Keeps at least two decimal places, the way prices are written.
    """
    if value == value.to_integral_value():
        return value.quantize(Decimal("0.01"))
    normal = value.normalize()
    return normal if -normal.as_tuple().exponent >= 2 else value.quantize(Decimal("0.01"))  # type: ignore[operator]


__all__ = [
    "SIZE_FORMS",
    "SPEED_FORMS",
    "format_size",
    "format_speed",
    "parse_size",
    "parse_speed",
    "plain_decimal",
]
