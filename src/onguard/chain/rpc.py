"""The async RPC client the daemon uses: the few JSON-RPC reads and writes it needs, with errors made ours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception

from onguard.errors import ChainError, ChainUnavailable

_TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError, OSError)


class Rpc:
    """A thin layer over AsyncWeb3: every failure becomes a ChainError the daemon knows how to handle."""

    def __init__(self, url: str, *, request_timeout: float = 10.0) -> None:
        self.url = url
        self.w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(url, request_kwargs={"timeout": request_timeout}))

    async def _call(self, what: str, awaitable: Any) -> Any:
        try:
            return await awaitable
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(f"{what}: no answer from {self.url} ({type(exc).__name__}: {exc})",
                                   hint="check that the node is running and the rpc_url is right") from exc
        except (Web3Exception, ValueError) as exc:
            raise ChainError(f"{what}: {exc}") from exc

    async def chain_id(self) -> int:
        return await self._call("eth_chainId", self.w3.eth.chain_id)

    async def head(self) -> int:
        return await self._call("eth_blockNumber", self.w3.eth.block_number)

    async def block(self, number: int, full_transactions: bool = False) -> Any:
        return await self._call(f"eth_getBlockByNumber({number})",
                                self.w3.eth.get_block(number, full_transactions=full_transactions))

    async def logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[Any]:
        return await self._call(
            f"eth_getLogs({from_block}..{to_block})",
            self.w3.eth.get_logs({"address": list(addresses), "fromBlock": from_block, "toBlock": to_block}),
        )

    async def call(self, to: str, data: bytes, block: int | str = "latest", sender: str | None = None) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": HexBytes(data)}
        if sender:
            tx["from"] = sender
        return bytes(await self._call(f"eth_call({to})", self.w3.eth.call(tx, block)))

    async def batch(self, requests: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one JSON-RPC batch round trip; each answer keeps its own result or error."""
        responses = await self._call(f"batch of {len(requests)}",
                                     self.w3.provider.make_batch_request(requests))  # type: ignore[arg-type]
        if not isinstance(responses, list):
            raise ChainError(f"batch of {len(requests)}: the node refused the batch ({responses})")
        return responses

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return await self._call("eth_estimateGas", self.w3.eth.estimate_gas(tx))

    async def nonce(self, address: str, block: str = "pending") -> int:
        return await self._call("eth_getTransactionCount", self.w3.eth.get_transaction_count(address, block))

    async def latest_base_fee(self) -> int:
        block = await self._call("eth_getBlockByNumber(latest)", self.w3.eth.get_block("latest"))
        return int(block.get("baseFeePerGas", 0))

    async def send_raw(self, raw: bytes) -> str:
        tx_hash = await self._call("eth_sendRawTransaction", self.w3.eth.send_raw_transaction(raw))
        return HexBytes(tx_hash).to_0x_hex()

    async def receipt(self, tx_hash: str) -> Any:
        """The receipt, or None while the transaction is not mined."""
        try:
            return await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(f"eth_getTransactionReceipt: no answer from {self.url}") from exc

    async def wait_for_receipt(self, tx_hash: str, timeout: float) -> Any:
        try:
            return await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1)
        except TimeExhausted:
            return None
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(f"waiting for {tx_hash}: no answer from {self.url}") from exc

    async def close(self) -> None:
        provider = self.w3.provider
        disconnect = getattr(provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()
