"""The one error hierarchy of hwmarket.

Every error the library raises on purpose is a :class:`HwmarketError`. The kinds a caller can
act on are subclasses; ``metering.errors`` and ``billing.errors`` add theirs below the same base.
Exceptions of dependencies (SQLAlchemy, pyghmi, stripe, the network) are translated at the
adapter that calls them and never reach a user raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class HwmarketError(Exception):
    """Base class of every error hwmarket raises on purpose."""

    #: Whether the same call may succeed if simply tried again.
    retryable: bool = False


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is, what it was, what is accepted."""

    path: str
    message: str
    value: Any = None
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        at = f" at {self.path}" if self.path else ""
        shown = "" if self.value is _MISSING else f" (got {_short(self.value)})"
        return f"{where}{at}: {self.message}{shown}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidInput(HwmarketError, ValueError):
    """An input (a file, a request, an argument) is wrong; nothing was stored.

    ``problems`` lists every problem found, each naming the file, the path inside it, the value
    and what would be accepted.
    """

    def __init__(self, problems: Sequence[Problem] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem(path="", message=problems, value=_MISSING, source=source)]
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        head = f"{len(self.problems)} problems"
        if self.source:
            head += f" in {self.source}"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


class NotFound(HwmarketError, LookupError):
    """A named thing (SKU, site, host, reservation ...) does not exist."""


class NoCapacity(HwmarketError):
    """A request cannot be satisfied: not enough free machines in the place and window asked."""

    retryable = True


class BookingConflict(HwmarketError):
    """Concurrent bookers raced for the same machines and this one lost after its retries.

    Trying again may succeed.
    """

    retryable = True


class InvalidState(HwmarketError):
    """The operation is not allowed in the object's current state (cancel an ended booking ...)."""


class StoreError(HwmarketError):
    """The database could not be reached, or refused an operation for a reason not listed above."""


__all__ = [
    "BookingConflict",
    "HwmarketError",
    "InvalidInput",
    "InvalidState",
    "NoCapacity",
    "NotFound",
    "Problem",
    "StoreError",
]
