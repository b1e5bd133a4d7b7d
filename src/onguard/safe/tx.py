"""Safe v1.4.1 transactions as frozen values: EIP-712 hash, owner signatures (EOA ECDSA, approveHash), signature
bytes sorted by owner as the Safe requires, and batches of calls through Safe's MultiSendCallOnly. Pure: no chain
access (safe-eth-py's SafeTx and MultiSend encoding used offline)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from safe_eth.eth.eip712 import eip712_encode, eip712_encode_hash
from safe_eth.safe.multi_send import MultiSend, MultiSendOperation, MultiSendTx
from safe_eth.safe.safe_signature import SafeSignature, SafeSignatureType
from safe_eth.safe.safe_tx import SafeTx
from safe_eth.safe.signatures import signature_to_bytes

from onguard.errors import InputError

SAFE_VERSION = "1.4.1"
ZERO_ADDRESS = "0x" + "00" * 20
CALL = 0
DELEGATECALL = 1
# Safe's MultiSendCallOnly v1.4.1 at its canonical address (CREATE2 through the Safe singleton factory: the same on
# every chain where Safe deployed it). Call-only: a batch can never delegatecall onward from the Safe.
MULTISEND_CALL_ONLY = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"
# Every canonical MultiSendCallOnly (v1.3.0, v1.4.1, v1.5.0): they encode batches alike, so any of them decodes.
KNOWN_MULTISEND_CALL_ONLY = frozenset(a.lower()
                                      for a in (MULTISEND_CALL_ONLY, *MultiSend.MULTISEND_CALL_ONLY_ADDRESSES))
_MULTISEND_SELECTOR = bytes.fromhex("8d80ff0a")  # multiSend(bytes)


class SignatureKind:
    EOA = "eoa"            # ECDSA over the Safe tx hash (v 27/28)
    APPROVED = "approved"  # the owner called approveHash(hash) on the Safe (v 1): no signature bytes of their own
    ETH_SIGN = "eth_sign"  # ECDSA over the eth_sign-prefixed hash (v 31/32)
    CONTRACT = "contract"  # EIP-1271: a contract owner (a nested Safe) vouches; the bytes are its own signatures


@dataclass(frozen=True, slots=True)
class SafeTxData:
    """Everything the Safe tx hash covers, plus the domain (Safe address, chain id)."""

    safe: str
    chain_id: int
    to: str
    value: int
    data: bytes
    operation: int
    safe_tx_gas: int
    base_gas: int
    gas_price: int
    gas_token: str
    refund_receiver: str
    nonce: int

    @classmethod
    def call(cls, safe: str, chain_id: int, to: str, data: bytes, nonce: int, value: int = 0) -> SafeTxData:
        """A plain CALL with no refund (safeTxGas, baseGas, gasPrice 0): the relayer pays, nothing is refunded."""
        return cls(safe=to_checksum_address(safe), chain_id=chain_id, to=to_checksum_address(to), value=value,
                   data=bytes(data), operation=CALL, safe_tx_gas=0, base_gas=0, gas_price=0,
                   gas_token=ZERO_ADDRESS, refund_receiver=ZERO_ADDRESS, nonce=nonce)

    @classmethod
    def batch(cls, safe: str, chain_id: int, calls: Iterable[BatchCall], nonce: int,
              multisend: str = MULTISEND_CALL_ONLY) -> SafeTxData:
        """Several calls executed in order, all or none: a DELEGATECALL to MultiSendCallOnly, which CALLs each
        target from the Safe. One call stays a plain CALL (nothing to batch)."""
        calls = tuple(calls)
        if not calls:
            raise ValueError("a batch needs at least one call")
        if len(calls) == 1:
            return cls.call(safe, chain_id, calls[0].to, calls[0].data, nonce, value=calls[0].value)
        return replace(cls.call(safe, chain_id, multisend, encode_multisend(calls), nonce), operation=DELEGATECALL)

    @property
    def calls(self) -> tuple[BatchCall, ...]:
        """The calls the Safe makes: the batch's, or this one call. Empty for a DELEGATECALL to anything but a
        known MultiSendCallOnly (which could do anything with the Safe's authority)."""
        if self.operation == CALL:
            return (BatchCall(to=self.to, value=self.value, data=self.data),)
        return decode_multisend(self.to, self.data) or ()

    @property
    def is_batch(self) -> bool:
        return self.operation == DELEGATECALL and decode_multisend(self.to, self.data) is not None

    def with_nonce(self, nonce: int) -> SafeTxData:
        return replace(self, nonce=nonce)

    def _safe_eth(self, signatures: bytes = b"") -> SafeTx:
        # ethereum_client is never touched: version, chain id and nonce are all given.
        return SafeTx(None, self.safe, self.to, self.value, self.data, self.operation,  # type: ignore[arg-type]
                      self.safe_tx_gas, self.base_gas, self.gas_price, self.gas_token, self.refund_receiver,
                      signatures=signatures, safe_nonce=self.nonce, safe_version=SAFE_VERSION,
                      chain_id=self.chain_id)

    @property
    def safe_tx_hash(self) -> bytes:
        return bytes(self._safe_eth().safe_tx_hash)

    @property
    def typed_data(self) -> dict[str, Any]:
        """The EIP-712 typed data whose hash is the Safe tx hash, as JSON-ready values: what eth_signTypedData_v4,
        `cast wallet sign --data` and hardware wallets take (numbers as decimal strings, bytes as 0x hex)."""
        structured = self._safe_eth().eip712_structured_data
        message = {field["name"]: _json_value(structured["message"][field["name"]])
                   for field in structured["types"]["SafeTx"]}
        return {"types": structured["types"], "primaryType": "SafeTx",
                "domain": dict(structured["domain"]), "message": message}  # chainId a number, as wallets expect

    @property
    def preimage(self) -> bytes:
        """0x1901 ‖ domain separator ‖ SafeTx struct hash: the data a contract owner's isValidSignature is given."""
        return bytes(self._safe_eth().safe_tx_hash_preimage)

    @property
    def domain_hash(self) -> bytes:
        """The EIP-712 domain separator (chain id, Safe address): what a hardware wallet shows as "domain hash"."""
        return bytes(eip712_encode(self._safe_eth().eip712_structured_data)[1])

    @property
    def message_hash(self) -> bytes:
        """The EIP-712 hash of the SafeTx struct: what a hardware wallet shows as "message hash"."""
        return bytes(eip712_encode(self._safe_eth().eip712_structured_data)[2])

    @property
    def safe_tx_hash_hex(self) -> str:
        return "0x" + self.safe_tx_hash.hex()


@dataclass(frozen=True, slots=True)
class BatchCall:
    """One call of a MultiSend batch, made by the Safe (CALL only)."""

    to: str
    data: bytes
    value: int = 0


def encode_multisend(calls: Iterable[BatchCall]) -> bytes:
    """Calldata of MultiSendCallOnly.multiSend(bytes): each call packed as operation ‖ to ‖ value ‖ length ‖ data."""
    packed = b"".join(bytes(MultiSendTx(MultiSendOperation.CALL, to_checksum_address(c.to), c.value,
                                        bytes(c.data)).encoded_data) for c in calls)
    return _MULTISEND_SELECTOR + abi_encode(["bytes"], [packed])


def decode_multisend(to: str, data: bytes) -> tuple[BatchCall, ...] | None:
    """The calls of a multiSend to a known MultiSendCallOnly; None for anything else (another target, another
    function, malformed data, or an inner DELEGATECALL, which MultiSendCallOnly would refuse anyway)."""
    if to.lower() not in KNOWN_MULTISEND_CALL_ONLY or bytes(data[:4]) != _MULTISEND_SELECTOR:
        return None
    try:
        (packed,) = abi_decode(["bytes"], bytes(data[4:]))
        decoded = MultiSend.from_bytes(packed)
    except (DecodingError, ValueError, AssertionError):
        return None
    if not decoded or any(t.operation != MultiSendOperation.CALL or t.old_encoding for t in decoded):
        return None
    return tuple(BatchCall(to=to_checksum_address(t.to), value=t.value, data=bytes(t.data)) for t in decoded)


@dataclass(frozen=True, slots=True)
class OwnerSignature:
    owner: str     # checksummed; for ECDSA, the address the signature recovers to over this tx's hash
    kind: str
    signature: bytes  # 65 bytes, r ‖ s ‖ v as the Safe reads them; for CONTRACT, the contract's own payload

    @property
    def hex(self) -> str:
        return "0x" + self.signature.hex()


def sign(tx: SafeTxData, account: LocalAccount) -> OwnerSignature:
    """The owner's EOA signature of the Safe tx hash (EIP-712: the hash itself is signed, no prefix)."""
    signed = account.unsafe_sign_hash(tx.safe_tx_hash)
    return OwnerSignature(owner=account.address, kind=SignatureKind.EOA,
                          signature=signature_to_bytes(signed.v, signed.r, signed.s))


def approved_hash(owner: str) -> OwnerSignature:
    """The signature slot of an owner who approved the hash on chain: r = owner, s = 0, v = 1."""
    owner = to_checksum_address(owner)
    return OwnerSignature(owner=owner, kind=SignatureKind.APPROVED,
                          signature=bytes.fromhex(owner[2:].lower().rjust(64, "0")) + b"\x00" * 32 + b"\x01")


def parse_signatures(tx: SafeTxData, blob: bytes | str) -> list[OwnerSignature]:
    """Splits concatenated signatures and names each one's owner over THIS tx's hash: a signature made for
    another chain, Safe, nonce or content recovers to some other address. Contract signatures are refused."""
    return parse_signatures_over(tx.safe_tx_hash, blob)


def parse_signatures_over(signed_hash: bytes, blob: bytes | str) -> list[OwnerSignature]:
    """parse_signatures over any hash a Safe checks signatures on (a Safe tx hash, a nested Safe's message)."""
    raw = HexBytes(blob)
    if len(raw) == 0 or len(raw) % 65:
        raise InputError(f"signatures must be a whole number of 65-byte signatures, got {len(raw)} bytes",
                         field="signature")
    kinds = {SafeSignatureType.EOA: SignatureKind.EOA, SafeSignatureType.APPROVED_HASH: SignatureKind.APPROVED,
             SafeSignatureType.ETH_SIGN: SignatureKind.ETH_SIGN}
    parsed = []
    for item in SafeSignature.parse_signature(raw, signed_hash):
        kind = kinds.get(item.signature_type)
        if kind is None:
            raise InputError(f"{item.signature_type.name} signatures are not supported", field="signature",
                             hint="sign with an owner's key (EOA) or approve the hash on chain")
        parsed.append(OwnerSignature(owner=to_checksum_address(item.owner), kind=kind,
                                     signature=bytes(item.signature)))
    return parsed


def external_signature(tx: SafeTxData, raw: bytes | str, field: str = "--signature") -> OwnerSignature:
    """One owner's signature made outside onguard (a hardware wallet, `cast wallet sign`, Safe{Wallet}) over this
    tx: EIP-712 (v 27/28, or 0/1 as some devices return it) or eth_sign (v 31/32, the hash signed as a message).
    The owner is who it recovers to; whether that is an owner of the Safe is the caller's check."""
    return external_signature_over(tx.safe_tx_hash, raw, field)


def external_signature_over(signed_hash: bytes, raw: bytes | str, field: str = "--signature") -> OwnerSignature:
    """external_signature over any hash a Safe checks signatures on."""
    try:
        signature = HexBytes(raw)
    except (ValueError, TypeError):
        raise InputError("not a hex signature", field=field, hint="expected 0x followed by 130 hex digits") from None
    if len(signature) != 65:
        raise InputError(f"a signature is 65 bytes (r, s, v), got {len(signature)}", field=field,
                         hint="expected 0x followed by 130 hex digits, as `cast wallet sign --data` prints")
    v = signature[64]
    if v in (0, 1) and int.from_bytes(signature[32:64], "big") != 0:
        signature = signature[:64] + bytes([v + 27])  # a device's recovery id: the same ECDSA signature
    (parsed,) = parse_signatures_over(signed_hash, signature)
    if parsed.kind == SignatureKind.APPROVED:
        raise InputError("this is an approved-hash slot, not a signature", field=field,
                         hint="approve on chain with `--approve-hash` instead")
    return parsed


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, int):
        return str(value)
    return value


def encode_signatures(signatures: Iterable[OwnerSignature]) -> bytes:
    """Concatenated in ascending owner order, one per owner: Safe v1.4.1 rejects any other order (GS026). A
    contract owner's slot is r = its address, s = where its payload starts, v = 0; the payloads (length ‖ bytes)
    follow every 65-byte slot."""
    by_owner = {s.owner.lower(): s for s in signatures}
    ordered = [by_owner[owner] for owner in sorted(by_owner, key=lambda a: int(a, 16))]
    slots, payloads = b"", b""
    for signature in ordered:
        if signature.kind != SignatureKind.CONTRACT:
            slots += signature.signature
            continue
        offset = 65 * len(ordered) + len(payloads)
        slots += bytes.fromhex(signature.owner[2:]).rjust(32, b"\0") + offset.to_bytes(32, "big") + b"\0"
        payloads += len(signature.signature).to_bytes(32, "big") + signature.signature
    return slots + payloads


def nested_message_typed_data(owner_safe: str, tx: SafeTxData) -> dict[str, Any]:
    """What the owners of a Safe that owns tx.safe sign for it to vouch for tx (EIP-1271 through Safe's
    CompatibilityFallbackHandler): a SafeMessage in the owner Safe's domain whose message is tx's preimage."""
    return {"types": {"EIP712Domain": [{"name": "chainId", "type": "uint256"},
                                       {"name": "verifyingContract", "type": "address"}],
                      "SafeMessage": [{"name": "message", "type": "bytes"}]},
            "primaryType": "SafeMessage",
            "domain": {"chainId": tx.chain_id, "verifyingContract": to_checksum_address(owner_safe)},
            "message": {"message": "0x" + tx.preimage.hex()}}


def nested_message_hash(owner_safe: str, tx: SafeTxData) -> bytes:
    return bytes(eip712_encode_hash(nested_message_typed_data(owner_safe, tx)))


EXEC_TRANSACTION = "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"


def exec_calldata(tx: SafeTxData, signatures: Iterable[OwnerSignature]) -> bytes:
    """Calldata of Safe.execTransaction for this tx with these signatures (sorted by owner)."""
    from eth_abi import encode as abi_encode
    from eth_utils import function_signature_to_4byte_selector

    types = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"]
    return function_signature_to_4byte_selector(EXEC_TRANSACTION) + abi_encode(types, [
        tx.to, tx.value, tx.data, tx.operation, tx.safe_tx_gas, tx.base_gas, tx.gas_price, tx.gas_token,
        tx.refund_receiver, encode_signatures(signatures)])
