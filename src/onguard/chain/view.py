"""The read-only window on chain state that policies get: named view calls on watched contracts at a block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from onguard.chain.rpc import Rpc
from onguard.config import WatchedContract


class StateView(Protocol):
    async def read(self, contract: str, signature: str, block: int) -> Any: ...


class RpcStateView:
    """Reads watched contracts' no-argument views through eth_call, memoised per (contract, view, block)."""

    def __init__(self, rpc: Rpc, contracts: Mapping[str, WatchedContract], cache_size: int = 4096) -> None:
        self._rpc = rpc
        self._contracts = contracts
        self._cache: dict[tuple[str, str, int], Any] = {}
        self._cache_size = cache_size

    async def read(self, contract: str, signature: str, block: int) -> Any:
        key = (contract, signature, block)
        if key in self._cache:
            return self._cache[key]
        watched = self._contracts[contract]
        raw = await self._rpc.call(watched.address, watched.abi.encode_call(signature), block)
        (value,) = watched.abi.decode_result(signature, raw)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = value
        return value
