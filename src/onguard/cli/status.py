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
from onguard.config import Config, load_config
from onguard.errors import ChainError
from onguard.incidents.audit import AuditKind, AuditLog
from onguard.incidents.blocklog import BlockLog
from onguard.incidents.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.preflight import run_preflight
from onguard.sources.blocks import SOURCE_NAME

DAEMON_ACTOR = "daemon:"  # the config audit entry's actor: daemon:<guardian address>


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("status", help="health of the guardian, from its database and the chain")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = IncidentStore(config.database)
    report = Report(as_json=args.json)
    try:
        checkpoint = _database(report, config, store)
        _presigned(report, config, store)
        health = _chain(report, config, store, checkpoint)
        _preflight(report, config, store, health)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.document, indent=2, default=str))
    return 1 if report.document["attention"] else 0


class Report:
    """The status as a document, printed line by line as it is gathered unless it is wanted as JSON."""

    def __init__(self, *, as_json: bool) -> None:
        self.document: dict[str, Any] = {"attention": []}
        self._quiet = as_json

    def line(self, text: str) -> None:
        if not self._quiet:
            print(text)

    def attention(self, reason: str) -> None:
        self.document["attention"].append(reason)


def _database(report: Report, config: Config, store: IncidentStore) -> int | None:
    checkpoint = store.checkpoint_row(SOURCE_NAME, config.chain.chain_id)
    report.document["database"] = str(config.database)
    report.line(f"database      {config.database}")
    if checkpoint is None:
        report.document["last_block"] = None
        report.line("last block    none yet (the daemon has not handled a block on this chain)")
    else:
        report.document["last_block"] = {"number": checkpoint[0], "handled_at": checkpoint[1]}
        report.line(f"last block    {checkpoint[0]} (handled at {checkpoint[1]})")
    incidents = store.incidents()
    needing = [i for i in incidents if i.status in (IncidentStatus.OPEN, IncidentStatus.FAILED)]
    report.document["incidents"] = {
        "total": len(incidents),
        "open_or_failed": [{"id": i.id, "status": str(i.status), "severity": i.severity, "policy": i.policy_id,
                            "block": i.opened_block, "title": i.title} for i in needing]}
    report.line(f"incidents     {len(incidents)} in all; {len(needing)} open or failed")
    for incident in needing:
        if incident.status == IncidentStatus.FAILED:
            report.attention(f"incident {incident.id} FAILED: the protocol is not in the safe state")
        report.line(f"  #{incident.id} {incident.status.upper():<6} {incident.policy_id} at block "
                    f"{incident.opened_block}: {incident.title}")
    failures = store.evaluation_failures()
    report.document["evaluation_failures"] = [
        {"policy": f.policy_id, "blocks": f.count, "last_block": f.last_block, "last_at": f.last_at,
         "message": f.last_message} for f in failures]
    if failures:
        report.attention("policies could not be evaluated at some blocks")
        report.line("EVALUATION FAILURES (these policies were NOT checked at those blocks)")
        for failure in failures:
            report.line(f"  {failure.policy_id}: {failure.count} block(s), last at block {failure.last_block} "
                        f"({failure.last_at}): {failure.last_message}")
    else:
        report.line("evaluation    every policy evaluated at every block handled")
    return checkpoint[0] if checkpoint else None


def _presigned(report: Report, config: Config, store: IncidentStore) -> None:
    """Pre-signed actions: ready, or STALE (the Safe's nonce moved: the daemon recorded it)."""
    records = SafeTxStore(store).list(TxKind.PRESIGNED)
    names = [a.name for a in config.actions.values() if a.via == "presigned"] + sorted(
        {r.action for r in records if r.action} - {a.name for a in config.actions.values() if a.via == "presigned"})
    states = report.document["presigned"] = []
    for name in names:
        mine = [r for r in records if r.action == name]
        pending = [r for r in mine if r.status == TxStatus.PENDING]
        latest = mine[-1] if mine else None
        if pending:
            best = max(pending, key=lambda r: len(r.signatures))
            states.append({"action": name, "state": "ready", "signatures": len(best.signatures),
                           "nonce": best.tx.nonce, "safe_tx_hash": best.safe_tx_hash})
            report.line(f"presigned     {name}: {len(best.signatures)} signature(s) for nonce {best.tx.nonce} "
                        f"(Safe tx {best.safe_tx_hash[:18]}…)")
        elif latest is not None and latest.status == TxStatus.STALE:
            states.append({"action": name, "state": "stale", "nonce": latest.tx.nonce, "note": latest.note})
            report.attention(f"the pre-signed {name} is stale")
            report.line(f"presigned     {name}: STALE — signed for nonce {latest.tx.nonce}, {latest.note}; "
                        "owners must re-sign (`onguard presign`)")
        elif latest is not None and latest.status == TxStatus.EXECUTED:
            states.append({"action": name, "state": "executed", "tx_hash": latest.tx_hash})
            report.line(f"presigned     {name}: executed in {latest.tx_hash}")
        else:
            states.append({"action": name, "state": "not-signed"})
            report.attention(f"the pre-signed {name} is not signed")
            report.line(f"presigned     {name}: NOT SIGNED — the daemon cannot execute it (`onguard presign {name}`)")


def _chain(report: Report, config: Config, store: IncidentStore, checkpoint: int | None) -> ChainHealth:
    """The chain as the read endpoints show it now: blind, behind or on another chain needs a human."""
    health = asyncio.run(_look(config, store, checkpoint))
    recorded = BlockLog(store, config.chain.chain_id).genesis()
    problems = list(health.problems(max_lag=config.chain.max_lag))
    report.document["chain"] = {
        "chain_id": config.chain.chain_id, "head": health.head, "lag": health.lag, "genesis": health.genesis,
        "genesis_recorded": recorded, "problems": problems,
        "endpoints": [{"label": e.label, "healthy": e.healthy, "head": e.last_head, "latency_ms": e.latency_ms,
                       "error": e.last_error} for e in health.endpoints if e.role == Role.READ]}
    if health.head is not None:
        lag = f", {health.lag} block(s) after the last handled" if health.lag is not None else ""
        genesis = f", genesis {health.genesis[:12]}… as recorded" if health.genesis and recorded else ""
        report.line(f"chain         head {health.head}{lag} (chain id {config.chain.chain_id}{genesis})")
    for endpoint in health.endpoints:
        if endpoint.role != Role.READ:
            continue
        if endpoint.healthy:
            report.line(f"endpoint      {endpoint.label}: ok, head {endpoint.last_head}, {endpoint.latency_ms} ms")
        else:
            report.line(f"endpoint      {endpoint.label}: FAILING — {endpoint.last_error}")
    for problem in problems:
        report.attention(problem)
        report.line(problem)
    return health


def _preflight(report: Report, config: Config, store: IncidentStore, health: ChainHealth) -> None:
    """A fresh preflight of the guardian the daemon last started as (its address is in the config audit entry):
    can it still act? Skipped when the daemon never started or the chain cannot be read."""
    entry = AuditLog(store).last(AuditKind.CONFIG)
    guardian = entry.actor.removeprefix(DAEMON_ACTOR) if entry and entry.actor.startswith(DAEMON_ACTOR) else None
    report.document["guardian"] = guardian
    if guardian is None or health.head is None or health.wrong_chain:
        report.document["preflight"] = None
        reason = "the daemon has not started yet" if guardian is None else "the chain cannot be read"
        report.line(f"preflight     not run: {reason}")
        return
    try:
        result = asyncio.run(_run_preflight(config, guardian, store))
    except ChainError as exc:
        report.document["preflight"] = {"ok": False, "error": exc.message}
        report.attention(f"the preflight could not run: {exc.message}")
        report.line(f"preflight     COULD NOT RUN: {exc.message}")
        return
    report.document["preflight"] = result.to_json()
    report.line(f"guardian      {guardian}")
    if result.ok:
        report.line(f"preflight     ok at block {result.block}: every action can be taken")
        return
    report.attention("the preflight failed: the guardian cannot act")
    report.line(f"PREFLIGHT FAILED at block {result.block}")
    for failure in result.failures:
        report.line(f"  {failure.line}")


async def _run_preflight(config: Config, guardian: str, store: IncidentStore) -> Any:
    rpc = Rpc(config.chain.rpc_url)
    try:
        return await run_preflight(config, guardian, rpc, store=store)
    finally:
        await rpc.close()


async def _look(config: Config, store: IncidentStore, checkpoint: int | None) -> ChainHealth:
    transport = Transport.from_config(config)
    try:
        watch = ChainWatch(transport, BlockLog(store, config.chain.chain_id), config.chain.chain_id,
                           stall_after=config.chain.stall_after, record_genesis=False)
        return await watch.check(checkpoint)
    finally:
        await transport.close()
