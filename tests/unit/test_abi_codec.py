"""chain/abi.py: logs decoded into exact, plain values; calls encoded; ABI files loaded or refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from onguard.chain.abi import ContractAbi, load_abi
from onguard.errors import ConfigError

SENDER = "0x" + "a1" * 20
RECEIVER = "0x" + "b2" * 20
OWNER = "0x" + "c3" * 20


@pytest.fixture
def vault_abi(artifacts_dir: Path) -> ContractAbi:
    return load_abi(artifacts_dir / "Vault.sol" / "Vault.json")


def address_topic(address: str) -> bytes:
    return encode(["address"], [address])


def withdraw_log(assets: int, shares: int) -> tuple[list[bytes], bytes]:
    """A Vault Withdraw(sender, receiver, owner indexed; assets, shares in data) log, built by hand."""
    topic0 = keccak(text="Withdraw(address,address,address,uint256,uint256)")
    topics = [topic0, address_topic(SENDER), address_topic(RECEIVER), address_topic(OWNER)]
    return topics, encode(["uint256", "uint256"], [assets, shares])


def test_decodes_a_withdraw_log_exactly(vault_abi: ContractAbi) -> None:
    topics, data = withdraw_log(10**24, 10**24 - 1)

    decoded = vault_abi.decode_log(topics, data)

    assert decoded is not None
    event, args = decoded
    assert event.name == "Withdraw"
    assert args["assets"] == 10**24
    assert type(args["assets"]) is int
    assert args["shares"] == 10**24 - 1
    assert args["sender"].lower() == SENDER
    assert args["receiver"].lower() == RECEIVER
    assert args["owner"].lower() == OWNER
    # arguments come back in declaration order, indexed and unindexed interleaved as the ABI declares them
    assert list(args) == ["sender", "receiver", "owner", "assets", "shares"]


def test_decoded_addresses_are_checksummed(vault_abi: ContractAbi) -> None:
    topics, data = withdraw_log(1, 1)
    decoded = vault_abi.decode_log(topics, data)
    assert decoded is not None
    args = decoded[1]
    assert args["sender"] == to_checksum_address(SENDER)
    assert args["receiver"] == to_checksum_address(RECEIVER)
    assert args["owner"] == to_checksum_address(OWNER)
    assert vault_abi.decode_result("asset()", encode(["address"], [OWNER])) == (to_checksum_address(OWNER),)


def test_decodes_uint256_max_without_loss(vault_abi: ContractAbi) -> None:
    topics, data = withdraw_log(2**256 - 1, 1)
    decoded = vault_abi.decode_log(topics, data)
    assert decoded is not None
    assert decoded[1]["assets"] == 2**256 - 1


def test_topics_may_be_any_bytes_like(vault_abi: ContractAbi) -> None:
    topics, data = withdraw_log(5, 6)
    decoded = vault_abi.decode_log([HexBytes(t) for t in topics], HexBytes(data))
    assert decoded is not None and decoded[1]["shares"] == 6


def test_unknown_topic_returns_none(vault_abi: ContractAbi) -> None:
    unknown = keccak(text="Withdrawn(address,uint256)")
    assert vault_abi.decode_log([unknown, address_topic(SENDER)], encode(["uint256"], [1])) is None


def test_log_without_topics_returns_none(vault_abi: ContractAbi) -> None:
    assert vault_abi.decode_log([], b"") is None


def test_indexed_bytes32_is_returned_as_0x_hex(vault_abi: ContractAbi) -> None:
    role = keccak(text="PAUSER_ROLE")
    topics = [keccak(text="RoleGranted(bytes32,address,address)"), role, address_topic(SENDER),
              address_topic(OWNER)]
    decoded = vault_abi.decode_log(topics, b"")
    assert decoded is not None
    assert decoded[1]["role"] == "0x" + role.hex()


def test_indexed_dynamic_value_keeps_its_hash() -> None:
    abi = ContractAbi.from_json([{
        "type": "event", "name": "Note", "anonymous": False,
        "inputs": [{"name": "memo", "type": "string", "indexed": True},
                   {"name": "value", "type": "uint256", "indexed": False}],
    }])
    memo_hash = keccak(text="hello")
    decoded = abi.decode_log([keccak(text="Note(string,uint256)"), memo_hash], encode(["uint256"], [7]))
    assert decoded is not None
    assert decoded[1] == {"memo": "0x" + memo_hash.hex(), "value": 7}


def test_anonymous_events_are_not_indexed_by_topic() -> None:
    abi = ContractAbi.from_json([{"type": "event", "name": "Ghost", "anonymous": True, "inputs": []}])
    assert abi.event("Ghost") is None
    assert abi.decode_log([keccak(text="Ghost()")], b"") is None


def test_encode_call_of_pause_is_its_four_byte_selector(vault_abi: ContractAbi) -> None:
    assert vault_abi.encode_call("pause()") == keccak(text="pause()")[:4]
    assert len(vault_abi.encode_call("pause()")) == 4


def test_encode_call_with_an_argument_appends_it_abi_encoded(vault_abi: ContractAbi) -> None:
    encoded = vault_abi.encode_call("borrow(uint256)", 10**30)
    assert encoded == keccak(text="borrow(uint256)")[:4] + (10**30).to_bytes(32, "big")


def test_decode_result_returns_exact_ints(vault_abi: ContractAbi) -> None:
    assert vault_abi.decode_result("totalAssets()", encode(["uint256"], [10**30])) == (10**30,)
    assert vault_abi.decode_result("paused()", encode(["bool"], [True])) == (True,)


def test_lookups_by_name_and_signature(vault_abi: ContractAbi) -> None:
    assert vault_abi.has_function("pause()")
    assert not vault_abi.has_function("pause(uint256)")
    assert "withdraw(uint256,address,address)" in vault_abi.function_signatures()
    assert vault_abi.function_signatures() == sorted(vault_abi.function_signatures())
    withdraw = vault_abi.event("Withdraw")
    assert withdraw is not None
    assert withdraw.indexed == (("sender", "address"), ("receiver", "address"), ("owner", "address"))
    assert withdraw.unindexed == (("assets", "uint256"), ("shares", "uint256"))
    assert vault_abi.event("Nope") is None
    assert "Withdraw" in vault_abi.event_names() and "Deposit" in vault_abi.event_names()


# ---- load_abi ----


def test_load_abi_accepts_a_plain_list(tmp_path: Path, artifacts_dir: Path) -> None:
    plain = json.loads((artifacts_dir / "CircuitBreaker.sol" / "CircuitBreaker.json").read_text())["abi"]
    path = tmp_path / "breaker.abi.json"
    path.write_text(json.dumps(plain))
    abi = load_abi(path)
    assert abi.has_function("trip()") and abi.has_function("tripped()")


def test_load_abi_accepts_a_forge_artifact(artifacts_dir: Path) -> None:
    abi = load_abi(artifacts_dir / "GuardianModule.sol" / "GuardianModule.json")
    assert abi.function_signatures()  # non-empty
    assert not abi.has_function("trip()")


def test_load_abi_refuses_non_json(tmp_path: Path) -> None:
    path = tmp_path / "abi.json"
    path.write_text("pragma solidity ^0.8.0;")
    with pytest.raises(ConfigError) as caught:
        load_abi(path)
    assert caught.value.file == str(path)
    assert "not valid JSON" in str(caught.value)


@pytest.mark.parametrize("document", [{"bytecode": "0x00"}, {"abi": {"type": "function"}}, 42, "abi", None])
def test_load_abi_refuses_the_wrong_shape(tmp_path: Path, document: object) -> None:
    path = tmp_path / "abi.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as caught:
        load_abi(path)
    assert caught.value.file == str(path)
    assert "not an ABI" in str(caught.value)


def test_load_abi_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_abi(tmp_path / "nope.json")
    assert "ABI file not found" in str(caught.value)
    assert caught.value.hint is not None


# ---- argument names and decode_call ----


LEGACY_TOKEN_ABI = [
    {"type": "event", "name": "Transfer", "anonymous": False,
     "inputs": [{"name": "_from", "type": "address", "indexed": True},
                {"name": "_to", "type": "address", "indexed": True},
                {"name": "_value", "type": "uint256", "indexed": False}]},
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "_to", "type": "address"}, {"name": "_amount", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "", "type": "address"}, {"name": "", "type": "uint256"}], "outputs": []},
]


def test_argument_names_drop_solidity_leading_underscores() -> None:
    abi = ContractAbi.from_json(LEGACY_TOKEN_ABI)
    transfer = abi.event("Transfer")
    assert transfer is not None
    assert transfer.names == ("from", "to", "value")
    assert transfer.type_of("value") == "uint256"
    decoded = abi.decode_log([keccak(text="Transfer(address,address,uint256)"), address_topic(SENDER),
                              address_topic(RECEIVER)], encode(["uint256"], [5]))
    assert decoded is not None
    assert decoded[1] == {"from": to_checksum_address(SENDER), "to": to_checksum_address(RECEIVER), "value": 5}
    assert abi.function("transfer(address,uint256)").input_names == ("to", "amount")


def test_unnamed_arguments_are_numbered() -> None:
    abi = ContractAbi.from_json(LEGACY_TOKEN_ABI)
    assert abi.function("approve(address,uint256)").input_names == ("arg0", "arg1")


def test_decode_call_names_and_normalises_the_arguments() -> None:
    abi = ContractAbi.from_json(LEGACY_TOKEN_ABI)
    data = abi.encode_call("transfer(address,uint256)", to_checksum_address(RECEIVER), 2**256 - 1)
    decoded = abi.decode_call(data)
    assert decoded is not None
    function, args = decoded
    assert function.signature == "transfer(address,uint256)"
    assert args == {"to": to_checksum_address(RECEIVER), "amount": 2**256 - 1}


def test_decode_call_of_a_real_vault_function(vault_abi: ContractAbi) -> None:
    data = vault_abi.encode_call("withdraw(uint256,address,address)", 10**24, to_checksum_address(RECEIVER),
                                 to_checksum_address(OWNER))
    decoded = vault_abi.decode_call(data)
    assert decoded is not None
    assert decoded[1] == {"assets": 10**24, "receiver": to_checksum_address(RECEIVER),
                          "owner": to_checksum_address(OWNER)}
    collateral = vault_abi.decode_call(vault_abi.encode_call("collateralOf(address)", to_checksum_address(OWNER)))
    assert collateral is not None and collateral[1] == {"arg0": to_checksum_address(OWNER)}


def test_decode_call_refuses_what_it_cannot_read(vault_abi: ContractAbi) -> None:
    assert vault_abi.decode_call(keccak(text="nothing()")[:4]) is None       # not one of its functions
    assert vault_abi.decode_call(b"\x01\x02") is None                         # shorter than a selector
    truncated = vault_abi.encode_call("borrow(uint256)", 5)[:20]
    assert vault_abi.decode_call(truncated) is None                           # arguments cut short
