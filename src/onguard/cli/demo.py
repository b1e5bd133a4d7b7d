"""`onguard demo`: its own Anvil chain, a Safe-governed vault, two attacks, and the guardian pausing each one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from web3 import AsyncWeb3, Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo import preempt
from onguard.demo.attack import Attacker, AttackOutcome, drain_plan
from onguard.demo.world import TOKEN, Roles, World, artifact, build_world, dev_account, write_config
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore
from onguard.runtime import Guardian

GUARDIAN_KEY_ENV = "ONGUARD_DEMO_GUARDIAN_KEY"
BLOCK_TIME = 1
DRAIN_WINDOW_PASSED = 6  # blocks: more than the vault-drain policy's 5-block window
ATTEMPTS_AFTER_PAUSE = 2


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("demo", help="watch the guardian stop two attacks on its own local chain")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep the demo's onguard.toml and incident database in DIR "
                             "(then: onguard incidents --config DIR/onguard.toml list)")
    parser.set_defaults(handler=handle)


@dataclass(frozen=True, slots=True)
class DemoResult:
    world: World
    held_before: int
    held_after: int
    outcomes: tuple[AttackOutcome, ...]
    paused: bool
    incidents: tuple[Incident, ...]
    store_path: Path
    act2: preempt.RaceResult | None


def handle(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C, so the demo's anvil is stopped on every exit path.
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onguard-demo-")))
        say("starting a local Anvil chain")
        node = stack.enter_context(start_anvil())
        say("deploying a Safe v1.4.1 (2-of-3 owners), the GuardianModule and the demo vault")
        world = build_world(node.rpc_url)
        Web3(Web3.HTTPProvider(node.rpc_url)).provider.make_request("evm_setIntervalMining", [BLOCK_TIME])
        os.environ[GUARDIAN_KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
        config_path = write_config(world, folder, key_env=GUARDIAN_KEY_ENV, mempool_ws=node.ws_url)
        result = asyncio.run(play(config_path, world))
        report(result, kept=args.keep)
        act2_ok = result.act2 is not None and result.act2.exploit_reverted and result.act2.order[:1] == ("pause",)
        return 0 if result.paused and act2_ok else 1
    return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def say(text: str) -> None:
    print(f"» {text}", file=sys.stderr, flush=True)


async def play(config_path: Path, world: World) -> DemoResult:
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    stop = asyncio.Event()
    daemon = asyncio.create_task(guardian.run(stop))
    try:
        await asyncio.wait_for(guardian.ready.wait(), timeout=30)
        w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(world.rpc_url))
        vault = w3.eth.contract(address=world.vault, abi=artifact("Vault")["abi"])
        asset = w3.eth.contract(address=world.asset, abi=artifact("TestToken")["abi"])
        held_before = int(await asset.functions.balanceOf(world.vault).call())
        say(f"the vault holds {held_before // TOKEN:,} dUSD; the guardian is watching. The attack starts.")
        outcomes = await attack(w3, world)
        held_after = int(await asset.functions.balanceOf(world.vault).call())
        paused = bool(await vault.functions.paused().call())
        act2 = await second_act(world, config.database) if paused else None
    finally:
        stop.set()
        await daemon
        incidents = tuple(guardian.store.incidents())
        await guardian.close()
    return DemoResult(world=world, held_before=held_before, held_after=held_after, outcomes=tuple(outcomes),
                      paused=paused, incidents=incidents, store_path=config.database, act2=act2)


async def second_act(world: World, store_path: Path) -> preempt.RaceResult:
    sync_w3 = Web3(Web3.HTTPProvider(world.rpc_url))
    say("an hour later the owners resolve the incident (`onguard incidents resolve`) and unpause the vault: a 2-of-3 "
        "multisig transaction, never automatic")
    # An hour of blocks: the drain leaves the policy's window, so the policy is quiet when the incident ends.
    await asyncio.to_thread(sync_w3.provider.make_request, "anvil_mine", [hex(DRAIN_WINDOW_PASSED)])
    await asyncio.sleep(2 * BLOCK_TIME)  # the guardian has seen those blocks
    await asyncio.to_thread(_resolve_open_incidents, store_path)
    await asyncio.to_thread(preempt.unpause_by_owners, sync_w3, world)
    say("an exploit contract is armed: in ONE transaction it will push the oracle price up and borrow all the cash")
    exploit = await asyncio.to_thread(preempt.arm_exploit, sync_w3, world)
    await asyncio.sleep(2 * BLOCK_TIME)  # the guardian has seen those blocks
    say("mining is held; the exploit enters the mempool")
    return await asyncio.to_thread(preempt.race, sync_w3, world, exploit, store_path)


def _resolve_open_incidents(store_path: Path) -> None:
    """What the owners do before unpausing; otherwise the guardian, keeping the incident's pause, pauses again."""
    store = IncidentStore(store_path)
    try:
        for incident in store.watched_incidents(incident_chain_id(store)):
            store.set_status(incident.id, IncidentStatus.RESOLVED, actor="owners (demo)",
                             reason="drain stopped; redeemFor fixed; the owners unpause")
    finally:
        store.close()


def incident_chain_id(store: IncidentStore) -> int:
    return next((i.chain_id for i in store.incidents(limit=1)), 0)


async def attack(w3: AsyncWeb3, world: World) -> list[AttackOutcome]:
    attacker = Attacker(w3, world)
    victims = {dev_account(i).address: await attacker.shares_of(dev_account(i).address) for i in Roles.DEPOSITORS}
    names = dict(zip(victims, ("alice", "bob", "carol"), strict=True))
    outcomes: list[AttackOutcome] = []
    refused = 0
    for step in drain_plan(victims):
        outcome = await attacker.redeem_for(step)
        outcomes.append(outcome)
        if outcome.succeeded:
            say(f"block {outcome.block}: attacker redeemFor({names[step.victim]}) took "
                f"{outcome.assets_taken // TOKEN:,} dUSD")
        else:
            refused += 1
            say(f"block {outcome.block}: attacker redeemFor({names[step.victim]}) REVERTED (vault paused)")
            if refused >= ATTEMPTS_AFTER_PAUSE:
                break
    return outcomes


def report(result: DemoResult, kept: Path | None) -> None:
    world = result.world
    taken = sum(o.assets_taken for o in result.outcomes)
    safe_share = result.held_after / result.held_before if result.held_before else 0
    print()
    print("onguard demo")
    print(f"  chain        local Anvil, chain id {world.chain_id}")
    print(f"  Safe         {world.safe} (v1.4.1, 2 of 3 owners)")
    print(f"  module       {world.module} (guardian {world.guardian} may call vault.pause(), breaker.trip())")
    print(f"  vault        {world.vault}, {result.held_before // TOKEN:,} dUSD from 3 depositors")
    print()
    print("act 1: a drain over several blocks, caught on mined evidence")
    print("  attack       redeemFor() checks no allowance: the attacker redeems the depositors' shares to himself,")
    print("               one slice per block")
    for incident in result.incidents[-1:]:  # the first: incidents are listed newest first
        evidence = incident.evidence
        print(f"  tripped      policy {incident.policy_id} ({incident.severity}) at block {incident.opened_block}: "
              f"{evidence['measured']} over blocks {evidence['window']['from_block']}-{evidence['window']['to_block']}")
        withdrawn, remaining = int(evidence["value"]), int(evidence["state"]["assets"])
        print(f"               = {withdrawn // TOKEN:,} dUSD, {withdrawn / (withdrawn + remaining):.0%} of the "
              f"{(withdrawn + remaining) // TOKEN:,} dUSD the vault held before (condition: "
              f"{incident.evidence.get('condition', 'see the policy')})")
    store = IncidentStore(result.store_path)
    for incident in result.incidents[-1:]:
        for response in store.responses(incident.id):
            print(f"  response     {response.action}: {response.status}, tx {response.tx_hash} "
                  f"in block {response.block_number}, gas {response.gas_used:,}" if response.gas_used else
                  f"  response     {response.action}: {response.status}")
    store.close()
    refused = [o for o in result.outcomes if not o.succeeded]
    print(f"  attempts     {len(result.outcomes) - len(refused)} succeeded, {len(refused)} reverted after the pause")
    print(f"  outcome      drained before the pause: {taken // TOKEN:,} dUSD "
          f"({taken / result.held_before:.0%}); still safe in the vault: {result.held_after // TOKEN:,} dUSD "
          f"({safe_share:.0%})")
    print(f"  vault paused {'yes' if result.paused else 'NO'}; unpausing needs the Safe's owners (never automatic)")
    if result.act2 is not None:
        report_second_act(result.act2)
    if kept:
        print(f"  kept         {kept}/onguard.toml and its database: "
              f"onguard incidents --config {kept}/onguard.toml list")


def report_second_act(race: preempt.RaceResult) -> None:
    print()
    print("act 2: a one-transaction exploit, stopped in the mempool")
    print("  attack       an exploit contract pushes the oracle price up and borrows all the vault's cash, in one")
    print(f"               transaction ({race.exploit_tx})")
    if race.predicted_cash_after is not None:
        print(f"  seen pending simulated on the latest state: the vault's cash would fall from "
              f"{race.cash_before // TOKEN:,} to {race.predicted_cash_after // TOKEN:,} dUSD")
    if race.pause_tx is None:
        print("  response     NO pause was sent")
        return
    print(f"  response     pause {race.pause_tx} broadcast {race.broadcast_ms} ms after the exploit was seen")
    print(f"  block {race.block:<6} " + ", ".join(f"{i}: {who}" for i, who in enumerate(race.order)))
    print(f"  outcome      exploit {'REVERTED' if race.exploit_reverted else 'SUCCEEDED'}; the vault kept "
          f"{race.cash_after // TOKEN:,} of {race.cash_before // TOKEN:,} dUSD")
