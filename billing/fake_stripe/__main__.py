"""``python -m billing.fake_stripe --port 12111``: run the fake until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading

from billing.fake_stripe import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the options, serve, stop cleanly on Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m billing.fake_stripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    parser.add_argument("--snapshot", default=None, help="JSON file to load and keep up to date")
    args = parser.parse_args(argv)
    handle = serve(args.host, args.port, api_key=args.api_key, snapshot=args.snapshot)
    print(f"fake Stripe listening on {handle.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()


if __name__ == "__main__":
    main()
