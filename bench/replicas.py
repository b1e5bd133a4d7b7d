"""Benchmark: what replicas cost and how fast they cover for each other, on the machine's PostgreSQL server
(127.0.0.1:5432; each part creates and drops its own database).

Run: .venv/bin/python bench/replicas.py [--trials 8] [--claims 300]

takeover: three processes keep the real leases (onguard.replicas.lease.ReplicaLeases, the daemon's own code and
  its default lease_ttl 3s / renew_every 1s); the leader is SIGKILLed (nothing released: its lease must expire)
  and the time until the database shows another holder is measured, polled every 5 ms. What a dead leader's
  once-only work waits; a response never waits for it (every replica acts on a trip; see README).
reaction: the tripping block alone (two drain slices handled before, the third mined) → the pause accepted by the
  node and its response recorded as sent, interleaved: the single daemon on SQLite, and a replica on PostgreSQL
  (claim and audit written before the send, leases running). Each PostgreSQL trial gets a fresh database.
claim: the arbiter's claim — open an incident and claim its action in one transaction (IncidentStore.open_or_join,
  what a replica writes before it sends) — on SQLite (the single daemon's file) and on PostgreSQL over loopback,
  and the compare-and-set a replica makes to take a claim over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.world import Roles, World, build_world, dev_account, write_config
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.log import configure_logging
from onguard.runtime import Guardian
from onguard.store.settings import DatabaseSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chain.helpers import ALICE, drain_slice, is_paused, tokens  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"

HOLDER = """
import asyncio, sys
from onguard.replicas.lease import ReplicaLeases
async def main():
    leases = ReplicaLeases(sys.argv[1], sys.argv[2], 1, ttl=3.0, renew_every=1.0)
    await leases.start()
    await leases.run(asyncio.Event())
asyncio.run(main())
"""


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database with the current schema (migrated by the store itself), dropped afterwards."""
    name = f"onguard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{SERVER}/{name}"
    try:
        IncidentStore(DatabaseSettings(path=Path("unused.db"), url=url)).close()  # creates the schema
        yield url
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def leader(url: str) -> str | None:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT holder FROM leases WHERE name = 'leader:1' AND expires_at > "
                         "(extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()
    return None if row is None else str(row[0])


def wait(condition: Callable[[], object], limit: float = 60.0) -> object:
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError("the condition never held")
        time.sleep(0.005)
    return value


def takeover_trial() -> float:
    with fresh_database() as url:
        holders = {name: subprocess.Popen([sys.executable, "-c", HOLDER, url, name], cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for name in ("a", "b", "c")}
        try:
            first = str(wait(lambda: leader(url)))
            time.sleep(1.5)  # let the leader renew at least once, as a running leader does
            holders[first].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            holders[first].wait()
            wait(lambda: (now := leader(url)) is not None and now != first)
            return time.monotonic() - killed_at
        finally:
            for process in holders.values():
                process.kill()
                process.wait()


def round_trip(store: IncidentStore, count: int) -> float:
    """Median µs of `SELECT 1`: the connection's own cost, without a commit."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        store.database.scalar("SELECT 1")
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def claim_costs(store: IncidentStore, count: int, prefix: str = "bench") -> tuple[float, float]:
    """Median µs of open_or_join (opening + claiming one action) and of a take-over compare-and-set."""
    opens, takes = [], []
    for index in range(count):
        started = time.perf_counter()
        incident, opened = store.open_or_join(
            chain_id=1, policy_id=f"{prefix}-{index}", cooldown=3600, severity="critical", title="bench", dry_run=False,
            block=index, block_time=index, evidence={"value": "1"}, status=IncidentStatus.OPEN,
            actions=("pause_vault",), seen={})
        opens.append(time.perf_counter() - started)
        assert opened
        started = time.perf_counter()
        assert store.take_over_claim(incident.id, "pause_vault", store.claimant, "other")
        takes.append(time.perf_counter() - started)
    return statistics.median(opens) * 1e6, statistics.median(takes) * 1e6


def claims(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        sqlite = IncidentStore(DatabaseSettings(path=Path(folder) / "bench.db"), claimant="bench")
        try:
            sqlite_open, sqlite_take = claim_costs(sqlite, count)
        finally:
            sqlite.close()
    with fresh_database() as url:
        postgres = IncidentStore(DatabaseSettings(path=Path("unused.db"), url=url), claimant="bench")
        try:
            pg_select = round_trip(postgres, count)
            pg_open, pg_take = claim_costs(postgres, count)
            # What the commit's WAL flush costs: the same with the session's commits not waiting for it.
            postgres.database.execute("SET synchronous_commit = off")
            async_open, async_take = claim_costs(postgres, count, prefix="async")
        finally:
            postgres.close()
    print(f"claim (open an incident + claim its action, one transaction), median of {count}:")
    print(f"  SQLite     {sqlite_open:8.0f} µs   take-over CAS {sqlite_take:6.0f} µs")
    print(f"  PostgreSQL {pg_open:8.0f} µs   take-over CAS {pg_take:6.0f} µs   SELECT 1 {pg_select:5.0f} µs "
          "(loopback; add the network's RTT)")
    print(f"  PostgreSQL, synchronous_commit off: {async_open:6.0f} µs   take-over CAS {async_take:6.0f} µs")


async def tripping_block(config_path: Path, w3: Web3, world: World) -> float:
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    try:
        await guardian.start()
        await guardian.step()
        for _ in range(2):
            drain_slice(w3, world, ALICE, tokens(100_000))
        assert await guardian.step() == []  # 200k of 1M: handled, under the threshold
        drain_slice(w3, world, ALICE, tokens(100_000))
        started = time.perf_counter()
        (decision,) = await guardian.step()
        while not any(r.status != ResponseStatus.CLAIMED for r in guardian.store.responses(decision.incident.id)):
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        await guardian.drain_responses()
        assert is_paused(w3, world), "the trial ended without a pause"
        return elapsed
    finally:
        await guardian.close()


def reaction(trials: int) -> None:
    configure_logging("console", "error")
    os.environ[KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
    samples: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with start_anvil() as node, tempfile.TemporaryDirectory() as folder:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        for trial in range(trials):
            for engine in samples:
                snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
                path = write_config(world, Path(folder) / f"{engine}-{trial}", key_env=KEY_ENV)
                if engine == "sqlite":
                    samples[engine].append(asyncio.run(tripping_block(path, w3, world)))
                else:
                    with fresh_database() as url:
                        text = path.read_text()
                        path.write_text(text[:text.index("[state]")]  # [state] is the last section written
                                        + f'[state]\ndatabase_url = "{url}"\n\n[replicas]\nid = "bench"\n')
                        samples[engine].append(asyncio.run(tripping_block(path, w3, world)))
                w3.provider.make_request("evm_revert", [snapshot])
    print(f"tripping block → pause accepted and recorded as sent, {trials} interleaved trials each:")
    for engine, times in samples.items():
        ms = sorted(t * 1000 for t in times)
        print(f"  {engine:10} p50 {statistics.median(ms):6.1f} ms   max {ms[-1]:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--reactions", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("ONGUARD_LOG_LEVEL", "warning")
    if args.trials:
        durations = sorted(takeover_trial() for _ in range(args.trials))
        print(f"leader SIGKILLed → lease held by another replica (lease_ttl 3s, renew_every 1s), {args.trials} "
              "trials:")
        print(f"  p50 {statistics.median(durations):.2f} s   max {durations[-1]:.2f} s   "
              f"min {durations[0]:.2f} s   all {[round(d, 2) for d in durations]}")
    claims(args.claims)
    if args.reactions:
        reaction(args.reactions)


if __name__ == "__main__":
    main()
