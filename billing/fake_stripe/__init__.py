"""A Stripe-shaped HTTP server for tests, as moto is for AWS: what localstripe lacks.

It speaks Stripe's form-encoded API v1 for customers, products, prices, invoice items, invoices
(create, finalize, pay), billing meters, meter events and meter event adjustments, with Stripe's
error shapes, API-key auth and idempotency keys; state lives in memory, optionally snapshotted to
a JSON file. Point the official client at it::

    from billing.fake_stripe import serve
    import stripe

    with serve() as fake:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.url})
        customer = client.v1.customers.create(params={"email": "ops@example.com"})
        fake.requests[-1].form  # what the client sent: [("email", "ops@example.com")]

Debug endpoints outside Stripe's API: ``GET /_fake/requests``, ``GET /_fake/meter_events``,
``GET /_fake/state``, ``POST /_fake/reset``. From a shell: ``python -m billing.fake_stripe
--port 12111``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from billing.fake_stripe.errors import ApiError
from billing.fake_stripe.server import CapturedRequest, FakeStripe, _Server


class FakeStripeHandle:
    """A running fake: its ``url``, its ``fake`` (state, captured requests) and ``stop()``."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="fake-stripe", daemon=True
        )
        self._thread.start()
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.fake: FakeStripe = server.fake

    @property
    def requests(self) -> list[CapturedRequest]:
        """Every request received so far, in order."""
        return self.fake.requests

    def stop(self) -> None:
        """Stop serving, close the socket, write the snapshot if one was asked for."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.fake.snapshot is not None:
            self.fake.save(self.fake.snapshot)

    def __enter__(self) -> FakeStripeHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    snapshot: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> FakeStripeHandle:
    """Start the fake in a background thread; ``port=0`` picks a free port (see ``.url``).

    ``api_key``: accept only this key (default: any non-empty key). ``snapshot``: a JSON file
    loaded at start when present and rewritten after every successful write. ``clock``: seconds
    since the epoch, for tests of meter event time limits.
    """
    fake = FakeStripe(clock=clock, api_key=api_key, snapshot=Path(snapshot) if snapshot else None)
    return FakeStripeHandle(_Server((host, port), fake))


__all__ = ["ApiError", "CapturedRequest", "FakeStripe", "FakeStripeHandle", "serve"]
