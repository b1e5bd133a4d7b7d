"""The bare special-purpose guardian of bench/sidebyside.py: subscribes to the node's full pending transactions,
and on the first one calling `redeemFor` on the vault signs the module's pause and sends it. Nothing else: no
policies, no simulation, no records, no retries. The floor a general engine is compared with.

Run: python bench/bare_guardian.py WS_URL MODULE VAULT CHAIN_ID  (the guardian key in ONGUARD_BENCH_GUARDIAN_KEY)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import websockets
from eth_account import Account
from eth_utils import keccak, to_checksum_address

DRAIN = keccak(text="redeemFor(address,address,uint256)")[:4].hex()
PAUSE = keccak(text="pause()")[:4]
EXECUTE = keccak(text="execute(address,uint256,bytes,uint8)")[:4]
GAS = 200_000


def execute_pause(vault: str) -> bytes:
    """module.execute(vault, 0, pause(), Call), ABI-encoded by hand."""
    word = lambda n: n.to_bytes(32, "big")  # noqa: E731
    return (EXECUTE + bytes(12) + bytes.fromhex(vault[2:]) + word(0) + word(128) + word(0)
            + word(len(PAUSE)) + PAUSE + bytes(28))


async def guard(ws_url: str, module: str, vault: str, chain_id: int) -> None:
    account = Account.from_key(os.environ["ONGUARD_BENCH_GUARDIAN_KEY"])
    calldata = execute_pause(vault)
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionCount",
                                  "params": [account.address, "pending"]}))
        nonce = int(json.loads(await ws.recv())["result"], 16)
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe",
                                  "params": ["newPendingTransactions", True]}))
        json.loads(await ws.recv())
        print("ready", flush=True)
        async for message in ws:
            tx = json.loads(message).get("params", {}).get("result")
            if not isinstance(tx, dict) or (tx.get("to") or "").lower() != vault.lower():
                continue
            if not tx.get("input", "").startswith("0x" + DRAIN):
                continue
            tip = 2 * int(tx.get("maxPriorityFeePerGas") or tx["gasPrice"], 16) + 10**9  # outbid the drain
            fee_cap = max(int(tx.get("maxFeePerGas") or tx["gasPrice"], 16), tip) + tip
            signed = account.sign_transaction({"to": to_checksum_address(module), "data": calldata, "nonce": nonce,
                                               "gas": GAS, "maxFeePerGas": fee_cap, "maxPriorityFeePerGas": tip,
                                               "chainId": chain_id, "value": 0, "type": 2})
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "eth_sendRawTransaction",
                                      "params": ["0x" + signed.raw_transaction.hex()]}))
            async for answer in ws:  # off the clock: the observer has timed the pause when it went pending
                if json.loads(answer).get("id") == 3:
                    print("sent", tx["hash"], answer, flush=True)
                    return


if __name__ == "__main__":
    asyncio.run(guard(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
