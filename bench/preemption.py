"""Benchmark: reaction latency of pre-emption on a real Anvil chain with mining held. For each trial an attacker
sends a drain (redeemFor of a depositor's whole position) to the mempool; the guardian's mempool source sees it,
the simulate policy trips, the pause is priced to outbid it, signed and sent. Timed from the moment the pending
transaction is read off the WebSocket to the moment the node accepted the signed pause (eth_sendRawTransaction
returned); then one block is mined and the trial records whether the pause was ordered before the attack. Each
trial also reports its stages from seen (judged: simulated and the policy evaluated; decided: the incident opened;
signed: the pre-signed rung picked, or the pause signed when no rung fits; broadcast), so a slow trial shows where
it lost its time; the load average is
printed before and after (the machine is shared: read the figures with it).

With `--ws` every JSON-RPC endpoint of the guardian is the node's ws:// URL (the read endpoint, the simulation
endpoint and the one send endpoint: calls over kept-open WebSockets) instead of its http:// URL.

Run: .venv/bin/python bench/preemption.py [--trials 200] [--ws]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.world import Roles, build_world, contract, dev_account, write_config
from onguard.incidents.store import ResponseStatus
from onguard.log import configure_logging
from onguard.runtime import Guardian, freeze_start_up_objects

from benchkit import CASH_GUARD_POLICY

KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"


STAGES = ("judged_ms", "decided_ms", "signed_ms", "broadcast_ms")


async def trial(config_path: Path, w3: Web3, world) -> tuple[dict[str, float], bool]:
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
        attack = vault.functions.redeemFor(victim, attacker, shares).transact({"from": attacker, "gas": 500_000})
        stages: dict[str, float] = {}
        deadline = time.monotonic() + 10
        while "broadcast_ms" not in stages and time.monotonic() < deadline:
            for incident in guardian.store.incidents():
                for entry in guardian.store.timeline(incident.id):
                    if entry.kind == "response-broadcast":
                        stages.update(signed_ms=float(entry.detail["signed_ms"]),
                                      broadcast_ms=float(entry.detail["broadcast_ms"]),
                                      pre_signed=float(entry.detail["pre_signed"]))
            await asyncio.sleep(0.005)
        w3.provider.make_request("evm_mine", [])
        hashes = list(w3.eth.get_block("latest")["transactions"])
        sent = [r.tx_hash for i in guardian.store.incidents() for r in guardian.store.responses(i.id)
                if r.status in (ResponseStatus.SENT, ResponseStatus.MINED)]
        first = bool(sent) and Web3.to_bytes(hexstr=sent[0]) in hashes and \
            hashes.index(Web3.to_bytes(hexstr=sent[0])) < hashes.index(attack)
        await guardian.drain_responses(timeout=5)
        stop.set()
        await listening
        if "broadcast_ms" not in stages:
            raise RuntimeError("no pause was broadcast")
        decided = [e for i in guardian.store.incidents() for e in guardian.store.timeline(i.id) if e.kind == "decided"]
        stages.update({stage: float(decided[0].detail[stage]) for stage in ("judged_ms", "decided_ms")})
        return stages, first
    finally:
        stop.set()
        w3.provider.make_request("evm_setAutomine", [True])
        await guardian.close()
        gc.unfreeze()  # the next trial's guardian is another daemon: this one's objects may be collected again


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--ws", action="store_true", help="read, simulate and send over ws:// instead of http://")
    args = parser.parse_args()
    configure_logging("console", "critical")
    os.environ[KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
    with start_anvil() as node, tempfile.TemporaryDirectory() as folder:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        policies = Path(folder) / "policies"
        policies.mkdir()
        (policies / "guard.toml").write_text(CASH_GUARD_POLICY)
        runs, firsts = [], 0
        load_before = os.getloadavg()
        for number in range(args.trials):
            snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
            config = write_config(world, Path(folder) / str(number), key_env=KEY_ENV, policies_dir=policies)
            text = config.read_text() + f'\n[mempool]\nenabled = true\nws_url = "{node.ws_url}"\n'
            if args.ws:
                text = text.replace(f'rpc_url = "{node.rpc_url}"', f'rpc_url = "{node.ws_url}"') + (
                    f'simulation_urls = ["{node.ws_url}"]\n\n[[response.endpoints]]\nurl = "{node.ws_url}"\n')
                assert f'rpc_url = "{node.ws_url}"' in text, "the config's read endpoint is still http://"
            config.write_text(text)
            stages, first = asyncio.run(trial(config, w3, world))
            runs.append(stages)
            firsts += first
            w3.provider.make_request("evm_revert", [snapshot])
            if (number + 1) % 25 == 0:
                print(f"  {number + 1}/{args.trials} trials", file=sys.stderr)
        load_after = os.getloadavg()
    latencies = sorted(run["broadcast_ms"] for run in runs)
    print(f"endpoints over {'ws' if args.ws else 'http'}: "
          f"pending tx read off the socket -> signed pause accepted by the node, {len(latencies)} trials: "
          f"p50 {statistics.median(latencies):.1f} ms, p90 {percentile(latencies, 0.90):.1f} ms, "
          f"p99 {percentile(latencies, 0.99):.1f} ms, max {latencies[-1]:.1f} ms "
          f"(slowest three: {', '.join(f'{x:.1f}' for x in latencies[-3:])}); "
          f"pause ordered before the attack in {firsts}/{len(latencies)} trials ({firsts / len(latencies):.0%}); "
          f"pre-signed rung broadcast in {sum(int(run['pre_signed']) for run in runs)}/{len(runs)}")
    for stage in STAGES:
        values = sorted(run[stage] for run in runs)
        print(f"  {stage[:-3]:>9} from seen: p50 {statistics.median(values):.1f} ms, "
              f"p90 {percentile(values, 0.90):.1f}, p99 {percentile(values, 0.99):.1f}, max {values[-1]:.1f}")
    for run in sorted(runs, key=lambda run: run["broadcast_ms"])[-3:]:
        print("  a slowest trial: " + ", ".join(f"{stage[:-3]} {run[stage]:.1f} ms" for stage in STAGES))
    print(f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


if __name__ == "__main__":
    main()
