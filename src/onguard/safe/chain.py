"""Synchronous reads and writes of a Safe for the CLI (signers' commands): owners, threshold, nonce, approved
hashes, simulating and executing execTransaction. The daemon's hot path never calls this (it is blocking)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from safe_eth.eth import EthereumClient
from safe_eth.safe.safe import SafeV141
from web3.exceptions import Web3Exception

from onguard.errors import ChainError, InputError
from onguard.safe.tx import OwnerSignature, SafeTxData, SignatureKind, exec_calldata

RECEIPT_TIMEOUT = 120


@dataclass(frozen=True, slots=True)
class SafeState:
    address: str
    nonce: int
    threshold: int
    owners: tuple[str, ...]

    def is_owner(self, address: str) -> bool:
        return address.lower() in {o.lower() for o in self.owners}


class SafeOnChain:
    def __init__(self, rpc_url: str, safe: str) -> None:
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
        return int(self.w3.eth.chain_id)

    def retrieve_state(self) -> SafeState:
        functions = self.contract.functions
        return SafeState(address=self.address, nonce=int(self._read("nonce", functions.nonce())),
                         threshold=int(self._read("threshold", functions.getThreshold())),
                         owners=tuple(self._read("owners", functions.getOwners())))

    def is_approved(self, owner: str, safe_tx_hash: bytes) -> bool:
        return int(self._read("approvedHashes", self.contract.functions.approvedHashes(owner, safe_tx_hash))) == 1

    def check_signatures(self, tx: SafeTxData, signatures: Iterable[OwnerSignature],
                         state: SafeState) -> list[OwnerSignature]:
        """The signatures that count now: from current owners, approved hashes actually approved on chain."""
        valid = []
        for signature in signatures:
            if not state.is_owner(signature.owner):
                continue
            if signature.kind == SignatureKind.APPROVED and not self.is_approved(signature.owner, tx.safe_tx_hash):
                continue
            valid.append(signature)
        return valid

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
        """Runs the Safe's inner call as the Safe would (from the Safe) with eth_simulateV1, reading `views`
        (target, calldata) before and after it: (succeeded, error, before, after) return data."""
        reads = [{"to": to, "data": HexBytes(data).to_0x_hex()} for to, data in views]
        inner = {"from": self.address, "to": tx.to, "data": HexBytes(tx.data).to_0x_hex(), "value": hex(tx.value)}
        payload = {"blockStateCalls": [{"calls": [*reads, inner, *reads]}], "validation": False}
        response = self.w3.provider.make_request("eth_simulateV1", [payload, "latest"])  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"eth_simulateV1 refused: {response['error']}",
                             hint="the node must support eth_simulateV1 (Anvil, geth 1.14+, reth)")
        calls = response["result"][0]["calls"]
        target = calls[len(reads)]
        ok = int(target["status"], 16) == 1
        error = None if ok else (target.get("error") or {}).get("message", "reverted")
        ret = lambda c: HexBytes(c["returnData"]) if int(c["status"], 16) == 1 else None  # noqa: E731
        return ok, error, [ret(c) for c in calls[: len(reads)]], [ret(c) for c in calls[len(reads) + 1:]]

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
