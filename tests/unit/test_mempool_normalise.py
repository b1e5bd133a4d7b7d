"""The mempool source's normalisation of a node's transaction object (it must give what web3.py gives, so that
decode_transaction and every later reader treat a pending transaction like a mined one) and its bounded memory of
hashes already delivered."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_utils import is_checksum_address, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from hexbytes import HexBytes
from web3._utils.method_formatters import transaction_result_formatter  # the reference: what web3 returns

from onguard.chain.abi import load_abi
from onguard.config import WatchedContract
from onguard.paths import ARTIFACTS_DIR
from onguard.sources.blocks import decode_transaction
from onguard.sources.mempool import RecentHashes, normalise_transaction

SENDER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
RECEIVER = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
VAULT = "0x" + "ab" * 20

# What Anvil pushed for a pending EIP-1559 transfer (newPendingTransactions with full objects).
PENDING_1559: dict[str, Any] = {
    "type": "0x2", "chainId": "0x7a69", "nonce": "0x0", "gas": "0x5208", "maxFeePerGas": "0x77359400",
    "maxPriorityFeePerGas": "0x3b9aca00", "to": RECEIVER, "value": "0x1", "accessList": [], "input": "0x",
    "r": "0x7ca003a6a2adcce9641e808dcecdedf7c37ca5f48c326a17e25406471de8d1ee",
    "s": "0x53a15f6568f6cf8ccf47cb2f77585c4b71ba3a579bfcc82de7a528889b92a705", "yParity": "0x0", "v": "0x0",
    "hash": "0xa23b52004fe574000765fbe20a311b2785a318c9dbe6b0bf6a4c1f8936f57ff3", "blockHash": None,
    "blockNumber": None, "transactionIndex": None, "from": SENDER, "gasPrice": "0x77359400",
}

LEGACY_MINED = {
    "type": "0x0", "nonce": "0x1f", "gas": "0x7a120", "gasPrice": "0x4a817c800", "to": RECEIVER,
    "value": "0xde0b6b3a7640000", "input": "0xa9059cbb" + "00" * 64, "v": "0x1b",
    "r": "0x" + "0" * 2 + "1c" * 31,  # a leading zero byte sent in full
    "s": "0x5a" + "11" * 30,          # a short s (31 bytes, as some nodes send it)
    "hash": "0x" + "77" * 32, "blockHash": "0x" + "88" * 32, "blockNumber": "0x10",
    "transactionIndex": "0x3", "from": SENDER,
}

ACCESS_LIST_2930 = {
    **PENDING_1559, "type": "0x1", "hash": "0x" + "12" * 32,
    "accessList": [{"address": RECEIVER, "storageKeys": ["0x" + "00" * 31 + "01", "0x" + "ff" * 32]}],
}

BLOB_4844 = {
    **PENDING_1559, "type": "0x3", "hash": "0x" + "34" * 32, "maxFeePerBlobGas": "0x3b9aca00",
    "blobVersionedHashes": ["0x01" + "aa" * 31, "0x01" + "bb" * 31],
}

SET_CODE_7702 = {
    **PENDING_1559, "type": "0x4", "hash": "0x" + "56" * 32,
    "authorizationList": [{"chainId": "0x7a69", "address": RECEIVER, "nonce": "0x2", "yParity": "0x1",
                           "r": "0x" + "9a" * 32, "s": "0x" + "0b" * 32}],
}

CONTRACT_CREATION = {**PENDING_1559, "hash": "0x" + "9c" * 32, "to": None, "input": "0x6080604052"}

NETHERMIND_STYLE = {  # sends `data` next to `input`, and fields web3 does not know
    **PENDING_1559, "hash": "0x" + "de" * 32, "data": "0x1234", "input": "0x1234", "isSystemTx": False,
    "sourceHash": "0x" + "ef" * 32,
}

SAMPLES = {
    "anvil pending 1559": PENDING_1559,
    "legacy, mined": LEGACY_MINED,
    "2930 access list": ACCESS_LIST_2930,
    "4844 blob": BLOB_4844,
    "7702 authorisations": SET_CODE_7702,
    "contract creation": CONTRACT_CREATION,
    "nethermind style": NETHERMIND_STYLE,
}


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES.keys())
def test_normalised_like_web3(sample: dict[str, Any]) -> None:
    expected = transaction_result_formatter(copy.deepcopy(sample))
    actual = normalise_transaction(copy.deepcopy(sample))
    assert actual == expected
    assert {k: type(v) for k, v in actual.items()} == {k: type(v) for k, v in expected.items()}


def test_quantities_become_ints_bytes_become_hexbytes_addresses_checksummed() -> None:
    tx = normalise_transaction(LEGACY_MINED)
    assert (tx["nonce"], tx["gas"], tx["gasPrice"], tx["value"]) == (31, 500_000, 20 * 10**9, 10**18)
    assert (tx["blockNumber"], tx["transactionIndex"], tx["v"], tx["type"]) == (16, 3, 27, 0)
    assert isinstance(tx["input"], HexBytes) and tx["input"][:4] == bytes.fromhex("a9059cbb")
    assert isinstance(tx["hash"], HexBytes) and tx["hash"].to_0x_hex() == LEGACY_MINED["hash"]
    assert len(tx["r"]) == 32 and len(tx["s"]) == 31
    assert is_checksum_address(tx["from"]) and is_checksum_address(tx["to"])
    assert tx["from"].lower() == SENDER


def test_pending_fields_stay_none_and_nested_lists_are_normalised() -> None:
    pending = normalise_transaction(PENDING_1559)
    assert (pending["blockHash"], pending["blockNumber"], pending["transactionIndex"]) == (None, None, None)
    entry = normalise_transaction(ACCESS_LIST_2930)["accessList"][0]
    assert is_checksum_address(entry["address"])
    assert entry["storageKeys"] == ["0x" + "00" * 31 + "01", "0x" + "ff" * 32]
    authorisation = normalise_transaction(SET_CODE_7702)["authorizationList"][0]
    assert (authorisation["chainId"], authorisation["nonce"], authorisation["yParity"]) == (31337, 2, 1)
    assert is_checksum_address(authorisation["address"])
    assert normalise_transaction(CONTRACT_CREATION)["to"] is None


def test_the_input_is_not_modified() -> None:
    sample = copy.deepcopy(ACCESS_LIST_2930)
    normalise_transaction(sample)
    assert sample == ACCESS_LIST_2930


@pytest.mark.parametrize("bad", [{"hash": "0x" + "11" * 33}, {"from": "0x1234"}, {"nonce": "0xzz"}],
                         ids=["hash too long", "short address", "not hex"])
def test_malformed_objects_raise_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        normalise_transaction({**PENDING_1559, **bad})


def test_decode_transaction_reads_a_normalised_pending_transaction() -> None:
    vault = WatchedContract(name="Vault", address="0x" + "AB" * 20,
                            abi=load_abi(ARTIFACTS_DIR / "Vault.sol" / "Vault.json"))
    calldata = vault.abi.encode_call("redeemFor(address,address,uint256)", SENDER, RECEIVER, 5 * 10**18)
    raw = normalise_transaction({**PENDING_1559, "to": VAULT, "input": "0x" + calldata.hex()})
    observation = decode_transaction(raw, 31337, {VAULT: vault})
    assert observation is not None
    assert observation.function == "redeemFor(address,address,uint256)"
    assert observation.args["shares"] == 5 * 10**18
    assert observation.sender.lower() == SENDER and observation.block_number is None
    assert observation.max_priority_fee == 10**9
    assert decode_transaction(normalise_transaction(PENDING_1559), 31337, {VAULT: vault}) is None


def test_recent_hashes_remembers_each_once_and_forgets_the_oldest() -> None:
    seen = RecentHashes(capacity=3)
    assert [seen.add(h) for h in ("0xa", "0xb", "0xa", "0xc")] == [True, True, False, True]
    assert seen.add("0xd") is True          # the fourth: 0xa, the oldest, is forgotten
    assert len(seen) == 3
    assert "0xa" not in seen and all(h in seen for h in ("0xb", "0xc", "0xd"))
    assert seen.add("0xa") is True          # so it would be delivered again, but only that far back
    assert seen.add("0xd") is False


@settings(max_examples=300)
@given(st.binary(min_size=20, max_size=20), st.sampled_from([str.lower, str.upper]))
def test_addresses_are_checksummed_exactly_as_eth_utils_does(raw: bytes, case: Any) -> None:
    address = "0x" + case(raw.hex())
    transaction = {**PENDING_1559, "from": address, "to": address}
    normalised = normalise_transaction(transaction)
    assert normalised["from"] == normalised["to"] == to_checksum_address(address)


def test_what_is_not_an_address_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        normalise_transaction({**PENDING_1559, "from": "0x1234"})
    assert normalise_transaction({**PENDING_1559, "to": None})["to"] is None
