"""policies/kinds/state.py: an invariant over values read from the watched contracts, judged at every block.

Policies are TOML written to tmp_path and loaded against the base config (the demo contracts' ABIs); the
state dict stands in for the engine's batched read at the block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_utils import to_checksum_address

from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.kinds.state import StatePolicy
from onguard.policies.model import Verdict
from policykit import ALICE, SLOT, T0, TOKEN, batch, failed, load_text, state, withdraw

HEADER = """
id = "{id}"
description = "a state policy under test"
kind = "state"
severity = "high"
response = ["pause_vault"]
"""


@pytest.fixture
def make(tmp_path: Path, env: PolicyEnv) -> Any:
    """make(reads={name: read}, invariant="...") -> StatePolicy loaded from a file under tmp_path."""

    def build(reads: dict[str, str], invariant: str, id: str = "s") -> StatePolicy:
        table = "".join(f'{name} = "{text}"\n' for name, text in reads.items())
        body = f"\n[reads]\n{table}\n[trigger]\ninvariant = \"{invariant}\"\n"
        policy = load_text(tmp_path / "policies", env, HEADER.format(id=id) + body, f"{id}.toml")
        assert isinstance(policy, StatePolicy)
        return policy

    return build


@pytest.fixture
def solvency(make: Any) -> StatePolicy:
    return make({"assets": "vault.totalAssets()", "supply": "vault.totalSupply()"}, "state.assets >= state.supply")


def test_invariant_that_holds_gives_no_finding(solvency: StatePolicy) -> None:
    evaluator = solvency.evaluator()
    assert evaluator.observe(batch(1), state(solvency, assets=1000 * TOKEN, supply=1000 * TOKEN)) is None
    assert evaluator.observe(batch(2), state(solvency, assets=1000 * TOKEN + 1, supply=1000 * TOKEN)) is None


def test_broken_invariant_is_a_finding_with_the_read_values(solvency: StatePolicy) -> None:
    finding = solvency.evaluator().observe(batch(7), state(solvency, assets=999 * TOKEN, supply=1000 * TOKEN))
    assert finding is not None
    assert finding.verdict is Verdict.INVARIANT_BROKEN
    assert finding.policy is solvency.common
    assert (finding.block_number, finding.block_time) == (7, T0 + 7 * SLOT)
    assert finding.evidence["state"] == {"assets": 999 * TOKEN, "supply": 1000 * TOKEN}
    assert finding.evidence["reads"] == {"assets": "vault.totalAssets()", "supply": "vault.totalSupply()"}
    assert finding.evidence["invariant"] == "state.assets >= state.supply"
    assert "block 7" in finding.summary and "state.assets >= state.supply" in finding.summary


def test_every_block_is_judged_on_its_own_state(solvency: StatePolicy) -> None:
    evaluator = solvency.evaluator()
    assert evaluator.observe(batch(1), state(solvency, assets=1, supply=2)) is not None
    assert evaluator.observe(batch(2), state(solvency, assets=2, supply=2)) is None  # restored: quiet again
    assert evaluator.observe(batch(3), state(solvency, assets=1, supply=2)) is not None  # broken again: fires again


def test_events_in_the_block_do_not_matter(solvency: StatePolicy) -> None:
    evaluator = solvency.evaluator()
    assert evaluator.observe(batch(1, withdraw(1, 0, 10**30)), state(solvency, assets=5, supply=5)) is None


def test_bool_read(make: Any) -> None:
    policy = make({"paused": "vault.paused()", "tripped": "breaker.tripped()"}, "not state.paused or state.tripped")
    evaluator = policy.evaluator()
    assert evaluator.observe(batch(1), state(policy, paused=False, tripped=False)) is None
    assert evaluator.observe(batch(2), state(policy, paused=True, tripped=True)) is None
    finding = evaluator.observe(batch(3), state(policy, paused=True, tripped=False))
    assert finding is not None
    assert finding.evidence["state"] == {"paused": True, "tripped": False}


def test_address_read_compares_with_a_watched_contract(make: Any) -> None:
    """vault.oracle() must stay the watched oracle; the read's checksummed value equals the config's address."""
    policy = make({"oracle": "vault.oracle()"}, "state.oracle == contracts.oracle")
    evaluator = policy.evaluator()
    oracle = to_checksum_address("0x" + "ef" * 20)  # the base config's oracle
    assert evaluator.observe(batch(1), state(policy, oracle=oracle)) is None
    assert evaluator.observe(batch(2), state(policy, oracle=oracle.lower())) is None  # case does not matter
    finding = evaluator.observe(batch(3), state(policy, oracle=to_checksum_address(ALICE)))
    assert finding is not None
    assert finding.evidence["state"] == {"oracle": to_checksum_address(ALICE)}


def test_address_read_compares_with_an_address_literal(make: Any) -> None:
    policy = make({"asset": "vault.asset()"}, f"state.asset == {'0x' + 'a5' * 20}")
    evaluator = policy.evaluator()
    assert evaluator.observe(batch(1), state(policy, asset=to_checksum_address("0x" + "a5" * 20))) is None
    assert evaluator.observe(batch(2), state(policy, asset=to_checksum_address(ALICE))) is not None


def test_read_with_an_address_argument(make: Any) -> None:
    """asset.balanceOf(vault): the vault's cash must stay above a floor."""
    policy = make({"cash": "asset.balanceOf(vault)"}, "state.cash >= 100_000e18")
    evaluator = policy.evaluator()
    assert evaluator.observe(batch(1), state(policy, cash=100_000 * TOKEN)) is None
    assert evaluator.observe(batch(2), state(policy, cash=100_000 * TOKEN - 1)) is not None


def test_block_number_in_an_invariant(make: Any) -> None:
    """A grace period: the invariant only bites from block 100 on."""
    policy = make({"paused": "vault.paused()"}, "block.number < 100 or not state.paused")
    evaluator = policy.evaluator()
    assert evaluator.observe(batch(99), state(policy, paused=True)) is None
    finding = evaluator.observe(batch(100), state(policy, paused=True))
    assert finding is not None and finding.block_number == 100


def test_block_timestamp_in_an_invariant(make: Any) -> None:
    """The oracle's price must have been updated within the last hour of chain time."""
    policy = make({"updated": "oracle.updatedAt()"}, "block.timestamp - state.updated <= 3600")
    evaluator = policy.evaluator()
    now = T0 + 10_000
    assert evaluator.observe(batch(5, timestamp=now), state(policy, updated=now - 3600)) is None
    finding = evaluator.observe(batch(6, timestamp=now), state(policy, updated=now - 3601))
    assert finding is not None
    assert finding.block_time == now


def test_invariant_with_exact_fractions(make: Any) -> None:
    """Debt may be at most 80% of assets: exact at the boundary, however large the numbers."""
    policy = make({"debt": "vault.totalDebt()", "assets": "vault.totalAssets()"}, "state.debt <= 80% * state.assets")
    evaluator = policy.evaluator()
    big = 10**70 * 5
    assert evaluator.observe(batch(1), state(policy, debt=big * 4 // 5, assets=big)) is None
    assert evaluator.observe(batch(2), state(policy, debt=big * 4 // 5 + 1, assets=big)) is not None


def test_failed_read_raises_rather_than_holding(solvency: StatePolicy) -> None:
    values = {**state(solvency, assets=1, supply=1), solvency.reads.specs["supply"]: failed(solvency, "supply")}
    with pytest.raises(EvaluationError) as caught:
        solvency.evaluator().observe(batch(1), values)
    assert "state.supply = vault.totalSupply()" in caught.value.message
    assert "execution reverted" in caught.value.message


def test_division_by_zero_in_an_invariant_raises(make: Any) -> None:
    policy = make({"assets": "vault.totalAssets()", "supply": "vault.totalSupply()"},
                  "state.assets / state.supply >= 1")
    with pytest.raises(EvaluationError, match="division by zero"):
        policy.evaluator().observe(batch(1), state(policy, assets=5, supply=0))


def test_evaluator_declares_its_reads_and_forget_from_is_harmless(solvency: StatePolicy) -> None:
    evaluator = solvency.evaluator()
    assert {spec.text for spec in evaluator.reads} == {"vault.totalAssets()", "vault.totalSupply()"}
    evaluator.forget_from(1)
    assert evaluator.observe(batch(1), state(solvency, assets=0, supply=1)) is not None


def test_explain_lists_the_reads_and_the_invariant(solvency: StatePolicy) -> None:
    text = " ".join(solvency.explain())
    assert "state.assets = vault.totalAssets()" in text
    assert "state.supply = vault.totalSupply()" in text
    assert "state.assets >= state.supply" in text
