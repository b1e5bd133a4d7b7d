"""Benchmark: pending transactions simulated per second with one simulation endpoint and with two ([mempool]
simulation_urls), through the daemon's own Simulator and Transport: a few workers (as the daemon's, each a
JSON-RPC batch of 8 at a time against the latest block, with the preemption bench's policy reads before and after)
work through distinct pending withdrawals from the demo vault. Two local Anvils with the same state (the demo world
built on one, its state loaded into the other) stand in for two nodes; on a 2-core machine they share the CPU with
each other and with the bench, so the second endpoint adds a second node's worth of parallelism only as far as the
CPU allows.

With `--requests-per-second N` each endpoint is throttled as a rate-limited provider is (the transport's throttle
per endpoint): then the second endpoint doubles what can be asked, whatever the CPU.

Run: .venv/bin/python bench/simulation_endpoints.py [--transactions 2000] [--workers 4] [--requests-per-second 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Simulation, Simulator
from onguard.chain.transport import DEFAULT_REQUESTS_PER_SECOND, Transport
from onguard.config import load_config
from onguard.demo.world import build_world, write_config
from onguard.policies.engine import PolicyEngine
from onguard.policies.loader import load_policies

from benchkit import CASH_GUARD_POLICY, withdrawals

BATCH = 8  # as the daemon's SIMULATION_BATCH



async def throughput(read_url: str, simulation_urls: list[str], pending: list[dict], reads, workers: int,
                     requests_per_second: int) -> float:
    """Simulated transactions per second, every outcome checked to be a simulation."""
    transport = Transport.from_urls([read_url], simulate=simulation_urls, requests_per_second=requests_per_second)
    simulator = Simulator(Rpc.over(transport))
    batches = [pending[i:i + BATCH] for i in range(0, len(pending), BATCH)]
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            outcomes = await simulator.simulate_many(queue.get_nowait(), reads)
            assert all(isinstance(o, Simulation) and not o.reverted for o in outcomes), outcomes[:1]
            done += len(outcomes)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)
    finally:
        await transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests-per-second", type=int, default=DEFAULT_REQUESTS_PER_SECOND,
                        help="each endpoint's throttle ([chain] requests_per_second), e.g. a provider's rate limit")
    parser.add_argument("--rounds", type=int, default=3, help="alternating 1- and 2-endpoint runs (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onguard-simbench-") as tmp, \
            start_anvil(log_path=Path(tmp) / "a.log") as first, start_anvil(log_path=Path(tmp) / "b.log") as second:
        world = build_world(first.rpc_url)
        w3 = Web3(Web3.HTTPProvider(first.rpc_url))
        dump = w3.provider.make_request("anvil_dumpState", [])["result"]
        Web3(Web3.HTTPProvider(second.rpc_url)).provider.make_request("anvil_loadState", [dump])
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "bench.toml").write_text(CASH_GUARD_POLICY)
        config = load_config(write_config(world, Path(tmp), key_env="UNUSED", policies_dir=policies))
        reads = PolicyEngine(load_policies(config.policies_dir, config.contracts, config.actions)).simulation_reads
        pending = withdrawals(w3, world.vault, args.transactions)
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            for urls in ([first.rpc_url], [first.rpc_url, second.rpc_url]):
                rate = asyncio.run(throughput(first.rpc_url, urls, pending, reads, args.workers,
                                              args.requests_per_second))
                print(f"{len(urls)} endpoint(s) at most {args.requests_per_second} requests/s each, "
                      f"{args.workers} workers, batches of {BATCH}: "
                      f"{rate:,.0f} pending transactions simulated per second", flush=True)
        print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
