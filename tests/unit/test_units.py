"""units.py: amounts are exact uint256 integers, shares exact fractions, durations seconds."""

from __future__ import annotations

from fractions import Fraction

import pytest

from onguard.units import parse_amount, parse_duration, parse_share

# ---- parse_amount ----


@pytest.mark.parametrize(("text", "expected"), [
    ("1_000_000e18", 10**24),
    ("1.5e18", 15 * 10**17),
    ("250_000e18", 250_000 * 10**18),
    ("1000", 1000),
    (" 42 ", 42),
    ("0", 0),
])
def test_parse_amount_reads_strings_exactly(text: str, expected: int) -> None:
    value = parse_amount(text)
    assert value == expected
    assert type(value) is int


def test_parse_amount_is_exact_where_a_float_would_round() -> None:
    # 123456789012345678901234567 is not representable as a float: a float path would change the last digits.
    assert parse_amount("123456789012345678901234567") == 123456789012345678901234567
    assert parse_amount("123456789.012345678901234567e18") == 123456789012345678901234567


def test_parse_amount_accepts_python_ints_including_uint256_max() -> None:
    assert parse_amount(7) == 7
    assert parse_amount(2**256 - 1) == 2**256 - 1


@pytest.mark.parametrize("value", [-1, "-1", "-1e18"])
def test_parse_amount_rejects_negative_amounts(value: object) -> None:
    with pytest.raises(ValueError, match="uint256 range"):
        parse_amount(value)


@pytest.mark.parametrize("value", ["0.5", "1.5", "1e-3", "1.0000000000000000001e18"])
def test_parse_amount_rejects_fractions_of_a_base_unit(value: str) -> None:
    with pytest.raises(ValueError, match="whole number of base units"):
        parse_amount(value)


@pytest.mark.parametrize("value", [2**256, str(2**256), "1e78"])
def test_parse_amount_rejects_values_beyond_uint256(value: object) -> None:
    with pytest.raises(ValueError, match="uint256 range"):
        parse_amount(value)


@pytest.mark.parametrize("value", [True, False])
def test_parse_amount_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_amount(value)


@pytest.mark.parametrize("value", ["", "abc", "1e18 tokens", "0x10", "nan", "1,000"])
def test_parse_amount_rejects_garbage_strings(value: str) -> None:
    with pytest.raises(ValueError, match="is not an amount"):
        parse_amount(value)


@pytest.mark.parametrize("value", [1.5e18, None, [1], {"amount": 1}])
def test_parse_amount_rejects_other_types_including_floats(value: object) -> None:
    with pytest.raises(ValueError, match="expected an amount"):
        parse_amount(value)


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf"])
def test_parse_amount_rejects_infinity_with_a_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(value)


# ---- parse_share ----


@pytest.mark.parametrize(("value", "expected"), [
    ("25%", Fraction(1, 4)),
    (" 12.5% ", Fraction(1, 8)),
    ("100%", Fraction(1)),
    ("0.001%", Fraction(1, 100_000)),
    (0.25, Fraction(1, 4)),
    (0.1, Fraction(1, 10)),  # exact 1/10, not the binary float 0.1000000000000000055...
    (1, Fraction(1)),
])
def test_parse_share_is_exact(value: object, expected: Fraction) -> None:
    assert parse_share(value) == expected


@pytest.mark.parametrize("value", ["0%", 0, 0.0, "-5%", -0.25])
def test_parse_share_rejects_zero_and_negative_shares(value: object) -> None:
    with pytest.raises(ValueError, match="more than 0%"):
        parse_share(value)


@pytest.mark.parametrize("value", ["100.01%", "150%", 1.5, 2])
def test_parse_share_rejects_more_than_100_percent(value: object) -> None:
    with pytest.raises(ValueError, match="at most 100%"):
        parse_share(value)


@pytest.mark.parametrize("value", ["25", "abc%", "%", True, None, "0.25"])
def test_parse_share_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError, match="percentage"):
        parse_share(value)


# ---- parse_duration ----


@pytest.mark.parametrize(("value", "seconds"), [
    ("250ms", 0.25),
    ("30s", 30.0),
    ("15m", 900.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("90", 90.0),
    (" 2 h ", 7200.0),
    (90, 90.0),
    (0, 0.0),
    (0.5, 0.5),
])
def test_parse_duration_reads_units(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "abc", "1.5s", "10 minutes", "1w", "-5s", "h", -1, True, None, [30]])
def test_parse_duration_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)
