"""A fleet of simulated BMCs on 127.0.0.1, one UDP port each, served by one event loop.

``start_fleet`` starts BMCs in this process and returns a :class:`SimulatedFleet` (stop it, list
its endpoints, change a BMC's fault mode). ``simulate_fleet`` is the command-line face
(``hwmarket bmc simulate --count N --base-port P``): it starts a fleet, prints an inventory
YAML for it, and serves until interrupted. ``python -m metering.simulator`` runs a fleet in a
child process with a line-based control channel on stdin, which the tests use.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pyghmi.ipmi.private.session as ipmisession

from metering.power_models import LoadProfile, PowerModel, SpecPowerModel
from metering.sim_data import load_specpower_curves
from metering.sim_ipmi import FAULTS, BmcBehaviour, SimulatedBmc, close_all

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SimulatedEndpoint:
    """How to reach one simulated BMC (the fields of an inventory's ``bmc`` entry)."""

    host: str
    protocol: str
    address: str
    port: int
    username: str
    password: str = field(repr=False)
    method: str | None = None
    max_watts: float | None = None


class SimulatedFleet:
    """Running simulated BMCs and the thread that serves them."""

    def __init__(self, bmcs: list[SimulatedBmc], endpoints: list[SimulatedEndpoint]) -> None:
        self.bmcs = bmcs
        self.endpoints = endpoints
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bmc-sim", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # pyghmi's I/O thread receives packets; handlers run in whoever calls wait_for_rsp.
        while not self._stop.is_set():
            try:
                ipmisession.Session.wait_for_rsp(0.2)
            except Exception:  # one odd packet must not silence every BMC of the process
                # pyghmi's server dispatches some packets (a client's retried session setup
                # for a session it already dropped) to a method only its client side has;
                # the packet is consumed, the other BMCs must keep answering.
                log.debug("simulated BMC loop: a packet could not be handled", exc_info=True)

    def by_port(self, port: int) -> SimulatedBmc:
        """The BMC listening on ``port``."""
        for bmc in self.bmcs:
            if bmc.port == port:
                return bmc
        raise KeyError(f"no simulated BMC on port {port}")

    def set_fault(self, port: int, fault: str, slow_s: float = 0.0) -> None:
        """Make the BMC on ``port`` misbehave (see ``metering.sim_ipmi.FAULTS``)."""
        self.by_port(port).behaviour = BmcBehaviour(fault=fault, slow_s=slow_s)

    def inventory_yaml(self, sku: str = "sim.server", site: str = "sim1") -> str:
        """An inventory (hosts with their bmc) reaching this fleet, as YAML text."""
        return inventory_yaml(self.endpoints, sku, site)

    def stop(self) -> None:
        """Stop serving and close every BMC's socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        close_all(self.bmcs)

    def __enter__(self) -> SimulatedFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_models(count: int, seed: int = 0) -> list[PowerModel]:
    """SPECpower curves under seeded diurnal load, cycling through the published curves."""
    curves = list(load_specpower_curves().values())
    return [
        SpecPowerModel(curves[i % len(curves)], LoadProfile(seed=seed * 100_003 + i))
        for i in range(count)
    ]


def start_fleet(
    count: int,
    base_port: int,
    models: Sequence[PowerModel] | None = None,
    *,
    username: str = "admin",
    password: str | None = None,
    faults: dict[int, str] | None = None,
    seed: int = 0,
    max_watts: Sequence[float | None] | None = None,
) -> SimulatedFleet:
    """Start ``count`` simulated IPMI BMCs on 127.0.0.1 ports ``base_port`` .. + count - 1.

    ``models`` gives each BMC its power (default: :func:`default_models`); ``faults`` maps a
    BMC's index to a fault mode. All BMCs share one password (random unless given).
    """
    if count < 1:
        raise ValueError("a fleet needs at least one BMC")
    if base_port < 1024 or base_port + count > 65536:
        raise ValueError(f"ports {base_port}..{base_port + count - 1} are not usable")
    models = list(models) if models is not None else default_models(count, seed)
    password = password or secrets.token_urlsafe(12)
    bmcs: list[SimulatedBmc] = []
    endpoints: list[SimulatedEndpoint] = []
    try:
        for i in range(count):
            fault = (faults or {}).get(i, "none")
            bmc = SimulatedBmc(
                models[i % len(models)],
                username,
                password,
                base_port + i,
                LOOPBACK,
                BmcBehaviour(fault=fault),
            )
            bmcs.append(bmc)
            limit = max_watts[i] if max_watts is not None else _model_max(bmc.model)
            endpoints.append(
                SimulatedEndpoint(
                    f"sim-{i:04d}",
                    "ipmi",
                    LOOPBACK,
                    base_port + i,
                    username,
                    password,
                    max_watts=limit,
                )
            )
    except BaseException:
        if bmcs:
            close_all(bmcs)
        raise
    return SimulatedFleet(bmcs, endpoints)


def _model_max(model: PowerModel) -> float | None:
    curve = getattr(model, "curve", None)
    return float(curve.max_watts) if curve is not None else None


def inventory_yaml(
    endpoints: Sequence[SimulatedEndpoint], sku: str = "sim.server", site: str = "sim1"
) -> str:
    """Inventory ``hosts:`` text reaching these BMCs (each host of ``sku`` at ``site``)."""
    lines = ["hosts:"]
    for ep in endpoints:
        rated = f"  # rated max {ep.max_watts:g} W" if ep.max_watts is not None else ""
        lines += [
            f"  - id: {ep.host}{rated}",
            f"    sku: {sku}",
            f"    site: {site}",
            "    bmc:",
            f"      protocol: {ep.protocol}",
            f"      address: {ep.address}",
            f"      port: {ep.port}",
            f"      username: {json.dumps(ep.username)}",
            f"      password: {json.dumps(ep.password)}",
        ]
    return "\n".join(lines) + "\n"


def simulate_fleet(
    count: int,
    base_port: int,
    *,
    password: str | None = None,
    seed: int = 0,
    sku: str = "sim.server",
    site: str = "sim1",
    on_ready: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> str:
    """Run ``count`` simulated BMCs until ``stop`` is set or Ctrl-C; return the inventory text.

    The inventory (hosts of ``sku`` at ``site``, each with its ``bmc``) is handed to
    ``on_ready`` (default: printed) as soon as the BMCs listen.
    """
    fleet = start_fleet(count, base_port, password=password, seed=seed)
    text = inventory_yaml(fleet.endpoints, sku, site)
    try:
        on_ready(text)
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return text


def _control_loop(fleet: SimulatedFleet) -> None:
    # One command per line on stdin, one JSON answer per line on stdout:
    #   fault PORT MODE [SLOW_S] | stats PORT | quit
    for line in sys.stdin:
        words = line.split()
        try:
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "fault":
                slow = float(words[3]) if len(words) > 3 else 0.0
                fleet.set_fault(int(words[1]), words[2], slow)
                answer: dict[str, object] = {"ok": True}
            elif words[0] == "stats":
                answer = {"ok": True, **asdict(fleet.by_port(int(words[1])).counters)}
            else:
                answer = {"ok": False, "error": f"unknown command {words[0]!r}"}
        except (KeyError, ValueError, IndexError) as err:
            answer = {"ok": False, "error": str(err)}
        print(json.dumps(answer), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m metering.simulator --count N --base-port P``: serve with a control channel."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault", action="append", default=[], help="INDEX=MODE")
    args = parser.parse_args(argv)
    faults = {int(k): v for k, v in (f.split("=", 1) for f in args.fault)}
    for mode in faults.values():
        if mode not in FAULTS:
            parser.error(f"unknown fault {mode!r}")
    fleet = start_fleet(
        args.count,
        args.base_port,
        username=args.username,
        password=args.password,
        faults=faults,
        seed=args.seed,
    )
    ready = {"ready": True, "endpoints": [asdict(ep) for ep in fleet.endpoints]}
    print(json.dumps(ready), flush=True)
    try:
        _control_loop(fleet)
    finally:
        fleet.stop()


if __name__ == "__main__":
    main()


__all__ = [
    "SimulatedEndpoint",
    "SimulatedFleet",
    "default_models",
    "inventory_yaml",
    "simulate_fleet",
    "start_fleet",
]
