"""Benchmark: does the pending path's cost grow with the work, not faster? Call policies (1, 20, 200) spread over
watched contracts (1, 10, 100); 20,000 pending transactions as the node pushes them (JSON quantities and hex),
80% deposits to a watched vault, 10% redeemFor to a watched vault, 10% calls to other contracts. Each goes
through what the daemon does to it on one core, no I/O: normalise and decode (the mempool source), triage
(lane), and the call policies that can trip on it with the head's state at hand (Guardian.on_pending's synchronous
path). Simulate policies are not here: their cost is the node's (bench/flood.py measures them end to end).

The daemon's part is timed on two clocks: the wall clock (what a pending transaction waits) and this process's CPU
time, which does not count the time the OS gives other processes: on a shared machine the wall clock doubles when
the load average reaches twice the cores, the CPU time much less. "judged" is how many policies a transaction was
shown on average (the call policies on its contract that watch its function).

Run: .venv/bin/python bench/scaling.py [--items 20000] [--repeat 3] [--policies 1 20 200] [--contracts 1 10 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from eth_utils import to_checksum_address
from web3 import Web3

from onguard.actions import parse_action
from onguard.chain.abi import load_abi
from onguard.config import WatchedContract
from onguard.errors import ConfigError
from onguard.observations import BlockObservation
from onguard.paths import ARTIFACTS_DIR
from onguard.policies.engine import PolicyEngine
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.loader import load_policy
from onguard.sources.blocks import decode_transaction
from onguard.sources.mempool import PendingTransaction, normalise_transaction
from onguard.sources.triage import Triage
from onguard.tomlfields import Table

TOKEN = 10**18
VAULT_ABI = ARTIFACTS_DIR / "Vault.sol" / "Vault.json"
HEADER = 'description = "bench"\nseverity = "high"\nresponse = ["pause"]\n'
TEMPLATES = [
    """kind = "call"
[match]
contract = "{contract}"
functions = ["grantRole", "revokeRole", "renounceRole"]
where = "tx.from != contracts.{contract}"
""",
    """kind = "call"
[match]
contract = "{contract}"
function = "redeemFor"
where = "args.owner != tx.from and args.shares > 1_000_000_000e18"
""",
    """kind = "call"
[match]
contract = "{contract}"
function = "deposit(uint256,address)"
where = "args.assets > 50_000_000e18 and tx.value == 0"
""",
]


def address(n: int) -> str:
    return to_checksum_address(f"0x{n:040x}")


def watched(count: int) -> dict[str, WatchedContract]:
    abi = load_abi(VAULT_ABI)
    return {f"vault{i}": WatchedContract(name=f"vault{i}", address=address(0x10000 + i), abi=abi)
            for i in range(count)}


def policies(count: int, contracts: dict[str, WatchedContract], folder: Path) -> list:
    first = next(iter(contracts))
    actions = {"pause": parse_action("pause", Table({"contract": first, "call": "pause()", "done_when": "paused()"},
                                                    file="bench", prefix="actions.pause", error=ConfigError),
                                     contracts)}
    env = PolicyEnv(contracts=MappingProxyType(contracts), actions=MappingProxyType(actions))
    names = list(contracts)
    loaded = []
    for index in range(count):
        path = folder / f"{index:03d}.toml"
        body = TEMPLATES[index % len(TEMPLATES)].format(contract=names[index % len(names)])
        path.write_text(f'id = "p{index}"\n' + HEADER + body)
        loaded.append(load_policy(path, env))
    return loaded


def node_transactions(count: int, contracts: dict[str, WatchedContract], rng: random.Random) -> list[dict]:
    """Pending transactions as a node pushes them on newPendingTransactions (full objects, hex quantities)."""
    abi = json.loads(VAULT_ABI.read_text())["abi"]
    vault = Web3().eth.contract(abi=abi)
    users = [address(0x1000 + i) for i in range(500)]
    addresses = [c.address for c in contracts.values()]
    items = []
    for number in range(count):
        user = rng.choice(users)
        kind = number % 10
        if kind < 8:
            to, data = rng.choice(addresses), vault.encode_abi("deposit", [rng.randrange(1, 10**6) * TOKEN, user])
        elif kind == 8:
            to, data = rng.choice(addresses), vault.encode_abi("redeemFor", [rng.choice(users), user, TOKEN])
        else:
            to, data = address(0x900000 + number), "0x38ed1739" + "00" * 160
        items.append({"hash": f"0x{number:064x}", "from": user.lower(), "to": to.lower(), "input": data,
                      "nonce": hex(number), "value": "0x0", "gas": "0x7a120", "type": "0x2", "chainId": "0x7a69",
                      "maxFeePerGas": hex(30 * 10**9), "maxPriorityFeePerGas": hex(10**9), "v": "0x1",
                      "r": "0x" + "11" * 32, "s": "0x" + "22" * 32, "accessList": []})
    return items


def measure(items: list[dict], contracts: dict[str, WatchedContract],
            loaded: list) -> tuple[float, float, float, int, int]:
    """Seconds for the source's part (normalise, decode) and the guardian's (triage, call policies) on the wall
    clock, the guardian's in CPU time; policies shown a transaction and findings, in all."""
    by_address = {c.address.lower(): c for c in contracts.values()}
    engine = PolicyEngine(loaded)
    triage = Triage(by_address)
    head = BlockObservation(31337, 1, "0x" + "00" * 32, "0x" + "00" * 32, 1_700_000_000, 10**9)
    state = {spec: 0 for policy in loaded for spec in policy.evaluator().reads}
    started = time.perf_counter()
    pending = []
    for item in items:
        raw = normalise_transaction(item)
        pending.append(PendingTransaction(raw=MappingProxyType(raw), observation=decode_transaction(
            raw, 31337, by_address), seen_at=started, hash=item["hash"]))
    decoded, cpu = time.perf_counter(), time.process_time()
    judged = findings = 0
    for tx in pending:
        triage.lane(tx.raw)
        result = engine.judge_call(tx, state, head)
        judged += len(result.evaluated)
        findings += len(result.findings)
    return decoded - started, time.perf_counter() - decoded, time.process_time() - cpu, judged, findings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policies", type=int, nargs="+", default=[1, 20, 200], help="policy counts to run")
    parser.add_argument("--contracts", type=int, nargs="+", default=[1, 10, 100], help="watched contract counts")
    args = parser.parse_args()
    rng = random.Random(11)
    print(f"{args.items:,} pending transactions, one core, best of {args.repeat}; per transaction: source "
          f"(normalise + decode) + guardian (triage + call policies); load average {os.getloadavg()[0]:.2f}")
    print("policies  watched   source µs  guardian µs  guardian cpu µs  total µs   pending tx/s judged  "
          "judged  µs per policy per tx")
    for policy_count in args.policies:
        for contract_count in args.contracts:
            contracts = watched(contract_count)
            with tempfile.TemporaryDirectory() as folder:
                loaded = policies(policy_count, contracts, Path(folder))
            items = node_transactions(args.items, contracts, rng)
            runs = [measure(items, contracts, loaded) for _ in range(args.repeat)]
            source = min(r[0] for r in runs) / args.items * 1e6
            guardian = min(r[1] for r in runs) / args.items * 1e6
            cpu = min(r[2] for r in runs) / args.items * 1e6
            judged = runs[0][3] / args.items
            total = source + guardian
            print(f"{policy_count:>8}  {contract_count:>7}  {source:>10.1f}  {guardian:>11.1f}  {cpu:>15.1f}  "
                  f"{total:>8.1f}  {1e6 / total:>19,.0f}  {judged:>6.1f}  {guardian / policy_count:>20.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
