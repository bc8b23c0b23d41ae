"""Errors of the metering package: what can go wrong when reading a BMC.

Every BMC failure is a :class:`BmcError` carrying a short ``cause`` code (``unreachable``,
``timeout``, ``auth``, ``unsupported``, ``bad-reading``) that the collector stores with the gap
it leaves in the samples. Messages name the BMC (address and port) and never carry a password.
"""

from __future__ import annotations

from marketplace.errors import HwmarketError


class BmcError(HwmarketError):
    """Reading power from a BMC failed; ``cause`` says how, ``bmc`` says which one."""

    cause: str = "error"

    def __init__(self, message: str, bmc: str | None = None) -> None:
        #: What went wrong, without the BMC's name.
        self.detail = message
        self.bmc = bmc
        super().__init__(f"{bmc}: {message}" if bmc else message)

    def naming(self, bmc: str) -> BmcError:
        """This error, its message now naming ``bmc`` (when it named no BMC yet)."""
        if self.bmc is None:
            self.bmc = bmc
            self.args = (f"{bmc}: {self.detail}",)
        return self


class BmcUnreachable(BmcError):
    """The BMC's address cannot be reached (no route, refused, name not resolved)."""

    cause = "unreachable"
    retryable = True


class BmcTimeout(BmcError):
    """The BMC did not answer within the read's timeout."""

    cause = "timeout"
    retryable = True


class BmcAuthFailed(BmcError):
    """The BMC refused the username or password; retrying with the same ones will not help."""

    cause = "auth"


class BmcUnsupported(BmcError):
    """The BMC does not offer the asked way of reading power (no DCMI, no such sensor ...)."""

    cause = "unsupported"


class BadReading(BmcError):
    """The BMC answered, but with something that cannot be decoded as a power reading."""

    cause = "bad-reading"


__all__ = [
    "BadReading",
    "BmcAuthFailed",
    "BmcError",
    "BmcTimeout",
    "BmcUnreachable",
    "BmcUnsupported",
]
