"""Pure parts of BMC reading: the DCMI record codec, the quality rules, targets and errors."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from marketplace.errors import HwmarketError
from marketplace.inventory import BmcEndpoint
from metering.bmc import BmcTarget
from metering.bmc_reading import (
    DcmiPowerRecord,
    assess,
    decode_dcmi_power_reading,
    encode_dcmi_power_reading,
)
from metering.errors import (
    BadReading,
    BmcAuthFailed,
    BmcError,
    BmcTimeout,
    BmcUnreachable,
    BmcUnsupported,
)
from metering.samples import SampleFlag

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
u16 = st.integers(0, 0xFFFF)


@given(
    cur=u16,
    low=u16,
    high=u16,
    avg=u16,
    stamp=st.integers(0, 0xFFFFFFFF),
    period_ms=st.integers(0, 0xFFFFFFFF),
    active=st.booleans(),
)
def test_dcmi_record_round_trips(
    cur: int, low: int, high: int, avg: int, stamp: int, period_ms: int, active: bool
) -> None:
    record = DcmiPowerRecord(
        cur, low, high, avg, datetime.fromtimestamp(stamp, UTC), period_ms / 1000, active
    )
    assert decode_dcmi_power_reading(encode_dcmi_power_reading(record)) == record


def test_dcmi_decode_reads_the_spec_layout() -> None:
    # group 0xdc, 300/200/400/500 W, timestamp, 1000 ms, state 0x40 (active)
    data = bytes.fromhex("dc2c01c8009001f401") + (1_795_000_000).to_bytes(4, "little")
    rec = decode_dcmi_power_reading(data + (1000).to_bytes(4, "little") + b"\x40")
    assert (rec.current_watts, rec.min_watts, rec.max_watts, rec.avg_watts) == (300, 200, 400, 500)
    assert rec.bmc_time == datetime.fromtimestamp(1_795_000_000, UTC)
    assert rec.period_s == 1.0 and rec.active
    inactive = decode_dcmi_power_reading(data + (1000).to_bytes(4, "little") + b"\x00")
    assert not inactive.active


@pytest.mark.parametrize(
    "data",
    [b"", b"\xdc\x12\x34", bytes(18), b"\xdd" + bytes(17)],
    ids=["empty", "truncated", "wrong-group-zero", "wrong-group"],
)
def test_dcmi_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(BadReading):
        decode_dcmi_power_reading(data)


def test_assess_clean_reading_has_no_flags() -> None:
    assert assess(250.0, received=NOW, bmc_time=NOW, max_watts=400) == SampleFlag.NONE


@pytest.mark.parametrize(
    ("watts", "powered_on", "max_watts"),
    [(-5.0, None, None), (0xFFFF, None, None), (0x7FFF, None, None), (0.0, True, None),
     (601.0, None, 400.0)],
)  # fmt: skip
def test_assess_out_of_range(
    watts: float, powered_on: bool | None, max_watts: float | None
) -> None:
    flags = assess(watts, received=NOW, powered_on=powered_on, max_watts=max_watts)
    assert flags == SampleFlag.OUT_OF_RANGE


def test_assess_zero_is_fine_when_host_is_off_and_max_is_inclusive() -> None:
    assert assess(0.0, received=NOW, powered_on=False) == SampleFlag.NONE
    assert assess(600.0, received=NOW, max_watts=400.0) == SampleFlag.NONE


def test_assess_inactive_clock_skew_and_stale() -> None:
    assert assess(10, received=NOW, active=False) == SampleFlag.INACTIVE
    epoch = datetime(1970, 1, 1, 1, tzinfo=UTC)
    assert assess(10, received=NOW, bmc_time=epoch) == SampleFlag.CLOCK_SKEW
    assert assess(10, received=NOW, bmc_time=NOW + timedelta(hours=23)) == SampleFlag.NONE
    later = NOW + timedelta(seconds=5)
    stale = assess(10, received=later, bmc_time=NOW, previous_bmc_time=NOW, previous_received=NOW)
    assert stale == SampleFlag.STALE
    # Two reads within the timestamp's one-second resolution repeat it legitimately.
    soon = NOW + timedelta(milliseconds=300)
    same_second = assess(
        10, received=soon, bmc_time=NOW, previous_bmc_time=NOW, previous_received=NOW
    )
    assert same_second == SampleFlag.NONE


def test_assess_nan_watts_is_not_out_of_range() -> None:
    assert assess(math.nan, received=NOW) == SampleFlag.NONE


def test_errors_carry_cause_and_share_the_project_base() -> None:
    causes = {
        BmcUnreachable: "unreachable",
        BmcTimeout: "timeout",
        BmcAuthFailed: "auth",
        BmcUnsupported: "unsupported",
        BadReading: "bad-reading",
    }
    for kind, cause in causes.items():
        err = kind("boom", "ipmi://127.0.0.1:623")
        assert isinstance(err, BmcError) and isinstance(err, HwmarketError)
        assert err.cause == cause and str(err) == "ipmi://127.0.0.1:623: boom"
    assert BmcTimeout.retryable and not BmcAuthFailed.retryable


def test_target_from_the_inventory_endpoint_hides_the_password() -> None:
    ep = BmcEndpoint(
        protocol="redfish",
        address="127.0.0.1",
        username="root",
        password=SecretStr("hunter2"),
        method="redfish-legacy",
    )
    target = BmcTarget.from_endpoint(ep)
    assert target.password == "hunter2" and target.port == 443 and target.max_watts is None
    assert target.method == "redfish-legacy" and not target.verify_tls
    assert "hunter2" not in repr(target) and "hunter2" not in target.label


def test_short_method_names_are_accepted() -> None:
    target = BmcTarget("redfish", "127.0.0.1", 443, "root", "pw", method="energy")
    assert target.method == "energy-counter"


def test_target_rejects_a_method_of_the_other_protocol() -> None:
    with pytest.raises(ValueError, match="method 'dcmi'"):
        BmcTarget("redfish", "127.0.0.1", 443, "root", "pw", method="dcmi")
    with pytest.raises(ValueError, match="protocol"):
        BmcTarget("snmp", "127.0.0.1", 161, "root", "pw")
