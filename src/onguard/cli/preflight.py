"""`onguard preflight`: every check that the guardian could act now, each printed ✓ or ✗ with its fix; exit 2 on
any failure."""

from __future__ import annotations

import argparse
import asyncio
import json

from onguard.chain.keys import load_guardian_account
from onguard.chain.rpc import Rpc
from onguard.config import Config, load_config
from onguard.errors import InputError
from onguard.preflight import DEFAULT_RESPONSES, PreflightReport, run_preflight
from onguard.units import parse_address

EXIT_FAILED = 2


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("preflight", help="prove the guardian could act now (simulated), or say what to fix")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("--guardian", help="the guardian key's address (default: the key the config names)")
    parser.add_argument("--responses", type=int, default=DEFAULT_RESPONSES, metavar="K",
                        help="responses the key's balance must pay for at the fee ceiling "
                             f"(default {DEFAULT_RESPONSES})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (exit codes unchanged)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.responses < 1:
        raise InputError("must be at least 1", field="--responses")
    if args.guardian:
        try:
            guardian = parse_address(args.guardian)
        except ValueError as exc:
            raise InputError(str(exc), field="--guardian") from None
    else:
        guardian = load_guardian_account(config.guardian_key).address
    report = asyncio.run(_run(config, guardian, args.responses))
    if args.json:
        print(json.dumps({"guardian": guardian, **report.to_json()}, indent=2))
        return 0 if report.ok else EXIT_FAILED
    print(f"preflight at block {report.block} for the guardian key {guardian}:")
    for result in report.results:
        print(f"  {result.line}")
    if report.ok:
        print("ready: every action would succeed now")
        return 0
    print(f"NOT ready: {len(report.failures)} check(s) failed; the daemon refuses to start until they pass")
    return EXIT_FAILED


async def _run(config: Config, guardian: str, responses: int) -> PreflightReport:
    rpc = Rpc(config.chain.rpc_url)
    try:
        chain_id = await rpc.chain_id()
        if chain_id != config.chain.chain_id:
            raise InputError(f"the node is on chain {chain_id}, the config says {config.chain.chain_id}",
                             file=str(config.path), field="chain.chain_id")
        return await run_preflight(config, guardian, rpc, responses=responses)
    finally:
        await rpc.close()
