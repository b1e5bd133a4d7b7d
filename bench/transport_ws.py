"""Benchmark: the hot path's round trips over HTTP and over a kept-open WebSocket (ws://), on a local Anvil.

Two calls, each timed one at a time (`--calls` in a row) through the daemon's own code, once with the endpoint
given as http:// and once as ws:// (the same Anvil, both connections already open, as the responder keeps its send
connections warm and the daemon's reads keep the simulation endpoint's open):

* the pause's send: Rpc.send_raw (eth_sendRawTransaction of a signed transfer; mining is held, so each is only
  taken into the pool);
* the pending transaction's simulation: Simulator.simulate_many on the latest block, one eth_simulateV1 batch of
  1 and of 8 withdrawals from the demo vault with the preemption bench's policy reads (the daemon's batch size).

The two transports alternate, `--rounds` times; p50 and p90 are over every call of all rounds.

Run: .venv/bin/python bench/transport_ws.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Simulation, Simulator
from onguard.chain.transport import Transport
from onguard.config import load_config
from onguard.demo.world import build_world, dev_account, write_config
from onguard.policies.engine import PolicyEngine
from onguard.policies.loader import load_policies

from benchkit import CASH_GUARD_POLICY, withdrawals

BATCH = 8  # as the daemon's SIMULATION_BATCH
SENDER = 11  # a development key the demo world does not use (funded here)



def signed_transfers(w3: Web3, count: int) -> list[bytes]:
    account = dev_account(SENDER)
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10**24)])
    first = w3.eth.get_transaction_count(account.address, "pending")
    return [account.sign_transaction({"to": account.address, "value": 1, "nonce": first + n, "gas": 21_000,
                                      "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9,
                                      "chainId": w3.eth.chain_id, "type": 2}).raw_transaction
            for n in range(count)]


async def timed(calls: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    """Milliseconds of each of `calls` calls made one after the other."""
    times = []
    for n in range(calls):
        started = time.perf_counter()
        await call(n)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def one_round(url: str, raws: list[bytes], pending: list[dict], reads, calls: int) -> dict[str, list[float]]:
    """This transport's times: sends of `raws` (each once), simulations of 1 and of BATCH."""
    transport = Transport.from_urls([url], simulate=[url])
    rpc = Rpc.over(transport)
    simulator = Simulator(rpc)
    try:
        await rpc.head()  # the connection (or the socket) open, as in the daemon
        await simulator.simulate_many(pending[:1], reads)

        async def simulate(size: int, n: int) -> None:
            batch = [pending[(n * size + i) % len(pending)] for i in range(size)]
            outcomes = await simulator.simulate_many(batch, reads)  # the latest block: never cached
            assert all(isinstance(o, Simulation) and not o.reverted for o in outcomes), outcomes[:1]

        return {"Rpc.send_raw": await timed(calls, lambda n: rpc.send_raw(raws[n])),
                "simulation batch of 1": await timed(calls, lambda n: simulate(1, n)),
                f"simulation batch of {BATCH}": await timed(calls, lambda n: simulate(BATCH, n))}
    finally:
        await transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind per transport per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onguard-wsbench-") as tmp, \
            start_anvil(log_path=Path(tmp) / "anvil.log") as node:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "bench.toml").write_text(CASH_GUARD_POLICY)
        config = load_config(write_config(world, Path(tmp), key_env="UNUSED", policies_dir=policies))
        reads = PolicyEngine(load_policies(config.policies_dir, config.contracts, config.actions)).simulation_reads
        pending = withdrawals(w3, world.vault, 64)
        w3.provider.make_request("evm_setAutomine", [False])  # sends are taken into the pool, never mined
        raws = iter(signed_transfers(w3, 2 * args.rounds * args.calls))
        times: dict[tuple[str, str], list[float]] = defaultdict(list)
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            for scheme, url in (("http", node.rpc_url), ("ws", node.ws_url)):
                sends = [next(raws) for _ in range(args.calls)]
                for what, samples in asyncio.run(one_round(url, sends, pending, reads, args.calls)).items():
                    times[(what, scheme)] += samples
        print(f"{args.rounds} rounds of {args.calls} calls each, one at a time, on a local Anvil "
              f"(p50 / p90, milliseconds):")
        for what in dict.fromkeys(what for what, _ in times):
            figures = []
            for scheme in ("http", "ws"):
                samples = sorted(times[(what, scheme)])
                figures.append(f"{scheme} {statistics.median(samples):.3f} / {samples[int(len(samples) * 0.9)]:.3f}")
            print(f"  {what:24} {'   '.join(figures)}")
        print(f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
