"""Sizes and speeds as people write them: SI vs IEC, exact integers, round trips, rejects."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketplace.units import format_size, format_speed, parse_size, parse_speed

SI = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
IEC = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("768GB", 768 * 10**9),
        ("512GiB", 512 * 2**30),
        ("3.84TB", 3_840_000_000_000),
        ("3.8TB", 3_800_000_000_000),
        ("2TiB", 2 * 2**40),
        ("81559MiB", 81559 * 2**20),
        ("1B", 1),
        ("1byte", 1),
        ("10 bytes", 10),
        ("1kB", 1000),
        ("1KB", 1000),  # a capital K is still SI kilo: only the "i" makes a prefix binary
        ("1KiB", 1024),
        ("1kiB", 1024),
        ("0.5GB", 500_000_000),
        ("1.5GiB", 3 * 2**29),
        ("  64 GB  ", 64 * 10**9),
        ("1PB", 10**15),
        ("1PiB", 2**50),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


def test_si_and_iec_differ_as_the_standards_say() -> None:
    assert parse_size("1GB") == 1_000_000_000
    assert parse_size("1GiB") == 1_073_741_824
    assert parse_size("1TiB") - parse_size("1TB") == 2**40 - 10**12


@pytest.mark.parametrize(
    "bad",
    [
        "768XB",  # no such prefix
        "1EB",  # exa is beyond what any machine has: not a prefix hwmarket reads
        "64",  # a bare number string: bytes or GB? refuse to guess
        "1.5",
        "GB",
        "",
        "  ",
        "-1GB",
        "1,5GB",
        "1e9B",
        "64Gb",  # gigabits, not bytes
        "64gb",
        "1.0000000001B",  # not a whole number of bytes
        "0.1B",
        "1GB 2GB",
        1.5,
        1e9,
        True,
        False,
        None,
        [64],
        {"GB": 64},
    ],
)
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match=r"expected a size|not a whole number"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25Gbps", 25 * 10**9),
        ("100Gbps", 100 * 10**9),
        ("1Gbps", 10**9),
        ("400 Gbps", 400 * 10**9),
        ("1.6Tbps", 16 * 10**11),
        ("10Mbps", 10**7),
        ("25Gbit/s", 25 * 10**9),
        ("25Gb/s", 25 * 10**9),
        ("25gbps", 25 * 10**9),
        ("2.5Gbps", 2_500_000_000),
        ("9600bps", 9600),
        (10**9, 10**9),
    ],
)
def test_parse_speed(text: object, expected: int) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["25Gbs", "25GBps", "25GB", "25G", "25", "fast", "", "25Gibps", "-1Gbps", 2.5, True, None],
)
def test_parse_speed_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a speed"):
        parse_speed(bad)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (512 * 2**30, "512GiB"),
        (2 * 2**40, "2TiB"),
        (3 * 2**50, "3PiB"),
        (3_840_000_000_000, "3.84TB"),
        (768 * 10**9, "768GB"),
        (10**15, "1PB"),
        (5 * 10**6, "5MB"),
        (100 * 10**9, "100GB"),
        (320 * 10**9, "320GB"),
        (10 * 10**12, "10TB"),
        (999, "999B"),
        (0, "0B"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (25 * 10**9, "25Gbps"),
        (10 * 10**9, "10Gbps"),
        (100 * 10**9, "100Gbps"),
        (400 * 10**9, "400Gbps"),
        (16 * 10**11, "1.6Tbps"),
        (10**7, "10Mbps"),
        (9600, "9600bps"),
    ],
)
def test_format_speed(bps: int, text: str) -> None:
    assert format_speed(bps) == text


@given(st.integers(min_value=0, max_value=2**63))
def test_format_size_parses_back_exactly(n: int) -> None:
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=10**16))
def test_format_speed_parses_back_exactly(bps: int) -> None:
    assert parse_speed(format_speed(bps)) == bps


@st.composite
def written_sizes(draw: st.DrawFn) -> tuple[str, int]:
    """A size written as a person would ("3.84TB", "512 GiB"), with its exact value in bytes."""
    if draw(st.booleans()):
        prefix, factor = draw(st.sampled_from(sorted(IEC.items())))
    else:
        prefix, factor = draw(st.sampled_from(sorted(SI.items())))
    whole = draw(st.integers(min_value=0, max_value=100_000))
    # Only decimals that make a whole number of bytes: digits <= the factor's powers of ten / two.
    places = draw(st.integers(min_value=0, max_value=3))
    frac = draw(st.integers(min_value=0, max_value=10**places - 1)) if places else 0
    number = Decimal(whole) + Decimal(frac) / 10**places
    value = number * factor
    if value != value.to_integral_value():
        number, value = Decimal(whole), Decimal(whole * factor)
    text = f"{number:f}"
    space = draw(st.sampled_from(["", " "]))
    unit = draw(st.sampled_from(["B", "B", "bytes"] if prefix else ["B", "bytes", "byte"]))
    return f"{text}{space}{prefix}{unit}", int(value)


@given(written_sizes())
def test_written_sizes_parse_to_their_exact_value(case: tuple[str, int]) -> None:
    text, value = case
    assert parse_size(text) == value


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("", 1), ("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12)]),
    st.sampled_from(["bps", "bit/s", "b/s"]),
)
def test_written_speeds_parse_to_their_exact_value(
    n: int, prefix: tuple[str, int], unit: str
) -> None:
    assert parse_speed(f"{n}{prefix[0]}{unit}") == n * prefix[1]


@given(st.integers(min_value=1, max_value=2**20))
def test_iec_and_si_forms_of_one_value_agree(gib: int) -> None:
    n = gib * 2**30
    assert parse_size(f"{gib}GiB") == n
    assert parse_size(f"{n}B") == n
    assert format_size(n).endswith("iB")
