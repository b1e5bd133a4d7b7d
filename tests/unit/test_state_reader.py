"""chain/view.py: BatchStateReader reads every spec of a block in one JSON-RPC batch; a read that fails is a
ReadFailure value (never a missing key, never a default), so the policies that need it report an error."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address
from hexbytes import HexBytes

from onguard.chain.view import BatchStateReader, ReadFailure
from onguard.config import Config, WatchedContract
from onguard.policies.reads import parse_read


class FakeRpc:
    """Answers a batch with one canned response per request, in order; records the batches."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = responses
        self.batches: list[list[tuple[str, list[Any]]]] = []

    async def batch(self, requests: list[tuple[str, list[Any]]]) -> list[Any]:
        self.batches.append(requests)
        return self.responses[:len(requests)]


@pytest.fixture
def contracts(config: Config) -> Mapping[str, WatchedContract]:
    return config.contracts


def result(types: list[str], values: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": HexBytes(abi_encode(types, values)).to_0x_hex()}


def test_specs_are_read_once_in_one_batch_at_the_block(contracts: Mapping[str, WatchedContract]) -> None:
    assets = parse_read("vault.totalAssets()", contracts)
    cash = parse_read("asset.balanceOf(vault)", contracts)
    same_cash = parse_read("asset.balanceOf(" + contracts["vault"].address.lower() + ")", contracts)
    rpc = FakeRpc([result(["uint256"], [2**256 - 1]), result(["uint256"], [7])])

    values = asyncio.run(BatchStateReader(rpc).read([assets, cash, same_cash, assets], 1234))  # type: ignore[arg-type]

    assert values == {assets: 2**256 - 1, cash: 7}
    assert values[same_cash] == 7
    [requests] = rpc.batches
    assert requests == [
        ("eth_call", [{"to": assets.address, "data": "0x" + assets.calldata.hex()}, hex(1234)]),
        ("eth_call", [{"to": cash.address, "data": "0x" + cash.calldata.hex()}, hex(1234)]),
    ]


def test_no_specs_no_request(contracts: Mapping[str, WatchedContract]) -> None:
    rpc = FakeRpc([])
    assert asyncio.run(BatchStateReader(rpc).read([], 5)) == {}  # type: ignore[arg-type]
    assert rpc.batches == []


def test_an_error_answer_is_a_read_failure(contracts: Mapping[str, WatchedContract]) -> None:
    price = parse_read("oracle.price()", contracts)
    paused = parse_read("vault.paused()", contracts)
    rpc = FakeRpc([{"jsonrpc": "2.0", "id": 1, "error": {"code": 3, "message": "execution reverted: stale"}},
                   result(["bool"], [True])])
    values = asyncio.run(BatchStateReader(rpc).read([price, paused], 9))  # type: ignore[arg-type]
    assert values[price] == ReadFailure(price, "execution reverted: stale")
    assert values[paused] is True


def test_an_undecodable_answer_is_a_read_failure(contracts: Mapping[str, WatchedContract]) -> None:
    price = parse_read("oracle.price()", contracts)
    rpc = FakeRpc([{"jsonrpc": "2.0", "id": 1, "result": "0x"}])  # e.g. a call to an address without code
    [value] = asyncio.run(BatchStateReader(rpc).read([price], 9)).values()  # type: ignore[arg-type]
    assert isinstance(value, ReadFailure)
    assert "cannot decode the result as uint256" in value.reason


def test_values_are_normalised(contracts: Mapping[str, WatchedContract]) -> None:
    oracle = parse_read("vault.oracle()", contracts)
    role = parse_read("vault.PAUSER_ROLE()", contracts)
    rpc = FakeRpc([result(["address"], ["0x" + "ef" * 20]), result(["bytes32"], [b"\x01" * 32])])
    values = asyncio.run(BatchStateReader(rpc).read([oracle, role], 9))  # type: ignore[arg-type]
    assert values[oracle] == to_checksum_address("0x" + "ef" * 20)
    assert values[role] == "0x" + "01" * 32
