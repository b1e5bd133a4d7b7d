"""Benchmark: 20 loaded policies of every kind evaluated against 10,000 decoded events and 10,000 decoded
transactions (1,000 blocks of 10 + 10), state values given, so the figure is the engine's own cost per policy
per item. The goal from the policy-language issue: under 20 µs per policy per item on one core.

Run: .venv/bin/python bench/policies.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from eth_utils import to_checksum_address

from onguard.actions import parse_action
from onguard.chain.abi import load_abi
from onguard.config import WatchedContract
from onguard.errors import ConfigError
from onguard.observations import BlockBatch, BlockObservation, LogObservation, TransactionObservation
from onguard.paths import ARTIFACTS_DIR
from onguard.policies.engine import PolicyEngine
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.loader import KINDS, load_policy
from onguard.tomlfields import Table

BLOCKS = 1_000
EVENTS_PER_BLOCK = 10
TXS_PER_BLOCK = 10
TOKEN = 10**18


def address(n: int) -> str:
    return to_checksum_address(f"0x{n:040x}")


CONTRACTS = {
    name: WatchedContract(name=name, address=address(index + 1),
                          abi=load_abi(ARTIFACTS_DIR / f"{artifact}.sol" / f"{artifact}.json"))
    for index, (name, artifact) in enumerate(
        [("vault", "Vault"), ("breaker", "CircuitBreaker"), ("oracle", "PriceOracle"), ("asset", "TestToken")])
}
ACTIONS = {"pause_vault": parse_action("pause_vault", Table(
    {"contract": "vault", "call": "pause()", "done_when": "paused()"}, file="bench", prefix="actions.pause_vault",
    error=ConfigError), CONTRACTS)}
HEADER = 'description = "bench"\nseverity = "high"\nresponse = ["pause_vault"]\n'

POLICIES = {
    "event-drain": """kind = "event"
[match]
contract = "vault"
event = "Withdraw"
[aggregate]
function = "sum"
of = "assets"
window_blocks = 5
[reads]
assets = "vault.totalAssets()"
[trigger]
condition = "value > 25% * (state.assets + value)"
""",
    "event-per-receiver": """kind = "event"
[match]
contract = "vault"
event = "Withdraw"
where = "args.receiver != args.owner"
[aggregate]
function = "count"
window_seconds = 600
group_by = "receiver"
[trigger]
condition = "value > 50"
""",
    "event-big-one": """kind = "event"
[match]
contract = "vault"
event = "Withdraw"
[trigger]
condition = "args.assets > 1_000_000e18 or (args.receiver != args.owner and args.assets > 100_000e18)"
""",
    "event-deposits": """kind = "event"
[match]
contract = "vault"
event = "Deposit"
[aggregate]
function = "max"
of = "assets"
window_blocks = 20
[trigger]
condition = "value > 10_000_000e18"
""",
    "event-transfers": """kind = "event"
[match]
contract = "asset"
event = "Transfer"
where = "args.from == contracts.vault"
[aggregate]
function = "sum"
of = "value"
window_blocks = 10
[trigger]
condition = "value > 5_000_000e18"
""",
    "call-price": """kind = "call"
[match]
contract = "oracle"
function = "setPrice"
allow_from = ["0x00000000000000000000000000000000000000aa"]
""",
    "call-roles": """kind = "call"
[match]
contract = "vault"
functions = ["grantRole", "revokeRole", "renounceRole"]
where = "tx.from != contracts.breaker"
""",
    "call-redeem-for": """kind = "call"
[match]
contract = "vault"
function = "redeemFor"
where = "args.owner != tx.from and args.shares > 1_000e18"
""",
    "call-big-deposit": """kind = "call"
[match]
contract = "vault"
function = "deposit(uint256,address)"
where = "args.assets > 50_000_000e18 and tx.value == 0"
""",
    "state-solvent": """kind = "state"
[reads]
assets = "vault.totalAssets()"
supply = "vault.totalSupply()"
[trigger]
invariant = "state.assets >= state.supply * 99 / 100"
""",
    "state-cash": """kind = "state"
[reads]
cash = "asset.balanceOf(vault)"
paused = "vault.paused()"
[trigger]
invariant = "state.paused or state.cash > 100_000e18"
""",
    "outflow": """kind = "outflow"
[outflow]
token = "asset"
holder = "vault"
window_blocks = 10
[trigger]
condition = "net_outflow > 30% * holdings_before"
""",
}
if "delta" in KINDS:
    POLICIES["delta-tvl"] = """kind = "delta"
[reads]
tvl = "vault.totalAssets()"
[delta]
of = "tvl"
blocks = 10
[trigger]
condition = "drawdown > 30%"
"""
    POLICIES["delta-share-price"] = """kind = "delta"
[reads]
price = "vault.convertToAssets(1e18)"
[delta]
of = "price"
blocks = 1
[trigger]
condition = "change > 2%"
"""
if "oracle" in KINDS:
    POLICIES["oracle-twap"] = """kind = "oracle"
[oracle]
price = "oracle.price()"
updated_at = "oracle.updatedAt()"
reference = "twap"
twap_blocks = 20
[trigger]
condition = "deviation > 5% or jump > 10% or staleness > 3600"
"""
    POLICIES["oracle-band"] = """kind = "oracle"
[oracle]
price = "oracle.price()"
reference = "band"
band = ["0.5e18", "2e18"]
[trigger]
condition = "not in_band"
"""


def load_twenty(folder: Path) -> list:
    env = PolicyEnv(contracts=MappingProxyType(CONTRACTS), actions=MappingProxyType(ACTIONS))
    names = list(POLICIES)
    policies = []
    for index in range(20):
        name = names[index % len(names)]
        path = folder / f"{index:02d}-{name}.toml"
        path.write_text(f'id = "{name}-{index}"\n' + HEADER + POLICIES[name])
        policies.append(load_policy(path, env))
    return policies


def make_blocks(rng: random.Random) -> list[BlockBatch]:
    vault, asset, oracle = CONTRACTS["vault"], CONTRACTS["asset"], CONTRACTS["oracle"]
    users = [address(0x1000 + i) for i in range(50)]
    blocks = []
    for number in range(1, BLOCKS + 1):
        block = BlockObservation(31337, number, f"0x{number:064x}", f"0x{number - 1:064x}", 1_700_000_000 + 12 * number)
        logs = []
        for index in range(EVENTS_PER_BLOCK):
            user, other = rng.choice(users), rng.choice(users)
            amount = rng.randrange(1, 50_000) * TOKEN
            kind = index % 3
            if kind == 0:
                logs.append(LogObservation(31337, number, block.hash, f"0x{number:032x}{index:032x}", index, "vault",
                                           vault.address, "Withdraw", MappingProxyType(
                                               {"sender": user, "receiver": other, "owner": user,
                                                "assets": amount, "shares": amount})))
            elif kind == 1:
                logs.append(LogObservation(31337, number, block.hash, f"0x{number:032x}{index:032x}", index, "vault",
                                           vault.address, "Deposit", MappingProxyType(
                                               {"sender": user, "owner": user, "assets": amount, "shares": amount})))
            else:
                logs.append(LogObservation(31337, number, block.hash, f"0x{number:032x}{index:032x}", index, "asset",
                                           asset.address, "Transfer", MappingProxyType(
                                               {"from": vault.address if rng.random() < 0.5 else user,
                                                "to": other, "value": amount})))
        transactions = []
        for index in range(TXS_PER_BLOCK):
            user = rng.choice(users)
            amount = rng.randrange(1, 50_000) * TOKEN
            if index % 2:
                transactions.append(TransactionObservation(31337, f"0x{number:030x}{index:034x}", number, user,
                                                           vault.address, "vault", 0, b"", "deposit(uint256,address)",
                                                           MappingProxyType({"assets": amount, "receiver": user})))
            else:
                transactions.append(TransactionObservation(31337, f"0x{number:030x}{index:034x}", number, user,
                                                           oracle.address, "oracle", 0, b"", "setPrice(uint256)",
                                                           MappingProxyType({"newPrice": TOKEN})))
        blocks.append(BlockBatch(block=block, logs=tuple(logs), transactions=tuple(transactions)))
    return blocks


def state_for(engine_policies: list, block: int) -> dict:
    values = {}
    for policy in engine_policies:
        for spec in policy.evaluator().reads:
            if spec.output_type == "bool":
                values[spec] = False
            else:
                values[spec] = 10_000_000 * TOKEN + block
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        policies = load_twenty(Path(folder))
    blocks = make_blocks(rng)
    states = {b.block.number: state_for(policies, b.block.number) for b in blocks}
    items = BLOCKS * (EVENTS_PER_BLOCK + TXS_PER_BLOCK)
    kinds = sorted({p.common.kind for p in policies})
    best = float("inf")
    for _ in range(args.repeat):
        engine = PolicyEngine(policies)
        started = time.perf_counter()
        fired = 0
        for batch in blocks:
            result = engine.evaluate_offline(batch, {batch.block.number: states[batch.block.number]})
            fired += len(result.findings)
            assert not result.failures, result.failures[:1]
        best = min(best, time.perf_counter() - started)
    per_item = best / (len(policies) * items) * 1e6
    print(f"{len(policies)} policies ({', '.join(kinds)}) x {items:,} items "
          f"({BLOCKS * EVENTS_PER_BLOCK:,} events + {BLOCKS * TXS_PER_BLOCK:,} transactions in {BLOCKS:,} blocks): "
          f"{best:.2f} s, {per_item:.2f} µs per policy per item, {fired} findings")


if __name__ == "__main__":
    main()
