"""Benchmark: onguard's daemon side by side with a bare special-purpose script (bench/bare_guardian.py), timed by an
independent observer. Each trial is a fresh Anvil with 1-second blocks (`--block-time 1`, the demo world loaded),
one contender running as its own process (`onguard run` with a call policy, `onguard run` with a simulate policy,
or the bare script), and an observer process subscribed to the node's own WebSocket (newPendingTransactions, full
objects) that stamps every pending transaction as it arrives. The attacker drains the vault 10% of its cash per
block through its flawed redeemFor (real transactions, mined by the interval miner) until the drain reverts or four
blocks have passed; the first drain is sent at a random point of a block. Per trial: attack pending → pause pending
on the observer's clock, whether the pause was mined before the attack in the attack's block, the vault's loss.
Contenders alternate trial by trial, so load on the machine falls on all of them alike. The `-ws` contenders are
the same daemons configured to simulate and send over WebSockets to the node (`simulation_urls` and
`[[response.endpoints]]` at its ws:// URL), as the bare script sends its pause; the default ones use HTTP.

Run: .venv/bin/python bench/sidebyside.py [--trials 10]
(`observe WS_URL` is the observer process: one JSON line per pending transaction, after a "ready" line.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import websockets
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.demo.world import Roles, World, build_world, contract, dev_account, write_config

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"
MAX_DRAINS = 4  # the victim's shares cover four slices of 10%
COALESCED_MS = 0.3  # less than signing alone takes: the observer's attack stamp came late
READY_LIMIT = 60.0  # seconds a contender may take to start (a bound so a broken one fails, not a timing)
CONTENDERS = ("onguard-call", "onguard-simulate", "bare")
# The same daemons with their simulations and the pause sent over WebSockets to the node (as the bare script sends
# its pause), where the defaults use HTTP: `--contenders onguard-call-ws,onguard-simulate-ws,bare`.
OVER_WEBSOCKETS = ("onguard-call-ws", "onguard-simulate-ws")
NO_GUARDIAN = "none"  # the control (--contenders none): the drain runs its course, showing what is at stake
POLICIES = {
    "onguard-call": """id = "redeem-for-only-by-the-safe"
description = "redeemFor moves someone else's shares: only the Safe may call it"
kind = "call"
severity = "critical"
response = ["pause_vault"]
[match]
contract = "vault"
functions = ["redeemFor"]
allow_from = ["{safe}"]
""",
    "onguard-simulate": """id = "vault-cash-guard"
description = "A pending transaction would take more than 5% of the vault's cash"
kind = "simulate"
severity = "critical"
response = ["pause_vault"]
[reads]
cash = "asset.balanceOf(vault)"
[trigger]
condition = "not reverted and after.cash < 95% * before.cash"
""",
}


# ---- the observer process ---------------------------------------------------------------------------------------


async def observe(ws_url: str) -> None:
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                  "params": ["newPendingTransactions", True]}))
        json.loads(await ws.recv())
        print("ready", flush=True)
        async for message in ws:
            seen = time.perf_counter_ns()
            tx = json.loads(message).get("params", {}).get("result")
            if isinstance(tx, dict):
                print(json.dumps({"t": seen, "hash": tx["hash"], "from": tx["from"].lower()}), flush=True)


# ---- the driver -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trial:
    contender: str
    latency_ms: float | None   # attack pending → pause pending, on the observer's clock
    pause_first: bool          # the pause mined before the first drain, in the drain's block
    loss_pct: float            # of the vault's cash before the attack
    offset_ms: float           # when in its block the first drain was sent
    sent_to_seen_ms: float | None  # the first drain's eth_sendRawTransaction called → the observer's stamp


def build_state(folder: Path) -> tuple[World, str]:
    """The demo world, built once on an automining Anvil, and its state dump (loaded into each trial's node)."""
    with start_anvil(log_path=folder / "build-anvil.log") as node:
        world = build_world(node.rpc_url)
        dump = Web3(Web3.HTTPProvider(node.rpc_url)).provider.make_request("anvil_dumpState", [])["result"]
    return world, dump


def start_contender(name: str, world: World, folder: Path, ws_url: str) -> subprocess.Popen:
    env = {**os.environ, KEY_ENV: dev_account(Roles.GUARDIAN).key.to_0x_hex()}
    if name == "bare":
        args = [sys.executable, str(ROOT / "bench" / "bare_guardian.py"), ws_url, world.module, world.vault,
                str(world.chain_id)]
    elif name == NO_GUARDIAN:
        args = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]
    else:
        policies = folder / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "bench.toml").write_text(POLICIES[name.removesuffix("-ws")].replace("{safe}", world.safe))
        (policies / "vault-drain.toml").write_text((ROOT / "policies" / "vault-drain.toml").read_text())
        config = write_config(world, folder, key_env=KEY_ENV, policies_dir=policies, mempool_ws=ws_url)
        if name in OVER_WEBSOCKETS:  # [mempool] is the file's last table: the key lands in it
            config.write_text(config.read_text() + f'simulation_urls = ["{ws_url}"]\n\n'
                              f'[[response.endpoints]]\nurl = "{ws_url}"\nprivate = false\n')
        args = [str(ROOT / ".venv" / "bin" / "onguard"), "run", "--config", str(config)]
    with open(folder / f"{name}.log", "w") as log:  # the process writes to its own copy of the descriptor
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)


def wait_ready(process: subprocess.Popen, log: Path, marker: str) -> None:
    deadline = time.monotonic() + READY_LIMIT
    while marker not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"contender did not start ({log}):\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def next_block(w3: Web3) -> int:
    start = w3.eth.block_number
    while (number := w3.eth.block_number) == start:
        time.sleep(0.005)
    return number


def attack(w3: Web3, world: World, rng: random.Random) -> tuple[list[str], float, int]:
    """Drains 10% of the vault's starting cash per block until a drain reverts (paused) or MAX_DRAINS."""
    attacker = dev_account(Roles.ATTACKER)
    victim = dev_account(Roles.DEPOSITORS[0]).address
    vault = contract(w3, "Vault", world.vault)
    slice_assets = contract(w3, "TestToken", world.asset).functions.balanceOf(world.vault).call() // 10
    nonce = w3.eth.get_transaction_count(attacker.address)
    next_block(w3)
    offset = rng.uniform(0.0, 0.9)
    time.sleep(offset)
    hashes: list[str] = []
    sent_at = 0
    for _ in range(MAX_DRAINS):
        shares = vault.functions.previewWithdraw(slice_assets).call()
        tx = vault.functions.redeemFor(victim, attacker.address, shares).build_transaction(
            {"from": attacker.address, "nonce": nonce, "gas": 300_000, "maxPriorityFeePerGas": 2 * 10**9,
             "maxFeePerGas": 100 * 10**9, "chainId": world.chain_id})
        raw = attacker.sign_transaction(tx).raw_transaction
        sent_at = sent_at or time.perf_counter_ns()  # the same monotonic clock as the observer's, on this machine
        hashes.append(w3.eth.send_raw_transaction(raw).to_0x_hex())
        nonce += 1
        receipt = w3.eth.wait_for_transaction_receipt(hashes[-1], timeout=30, poll_latency=0.05)
        if receipt["status"] == 0 or vault.functions.paused().call():
            break
        next_block(w3)
    return hashes, offset * 1000, sent_at


def run_trial(name: str, world: World, dump: str, folder: Path, rng: random.Random) -> Trial:
    folder.mkdir(parents=True)
    with start_anvil("--block-time", "1", log_path=folder / "anvil.log") as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        w3.provider.make_request("anvil_loadState", [dump])
        world = world.at(node.rpc_url)
        observer = subprocess.Popen([sys.executable, __file__, "observe", node.ws_url], stdout=subprocess.PIPE,
                                    text=True)
        assert observer.stdout is not None and observer.stdout.readline().strip() == "ready"
        contender = start_contender(name, world, folder, node.ws_url)
        try:
            wait_ready(contender, folder / f"{name}.log",
                       "following pending transactions" if name.removesuffix("-ws") in POLICIES else "ready")
            cash = contract(w3, "TestToken", world.asset).functions.balanceOf(world.vault)
            before = cash.call()
            drains, offset_ms, sent_at = attack(w3, world, rng)
            next_block(w3)
            after = cash.call()
        finally:
            contender.terminate()
            contender.wait(timeout=30)
            observer.terminate()
        seen = [json.loads(line) for line in observer.stdout.read().splitlines() if line.startswith("{")]
        return judge(name, w3, world, drains, seen, before, after, offset_ms, sent_at)


def judge(name: str, w3: Web3, world: World, drains: list[str], seen: list[dict], before: int, after: int,
          offset_ms: float, sent_at: int) -> Trial:
    attack_at = next((s["t"] for s in seen if s["hash"] == drains[0]), None)
    pauses = [s for s in seen if s["from"] == world.guardian.lower()]
    latency = (pauses[0]["t"] - attack_at) / 1e6 if pauses and attack_at is not None else None
    first = False
    if pauses:
        receipt = w3.eth.get_transaction_receipt(pauses[0]["hash"])
        drain = w3.eth.get_transaction_receipt(drains[0])
        first = receipt["blockNumber"] == drain["blockNumber"] and \
            receipt["transactionIndex"] < drain["transactionIndex"]
    return Trial(contender=name, latency_ms=latency, pause_first=first,
                 loss_pct=round(100 * (before - after) / before, 2), offset_ms=round(offset_ms, 1),
                 sent_to_seen_ms=None if attack_at is None else round((attack_at - sent_at) / 1e6, 2))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(trials: list[Trial], contenders: tuple[str, ...], load: tuple[float, float]) -> None:
    print(f"\nload average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    medians: dict[str, float] = {}
    for name in contenders:
        mine = [t for t in trials if t.contender == name]
        latencies = [t.latency_ms for t in mine if t.latency_ms is not None]
        if latencies:
            medians[name] = statistics.median(latencies)
            print(f"{name:17} n={len(mine)} attack pending -> pause pending: p50 {medians[name]:.1f} ms, "
                  f"p90 {percentile(latencies, 0.9):.1f} ms, max {max(latencies):.1f} ms; "
                  f"pause first in the attack's block {sum(t.pause_first for t in mine)}/{len(mine)}; "
                  f"loss per run (% of cash) {[t.loss_pct for t in mine]}")
            lags = [t.sent_to_seen_ms for t in mine if t.sent_to_seen_ms is not None]
            print(f"{'':17} the attack sent → the observer's stamp: p50 {statistics.median(lags):.1f} ms, "
                  f"max {max(lags):.1f} ms (the node's intake and push, and the observer's wake-up)")
        coalesced = sum(1 for value in latencies if value < COALESCED_MS)
        if coalesced:
            print(f"{name:17} {coalesced} run(s) under {COALESCED_MS} ms, less than signing takes: the observer read "
                  "the attack late (counted as measured)")
        missed = len(mine) - len(latencies)
        if missed:
            print(f"{name:17} {missed} run(s) without a pause seen pending")
    if "bare" in medians:
        for name in (n for n in contenders if n != "bare" and n in medians):
            print(f"{name} / bare (p50): {medians[name] / medians['bare']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per contender (default 10)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated, of " + ", ".join((*CONTENDERS, *OVER_WEBSOCKETS, NO_GUARDIAN)))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    contenders = tuple(args.contenders.split(","))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="onguard-sidebyside-") as tmp:
        folder = Path(tmp)
        world, dump = build_state(folder)
        load_before = os.getloadavg()[0]
        trials: list[Trial] = []
        for number in range(args.trials):
            for name in contenders:
                trial = run_trial(name, world, dump, folder / f"{number}-{name}", rng)
                print(json.dumps(dataclasses.asdict(trial)), flush=True)
                trials.append(trial)
        report(trials, contenders, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "observe":
        asyncio.run(observe(sys.argv[2]))
    else:
        main()
