"""BMCs that misbehave: silence, wrong password, garbage, sentinels, inactive, 1970, stale."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from metering.bmc import BmcClient, BmcTarget
from metering.errors import BadReading, BmcAuthFailed, BmcTimeout
from metering.samples import SampleFlag
from tests.peers.bmc_peers import SimEndpoint, SimFleetProcess, free_udp_ports, sim_fleet

pytestmark = pytest.mark.peer
__all__ = ["sim_fleet"]


@pytest.fixture
def bmc(sim_fleet: SimFleetProcess) -> Iterator[SimEndpoint]:
    """The first simulated BMC, back to good behaviour after each test."""
    ep = sim_fleet.endpoints[0]
    yield ep
    sim_fleet.set_fault(ep.port, "none")


def _client(
    ep: SimEndpoint,
    password: str | None = None,
    timeout_s: float = 5.0,
    auth_backoff_s: float = 60.0,
    stale_after_s: float = 2.0,
) -> BmcClient:
    target = BmcTarget("ipmi", ep.address, ep.port, ep.username, password or ep.password,
                       max_watts=ep.max_watts)  # fmt: skip
    return BmcClient(
        target, timeout_s=timeout_s, auth_backoff_s=auth_backoff_s, stale_after_s=stale_after_s
    )


def test_a_bmc_that_never_answers_times_out_within_the_timeout() -> None:
    port = free_udp_ports(1)  # nothing listens there: every packet is lost
    client = BmcClient(BmcTarget("ipmi", "127.0.0.1", port, "admin", "pw"), timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BmcTimeout) as info:
        client.read()
    assert time.monotonic() - started < 1.0 + 0.5
    assert info.value.cause == "timeout" and str(port) in str(info.value)
    client.close()


def test_silence_after_login_times_out_then_the_client_reconnects(
    sim_fleet: SimFleetProcess, bmc: SimEndpoint
) -> None:
    # Reads that should succeed get a generous timeout: pyghmi's client now and then misses
    # a fast loopback answer and waits for its ~1 s retransmission.
    with _client(bmc, timeout_s=5.0) as client:
        assert client.read().watts > 0
        sim_fleet.set_fault(bmc.port, "drop")
        client.timeout_s = 1.0
        with pytest.raises(BmcTimeout):
            client.read()
        client.timeout_s = 5.0
        sim_fleet.set_fault(bmc.port, "none")
        before = sim_fleet.stats(bmc.port)["open_session_requests"]
        assert client.read().watts > 0
        assert sim_fleet.stats(bmc.port)["open_session_requests"] > before  # a new login


def test_a_hanging_bmc_times_out(sim_fleet: SimFleetProcess, bmc: SimEndpoint) -> None:
    with _client(bmc, timeout_s=5.0) as client:
        client.read()
        sim_fleet.set_fault(bmc.port, "slow", 3.0)
        client.timeout_s = 0.5
        started = time.monotonic()
        with pytest.raises(BmcTimeout):
            client.read()
        assert time.monotonic() - started < 1.0


def test_wrong_password_fails_fast_once_and_does_not_retry(
    sim_fleet: SimFleetProcess, bmc: SimEndpoint
) -> None:
    wrong = "not-" + bmc.password
    client = _client(bmc, password=wrong, timeout_s=5.0, auth_backoff_s=60.0)
    started = time.monotonic()
    with pytest.raises(BmcAuthFailed) as info:
        client.read()
    assert time.monotonic() - started < 2.0
    logins = sim_fleet.stats(bmc.port)["open_session_requests"]
    for _ in range(5):  # a poller hammering the client must not hammer the BMC
        with pytest.raises(BmcAuthFailed):
            client.read()
    assert sim_fleet.stats(bmc.port)["open_session_requests"] == logins
    for text in (str(info.value), repr(info.value), repr(client), repr(client.target)):
        assert wrong not in text and bmc.password not in text
    client.close()


@pytest.mark.parametrize(
    ("fault", "flag"),
    [
        ("sentinel", SampleFlag.OUT_OF_RANGE),
        ("zero", SampleFlag.OUT_OF_RANGE),
        ("inactive", SampleFlag.INACTIVE),
        ("clock-1970", SampleFlag.CLOCK_SKEW),
    ],
)
def test_suspect_readings_are_returned_flagged(
    sim_fleet: SimFleetProcess, bmc: SimEndpoint, fault: str, flag: SampleFlag
) -> None:
    with _client(bmc) as client:
        assert client.read().flags == SampleFlag.NONE
        sim_fleet.set_fault(bmc.port, fault)
        reading = client.read()
        assert reading.flags == flag, reading
        assert reading.source == "dcmi"


def test_readings_above_the_hosts_max_are_flagged(bmc: SimEndpoint) -> None:
    target = BmcTarget("ipmi", bmc.address, bmc.port, bmc.username, bmc.password, max_watts=10)
    with BmcClient(target) as client:
        assert client.read().flags == SampleFlag.OUT_OF_RANGE


def test_a_repeated_bmc_timestamp_is_flagged_stale(
    sim_fleet: SimFleetProcess, bmc: SimEndpoint
) -> None:
    sim_fleet.set_fault(bmc.port, "stale")
    with _client(bmc, stale_after_s=0.2) as client:
        first = client.read()
        time.sleep(0.3)
        second = client.read()
    assert first.flags == SampleFlag.NONE
    assert second.flags == SampleFlag.STALE and second.bmc_time == first.bmc_time


def test_garbage_is_a_bad_reading_and_the_session_survives(
    sim_fleet: SimFleetProcess, bmc: SimEndpoint
) -> None:
    with _client(bmc) as client:
        client.read()
        sim_fleet.set_fault(bmc.port, "garbage")
        with pytest.raises(BadReading) as info:
            client.read()
        assert info.value.cause == "bad-reading"
        sim_fleet.set_fault(bmc.port, "none")
        logins = sim_fleet.stats(bmc.port)["open_session_requests"]
        assert client.read().flags == SampleFlag.NONE
        assert sim_fleet.stats(bmc.port)["open_session_requests"] == logins
