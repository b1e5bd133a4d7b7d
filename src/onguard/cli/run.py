"""`onguard run`: the guardian daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from onguard.chain.keys import load_guardian_account
from onguard.cli.common import add_config_argument
from onguard.cli.policies import describe_error
from onguard.config import load_config
from onguard.incidents.daemonlock import daemon_lock
from onguard.policies.loader import check_policies
from onguard.runtime import Guardian, build_guardian, freeze_start_up_objects


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("run", help="run the guardian daemon")
    add_config_argument(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # Everything is checked before anything starts: an invalid policy or key stops the daemon here.
    check = check_policies(config.policies_dir, config.contracts, config.actions)
    if check.errors:
        for error in check.errors:
            print(describe_error(error), file=sys.stderr)
        print(f"error: {len(check.errors)} invalid policy file(s): the guardian does not start with a policy "
              "it cannot evaluate", file=sys.stderr)
        return 2
    # A route naming a policy that is not there is a typo that would silence a page (a disabled one is there).
    config.notifications.check_policies({policy.common.id for policy in check.policies})
    policies = [policy for policy in check.policies if policy.common.enabled]
    account = load_guardian_account(config.guardian_key)
    with daemon_lock(config.state):
        asyncio.run(_run(build_guardian(config, account, policies=policies)))
    return 0


async def _run(guardian: Guardian) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    frozen = asyncio.create_task(_freeze_once_started(guardian))
    try:
        await guardian.run(stop)
    finally:
        frozen.cancel()
        await guardian.close()


async def _freeze_once_started(guardian: Guardian) -> None:
    """This process is the daemon's alone: once started, its start-up objects leave the cyclic GC's reach."""
    await guardian.ready.wait()
    freeze_start_up_objects()
