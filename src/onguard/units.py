"""Exact parsing of the amounts, integers, shares, durations and addresses written in config and policy files."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from eth_utils import is_address, is_checksum_address, to_checksum_address

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_SECONDS = {"ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_amount(value: object) -> int:
    """An exact non-negative integer from 1000, "1_000_000e18" or "1.5e18" (uint256 base units)."""
    if isinstance(value, bool):
        raise ValueError("expected an amount, got a boolean")
    if isinstance(value, int):
        number = Fraction(value)
    elif isinstance(value, str):
        try:
            number = Fraction(Decimal(value.replace("_", "").strip()))
        except (InvalidOperation, ValueError, OverflowError):  # OverflowError: "inf"
            raise ValueError(f"{value!r} is not an amount (write e.g. 1000, \"250_000e18\" or \"1.5e18\")") from None
    else:
        raise ValueError(f"expected an amount as an integer or a string like \"250_000e18\", got {value!r}")
    if number.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of base units")
    if number < 0 or number >= 2**256:
        raise ValueError(f"{value!r} is outside the uint256 range")
    return int(number)


def parse_integer(value: object) -> int:
    """An exact integer, negative allowed (for intN arguments): -1, "1e18", "-2_000"."""
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_amount(value.strip()[1:])
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return -parse_amount(-value)
    return parse_amount(value)


def parse_address(value: object) -> str:
    """A checksummed address; a mixed-case address must carry a valid EIP-55 checksum (else it is a typo)."""
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"{value!r} is not an address")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ValueError(f"{value!r} fails its EIP-55 checksum (a mistyped address?): copy it again from a "
                         "trusted source, or write it all in lower case")
    return to_checksum_address(value)


def parse_share(value: object) -> Fraction:
    """A share in (0, 1] from "25%" or 0.25, kept exact."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = Fraction(Decimal(value.strip()[:-1].replace("_", ""))) / 100
        except (InvalidOperation, ValueError, OverflowError):
            raise ValueError(f"{value!r} is not a percentage (write e.g. \"25%\")") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        share = Fraction(Decimal(str(value)))
    else:
        raise ValueError(f"expected a percentage like \"25%\", got {value!r}")
    if not 0 < share <= 1:
        raise ValueError(f"{value!r} must be more than 0% and at most 100%")
    return share


def parse_duration(value: object) -> float:
    """Seconds from 90, "90s", "15m", "1h" or "1d"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            try:
                return float(int(match.group(1)) * _DURATION_SECONDS[match.group(2)])
            except (OverflowError, ValueError):  # more digits than a float, or Python's int parser, takes
                raise ValueError(f"{value[:24]!r}… is too long a duration") from None
    raise ValueError(f"{value!r} is not a duration (write e.g. 30, \"30s\", \"15m\", \"1h\")")
