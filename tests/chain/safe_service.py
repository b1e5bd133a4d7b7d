"""A local Safe Transaction Service (aiohttp on 127.0.0.1) implementing the endpoints onguard uses: proposing a
multisig transaction and listing a Safe's multisig transactions. A proposal body is checked as the service's
SafeMultisigTransactionSerializer checks it (field types, origin of at most 200 characters, the Safe tx hash
recomputed by safe-eth-py's SafeTx, each signature parsed by safe-eth-py's SafeSignature and recovering to an
owner, the sender an owner among the signers); listings are in the service's v2 response format."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from eth_utils import is_checksum_address, to_checksum_address
from hexbytes import HexBytes
from safe_eth.safe.safe_signature import SafeSignature
from safe_eth.safe.safe_tx import SafeTx

ZERO = "0x" + "00" * 20
REQUIRED = ("to", "value", "operation", "safeTxGas", "baseGas", "gasPrice", "nonce", "contractTransactionHash",
            "sender")


@dataclass
class TransactionService:
    chain_id: int
    owners: Callable[[str], list[str]]        # the Safe's owners, read from the chain at each request
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/safes/{safe}/multisig-transactions/", self.propose)
        app.router.add_get("/api/v2/safes/{safe}/multisig-transactions/", self.listing)
        return app

    async def propose(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        try:
            entry = self._validated(request.match_info["safe"], body)
        except ValueError as exc:
            return web.json_response({"nonFieldErrors": [str(exc)]}, status=422)
        known = self.transactions.setdefault(entry["safeTxHash"], entry)
        for confirmation in entry["confirmations"]:
            if confirmation["owner"] not in {c["owner"] for c in known["confirmations"]}:
                known["confirmations"].append(confirmation)
        return web.Response(status=201)

    def _validated(self, safe: str, body: dict[str, Any]) -> dict[str, Any]:
        if not is_checksum_address(safe):
            raise ValueError(f"{safe} is not a checksummed address")
        missing = [name for name in REQUIRED if body.get(name) is None]
        if missing:
            raise ValueError(f"missing {missing}")
        numbers = {name: _natural(body[name], name) for name in ("value", "operation", "safeTxGas", "baseGas",
                                                                  "gasPrice", "nonce")}
        if numbers["operation"] not in (0, 1):
            raise ValueError("operation must be 0 or 1")
        origin = body.get("origin")
        if origin is not None and len(origin) > 200:
            raise ValueError("origin: ensure this field has no more than 200 characters")
        data = HexBytes(body["data"]) if body.get("data") else b""
        safe_tx = SafeTx(None, safe, to_checksum_address(body["to"]), numbers["value"], data,  # type: ignore[arg-type]
                         numbers["operation"], numbers["safeTxGas"], numbers["baseGas"], numbers["gasPrice"],
                         body.get("gasToken") or ZERO, body.get("refundReceiver") or ZERO,
                         safe_nonce=numbers["nonce"], safe_version="1.4.1", chain_id=self.chain_id)
        safe_tx_hash = safe_tx.safe_tx_hash.to_0x_hex()
        if HexBytes(body["contractTransactionHash"]).to_0x_hex() != safe_tx_hash:
            raise ValueError(f"Contract-transaction-hash={safe_tx_hash} does not match provided contract-tx-hash")
        owners = self.owners(safe)
        sender = to_checksum_address(body["sender"])
        if sender not in owners:
            raise ValueError(f"Sender={sender} is not an owner or delegate. Current owners={owners}")
        signature = HexBytes(body.get("signature") or b"")
        if signature and len(signature) < 65:
            raise ValueError("signature: ensure this field has at least 65 hexadecimal chars")
        confirmations = []
        for parsed in SafeSignature.parse_signature(signature, HexBytes(safe_tx_hash)):
            if parsed.owner not in owners:
                raise ValueError(f"Signer={parsed.owner} is not an owner. Current owners={owners}")
            if parsed.owner in {c["owner"] for c in confirmations}:
                raise ValueError(f"Signature for owner={parsed.owner} is duplicated")
            confirmations.append({"owner": parsed.owner, "submissionDate": "2026-12-02T07:00:00Z",
                                  "transactionHash": None, "signature": HexBytes(parsed.export_signature()).to_0x_hex(),
                                  "signatureType": parsed.signature_type.name})
        if confirmations and sender not in {c["owner"] for c in confirmations}:
            raise ValueError(f"Signature does not match sender={sender}")
        return {"safe": safe, "to": to_checksum_address(body["to"]), "value": str(numbers["value"]),
                "data": HexBytes(data).to_0x_hex() if data else None, "operation": numbers["operation"],
                "gasToken": body.get("gasToken") or ZERO, "safeTxGas": str(numbers["safeTxGas"]),
                "baseGas": str(numbers["baseGas"]), "gasPrice": str(numbers["gasPrice"]),
                "refundReceiver": body.get("refundReceiver") or ZERO, "nonce": str(numbers["nonce"]),
                "executionDate": None, "submissionDate": "2026-12-02T07:00:00Z", "modified": "2026-12-02T07:00:00Z",
                "blockNumber": None, "transactionHash": None, "safeTxHash": safe_tx_hash, "proposer": sender,
                "proposedByDelegate": None, "executor": None, "isExecuted": False, "isSuccessful": None,
                "ethGasPrice": None, "maxFeePerGas": None, "maxPriorityFeePerGas": None, "gasUsed": None,
                "fee": None, "origin": origin or "{}", "dataDecoded": None, "confirmationsRequired": 2,
                "confirmations": confirmations, "trusted": True, "signatures": None}

    async def listing(self, request: web.Request) -> web.Response:
        safe = request.match_info["safe"]
        results = [t for t in self.transactions.values() if t["safe"] == safe]
        if request.query.get("executed") == "False":
            results = [t for t in results if not t["isExecuted"]]
        return web.json_response({"count": len(results), "next": None, "previous": None, "results": results})


def _natural(value: Any, name: str) -> int:
    number = int(value)  # the service's IntegerField takes numbers and numeric strings alike
    if number < 0 or str(value).strip() != str(number):
        raise ValueError(f"{name}: a valid integer is required")
    return number


@contextmanager
def running(service: TransactionService) -> Iterator[TransactionService]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(service.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        service.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(timeout=60), "the local Transaction Service did not start"
    try:
        yield service
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
