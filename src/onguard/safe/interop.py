"""The Safe ecosystem's file formats, in and out: a multisig transaction as the Safe Transaction Service returns it
(`safeTxHash`, `confirmations[]`, numbers as strings) or accepts it (`contractTransactionHash`, `sender`,
`signature`, `origin` of at most 200 characters), and Safe{Wallet} Transaction Builder batch files. Pure: every
check that needs the chain (owners, approved hashes) is the caller's."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import collapse_if_tuple, function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes

from onguard.errors import InputError
from onguard.safe.tx import BatchCall, OwnerSignature, SafeTxData, approved_hash, encode_signatures, \
    parse_signatures

ORIGIN = "onguard"          # the service's `origin`: who proposed it (the service caps it at 200 characters)
ORIGIN_LIMIT = 200
OWN_FIELD = "onguard"       # our own fields (purpose, the Safe's state) ride in one key the service ignores


@dataclass(frozen=True, slots=True)
class SafeSnapshot:
    """The Safe's state a file carries, so that it can be reviewed and signed with no node."""

    chain_id: int
    nonce: int
    threshold: int
    owners: tuple[str, ...]
    version: str

    def as_json(self) -> dict[str, Any]:
        return {"chainId": self.chain_id, "nonce": self.nonce, "threshold": self.threshold,
                "owners": list(self.owners), "version": self.version}


@dataclass(frozen=True, slots=True)
class ImportedTx:
    tx: SafeTxData
    signatures: tuple[OwnerSignature, ...]
    purpose: str
    snapshot: SafeSnapshot | None
    executed_in: str | None     # the service says it was executed (in this transaction)
    proposer: str | None        # who proposed it to the service (an owner or a delegate)


def read_json(path: Path) -> dict[str, Any]:
    try:
        item = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except (OSError, ValueError):
        raise InputError("not a JSON file", file=str(path),
                         hint="expected a transaction from the Safe Transaction Service or `onguard proposals "
                              "export`, or a Transaction Builder batch") from None
    if not isinstance(item, dict):
        raise InputError("expected a JSON object", file=str(path))
    return item


def is_tx_builder_batch(item: Mapping[str, Any]) -> bool:
    return isinstance(item.get("transactions"), list) and "meta" in item


class _Fields:
    """Reads one JSON object's fields, naming file and field on any error."""

    def __init__(self, item: Mapping[str, Any], file: str, prefix: str = "") -> None:
        self.item, self.file, self.prefix = item, file, prefix

    def fail(self, field: str, message: str, hint: str | None = None) -> InputError:
        return InputError(message, file=self.file, field=self.prefix + field, hint=hint)

    def get(self, field: str, required: bool = True) -> Any:
        if field not in self.item or (required and self.item[field] is None):
            if required:
                raise self.fail(field, "missing")
            return None
        return self.item[field]

    def integer(self, field: str, default: int | None = None) -> int:
        value = self.get(field, required=default is None)
        if value is None:
            return default  # type: ignore[return-value]
        try:
            number = int(str(value), 0) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise self.fail(field, f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or number < 0:
            raise self.fail(field, f"{value!r} is not a non-negative whole number")
        return number

    def address(self, field: str, default: str | None = None) -> str:
        value = self.get(field, required=default is None)
        if value is None:
            return default  # type: ignore[return-value]
        try:
            return to_checksum_address(str(value))
        except ValueError:
            raise self.fail(field, f"{value!r} is not an address") from None

    def hex_bytes(self, field: str) -> bytes:
        value = self.get(field, required=False)
        if value in (None, "", "0x"):
            return b""
        try:
            return bytes(HexBytes(str(value)))
        except ValueError:
            raise self.fail(field, "not 0x-prefixed hex") from None


def parse_service_tx(item: Mapping[str, Any], file: str, chain_id: int, safe: str) -> ImportedTx:
    """A multisig transaction in the service's format (its API's answer, its proposal body, or our export): the
    hash recomputed from the fields must be the one the file claims, and each confirmation must recover to the
    owner it names."""
    fields = _Fields(item, file)
    if "chainId" in item and fields.integer("chainId") != chain_id:
        raise fields.fail("chainId", f"the file is for chain {item['chainId']}, the config for chain {chain_id}: "
                                     "refused")
    if fields.address("safe", default=safe).lower() != safe.lower():
        raise fields.fail("safe", f"the file is for the Safe {item['safe']}, not {safe}")
    zero = "0x" + "00" * 20
    tx = SafeTxData(safe=to_checksum_address(safe), chain_id=chain_id, to=fields.address("to"),
                    value=fields.integer("value", 0), data=fields.hex_bytes("data"),
                    operation=fields.integer("operation", 0), safe_tx_gas=fields.integer("safeTxGas", 0),
                    base_gas=fields.integer("baseGas", 0), gas_price=fields.integer("gasPrice", 0),
                    gas_token=fields.address("gasToken", zero), refund_receiver=fields.address("refundReceiver", zero),
                    nonce=fields.integer("nonce"))
    if tx.operation not in (0, 1):
        raise fields.fail("operation", f"{tx.operation} is neither 0 (CALL) nor 1 (DELEGATECALL)")
    hash_field = "safeTxHash" if "safeTxHash" in item else "contractTransactionHash"
    claimed = str(fields.get(hash_field)).lower()
    if tx.safe_tx_hash_hex != claimed:
        raise fields.fail(hash_field, f"{hash_field} does not match the transaction's fields: the file was altered "
                                      "(or made for another Safe or chain); refused",
                          hint=f"the fields hash to {tx.safe_tx_hash_hex} on chain {chain_id}")
    own = item.get(OWN_FIELD) if isinstance(item.get(OWN_FIELD), dict) else {}
    return ImportedTx(tx=tx, signatures=tuple(_signatures(item, fields, tx)), purpose=_purpose(item, own),
                      snapshot=_snapshot(own, file),
                      executed_in=item.get("transactionHash") if item.get("isExecuted") else None,
                      proposer=fields.address("proposer") if item.get("proposer") else None)


def _signatures(item: Mapping[str, Any], fields: _Fields, tx: SafeTxData) -> list[OwnerSignature]:
    confirmations = item.get("confirmations")
    if isinstance(confirmations, list) and confirmations:
        return [_confirmation(c, _Fields(c, fields.file, f"confirmations[{i}].") if isinstance(c, dict) else None,
                              fields, i, tx) for i, c in enumerate(confirmations)]
    blob = item.get("signature") or item.get("signatures")
    if not blob:
        return []
    try:
        return parse_signatures(tx, str(blob))
    except InputError as exc:
        raise fields.fail("signature", exc.message.removeprefix("signature: ")) from None


def _confirmation(item: Any, fields: _Fields | None, parent: _Fields, index: int,
                  tx: SafeTxData) -> OwnerSignature:
    if fields is None:
        raise parent.fail(f"confirmations[{index}]", "expected an object with owner, signature, signatureType")
    owner = fields.address("owner")
    kind = str(fields.get("signatureType", required=False) or "EOA")
    if kind == "APPROVED_HASH":
        return approved_hash(owner)
    if kind == "CONTRACT_SIGNATURE":
        raise fields.fail("signatureType", f"{owner} signed as a contract (EIP-1271): not supported for import",
                          hint="its owners sign here with `onguard proposals sign ID --for-safe OWNER_SAFE`, or it "
                               "approves the hash on chain (approveHash)")
    try:
        (signature,) = parse_signatures(tx, str(fields.get("signature")))
    except (InputError, ValueError) as exc:
        raise fields.fail("signature", getattr(exc, "message", str(exc)).removeprefix("signature: ")) from None
    if signature.owner.lower() != owner.lower():
        raise fields.fail("signature", f"recovers to {signature.owner}, not to {owner} who it claims to be from: "
                                       "signed over other content; refused")
    return signature


def _purpose(item: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    if own.get("purpose"):
        return str(own["purpose"])
    origin = item.get("origin")
    try:
        named = json.loads(origin) if isinstance(origin, str) else None
    except ValueError:
        named = None
    if isinstance(named, dict) and named.get("name"):
        return f"from Safe{{Wallet}}: {named['name']}"
    return f"imported ({origin})" if origin else "imported"


def _snapshot(own: Mapping[str, Any], file: str) -> SafeSnapshot | None:
    state = own.get("safeState")
    if not isinstance(state, dict):
        return None
    fields = _Fields(state, file, f"{OWN_FIELD}.safeState.")
    owners = fields.get("owners")
    if not isinstance(owners, list) or not owners:
        raise fields.fail("owners", "expected the list of the Safe's owners")
    return SafeSnapshot(chain_id=fields.integer("chainId"), nonce=fields.integer("nonce"),
                        threshold=fields.integer("threshold"),
                        owners=tuple(_Fields({"owner": o}, file, fields.prefix + "owners.").address("owner")
                                     for o in owners), version=str(fields.get("version")))


def export_tx(tx: SafeTxData, signatures: Sequence[OwnerSignature], purpose: str,
              snapshot: SafeSnapshot | None) -> dict[str, Any]:
    """What the service's proposal endpoint takes (sender: a signing owner, as it requires; origin within its
    limit), plus chainId (a file is not silently taken to another chain) and our own fields: the purpose, and the
    Safe's state so the file can be reviewed and signed offline."""
    sorted_signatures = sorted(signatures, key=lambda s: int(s.owner, 16))
    payload: dict[str, Any] = {
        "safe": tx.safe, "chainId": tx.chain_id, "to": tx.to, "value": str(tx.value),
        "data": "0x" + tx.data.hex() if tx.data else None, "operation": tx.operation,
        "safeTxGas": str(tx.safe_tx_gas), "baseGas": str(tx.base_gas), "gasPrice": str(tx.gas_price),
        "gasToken": tx.gas_token, "refundReceiver": tx.refund_receiver, "nonce": tx.nonce,
        "contractTransactionHash": tx.safe_tx_hash_hex,
        "sender": sorted_signatures[0].owner if sorted_signatures else None,
        "signature": "0x" + encode_signatures(signatures).hex() if signatures else None,
        "origin": ORIGIN,
        OWN_FIELD: {"purpose": purpose, **({"safeState": snapshot.as_json()} if snapshot else {})}}
    return payload


def approval_batch(tx: SafeTxData, owner_safe: str | None) -> dict[str, Any]:
    """A Transaction Builder batch with one call, approveHash(this tx's hash) on its Safe: how an owner that is
    itself a Safe approves (through Safe{Wallet}, or onguard configured for that Safe)."""
    return {"version": "1.0", "chainId": str(tx.chain_id), "createdAt": 0,
            "meta": {"name": f"approve Safe tx {tx.safe_tx_hash_hex} of the Safe {tx.safe}",
                     "description": f"nonce {tx.nonce} of {tx.safe}; check the hash against the proposal before "
                                    "signing", "txBuilderVersion": "1.16.5",
                     **({"createdFromSafeAddress": owner_safe} if owner_safe else {})},
            "transactions": [{"to": tx.safe, "value": "0", "data": None,
                              "contractMethod": {"inputs": [{"internalType": "bytes32", "name": "hashToApprove",
                                                             "type": "bytes32"}],
                                                 "name": "approveHash", "payable": False},
                              "contractInputsValues": {"hashToApprove": tx.safe_tx_hash_hex}}]}


def parse_tx_builder(item: Mapping[str, Any], file: str, chain_id: int, safe: str) -> tuple[list[BatchCall], str]:
    """A Transaction Builder batch file's calls (raw `data`, or `contractMethod` + `contractInputsValues` encoded
    as the Transaction Builder does) and its name: (calls, purpose)."""
    fields = _Fields(item, file)
    if fields.integer("chainId") != chain_id:  # a string in these files
        raise fields.fail("chainId", f"the batch is for chain {item['chainId']}, the config for chain {chain_id}")
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    made_for = meta.get("createdFromSafeAddress")
    if made_for and _Fields(meta, file, "meta.").address("createdFromSafeAddress").lower() != safe.lower():
        raise fields.fail("meta.createdFromSafeAddress", f"the batch was made for the Safe {made_for}, not {safe}")
    transactions = item["transactions"]
    if not transactions:
        raise fields.fail("transactions", "the batch holds no transaction")
    calls = []
    for index, entry in enumerate(transactions):
        if not isinstance(entry, dict):
            raise fields.fail(f"transactions[{index}]", "expected an object with to, value, data")
        calls.append(_builder_call(_Fields(entry, file, f"transactions[{index}].")))
    name = str(meta.get("name") or "Transaction Builder batch")
    description = meta.get("description")
    return calls, f"{name}: {description}" if description else name


def _builder_call(fields: _Fields) -> BatchCall:
    to, value = fields.address("to"), fields.integer("value", 0)
    data = fields.hex_bytes("data")
    method = fields.item.get("contractMethod")
    if data or not method:
        return BatchCall(to=to, value=value, data=data)
    if not isinstance(method, dict) or not isinstance(method.get("inputs"), list) or not method.get("name"):
        raise fields.fail("contractMethod", "expected name and inputs")
    values = fields.item.get("contractInputsValues") or {}
    types = [collapse_if_tuple(i) for i in method["inputs"]]
    signature = f"{method['name']}({','.join(types)})"
    arguments = []
    for spec, type_ in zip(method["inputs"], types, strict=True):
        name = spec.get("name", "")
        if name not in values:
            raise fields.fail(f"contractInputsValues.{name}", "missing")
        try:
            arguments.append(_builder_value(spec, values[name]))
        except (ValueError, TypeError, KeyError) as exc:
            raise fields.fail(f"contractInputsValues.{name}", f"{values[name]!r} is not a valid {type_} ({exc})") \
                from None
    try:
        encoded = abi_encode(types, arguments)
    except Exception as exc:  # eth_abi raises several unrelated types for a value that does not fit
        raise fields.fail("contractInputsValues", f"cannot encode {signature}: {exc}") from None
    return BatchCall(to=to, value=value, data=function_signature_to_4byte_selector(signature) + encoded)


def _builder_value(spec: Mapping[str, Any], value: Any) -> Any:
    """A Transaction Builder input value (always a string; arrays and tuples as JSON) as eth_abi takes it."""
    type_ = spec["type"]
    if type_.endswith("]"):
        items = json.loads(value) if isinstance(value, str) else value
        element = {**spec, "type": type_[: type_.rindex("[")]}
        return [_builder_value(element, v) for v in items]
    if type_ == "tuple":
        items = json.loads(value) if isinstance(value, str) else value
        components = spec["components"]
        if isinstance(items, dict):
            items = [items[c["name"]] for c in components]
        return tuple(_builder_value(c, v) for c, v in zip(components, items, strict=True))
    text = str(value).strip()
    if type_ == "address":
        return to_checksum_address(text)
    if type_.startswith(("uint", "int")):
        return int(text, 0)
    if type_ == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError("expected true or false")
        return text.lower() == "true"
    if type_.startswith("bytes"):
        return bytes(HexBytes(text))
    if type_ == "string":
        return str(value)
    raise ValueError(f"type {type_} not supported")
