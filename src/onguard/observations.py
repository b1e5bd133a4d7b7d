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
class BlockBatch:
    """A block and the decoded logs of watched contracts in it, in log order."""

    block: BlockObservation
    logs: tuple[LogObservation, ...]
