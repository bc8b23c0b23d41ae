"""Errors answered the way Stripe answers them: an HTTP status and an ``error`` object."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Stripe API error: ``{"error": {"type", "code", "message", "param"}}`` with a status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe sends for this error."""
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def missing(kind: str, ident: str, param: str = "id") -> ApiError:
    """Stripe's 404 for an unknown object."""
    return ApiError(404, f"No such {kind}: '{ident}'", "resource_missing", param)
