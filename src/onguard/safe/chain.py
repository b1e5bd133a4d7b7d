"""Synchronous reads and writes of a Safe for the CLI (signers' commands): owners, threshold, nonce, approved
hashes, the MultiSendCallOnly batches go through, simulating and executing execTransaction. The daemon's hot path
never calls this (it is blocking)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector
from hexbytes import HexBytes
from safe_eth.eth import EthereumClient
from safe_eth.safe.safe import SafeV141
from web3.exceptions import Web3Exception

from onguard.errors import ChainError, InputError
from onguard.safe.tx import KNOWN_MULTISEND_CALL_ONLY, MULTISEND_CALL_ONLY, SAFE_VERSION, OwnerSignature, \
    SafeTxData, SignatureKind, exec_calldata

RECEIPT_TIMEOUT = 120
_IS_VALID_SIGNATURE = function_signature_to_4byte_selector("isValidSignature(bytes,bytes)")
_EIP1271_LEGACY_MAGIC = bytes.fromhex("20c13b0b")
# The versions whose Safe tx hash (EIP-712 domain with chainId) and execTransaction onguard's encoding matches.
SUPPORTED_VERSIONS = ("1.3.0", "1.4.1")


@dataclass(frozen=True, slots=True)
class SafeState:
    address: str
    nonce: int
    threshold: int
    owners: tuple[str, ...]
    version: str = SAFE_VERSION

    def is_owner(self, address: str) -> bool:
        return address.lower() in {o.lower() for o in self.owners}


class SafeOnChain:
    def __init__(self, rpc_url: str | None, safe: str) -> None:
        """`rpc_url`: an http(s) endpoint (safe-eth-py speaks HTTP only); None when the config has none."""
        if rpc_url is None or not rpc_url.startswith(("http://", "https://")):
            raise ChainError("the Safe is read over HTTP(S), and no read endpoint is an http(s) URL",
                             hint="add the node's http:// or https:// endpoint to chain.rpc_urls (the daemon keeps "
                                  "using the WebSocket ones)")
        self.client = EthereumClient(rpc_url)
        self.w3 = self.client.w3
        self.address = self.w3.to_checksum_address(safe)
        self.contract = SafeV141(self.address, self.client).contract  # type: ignore[abstract]

    def _read(self, what: str, call: Any) -> Any:
        try:
            return call.call()
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"reading {what} of the Safe {self.address}: {exc}",
                             hint="check chain.rpc_url and safe.address") from None

    def chain_id(self) -> int:
        try:
            return int(self.w3.eth.chain_id)
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"no answer from the node: {type(exc).__name__}",
                             hint="check chain.rpc_url, or work offline from a file that carries the Safe's state "
                                  "(`onguard proposals export` writes one)") from None

    def retrieve_state(self) -> SafeState:
        functions = self.contract.functions
        version = str(self._read("VERSION", functions.VERSION()))
        if version not in SUPPORTED_VERSIONS:
            raise InputError(f"the Safe {self.address} is version {version}; onguard signs for Safe "
                             f"{' and '.join(SUPPORTED_VERSIONS)} only (older versions hash transactions "
                             "differently)", field="safe.address",
                             hint="upgrade the Safe (Safe{Wallet} offers the migration), or use another Safe")
        return SafeState(address=self.address, nonce=int(self._read("nonce", functions.nonce())),
                         threshold=int(self._read("threshold", functions.getThreshold())),
                         owners=tuple(self._read("owners", functions.getOwners())), version=version)

    def is_approved(self, owner: str, safe_tx_hash: bytes) -> bool:
        return int(self._read("approvedHashes", self.contract.functions.approvedHashes(owner, safe_tx_hash))) == 1

    def check_signatures(self, tx: SafeTxData, signatures: Iterable[OwnerSignature],
                         state: SafeState) -> list[OwnerSignature]:
        """The signatures that count now: from current owners, approved hashes actually approved on chain, a
        contract owner's signature only if the contract accepts it (EIP-1271)."""
        valid = []
        for signature in signatures:
            if not state.is_owner(signature.owner):
                continue
            if signature.kind == SignatureKind.APPROVED and not self.is_approved(signature.owner, tx.safe_tx_hash):
                continue
            if signature.kind == SignatureKind.CONTRACT and not self.contract_accepts(signature, tx):
                continue
            valid.append(signature)
        return valid

    def contract_accepts(self, signature: OwnerSignature, tx: SafeTxData) -> bool:
        """Asks the contract owner, as the Safe will in execTransaction: isValidSignature(preimage, payload) must
        return the EIP-1271 magic value of Safe's legacy interface (a nested Safe answers through its
        CompatibilityFallbackHandler; a missing handler or too few of its owners' signatures revert)."""
        data = _IS_VALID_SIGNATURE + abi_encode(["bytes", "bytes"], [tx.preimage, signature.signature])
        try:
            answer = self.w3.eth.call({"to": self.w3.to_checksum_address(signature.owner), "data": HexBytes(data)})
        except (Web3Exception, ValueError):
            return False
        return bytes(answer[:4]) == _EIP1271_LEGACY_MAGIC

    def has_code(self, address: str) -> bool:
        try:
            return len(self.w3.eth.get_code(self.w3.to_checksum_address(address))) > 0
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"reading the code at {address}: {exc}", hint="check chain.rpc_url") from None

    def retrieve_multisend(self) -> str:
        """The MultiSendCallOnly batches are sent through: Safe's v1.4.1 at its canonical address, else another
        canonical call-only version (same encoding) found on this chain."""
        ordered = [MULTISEND_CALL_ONLY, *sorted(KNOWN_MULTISEND_CALL_ONLY - {MULTISEND_CALL_ONLY.lower()})]
        for address in ordered:
            checksummed = self.w3.to_checksum_address(address)
            if self.has_code(checksummed):
                return checksummed
        raise ChainError(f"no Safe MultiSendCallOnly contract on chain {self.chain_id()} (looked at "
                         f"{MULTISEND_CALL_ONLY} and the other canonical addresses)",
                         hint="deploy Safe's MultiSendCallOnly v1.4.1 through the Safe singleton factory (it lands at "
                              "the canonical address), as the Safe deployments repository describes")

    def approve_hash(self, account: LocalAccount, safe_tx_hash: bytes) -> str:
        """Sends approveHash(hash) from an owner's key: the on-chain alternative to an off-chain signature."""
        return self._send(account, self.address, self.contract.encode_abi("approveHash", [safe_tx_hash]))

    def simulate(self, tx: SafeTxData, signatures: Sequence[OwnerSignature], sender: str) -> str | None:
        """None when execTransaction would succeed from `sender`, else the revert reason."""
        try:
            self.w3.eth.call({"from": sender, "to": self.address,
                              "data": HexBytes(exec_calldata(tx, signatures))})
            return None
        except (Web3Exception, ValueError) as exc:
            return str(exc)

    def simulate_call(self, tx: SafeTxData, views: Sequence[tuple[str, bytes]]) -> tuple[bool, str | None,
                                                                                        list[Any], list[Any]]:
        """Runs the Safe's inner calls as the Safe would (from the Safe, in order: each call of a MultiSend batch
        is a CALL from the Safe) with eth_simulateV1, reading `views` (target, calldata) before and after them:
        (succeeded, error, before, after) return data."""
        calls = tx.calls
        if not calls:
            return False, f"DELEGATECALL to {tx.to}, not a known MultiSendCallOnly: not simulated", [], []
        reads = [{"to": to, "data": HexBytes(data).to_0x_hex()} for to, data in views]
        inner = [{"from": self.address, "to": c.to, "data": HexBytes(c.data).to_0x_hex(), "value": hex(c.value)}
                 for c in calls]
        payload = {"blockStateCalls": [{"calls": [*reads, *inner, *reads]}], "validation": False}
        response = self.w3.provider.make_request("eth_simulateV1", [payload, "latest"])  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"eth_simulateV1 refused: {response['error']}",
                             hint="the node must support eth_simulateV1 (Anvil, geth 1.14+, reth)")
        results = response["result"][0]["calls"]
        ran = results[len(reads): len(reads) + len(inner)]
        failed = next((i for i, c in enumerate(ran) if int(c["status"], 16) != 1), None)
        error = None
        if failed is not None:
            error = (ran[failed].get("error") or {}).get("message", "reverted")
            if len(ran) > 1:
                error = f"call {failed + 1} of {len(ran)}: {error}"
        ret = lambda c: HexBytes(c["returnData"]) if int(c["status"], 16) == 1 else None  # noqa: E731
        return (failed is None, error, [ret(c) for c in results[: len(reads)]],
                [ret(c) for c in results[len(reads) + len(inner):]])

    def execute(self, tx: SafeTxData, signatures: Sequence[OwnerSignature], relayer: LocalAccount) -> Any:
        """Sends execTransaction from the relayer and returns the receipt (mined; status may be 0)."""
        tx_hash = self._send(relayer, self.address, exec_calldata(tx, signatures))
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT)

    def _send(self, account: LocalAccount, to: str, data: bytes) -> str:
        try:
            w3 = self.w3
            params: dict[str, Any] = {"from": account.address, "to": to, "data": HexBytes(data),
                                      "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                                      "chainId": w3.eth.chain_id}
            params["gas"] = int(w3.eth.estimate_gas(params) * 3 // 2) + 20_000  # type: ignore[arg-type]
            base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
            tip = int(w3.eth.max_priority_fee)
            params.update(maxPriorityFeePerGas=tip, maxFeePerGas=2 * base + tip, type=2)
            raw = account.sign_transaction(params).raw_transaction
            sent = w3.eth.send_raw_transaction(raw)
            receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=RECEIPT_TIMEOUT)
        except (Web3Exception, ValueError) as exc:
            raise InputError(f"the transaction was refused: {exc}",
                             hint="simulate it first (`onguard proposals show ID`); check the signatures, the "
                                  "sender's balance and the Safe's nonce") from None
        if receipt["status"] != 1:
            raise ChainError(f"transaction {sent.to_0x_hex()} reverted")
        return sent.to_0x_hex()

