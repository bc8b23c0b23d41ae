"""localstripe on 127.0.0.1 with no on-disk state: ``python -m tests.peers.localstripe_peer --port N``.

localstripe as shipped pickles its whole store to ``/tmp/localstripe.pickle`` after every change,
loads it back at start, and binds ``::``; two test runs would then share (and race on) one file
and listen beyond loopback. This launcher turns persistence off, never loads from disk, and
serves the same aiohttp app on 127.0.0.1 only.

The ``localstripe`` fixture starts it as a child process on a free port and yields its URL.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.peers.peer_process import LOOPBACK, free_tcp_port, need, stop_process

PIP_HINT = "pip install localstripe"


def main(argv: list[str] | None = None) -> None:
    """Serve localstripe on 127.0.0.1:``--port`` until killed, keeping nothing on disk."""
    parser = argparse.ArgumentParser(prog="python -m tests.peers.localstripe_peer")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from aiohttp import web
    from localstripe import resources

    # Before the server module is imported: nothing may reach /tmp/localstripe.pickle.
    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None
    from localstripe.server import app

    web.run_app(app, host=LOOPBACK, port=args.port, print=None, access_log=None)


def wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until localstripe answers an authenticated request (or its process died)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"{url}/v1/customers", headers={"Authorization": "Bearer sk_test_peer"}
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localstripe exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(request, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"localstripe did not answer on {url} within {timeout} s")


def start_localstripe() -> tuple[str, subprocess.Popen[bytes]]:
    """A fresh localstripe child process and its URL (the caller stops it)."""
    need(
        importlib.util.find_spec("localstripe") is not None,
        f"localstripe is not installed (install it with: {PIP_HINT})",
    )
    port = free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.localstripe_peer", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_until_serving(url, proc)
    except RuntimeError:
        stop_process(proc)
        raise
    return url, proc


@pytest.fixture
def localstripe() -> Iterator[str]:
    """The URL of a fresh, empty localstripe on 127.0.0.1 (stopped after the test)."""
    url, proc = start_localstripe()
    try:
        yield url
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
