"""Signatures made outside onguard: EIP-712 with v 27/28 or a device's 0/1, eth_sign with v + 4; the typed data
and the two EIP-712 hashes a hardware wallet shows."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak

from onguard.errors import InputError
from onguard.safe.tx import SafeTxData, SignatureKind, approved_hash, external_signature, sign

OWNER = Account.create()
TX = SafeTxData.call("0x" + "11" * 20, 31337, "0x" + "22" * 20, bytes.fromhex("8456cb59"), 7)


def test_the_typed_data_hashes_to_the_safe_tx_hash_through_an_independent_eip712_encoder():
    signable = encode_typed_data(full_message=TX.typed_data)
    assert signable.header == TX.domain_hash and signable.body == TX.message_hash
    assert keccak(b"\x19\x01" + TX.domain_hash + TX.message_hash) == TX.safe_tx_hash
    assert TX.typed_data["domain"]["chainId"] == 31337 and TX.typed_data["message"]["data"] == "0x8456cb59"


def test_an_eip712_signature_with_a_device_recovery_id_is_the_same_signature():
    made = sign(TX, OWNER).signature
    device = made[:64] + bytes([made[64] - 27])
    for raw in (made, device, "0x" + device.hex()):
        parsed = external_signature(TX, raw)
        assert parsed.owner == OWNER.address and parsed.kind == SignatureKind.EOA and parsed.signature == made


def test_an_eth_sign_signature_with_v_plus_4_is_recognised():
    signed = OWNER.sign_message(encode_defunct(primitive=TX.safe_tx_hash))
    raw = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v + 4])
    parsed = external_signature(TX, raw)
    assert parsed.owner == OWNER.address and parsed.kind == SignatureKind.ETH_SIGN


# (ids named: the approved-hash slot holds OWNER's address, new each run, and pytest-xdist's workers must collect
# the same test ids)
@pytest.mark.parametrize("raw, message", [("0x1234", "65 bytes"), ("nothex", "not a hex signature"),
                                          (approved_hash(OWNER.address).signature, "approved-hash")],
                         ids=["too-short", "not-hex", "approved-hash"])
def test_bad_signatures_are_refused_naming_the_field(raw, message):
    with pytest.raises(InputError) as caught:
        external_signature(TX, raw, field="--signature")
    assert message in caught.value.message and caught.value.field == "--signature"


def test_a_contract_owners_slot_points_at_its_payload_after_every_slot():
    from onguard.safe.tx import OwnerSignature, encode_signatures

    low, high = sorted((Account.create(), Account.create()), key=lambda a: int(a.address, 16))
    contract = "0x" + "ff" * 20  # sorts last
    payload = b"\x07" * 130
    blob = encode_signatures([OwnerSignature(contract, SignatureKind.CONTRACT, payload), sign(TX, high),
                              sign(TX, low)])
    assert blob[:65] == sign(TX, low).signature and blob[65:130] == sign(TX, high).signature
    slot = blob[130:195]
    assert slot[:32] == bytes.fromhex("ff" * 20).rjust(32, b"\0") and slot[64] == 0
    offset = int.from_bytes(slot[32:64], "big")
    assert offset == 195 and int.from_bytes(blob[offset: offset + 32], "big") == 130
    assert blob[offset + 32:] == payload


def test_the_nested_safe_message_hash_is_the_eip712_hash_of_a_safe_message_of_the_preimage():
    from onguard.safe.tx import nested_message_hash, nested_message_typed_data

    owner_safe = "0x" + "33" * 20
    typed = nested_message_typed_data(owner_safe, TX)
    signable = encode_typed_data(full_message=typed)
    assert keccak(b"\x19\x01" + signable.header + signable.body) == nested_message_hash(owner_safe, TX)
    assert typed["message"]["message"] == "0x" + TX.preimage.hex()
    assert keccak(TX.preimage) == TX.safe_tx_hash
