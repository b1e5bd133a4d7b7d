"""safe/tx.py: the Safe tx hash is EIP-712 as Safe v1.4.1 defines it (chain id in the domain), signatures name
their owner only over the hash they were made for, and signature bytes are sorted by owner."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from onguard.errors import InputError
from onguard.safe.tx import SafeTxData, SignatureKind, approved_hash, encode_signatures, exec_calldata, \
    parse_signatures, sign

SAFE = "0x" + "5a" * 20
VAULT = "0x" + "ab" * 20
PAUSE = bytes.fromhex("8456cb59")
OWNERS = [Account.from_key(bytes([n]) * 32) for n in (1, 2, 3)]


def tx(chain_id: int = 31337, nonce: int = 7, to: str = VAULT, data: bytes = PAUSE) -> SafeTxData:
    return SafeTxData.call(SAFE, chain_id, to, data, nonce)


def test_hash_is_the_eip712_hash_of_safe_v141():
    t = tx()
    message = {"to": t.to, "value": 0, "data": PAUSE, "operation": 0, "safeTxGas": 0, "baseGas": 0, "gasPrice": 0,
               "gasToken": t.gas_token, "refundReceiver": t.refund_receiver, "nonce": 7}
    types = {"SafeTx": [{"name": n, "type": ty} for n, ty in (
        ("to", "address"), ("value", "uint256"), ("data", "bytes"), ("operation", "uint8"),
        ("safeTxGas", "uint256"), ("baseGas", "uint256"), ("gasPrice", "uint256"), ("gasToken", "address"),
        ("refundReceiver", "address"), ("nonce", "uint256"))]}
    signable = encode_typed_data(domain_data={"chainId": 31337, "verifyingContract": t.safe}, message_types=types,
                                 message_data=message)
    assert t.safe_tx_hash == keccak(b"\x19\x01" + signable.header + signable.body)


@pytest.mark.parametrize("other", [tx(chain_id=1), tx(nonce=8), tx(to="0x" + "cd" * 20), tx(data=b"\x00" * 4)])
def test_every_field_and_the_chain_id_change_the_hash(other):
    assert other.safe_tx_hash != tx().safe_tx_hash


def test_a_signature_names_its_owner_only_over_its_own_hash():
    signature = sign(tx(), OWNERS[0])
    assert signature.kind == SignatureKind.EOA and signature.signature[64] in (27, 28)
    assert parse_signatures(tx(), signature.signature)[0].owner == OWNERS[0].address
    # Signed for chain 1: over this chain's hash it recovers to someone else (so: not an owner).
    foreign = sign(tx(chain_id=1), OWNERS[0])
    assert parse_signatures(tx(), foreign.signature)[0].owner != OWNERS[0].address


def test_approved_hash_slot_names_the_owner():
    slot = approved_hash(OWNERS[1].address)
    assert slot.signature[:32] == bytes(12) + bytes.fromhex(OWNERS[1].address[2:])
    assert slot.signature[32:64] == bytes(32) and slot.signature[64] == 1
    (parsed,) = parse_signatures(tx(), slot.signature)
    assert parsed.owner == OWNERS[1].address and parsed.kind == SignatureKind.APPROVED


def test_signatures_are_sorted_by_owner_and_deduplicated():
    t = tx()
    signatures = [sign(t, o) for o in OWNERS] + [approved_hash(OWNERS[0].address)]
    blob = encode_signatures(reversed(signatures))
    owners = [s.owner for s in parse_signatures(t, blob)]
    assert owners == sorted({o.address for o in OWNERS}, key=lambda a: int(a, 16))
    assert exec_calldata(t, signatures)[:4] == keccak(
        text="execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)")[:4]


def test_malformed_signature_bytes_are_bad_input():
    with pytest.raises(InputError, match="65-byte"):
        parse_signatures(tx(), b"\x01" * 64)
