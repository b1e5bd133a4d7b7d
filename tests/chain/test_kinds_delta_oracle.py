"""The delta and oracle kinds on a real Anvil fork of the demo world: for each, a case that fires and a close case
that must not (a donation inflating the share price, a drain's drawdown, a manipulated oracle price, a stale
feed), and a response that really trips the circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest

from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.incidents.store import IncidentStatus, ResponseStatus
from onguard.policies.model import Finding
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, ATTACKER, BOB, CAROL, drain_slice, make_guardian, send, tokens, withdraw

pytestmark = pytest.mark.chain

UPDATER = dev_account(Roles.ORACLE_UPDATER).address
HEADER = 'description = "test policy"\nseverity = "high"\n'

SHARE_PRICE_JUMP = """
id = "share-price-jump"
kind = "delta"
response = ["alert"]
[reads]
share_price = "vault.convertToAssets(1e18)"
[delta]
of = "share_price"
blocks = 1
[trigger]
condition = "change > 2%"
"""

TVL_DRAWDOWN = """
id = "tvl-drawdown"
kind = "delta"
response = ["trip_breaker"]
[reads]
tvl = "vault.totalAssets()"
[delta]
of = "tvl"
blocks = 10
[trigger]
condition = "drawdown > 30%"
"""

PRICE_VS_TWAP = """
id = "price-vs-twap"
kind = "oracle"
response = ["trip_breaker"]
[oracle]
price = "oracle.price()"
reference = "twap"
twap_blocks = 5
[trigger]
condition = "deviation > 20%"
"""

STALE_PRICE = """
id = "stale-price"
kind = "oracle"
response = ["alert"]
[oracle]
price = "oracle.price()"
updated_at = "oracle.updatedAt()"
reference = "band"
band = ["0.9e18", "1.1e18"]
[trigger]
condition = "staleness > 3600"
"""


def guardian_with(tmp_path: Path, world, policy_text: str) -> Guardian:
    folder = tmp_path / "delta-oracle-policies"
    folder.mkdir(exist_ok=True)
    (folder / "policy.toml").write_text(HEADER + policy_text)
    # guardian_config put the guardian key in the environment; this config differs only by its policies.
    return make_guardian(write_config(world, tmp_path / "delta-oracle", key_env=GUARDIAN_KEY_ENV, policies_dir=folder))


def run(guardian: Guardian, *stages: Callable[[], None]) -> list[list[Finding]]:
    """Starts the guardian at the head, then for each stage changes the chain and lets the guardian handle the
    new blocks; returns the findings of each stage. No evaluation may fail on the way."""

    async def scenario() -> list[list[Finding]]:
        try:
            await guardian.start()
            await guardian.step()  # anchors the checkpoint at the current head
            findings = []
            for stage in stages:
                stage()
                decisions = await guardian.step()
                await guardian.drain_responses()
                findings.append([d.finding for d in decisions])
            assert guardian.store.evaluation_failures() == []
            return findings
        finally:
            await guardian.close()

    return asyncio.run(scenario())


def mine(w3, blocks: int = 1) -> None:
    w3.provider.make_request("anvil_mine", [hex(blocks)])


def donate(w3, world, assets: int) -> None:
    """dUSD minted to the attacker, then sent straight to the vault (no shares minted): two blocks."""
    asset = contract(w3, "TestToken", world.asset)
    send(w3, asset.functions.mint(ATTACKER, assets), ATTACKER)
    assert send(w3, asset.functions.transfer(world.vault, assets), ATTACKER)["status"] == 1


def set_price(w3, world, price: int) -> int:
    receipt = send(w3, contract(w3, "PriceOracle", world.oracle).functions.setPrice(price), UPDATER)
    assert receipt["status"] == 1
    return int(receipt["blockNumber"])


def share_price(w3, world) -> int:
    return int(contract(w3, "Vault", world.vault).functions.convertToAssets(10**18).call())


def breaker_tripped(w3, world) -> bool:
    return bool(contract(w3, "CircuitBreaker", world.breaker).functions.tripped().call())


# ---- delta: a donation inflating the share price ----


def test_delta_fires_when_a_donation_lifts_the_share_price_five_percent(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    before = share_price(w3, world)
    (findings,) = run(guardian_with(tmp_path, world, SHARE_PRICE_JUMP),
                      lambda: donate(w3, world, tokens(50_000)))  # 5% of the vault's 1M
    (finding,) = findings
    after = share_price(w3, world)
    assert finding.policy.id == "share-price-jump"
    assert finding.block_number == w3.eth.block_number  # the transfer's block, not the mint's
    assert (finding.evidence["previous"], finding.evidence["current"]) == (before, after)
    assert finding.evidence["change"] == Fraction(after - before, before)
    assert Fraction(4, 100) < finding.evidence["change"] <= Fraction(5, 100)
    assert finding.evidence["reads"] == {"share_price": "vault.convertToAssets(1e18)"}


def test_delta_stays_quiet_for_a_one_percent_donation(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    before = share_price(w3, world)
    assert run(guardian_with(tmp_path, world, SHARE_PRICE_JUMP), lambda: donate(w3, world, tokens(10_000))) == [[]]
    assert Fraction(share_price(w3, world) - before, before) > Fraction(9, 1000)  # the donation did land


# ---- delta: the drain's drawdown trips the breaker ----


def test_delta_drawdown_of_a_drain_trips_the_breaker_on_chain(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    guardian = guardian_with(tmp_path, world, TVL_DRAWDOWN)

    def three_slices() -> None:
        mine(w3, 10)  # the ten blocks of history the policy waits for
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))  # 30% of 1M: at the limit, not above

    receipts = []

    def fourth_slice() -> None:
        receipts.append(drain_slice(w3, world, ALICE, tokens(100_000)))

    async def scenario() -> None:
        try:
            await guardian.start()
            await guardian.step()
            three_slices()
            assert await guardian.step() == []
            fourth_slice()
            (decision,) = await guardian.step()
            await guardian.drain_responses()
            finding = decision.finding
            assert finding.block_number == receipts[0]["blockNumber"]
            assert (finding.evidence["peak"], finding.evidence["current"]) == (tokens(1_000_000), tokens(600_000))
            assert finding.evidence["drawdown"] == Fraction(2, 5)
            assert decision.actions == ("trip_breaker",)
            (response,) = guardian.store.responses(decision.incident.id)
            assert (response.action, response.status) == ("trip_breaker", ResponseStatus.MINED)
            assert guardian.store.incident(decision.incident.id).status == IncidentStatus.SAFE
        finally:
            await guardian.close()

    assert not breaker_tripped(w3, world)
    asyncio.run(scenario())
    assert breaker_tripped(w3, world)
    # Outflows are halted: the attacker's next slice reverts.
    assert drain_slice(w3, world, BOB, tokens(100_000))["status"] == 0


def test_delta_stays_quiet_for_honest_withdrawals_under_the_drawdown(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world

    def withdrawals() -> None:
        mine(w3, 10)
        withdraw(w3, world, ALICE, tokens(100_000))
        withdraw(w3, world, BOB, tokens(100_000))
        withdraw(w3, world, CAROL, tokens(99_999))  # 29.9999% of the vault within ten blocks

    assert run(guardian_with(tmp_path, world, TVL_DRAWDOWN), withdrawals) == [[]]
    assert not breaker_tripped(w3, world)


# ---- oracle: a manipulated price against its twap ----


def test_oracle_price_doubling_against_its_twap_trips_the_breaker(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    blocks = []
    (findings,) = run(guardian_with(tmp_path, world, PRICE_VS_TWAP),
                      lambda: (mine(w3, 5), blocks.append(set_price(w3, world, 2 * 10**18))))
    (finding,) = findings
    assert finding.block_number == blocks[0]
    assert (finding.evidence["price"], finding.evidence["reference"]) == (2 * 10**18, 10**18)
    assert finding.evidence["deviation"] == 1
    assert finding.evidence["twap"] == {"blocks": 5, "from_block": blocks[0] - 5, "to_block": blocks[0] - 1}
    assert breaker_tripped(w3, world)


def test_oracle_stays_quiet_for_a_five_percent_move(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    assert run(guardian_with(tmp_path, world, PRICE_VS_TWAP),
               lambda: (mine(w3, 5), set_price(w3, world, 105 * 10**16), mine(w3, 2))) == [[]]
    assert contract(w3, "PriceOracle", world.oracle).functions.price().call() == 105 * 10**16
    assert not breaker_tripped(w3, world)


# ---- oracle: a stale feed ----


def test_oracle_staleness_fires_once_the_clock_passes_the_limit(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    updated = []

    def refresh_then_wait_exactly_the_limit() -> None:
        block = set_price(w3, world, 10**18)
        updated.append(w3.eth.get_block(block)["timestamp"])
        w3.provider.make_request("evm_setNextBlockTimestamp", [hex(updated[0] + 3600)])
        mine(w3)

    def one_more_second() -> None:
        w3.provider.make_request("evm_increaseTime", [hex(1)])
        mine(w3)

    quiet, stale = run(guardian_with(tmp_path, world, STALE_PRICE), refresh_then_wait_exactly_the_limit,
                       one_more_second)
    assert quiet == []  # 3600 s: at the limit, not past it
    (finding,) = stale
    assert finding.evidence["updated_at"] == updated[0]
    assert finding.evidence["staleness"] == w3.eth.get_block("latest")["timestamp"] - updated[0] > 3600
    assert finding.evidence["in_band"] is True
