"""Safe v1.4.1 transactions as frozen values: EIP-712 hash, owner signatures (EOA ECDSA, approveHash), signature
bytes sorted by owner as the Safe requires. Pure: no chain access (safe-eth-py's SafeTx used offline)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from safe_eth.safe.safe_signature import SafeSignature, SafeSignatureType
from safe_eth.safe.safe_tx import SafeTx
from safe_eth.safe.signatures import signature_to_bytes

from onguard.errors import InputError

SAFE_VERSION = "1.4.1"
ZERO_ADDRESS = "0x" + "00" * 20
CALL = 0


class SignatureKind:
    EOA = "eoa"            # ECDSA over the Safe tx hash (v 27/28)
    APPROVED = "approved"  # the owner called approveHash(hash) on the Safe (v 1): no signature bytes of their own
    ETH_SIGN = "eth_sign"  # ECDSA over the eth_sign-prefixed hash (v 31/32)


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
    def safe_tx_hash_hex(self) -> str:
        return "0x" + self.safe_tx_hash.hex()


@dataclass(frozen=True, slots=True)
class OwnerSignature:
    owner: str     # checksummed; for ECDSA, the address the signature recovers to over this tx's hash
    kind: str
    signature: bytes  # 65 bytes, r ‖ s ‖ v as the Safe reads them

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
    raw = HexBytes(blob)
    if len(raw) == 0 or len(raw) % 65:
        raise InputError(f"signatures must be a whole number of 65-byte signatures, got {len(raw)} bytes",
                         field="signature")
    kinds = {SafeSignatureType.EOA: SignatureKind.EOA, SafeSignatureType.APPROVED_HASH: SignatureKind.APPROVED,
             SafeSignatureType.ETH_SIGN: SignatureKind.ETH_SIGN}
    parsed = []
    for item in SafeSignature.parse_signature(raw, tx.safe_tx_hash):
        kind = kinds.get(item.signature_type)
        if kind is None:
            raise InputError(f"{item.signature_type.name} signatures are not supported", field="signature",
                             hint="sign with an owner's key (EOA) or approve the hash on chain")
        parsed.append(OwnerSignature(owner=to_checksum_address(item.owner), kind=kind,
                                     signature=bytes(item.signature)))
    return parsed


def encode_signatures(signatures: Iterable[OwnerSignature]) -> bytes:
    """Concatenated in ascending owner order, one per owner: Safe v1.4.1 rejects any other order (GS026)."""
    by_owner = {s.owner.lower(): s for s in signatures}
    return b"".join(by_owner[owner].signature for owner in sorted(by_owner, key=lambda a: int(a, 16)))


EXEC_TRANSACTION = "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"


def exec_calldata(tx: SafeTxData, signatures: Iterable[OwnerSignature]) -> bytes:
    """Calldata of Safe.execTransaction for this tx with these signatures (sorted by owner)."""
    from eth_abi import encode as abi_encode
    from eth_utils import function_signature_to_4byte_selector

    types = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"]
    return function_signature_to_4byte_selector(EXEC_TRANSACTION) + abi_encode(types, [
        tx.to, tx.value, tx.data, tx.operation, tx.safe_tx_gas, tx.base_gas, tx.gas_price, tx.gas_token,
        tx.refund_receiver, encode_signatures(signatures)])
