"""The Safe ecosystem's formats without a chain: the Transaction Service's transaction JSON (string numbers,
confirmations), our export (what the service's proposal endpoint takes), Transaction Builder batches; every bad
field named, never a traceback."""

from __future__ import annotations

import json

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector

from onguard.errors import InputError
from onguard.safe.interop import SafeSnapshot, approval_batch, export_tx, parse_service_tx, parse_tx_builder
from onguard.safe.tx import SafeTxData, SignatureKind, approved_hash, sign

SAFE = "0x" + "11" * 20
TARGET = "0x" + "22" * 20
OWNERS = sorted((Account.create() for _ in range(3)), key=lambda a: int(a.address, 16))
TX = SafeTxData.call(SAFE, 31337, TARGET, bytes.fromhex("3f4ba83a"), 9)


def service_json(**changes) -> dict:
    item = {"safe": TX.safe, "to": TX.to, "value": "0", "data": "0x3f4ba83a", "operation": 0,
            "gasToken": TX.gas_token, "safeTxGas": "0", "baseGas": "0", "gasPrice": "0",
            "refundReceiver": TX.refund_receiver, "nonce": "9", "safeTxHash": TX.safe_tx_hash_hex,
            "isExecuted": False, "origin": '{"url": "https://app.safe.global", "name": "Unpause"}',
            "confirmations": [{"owner": OWNERS[0].address, "signature": sign(TX, OWNERS[0]).hex,
                               "signatureType": "EOA"},
                              {"owner": OWNERS[1].address, "signature": None, "signatureType": "APPROVED_HASH"}]}
    item.update(changes)
    return item


def parse(item: dict):
    return parse_service_tx(item, "tx.json", 31337, SAFE)


def test_the_service_answer_with_string_numbers_and_confirmations_is_read():
    imported = parse(service_json())
    assert imported.tx == TX and imported.purpose == "from Safe{Wallet}: Unpause"
    assert [(s.owner, s.kind) for s in imported.signatures] == [(OWNERS[0].address, SignatureKind.EOA),
                                                                (OWNERS[1].address, SignatureKind.APPROVED)]


@pytest.mark.parametrize("changes, field, words", [
    ({"nonce": "nine"}, "nonce", "not a whole number"),
    ({"to": "0x12"}, "to", "not an address"),
    ({"operation": 2}, "operation", "neither 0"),
    ({"safeTxHash": "0x" + "00" * 32}, "safeTxHash", "altered"),
    ({"chainId": 1}, "chainId", "chain 1"),
    ({"safe": TARGET}, "safe", "not " + SAFE),
    ({"confirmations": [{"owner": OWNERS[2].address, "signature": sign(TX, OWNERS[0]).hex,
                         "signatureType": "EOA"}]}, "confirmations[0].signature", "recovers to"),
    ({"confirmations": [{"owner": OWNERS[2].address, "signature": "0x00", "signatureType": "CONTRACT_SIGNATURE"}]},
     "confirmations[0].signatureType", "EIP-1271"),
    ({"confirmations": ["x"]}, "confirmations[0]", "expected an object"),
])
def test_bad_fields_are_named(changes, field, words):
    item = service_json(**changes)
    with pytest.raises(InputError) as caught:
        parse(item)
    assert f"tx.json: {field}: " in caught.value.message and words in caught.value.message


def test_an_export_is_what_the_proposal_endpoint_takes_and_reads_back():
    signatures = [approved_hash(OWNERS[2].address), sign(TX, OWNERS[1])]
    snapshot = SafeSnapshot(chain_id=31337, nonce=9, threshold=2, owners=tuple(o.address for o in OWNERS),
                            version="1.4.1")
    body = export_tx(TX, signatures, "a purpose " * 50, snapshot)
    # The service's serializer: contractTransactionHash, sender (a signer), origin of at most 200 characters.
    assert body["contractTransactionHash"] == TX.safe_tx_hash_hex and body["sender"] == OWNERS[1].address
    assert len(body["origin"]) <= 200 and body["onguard"]["purpose"].startswith("a purpose")
    again = parse(json.loads(json.dumps(body)))
    assert again.tx == TX and again.snapshot == snapshot and again.purpose == body["onguard"]["purpose"]
    assert {s.owner for s in again.signatures} == {OWNERS[1].address, OWNERS[2].address}


def builder(*transactions, chain_id="31337", **meta) -> dict:
    return {"version": "1.0", "chainId": chain_id, "createdAt": 0,
            "meta": {"name": "batch", **meta}, "transactions": list(transactions)}


def method(name, *inputs):
    return {"name": name, "payable": False,
            "inputs": [{"name": n, "type": t, "internalType": t, **extra} for n, t, extra in inputs]}


def test_transaction_builder_values_are_encoded_as_the_builder_does():
    transfer = {"to": TARGET, "value": "5", "data": None,
                "contractMethod": method("setAll", ("who", "address[]", {}), ("on", "bool", {}),
                                         ("amount", "uint256", {}),
                                         ("pair", "tuple", {"components": [{"name": "a", "type": "uint8"},
                                                                           {"name": "b", "type": "bytes32"}]})),
                "contractInputsValues": {"who": json.dumps([OWNERS[0].address]), "on": "true",
                                         "amount": "1000000000000000000000",
                                         "pair": json.dumps(["7", "0x" + "ab" * 32])}}
    raw = {"to": TARGET, "value": "0", "data": "0xdeadbeef"}
    calls, purpose = parse_tx_builder(builder(transfer, raw, description="d"), "b.json", 31337, SAFE)
    assert purpose == "batch: d"
    selector = function_signature_to_4byte_selector("setAll(address[],bool,uint256,(uint8,bytes32))")
    assert calls[0].data[:4] == selector and calls[0].value == 5
    assert abi_decode(["address[]", "bool", "uint256", "(uint8,bytes32)"], calls[0].data[4:]) == (
        (OWNERS[0].address.lower(),), True, 10**21, (7, bytes.fromhex("ab" * 32)))
    assert calls[1].data == bytes.fromhex("deadbeef")


@pytest.mark.parametrize("batch, field", [
    (builder({"to": TARGET, "value": "0", "data": "0x"}, chain_id="1"), "chainId"),
    (builder({"to": TARGET, "value": "0", "data": "0x"}, createdFromSafeAddress=TARGET),
     "meta.createdFromSafeAddress"),
    (builder(), "transactions"),
    (builder({"to": TARGET, "value": "-1", "data": "0x"}), "transactions[0].value"),
    (builder({"to": TARGET, "value": "0", "contractMethod": method("f", ("x", "bool", {})),
              "contractInputsValues": {"x": "maybe"}}), "transactions[0].contractInputsValues.x"),
    (builder({"to": TARGET, "value": "0", "contractMethod": method("f", ("x", "uint8", {})),
              "contractInputsValues": {"x": "300"}}), "transactions[0].contractInputsValues"),
])
def test_bad_transaction_builder_files_name_the_field(batch, field):
    with pytest.raises(InputError) as caught:
        parse_tx_builder(batch, "b.json", 31337, SAFE)
    assert f"b.json: {field}" in caught.value.message


def test_the_approval_batch_reads_back_as_approve_hash_of_the_tx():
    (call,), _ = parse_tx_builder(approval_batch(TX, TARGET), "a.json", 31337, TARGET)
    assert call.to == TX.safe
    assert call.data == function_signature_to_4byte_selector("approveHash(bytes32)") + TX.safe_tx_hash
