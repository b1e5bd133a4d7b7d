"""`onguard status`: the guardian's health — from its database (progress, open incidents, failed responses,
policies that could not be evaluated) and from the chain (head against the last handled block, chain id and
genesis against the recorded ones, each read endpoint). Works with the daemon stopped. Exit 0 when nothing needs
a human, 1 when something does (each reason on a line of its own)."""

from __future__ import annotations

import argparse
import asyncio

from onguard.chain.health import ChainHealth, ChainWatch
from onguard.chain.transport import Role, Transport
from onguard.config import Config, load_config
from onguard.incidents.blocklog import BlockLog
from onguard.cli.signing import ladders, presigned_actions
from onguard.errors import OnguardError
from onguard.incidents.safetxs import SafeTxStore
from onguard.safe.chain import SafeOnChain
from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.sources.blocks import SOURCE_NAME


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("status", help="health of the guardian, from its database")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = IncidentStore(config.database)
    try:
        attention = 0
        checkpoint = store.checkpoint_row(SOURCE_NAME, config.chain.chain_id)
        print(f"database      {config.database}")
        if checkpoint is None:
            print("last block    none yet (the daemon has not handled a block on this chain)")
        else:
            print(f"last block    {checkpoint[0]} (handled at {checkpoint[1]})")
        incidents = store.incidents()
        needing = [i for i in incidents if i.status in (IncidentStatus.OPEN, IncidentStatus.FAILED)]
        print(f"incidents     {len(incidents)} in all; {len(needing)} open or failed")
        for incident in needing:
            attention += incident.status == IncidentStatus.FAILED
            print(f"  #{incident.id} {incident.status.upper():<6} {incident.policy_id} at block "
                  f"{incident.opened_block}: {incident.title}")
        failures = store.evaluation_failures()
        if failures:
            attention += 1
            print("EVALUATION FAILURES (these policies were NOT checked at those blocks)")
            for failure in failures:
                print(f"  {failure.policy_id}: {failure.count} block(s), last at block {failure.last_block} "
                      f"({failure.last_at}): {failure.last_message}")
        else:
            print("evaluation    every policy evaluated at every block handled")
        attention += _presigned(config, store)
        attention += _chain(config, store, checkpoint[0] if checkpoint else None)
        return 1 if attention else 0
    finally:
        store.close()


def _presigned(config: Config, store: IncidentStore) -> int:
    """Pre-signed actions against the Safe's live nonce, read from the chain (the daemon may be down): each
    ready with how many routine transactions it survives, or STALE when it has no threshold pre-signature for the
    live nonce. 1 when any is stale or the Safe cannot be read."""
    names = presigned_actions(config)
    if not names:
        return 0
    try:
        safe = SafeOnChain(config.chain.rpc_url, config.safe.address)
        state = safe.retrieve_state()
        now = ladders(config, SafeTxStore(store), state, safe)
    except OnguardError as exc:
        print(f"presigned     CANNOT READ THE SAFE: {exc.message}; whether {', '.join(names)} can be executed is "
              "unknown")
        return 1
    stale = 0
    for name, ladder in now.items():
        if ladder.protected:
            tail = ("the next Safe transaction exhausts it: extend it (`onguard presign "
                    f"{name} --depth K`)" if ladder.depth == 1 else
                    f"{ladder.depth - 1} routine Safe transaction(s) can execute before it must be re-signed")
            print(f"presigned     {name}: ready for the Safe's nonce {state.nonce}, pre-signed through nonce "
                  f"{ladder.top} ({tail})")
            continue
        stale += 1
        signed = sorted(ladder.spent | ladder.partial | ladder.rungs)
        what = (f"signed for nonce(s) {', '.join(map(str, signed))}" if signed else "never signed")
        print(f"presigned     {name}: STALE — no pre-signature with {state.threshold} owners for the Safe's "
              f"nonce {state.nonce} ({what}); the daemon cannot execute it: owners run `onguard presign {name} "
              "--depth K`")
    return 1 if stale else 0


def _chain(config: Config, store: IncidentStore, checkpoint: int | None) -> int:
    """The chain as the read endpoints show it now. 1 when the guardian is blind, behind or on another chain."""
    health = asyncio.run(_look(config, store, checkpoint))
    if health.head is not None:
        lag = f", {health.lag} block(s) after the last handled" if health.lag is not None else ""
        recorded = BlockLog(store, config.chain.chain_id).genesis()
        genesis = f", genesis {health.genesis[:12]}… as recorded" if health.genesis and recorded else ""
        print(f"chain         head {health.head}{lag} (chain id {config.chain.chain_id}{genesis})")
    for endpoint in health.endpoints:
        if endpoint.role != Role.READ:
            continue
        if endpoint.healthy:
            print(f"endpoint      {endpoint.label}: ok, head {endpoint.last_head}, {endpoint.latency_ms} ms")
        else:
            print(f"endpoint      {endpoint.label}: FAILING — {endpoint.last_error}")
    problems = health.problems(max_lag=config.chain.max_lag)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


async def _look(config: Config, store: IncidentStore, checkpoint: int | None) -> ChainHealth:
    transport = Transport.from_config(config)
    try:
        watch = ChainWatch(transport, BlockLog(store, config.chain.chain_id), config.chain.chain_id,
                           stall_after=config.chain.stall_after, record_genesis=False)
        return await watch.check(checkpoint)
    finally:
        await transport.close()
