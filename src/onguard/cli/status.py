"""`onguard status`: the guardian's health — from its database (progress, open incidents, failed responses,
policies that could not be evaluated, pre-signatures) and from the chain (head against the last handled block,
chain id and genesis against the recorded ones, each read endpoint, and a fresh preflight of the guardian the
daemon last ran as: module, registration, allowlist, balance, each action simulated). Works with the daemon
stopped. `--json` prints the same as one document. Exit 0 when nothing needs a human, 1 when something does
(each reason in `attention`), 2 for bad input."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from onguard.chain.health import ChainHealth, ChainWatch
from onguard.chain.rpc import Rpc
from onguard.chain.transport import Role, Transport
from onguard.cli.signing import ladders, presigned_actions
from onguard.config import Config, load_config
from onguard.errors import ChainError, OnguardError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.blocklog import BlockLog
from onguard.store.safetxs import SafeTxStore
from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.preflight import run_preflight
from onguard.safe.chain import SafeOnChain
from onguard.sources.blocks import SOURCE_NAME

DAEMON_ACTOR = "daemon:"  # the config audit entry's actor: daemon:<guardian address>
PROBED = (Role.READ, Role.SIMULATE)  # the endpoints the chain-health probe looks at (send ones are not probed)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("status", help="health of the guardian, from its database and the chain")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = IncidentStore(config.state)
    report = Report()
    try:
        checkpoint = _database(report, config, store)
        presigned_section(config, store, report)
        health = _chain(report, config, store, checkpoint)
        _preflight(report, config, store, health)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"needsAttention": bool(report.reasons), "attention": report.reasons, **report.doc},
                         indent=2, default=str))
    else:
        print("\n".join(report.lines))
    return 1 if report.reasons else 0


class Report:
    """Lines for a human and the same facts as JSON; each reason for a human's attention counted once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.doc: dict[str, Any] = {}
        self.reasons: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def attention(self, reason: str) -> None:
        self.reasons.append(reason)


def _database(report: Report, config: Config, store: IncidentStore) -> int | None:
    checkpoint = store.checkpoint_row(SOURCE_NAME, config.chain.chain_id)
    report.doc["database"] = store.name
    report.say(f"database      {store.name}")
    if checkpoint is None:
        report.doc["last_block"] = None
        report.say("last block    none yet (the daemon has not handled a block on this chain)")
    else:
        report.doc["last_block"] = {"number": checkpoint[0], "handled_at": checkpoint[1]}
        report.say(f"last block    {checkpoint[0]} (handled at {checkpoint[1]})")
    heartbeat = store.last_heartbeat()
    report.doc["daemon"] = dict(heartbeat) if heartbeat else None
    if heartbeat is not None:
        report.say(f"daemon        last heartbeat {heartbeat['at']}: block {heartbeat.get('block')}, mempool source "
                   f"{heartbeat.get('mempool')}, {heartbeat.get('responses_under_way', 0)} response(s) under way")
        if heartbeat.get("mempool") == "DOWN":
            report.attention("the daemon's mempool source was DOWN at its last heartbeat")
    incidents = store.incidents()
    needing = [i for i in incidents if i.status in (IncidentStatus.OPEN, IncidentStatus.FAILED)]
    watched = [i for i in incidents if i.status == IncidentStatus.SAFE]
    report.doc["incidents"] = {
        "total": len(incidents), "safe_and_watched": [i.id for i in watched],
        "open_or_failed": [{"id": i.id, "status": str(i.status), "severity": i.severity, "policy": i.policy_id,
                            "block": i.opened_block, "title": i.title} for i in needing]}
    report.say(f"incidents     {len(incidents)} in all; {len(needing)} open or failed; {len(watched)} safe and still "
               "watched (resolve them with `onguard incidents resolve`)")
    for incident in needing:
        if incident.status == IncidentStatus.FAILED:
            report.attention(f"incident {incident.id} FAILED: the protocol is not in the safe state")
        report.say(f"  #{incident.id} {incident.status.upper():<6} {incident.policy_id} at block "
                    f"{incident.opened_block}: {incident.title}")
    failures = store.evaluation_failures()
    report.doc["evaluation_failures"] = [
        {"policy": f.policy_id, "blocks": f.count, "last_block": f.last_block, "last_at": f.last_at,
         "message": f.last_message} for f in failures]
    if failures:
        report.attention("policies could not be evaluated at some blocks")
        report.say("EVALUATION FAILURES (these policies were NOT checked at those blocks)")
        for failure in failures:
            report.say(f"  {failure.policy_id}: {failure.count} block(s), last at block {failure.last_block} "
                        f"({failure.last_at}): {failure.last_message}")
    else:
        report.say("evaluation    every policy evaluated at every block handled")
    return checkpoint[0] if checkpoint else None


def presigned_section(config: Config, store: IncidentStore, report: Report) -> None:
    """Pre-signed actions against the Safe's live nonce, read from the chain (the daemon may be down): each
    ready with how many routine transactions it survives, or STALE when it has no threshold pre-signature for the
    live nonce. A reason for attention when any is stale or the Safe cannot be read."""
    names = presigned_actions(config)
    report.doc["presigned"] = {}
    if not names:
        return
    try:
        safe = SafeOnChain(config.chain.http_url, config.safe.address)
        state = safe.retrieve_state()
        now = ladders(config, SafeTxStore(store.database), state, safe)
    except OnguardError as exc:
        report.attention("the Safe cannot be read")
        report.say(f"presigned     CANNOT READ THE SAFE: {exc.message}; whether {', '.join(names)} can be executed "
                   "is unknown")
        report.doc["presigned"] = {"error": exc.message}
        return
    report.doc["presigned"] = {"safeNonce": state.nonce, "threshold": state.threshold, "actions": {
        name: {"ready": ladder.protected, "depth": ladder.depth, "through": ladder.top,
               "signedNonces": sorted(ladder.rungs), "partialNonces": sorted(ladder.partial),
               "spentNonces": sorted(ladder.spent)} for name, ladder in now.items()}}
    for name, ladder in now.items():
        if ladder.protected:
            tail = ("the next Safe transaction exhausts it: extend it (`onguard presign "
                    f"{name} --depth K`)" if ladder.depth == 1 else
                    f"{ladder.depth - 1} routine Safe transaction(s) can execute before it must be re-signed")
            report.say(f"presigned     {name}: ready for the Safe's nonce {state.nonce}, pre-signed through nonce "
                       f"{ladder.top} ({tail})")
            continue
        report.attention(f"{name} has no valid pre-signature for the Safe's nonce {state.nonce}")
        signed = sorted(ladder.spent | ladder.partial | ladder.rungs)
        what = (f"signed for nonce(s) {', '.join(map(str, signed))}" if signed else "never signed")
        report.say(f"presigned     {name}: STALE — no pre-signature with {state.threshold} owners for the Safe's "
                   f"nonce {state.nonce} ({what}); the daemon cannot execute it: owners run `onguard presign {name} "
                   "--depth K`")


def _chain(report: Report, config: Config, store: IncidentStore, checkpoint: int | None) -> ChainHealth:
    """The chain as the read endpoints show it now: blind, behind or on another chain needs a human."""
    health = asyncio.run(_look(config, store, checkpoint))
    recorded = BlockLog(store.database, config.chain.chain_id).genesis()
    problems = list(health.problems(max_lag=config.chain.max_lag))
    report.doc["chain"] = {
        "chain_id": config.chain.chain_id, "head": health.head, "lag": health.lag, "genesis": health.genesis,
        "genesis_recorded": recorded, "problems": problems,
        "endpoints": [{"label": e.label, "healthy": e.healthy, "head": e.last_head, "latency_ms": e.latency_ms,
                       "latency_estimate_ms": e.latency_estimate_ms, "slow": e.slow,
                       "cannot_simulate": e.cannot_simulate, "error": e.last_error}
                      for e in health.endpoints if e.role in PROBED]}
    if health.head is not None:
        lag = f", {health.lag} block(s) after the last handled" if health.lag is not None else ""
        genesis = f", genesis {health.genesis[:12]}… as recorded" if health.genesis and recorded else ""
        report.say(f"chain         head {health.head}{lag} (chain id {config.chain.chain_id}{genesis})")
    for endpoint in health.endpoints:
        if endpoint.role not in PROBED:
            continue
        if endpoint.healthy:
            slow = " — SLOW: asked after the faster endpoints" if endpoint.slow else ""
            report.say(f"endpoint      {endpoint.label}: ok, head {endpoint.last_head}, {endpoint.latency_ms} ms{slow}")
        else:
            report.say(f"endpoint      {endpoint.label}: FAILING — {endpoint.last_error}")
    for problem in problems:
        report.attention(problem)
        report.say(problem)
    return health


def _preflight(report: Report, config: Config, store: IncidentStore, health: ChainHealth) -> None:
    """A fresh preflight of the guardian the daemon last started as (its address is in the config audit entry):
    can it still act? Skipped when the daemon never started or the chain cannot be read."""
    entry = AuditLog(store.database).last(AuditKind.CONFIG)
    guardian = entry.actor.removeprefix(DAEMON_ACTOR) if entry and entry.actor.startswith(DAEMON_ACTOR) else None
    report.doc["guardian"] = guardian
    if guardian is None or health.head is None or health.wrong_chain:
        report.doc["preflight"] = None
        reason = "the daemon has not started yet" if guardian is None else "the chain cannot be read"
        report.say(f"preflight     not run: {reason}")
        return
    try:
        result = asyncio.run(_run_preflight(config, guardian, store))
    except ChainError as exc:
        report.doc["preflight"] = {"ok": False, "error": exc.message}
        report.attention(f"the preflight could not run: {exc.message}")
        report.say(f"preflight     COULD NOT RUN: {exc.message}")
        return
    report.doc["preflight"] = result.to_json()
    report.say(f"guardian      {guardian}")
    if result.ok:
        report.say(f"preflight     ok at block {result.block}: every action can be taken")
        return
    report.attention("the preflight failed: the guardian cannot act")
    report.say(f"PREFLIGHT FAILED at block {result.block}")
    for failure in result.failures:
        report.say(f"  {failure.line}")


async def _run_preflight(config: Config, guardian: str, store: IncidentStore) -> Any:
    rpc = Rpc(config.chain.rpc_url)
    try:
        return await run_preflight(config, guardian, rpc, store=store)
    finally:
        await rpc.close()


async def _look(config: Config, store: IncidentStore, checkpoint: int | None) -> ChainHealth:
    transport = Transport.from_config(config)
    try:
        watch = ChainWatch(transport, BlockLog(store.database, config.chain.chain_id), config.chain.chain_id,
                           stall_after=config.chain.stall_after, record_genesis=False)
        return await watch.check(checkpoint)
    finally:
        await transport.close()
