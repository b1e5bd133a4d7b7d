"""Frozen, decoded, normalised values that sources yield and the policy engine reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def frozen_mapping(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True, slots=True)
class BlockObservation:
    chain_id: int
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee: int | None = None

    @property
    def id(self) -> str:
        return f"block:{self.chain_id}:{self.hash}"


@dataclass(frozen=True, slots=True)
class LogObservation:
    """One decoded event of a watched contract. Integers stay exact Python ints (uint256-safe)."""

    chain_id: int
    block_number: int
    block_hash: str
    transaction_hash: str
    log_index: int
    contract: str
    address: str
    event: str
    args: Mapping[str, Any] = field(default_factory=lambda: frozen_mapping({}))

    @property
    def id(self) -> str:
        return f"log:{self.chain_id}:{self.block_hash}:{self.log_index}"


@dataclass(frozen=True, slots=True)
class TransactionObservation:
    """A transaction sent directly to a watched contract, mined (block_number set) or pending (None), with
    its calldata decoded when the selector is in the contract's ABI."""

    chain_id: int
    hash: str
    block_number: int | None
    sender: str
    to: str
    contract: str
    value: int
    input: bytes
    function: str | None             # the signature, e.g. "transferOwnership(address)"; None if unknown
    args: Mapping[str, Any] = field(default_factory=lambda: frozen_mapping({}))
    max_priority_fee: int | None = None

    @property
    def id(self) -> str:
        return f"tx:{self.chain_id}:{self.hash}:{self.block_number}"

    @property
    def selector(self) -> bytes:
        return self.input[:4]


@dataclass(frozen=True, slots=True)
class BlockBatch:
    """A block with the decoded logs of watched contracts (in log order) and the transactions sent directly
    to them (in block order)."""

    block: BlockObservation
    logs: tuple[LogObservation, ...]
    transactions: tuple[TransactionObservation, ...] = ()
