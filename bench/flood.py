"""Benchmark: pre-emption under a flood. On Anvil with mining held, N junk pending transactions to a watched
contract (cheap transfers of the watched token from throw-away senders, signed locally, sent raw in batched
JSON-RPC) with one real drain sent in the middle; the guardian's mempool source and triage judge them. Reports the
drain's seen -> broadcast time (the pause accepted by the node), whether the pause was ordered before the drain in
the next block, and what became of the junk (judged, missed the deadline, ignored).

Then the prefilter and queue alone, on one core, no I/O: triage (lane), push and pop of synthetic pending
transactions normalised as the source hands them over (a mix of junk to a watched token, calls to other contracts
and plain transfers), in transactions per second.

Run: .venv/bin/python bench/flood.py [--junk 10000] [--trials 1] [--policy simulate|call]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hexbytes import HexBytes
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.flood import prepare_flood, send_raw
from onguard.demo.world import Roles, build_world, contract, dev_account, write_config
from onguard.log import configure_logging
from onguard.runtime import Guardian, freeze_start_up_objects
from onguard.sources.triage import PendingCounters, PendingQueue, Triage

from benchkit import CASH_GUARD_POLICY

KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"
POLICIES = {
    "simulate": CASH_GUARD_POLICY,
    "call": """id = "no-redeem-for-others"
description = "Nobody redeems another depositor's shares"
kind = "call"
severity = "critical"
response = ["pause_vault"]
[match]
contract = "vault"
functions = ["redeemFor"]
""",
}


async def trial(config_path: Path, w3: Web3, world, rpc_url: str, flood) -> dict:
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    stop = asyncio.Event()
    attacker = dev_account(Roles.ATTACKER).address
    victim = dev_account(Roles.DEPOSITORS[0]).address
    vault = contract(w3, "Vault", world.vault)
    try:
        await guardian.start()
        await guardian.step()
        freeze_start_up_objects()  # as `onguard run` does once started
        w3.provider.make_request("evm_setAutomine", [False])
        source = guardian.mempool_source()  # the source `onguard run` follows the pool with
        assert source is not None
        listening = asyncio.create_task(source.run(guardian.on_pending, stop))
        while not source.live:
            await asyncio.sleep(0.01)
        shares = vault.functions.balanceOf(victim).call()

        def send_flood_with_the_drain() -> bytes:
            half = len(flood.raw) // 2
            send_raw(rpc_url, flood.raw[:half])
            drain = vault.functions.redeemFor(victim, attacker, shares).transact({"from": attacker, "gas": 500_000})
            send_raw(rpc_url, flood.raw[half:])
            return bytes(drain)

        attack = await asyncio.to_thread(send_flood_with_the_drain)
        broadcast_ms = None
        deadline = time.monotonic() + 30
        while broadcast_ms is None and time.monotonic() < deadline:
            for incident in guardian.store.incidents():
                for entry in guardian.store.timeline(incident.id):
                    if entry.kind == "response-broadcast":
                        broadcast_ms = float(entry.detail["broadcast_ms"])
            await asyncio.sleep(0.005)
        # let the flood's tail reach the guardian before counting what became of it
        while guardian.pending_counters.seen < len(flood.raw) + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        counters = guardian.pending_counters.snapshot()
        decided = next((e.detail for i in guardian.store.incidents() for e in guardian.store.timeline(i.id)
                        if e.kind == "decided"), {})
        w3.provider.make_request("evm_mine", [])
        hashes = list(w3.eth.get_block("latest")["transactions"])
        # Any of the guardian's transactions is the pause: one not mined within bump_after (the flood's tail can
        # take longer to read) was replaced at the same nonce with higher fees.
        ours = [h for h in hashes if h.to_0x_hex() in {tx.tx_hash for tx in guardian.store.response_txs(
            guardian.account.address)}]
        first = bool(ours) and attack in hashes and hashes.index(ours[0]) < hashes.index(attack)
        await guardian.drain_responses(timeout=5)
        stop.set()
        await listening
        if broadcast_ms is None:
            raise RuntimeError("no pause was broadcast")
        return {"judged_ms": decided.get("judged_ms"), "decided_ms": decided.get("decided_ms"),
                "broadcast_ms": broadcast_ms, "first": first, "counters": counters,
                "overtook": decided.get("overtook")}
    finally:
        stop.set()
        w3.provider.make_request("evm_setAutomine", [True])
        await guardian.close()
        gc.unfreeze()


def synthetic_pending(count: int, watched: list[str]) -> list[dict]:
    """Pending transactions as the source hands them over (normalised): 80% junk to a watched token, 15% calls to
    other contracts, 5% plain transfers."""
    transfer = HexBytes("0xa9059cbb" + "00" * 12 + "11" * 20 + "00" * 31 + "01")
    other = HexBytes("0x38ed1739" + secrets.token_hex(160))
    items = []
    for number in range(count):
        sender = Web3.to_checksum_address("0x" + secrets.token_hex(20))
        kind = number % 20
        if kind < 16:
            tx = {"to": Web3.to_checksum_address(watched[number % len(watched)]), "input": transfer}
        elif kind < 19:
            tx = {"to": Web3.to_checksum_address("0x" + secrets.token_hex(20)), "input": other}
        else:
            tx = {"to": Web3.to_checksum_address("0x" + secrets.token_hex(20)), "input": HexBytes(b"")}
        items.append({**tx, "from": sender, "nonce": number, "hash": HexBytes(secrets.token_bytes(32))})
    return items


def prefilter_throughput(count: int, watched_count: int) -> float:
    """Transactions per second through lane + push + pop, one core, no I/O."""
    watched = ["0x" + secrets.token_hex(20) for _ in range(watched_count)]
    items = synthetic_pending(count, watched)
    triage = Triage(watched)
    queue: PendingQueue[dict] = PendingQueue(budget=60.0, counters=PendingCounters())
    started = time.perf_counter()
    for raw in items:
        lane = triage.lane(raw)
        if lane is not None:
            queue.push(raw, raw, lane, started)
    while queue.pop(limit=64):
        pass
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--junk", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--policy", choices=sorted(POLICIES), default="simulate")
    parser.add_argument("--no-self-defence", action="store_true",
                        help="turn the built-in guardian self-defence off (to measure what it costs under a flood)")
    args = parser.parse_args()
    configure_logging("console", "critical")
    for watched_count in (1, 10, 100):
        rates = [prefilter_throughput(100_000, watched_count) for _ in range(3)]
        print(f"prefilter + queue, {watched_count} watched contracts, 100,000 pending: "
              f"{statistics.median(rates):,.0f} tx/s (median of 3)")
    os.environ[KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
    with start_anvil() as node, tempfile.TemporaryDirectory() as folder:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        policies = Path(folder) / "policies"
        policies.mkdir()
        (policies / "guard.toml").write_text(POLICIES[args.policy])
        results = []
        for number in range(args.trials):
            snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
            flood = prepare_flood(w3, world.asset, args.junk)
            config = write_config(world, Path(folder) / str(number), key_env=KEY_ENV, policies_dir=policies)
            config.write_text(config.read_text() + f'\n[mempool]\nenabled = true\nws_url = "{node.ws_url}"\n'
                              + ('\n[self_defence]\nenabled = false\n' if args.no_self_defence else ''))
            results.append(asyncio.run(trial(config, w3, world, node.rpc_url, flood)))
            w3.provider.make_request("evm_revert", [snapshot])
            print(f"  trial {number + 1}: {results[-1]}", file=sys.stderr)
    latencies = sorted(r["broadcast_ms"] for r in results)
    firsts = sum(r["first"] for r in results)
    print(f"{args.policy} policy, drain inside {args.junk:,} junk pending transactions, {len(results)} trials: "
          f"seen -> pause accepted median {statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms; "
          f"pause ordered before the drain in {firsts}/{len(results)}")


if __name__ == "__main__":
    main()
