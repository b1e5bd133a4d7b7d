"""EIP-55 address checksums as eth_utils computes them, at a fraction of its cost: on the pre-emption path every
pending transaction's sender, target and decoded address arguments are checksummed, and a flood's senders are
mostly new, so a cache alone does not help."""

from __future__ import annotations

from functools import lru_cache

from eth_hash.auto import keccak
from eth_utils import to_checksum_address

_HEX_DIGITS = frozenset("0123456789abcdef")


def plain_hex_address(value: str) -> bool:
    """0x and 40 hex digits, in any case (what nodes and eth_abi give)."""
    return len(value) == 42 and value[:2] in ("0x", "0X") and _HEX_DIGITS.issuperset(value[2:].lower())


@lru_cache(maxsize=8192)
def checksum(address: str) -> str:
    """The EIP-55 form of an address; what is not plain hex goes through eth_utils (which raises, as it always
    did, for what is not an address)."""
    if not isinstance(address, str) or not plain_hex_address(address):
        return to_checksum_address(address)
    digits = address[2:].lower()
    digest = keccak(digits.encode()).hex()
    return "0x" + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(digits, digest, strict=False))
