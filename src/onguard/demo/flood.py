"""A flood of junk pending transactions for the pre-emption benches and tests: cheap transfers of a watched token
from many throw-away senders, signed locally and sent raw in batched JSON-RPC (thousands a second)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from onguard.demo.world import TOKEN, Roles, contract, dev_account

SEND_BATCH = 500            # raw transactions per JSON-RPC batch
JUNK_GAS = 60_000
JUNK_TIP = 1                # wei per gas: junk pays (almost) nothing above the base fee


@dataclass(frozen=True, slots=True)
class Flood:
    raw: tuple[bytes, ...]      # signed, in sending order
    senders: tuple[str, ...]


def prepare_flood(w3: Web3, token: str, count: int, senders: int = 20) -> Flood:
    """`count` signed transfers of `token` (1 unit each) from `senders` fresh accounts, each funded with gas money
    and tokens (mined now, so mining must still be on)."""
    accounts: list[LocalAccount] = [Account.from_key(secrets.token_bytes(32)) for _ in range(senders)]
    minter = dev_account(Roles.DEPLOYER).address
    asset = contract(w3, "TestToken", token)
    for account in accounts:
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        w3.eth.wait_for_transaction_receipt(
            asset.functions.mint(account.address, count * TOKEN).transact({"from": minter}))
    chain_id = w3.eth.chain_id
    base_fee = int(w3.eth.get_block("latest")["baseFeePerGas"])
    transfer = asset.functions.transfer(dev_account(Roles.DEPOSITORS[0]).address, 1)
    data = transfer._encode_transaction_data()
    raw = []
    for number in range(count):
        account = accounts[number % senders]
        tx = {"chainId": chain_id, "nonce": number // senders, "to": token, "data": data, "value": 0,
              "gas": JUNK_GAS, "maxPriorityFeePerGas": JUNK_TIP, "maxFeePerGas": 4 * base_fee + JUNK_TIP}
        raw.append(bytes(account.sign_transaction(tx).raw_transaction))
    return Flood(raw=tuple(raw), senders=tuple(a.address for a in accounts))


def send_raw(rpc_url: str, raw: tuple[bytes, ...] | list[bytes]) -> int:
    """Sends signed transactions in batches; returns how many the node accepted."""
    accepted = 0
    with requests.Session() as session:
        for start in range(0, len(raw), SEND_BATCH):
            chunk = raw[start:start + SEND_BATCH]
            payload = [{"jsonrpc": "2.0", "id": start + i, "method": "eth_sendRawTransaction",
                        "params": ["0x" + item.hex()]} for i, item in enumerate(chunk)]
            answers = session.post(rpc_url, json=payload, timeout=60).json()
            accepted += sum(1 for answer in answers if "result" in answer)
    return accepted
