"""The built-in guardian self-defence policy: what it is generated from (the config and the guardian key), how it
is turned off, and how it judges a simulated pending transaction and a mined block (hand-built values, no chain)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from onguard.chain.module import module_abi
from onguard.chain.simulate import Simulation, SimulatedLog
from onguard.chain.view import ReadFailure
from onguard.cli.main import main
from onguard.config import Config, load_config
from onguard.errors import ConfigError, PolicyError
from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.engine import PolicyEngine
from onguard.policies.loader import load_policy
from onguard.policies.model import ROUTINE_ID, SELF_DEFENCE_ID, Severity
from onguard.policies.selfdefence import (
    EXECUTION_SUCCESS,
    Authority,
    SelfDefencePolicy,
    builtin_policies,
    configured_guardian,
)

from conftest import KEY_ENV, MODULE, SAFE, VAULT, base_config_data, base_policy_data, to_toml
from policykit import batch, block

GUARDIAN = to_checksum_address("0x" + "9a" * 20)
OWNERS = tuple(to_checksum_address("0x" + f"{n:02x}" * 20) for n in (1, 2, 3))
ATTACKER = to_checksum_address("0x" + "66" * 20)
NO_PIN = "0x" + "00" * 32
RECORDED = "0x" + "7e" * 32


def policy_of(config: Config, recorded: Callable[[str], bool] | None = None) -> SelfDefencePolicy:
    (policy,) = builtin_policies(config, GUARDIAN, recorded=recorded)
    return policy


def values(authority: Authority, *, owners: tuple[str, ...] = OWNERS, threshold: int = 2, module_enabled: bool = True,
           guardian: bool = True, allowed: bool = True, pinned: str = NO_PIN, paused: bool = False,
           tripped: bool = False, last_executed: int = 0, failed: tuple[str, ...] = ()) -> dict[Any, Any]:
    """The authority's reads as a node would answer them; `failed`: the texts of reads that revert."""
    answers: dict[str, Any] = {"safe.getOwners()": owners, "safe.getThreshold()": threshold,
                               f"safe.isModuleEnabled({MODULE})": module_enabled,
                               f"module.isGuardian({GUARDIAN})": guardian, "vault.paused()": paused,
                               "breaker.tripped()": tripped}
    result: dict[Any, Any] = {}
    for spec in authority.reads:
        text = spec.text
        if text.endswith(".allowed"):
            value: Any = allowed
        elif text.endswith(".calldataHash"):
            value = pinned
        elif text.endswith(".lastExecutedAt"):
            value = last_executed
        elif text.endswith(".cooldown"):
            value = 3600
        else:
            value = next(v for k, v in answers.items() if k.lower() == text.lower())
        result[spec] = ReadFailure(spec, "reverted") if text in failed else value
    return result


def probes(authority: Authority, *, succeed: bool = True) -> dict[Any, Any]:
    return {spec: "0x" if succeed else ReadFailure(spec, "execution reverted") for spec in authority.probes}


def simulation(authority: Authority, before: dict[Any, Any], after: dict[Any, Any], *, can_before: bool = True,
               can_after: bool = True, reverted: bool = False, executed: tuple[str, ...] = ()) -> Simulation:
    logs = tuple(SimulatedLog(address=SAFE.lower(), topics=(EXECUTION_SUCCESS, bytes.fromhex(h[2:])), data=b"")
                 for h in executed)
    return Simulation(before=before, after=after, reverted=reverted, error=None, touched=frozenset(), logs=logs,
                      probed_before=probes(authority, succeed=can_before),
                      probed_after=probes(authority, succeed=can_after))


PENDING = {"hash": "0x" + "ee" * 32, "from": OWNERS[0], "to": SAFE, "value": 0}


# ---- generation ----


def test_generated_from_the_config_and_the_guardian_key(config: Config) -> None:
    policy = policy_of(config)
    common = policy.common
    assert common.id == SELF_DEFENCE_ID and common.severity == Severity.CRITICAL and common.enabled
    assert common.response == ("pause_vault", "trip_breaker")  # every configured action, unless the config says
    routine = policy.routine
    assert routine.id == ROUTINE_ID and routine.response == () and routine.severity == Severity.HIGH
    texts = {spec.text.lower() for spec in policy.authority.reads}
    assert {"safe.getowners()", "safe.getthreshold()", f"safe.ismoduleenabled({MODULE})",
            f"module.isguardian({GUARDIAN.lower()})", "vault.paused()", "breaker.tripped()"} <= texts
    pause = keccak(text="pause()")[:4]
    assert f"module.getaction({VAULT}, 0x{pause.hex()}).allowed" in texts
    # The probes are the guardian's own transactions, exactly as the responder sends them: execute(vault, 0,
    # pause(), Call) from the guardian key to the module. Encoded here with the module's ABI, independently.
    expected = module_abi().encode_call("execute(address,uint256,bytes,uint8)", to_checksum_address(VAULT), 0,
                                        pause, 0)
    by_target = {spec.calldata: spec for spec in policy.authority.probes}
    assert expected in by_target
    probe = by_target[expected]
    assert probe.sender == GUARDIAN and probe.address.lower() == MODULE and len(policy.authority.probes) == 2


def test_a_multi_call_action_is_probed_as_one_execute_batch(write_toml: Callable[..., Path]) -> None:
    data = base_config_data()
    data["actions"] = {"freeze": {"done_when": "vault.paused() and breaker.tripped()", "calls": [
        {"contract": "vault", "function": "pause()"}, {"contract": "breaker", "function": "trip()"}]}}
    (probe,) = policy_of(load_config(write_toml(data))).authority.probes
    assert probe.calldata[:4] == module_abi().function("executeBatch((address,bytes)[])").selector


def test_turned_off_by_the_config_and_limited_to_named_actions(write_toml: Callable[..., Path]) -> None:
    data = base_config_data()
    data["self_defence"] = {"enabled": False}
    assert builtin_policies(load_config(write_toml(data)), GUARDIAN) == []
    data["self_defence"] = {"actions": ["pause_vault"]}
    assert policy_of(load_config(write_toml(data))).common.response == ("pause_vault",)


@pytest.mark.parametrize("section, message", [({"actions": ["pause_everything"]}, "no action named 'pause_everything'"),
                                               ({"actions": []}, "is empty"),
                                               ({"enabled": "no"}, "expected true or false")])
def test_a_bad_self_defence_section_names_the_field(write_toml: Callable[..., Path], section: dict[str, Any],
                                                    message: str) -> None:
    data = base_config_data()
    data["self_defence"] = section
    with pytest.raises(ConfigError) as caught:
        load_config(write_toml(data))
    assert caught.value.field.startswith("self_defence.") and message in caught.value.message


def test_a_policy_file_cannot_take_a_built_in_id(tmp_path: Path, config: Config) -> None:
    data = base_policy_data()
    data["id"] = SELF_DEFENCE_ID
    path = tmp_path / "mine.toml"
    path.write_text(to_toml(data))
    with pytest.raises(PolicyError) as caught:
        load_policy(path, PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert caught.value.field == "id" and "built-in" in caught.value.message


def test_without_a_module_only_the_safe_is_read(write_toml: Callable[..., Path]) -> None:
    data = base_config_data()
    del data["safe"]["guardian_module"]
    for action in data["actions"].values():
        action["via"] = "presigned"
    authority = policy_of(load_config(write_toml(data))).authority
    assert authority.probes == () and {s.text for s in authority.reads} == {"safe.getOwners()", "safe.getThreshold()"}


def test_the_guardian_address_comes_from_the_key_source(write_toml: Callable[..., Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    account = Account.create()
    monkeypatch.setenv(KEY_ENV, account.key.hex())
    assert configured_guardian(load_config(write_toml(base_config_data()))) == account.address
    monkeypatch.delenv(KEY_ENV)
    assert configured_guardian(load_config(write_toml(base_config_data()))) is None
    keystore = tmp_path / "guardian.json"
    keystore.write_text(json.dumps({"address": GUARDIAN[2:].lower(), "crypto": {}}))
    data = base_config_data()
    data["guardian"] = {"keystore": str(keystore)}
    assert configured_guardian(load_config(write_toml(data))) == GUARDIAN


# ---- judging a pending transaction ----


def test_a_module_disabled_trips_and_names_the_cause(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    sim = simulation(authority, values(authority), values(authority, module_enabled=False), can_after=False)
    finding = policy.evaluator().observe_simulation(PENDING, sim, block(10))
    assert finding is not None and finding.policy.id == SELF_DEFENCE_ID
    assert finding.policy.response == ("pause_vault", "trip_breaker")
    kinds = [c["kind"] for c in finding.evidence["changes"]]
    assert kinds == ["module-disabled", "power-lost", "power-lost"]
    assert finding.evidence["threat_tx"] == PENDING["hash"] and "pausing first" in finding.summary


@pytest.mark.parametrize("after, kind", [({"guardian": False}, "guardian-removed"),
                                         ({"allowed": False}, "action-revoked"),
                                         ({"pinned": "0x" + "12" * 32}, "action-revoked"),
                                         ({"threshold": 1}, "threshold-changed"),
                                         ({"owners": (OWNERS[1], OWNERS[2], ATTACKER)}, "owners-changed")])
def test_each_way_of_stripping_authority_is_named(config: Config, after: dict[str, Any], kind: str) -> None:
    policy = policy_of(config)
    authority = policy.authority
    sim = simulation(authority, values(authority), values(authority, **after),
                     can_after=kind in ("threshold-changed", "owners-changed"))
    finding = policy.evaluator().observe_simulation(PENDING, sim, block(10))
    assert finding is not None and finding.policy.id == SELF_DEFENCE_ID
    assert kind in [c["kind"] for c in finding.evidence["changes"]]


def test_a_probe_that_fails_after_is_power_lost_whatever_the_cause(config: Config) -> None:
    # The pauser role moved: nothing of the Safe or the module changes, only the guardian's own pause would fail.
    policy = policy_of(config)
    authority = policy.authority
    sim = simulation(authority, values(authority), values(authority), can_after=False)
    finding = policy.evaluator().observe_simulation(PENDING, sim, block(10))
    assert finding is not None and {c["kind"] for c in finding.evidence["changes"]} == {"power-lost"}


def test_benign_reverted_and_already_paused_transactions_trip_nothing(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    judge = policy.evaluator()
    assert judge.observe_simulation(PENDING, simulation(authority, values(authority), values(authority)),
                                    block(10)) is None
    reverted = simulation(authority, values(authority), values(authority, module_enabled=False), can_after=False,
                          reverted=True)
    assert judge.observe_simulation(PENDING, reverted, block(10)) is None
    # The owners pause the vault and trip the breaker themselves: the guardian's pause would fail after, but its
    # done_when holds: the protocol is in the safe state, no power is lost.
    paused = simulation(authority, values(authority), values(authority, paused=True, tripped=True), can_after=False)
    assert judge.observe_simulation(PENDING, paused, block(10)) is None


def test_a_recorded_proposal_rotating_owners_only_alerts(config: Config) -> None:
    policy = policy_of(config, recorded=lambda h: h == RECORDED)
    authority = policy.authority
    rotated = values(authority, owners=(OWNERS[0], OWNERS[1], ATTACKER))
    finding = policy.evaluator().observe_simulation(
        PENDING, simulation(authority, values(authority), rotated, executed=(RECORDED,)), block(10))
    assert finding is not None and finding.policy.id == ROUTINE_ID and finding.policy.response == ()
    assert finding.evidence["routine"] and finding.evidence["recorded_proposals"] == [RECORDED]


def test_an_unrecorded_safe_tx_or_one_that_strips_power_still_pauses(config: Config) -> None:
    policy = policy_of(config, recorded=lambda h: h == RECORDED)
    authority = policy.authority
    rotated = values(authority, owners=(OWNERS[0], OWNERS[1], ATTACKER))
    judge = policy.evaluator()
    other = judge.observe_simulation(PENDING, simulation(authority, values(authority), rotated,
                                                         executed=("0x" + "11" * 32,)), block(10))
    assert other is not None and other.policy.id == SELF_DEFENCE_ID
    # A recorded proposal and an unrecorded Safe tx in one transaction: not routine.
    mixed = judge.observe_simulation(PENDING, simulation(authority, values(authority), rotated,
                                                         executed=(RECORDED, "0x" + "11" * 32)), block(10))
    assert mixed is not None and mixed.policy.id == SELF_DEFENCE_ID
    # A recorded proposal that also removes this guardian: the guardian pauses (retire its daemon first).
    removing = values(authority, owners=(OWNERS[0], OWNERS[1], ATTACKER), guardian=False)
    stripped = judge.observe_simulation(PENDING, simulation(authority, values(authority), removing, can_after=False,
                                                            executed=(RECORDED,)), block(10))
    assert stripped is not None and stripped.policy.id == SELF_DEFENCE_ID


def test_unreadable_owners_before_are_an_evaluation_failure_not_safe(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    before = values(authority, failed=("safe.getOwners()",))
    with pytest.raises(EvaluationError):
        policy.evaluator().observe_simulation(PENDING, simulation(authority, before, values(authority)), block(10))


def test_owners_unreadable_after_count_as_changed(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    after = values(authority, failed=("safe.getOwners()",))
    finding = policy.evaluator().observe_simulation(PENDING, simulation(authority, values(authority), after),
                                                   block(10))
    assert finding is not None and "could no longer be read" in finding.summary


# ---- judging mined blocks ----


def mined(authority: Authority, *, can: bool = True, **state: Any) -> dict[Any, Any]:
    return {**values(authority, **state), **probes(authority, succeed=can)}


def test_a_change_mined_without_being_seen_pending_trips_on_its_block(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    judge = policy.evaluator()
    assert judge.observe(batch(10), mined(authority)) is None  # the baseline
    assert judge.observe(batch(11), mined(authority)) is None
    finding = judge.observe(batch(12), mined(authority, can=False, guardian=False))
    assert finding is not None and finding.policy.id == SELF_DEFENCE_ID and finding.block_number == 12
    assert finding.evidence["path"] == "block" and finding.evidence["compared_with_block"] == 11
    assert {c["kind"] for c in finding.evidence["changes"]} == {"guardian-removed", "power-lost"}


def test_a_reorganisation_drops_the_baseline(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    judge = policy.evaluator()
    judge.observe(batch(10), mined(authority))
    judge.forget_from(10)
    # After the rewind, block 10 of the new chain is a new baseline, not a change against the orphaned one.
    assert judge.observe(batch(10, fork=1), mined(authority, threshold=1)) is None


def test_a_routine_change_seen_pending_only_alerts_when_mined(config: Config) -> None:
    policy = policy_of(config, recorded=lambda h: h == RECORDED)
    authority = policy.authority
    judge = policy.evaluator()
    rotated = {"owners": (OWNERS[0], OWNERS[1], ATTACKER)}
    judge.observe(batch(10), mined(authority))
    judge.observe_simulation(PENDING, simulation(authority, values(authority), values(authority, **rotated),
                                                 executed=(RECORDED,)), block(10))
    finding = judge.observe(batch(11), mined(authority, **rotated))
    assert finding is not None and finding.policy.id == ROUTINE_ID
    # Another owner change, never seen pending as a recorded proposal: critical, pause.
    finding = judge.observe(batch(12), mined(authority, owners=(OWNERS[0], ATTACKER)))
    assert finding is not None and finding.policy.id == SELF_DEFENCE_ID


# ---- the CLI ----


def test_policies_check_and_explain_show_it_as_built_in(write_toml: Callable[..., Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_toml(base_config_data())
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "drain.toml").write_text(to_toml(base_policy_data()))
    assert main(["policies", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"ok  {SELF_DEFENCE_ID} (built-in, critical) -> pause_vault, trip_breaker" in out
    assert "1 valid, 0 invalid" in out
    assert main(["policies", "explain", SELF_DEFENCE_ID, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Built in: generated from onguard.toml" in out and "Then it sends pause_vault" in out
    data = base_config_data()
    data["self_defence"] = {"enabled": False}
    off = write_toml(data)
    assert main(["policies", "check", "--config", str(off)]) == 0
    assert f"OFF {SELF_DEFENCE_ID} (built-in)" in capsys.readouterr().out
    assert main(["policies", "explain", SELF_DEFENCE_ID, "--config", str(off)]) == 2
    assert "self_defence.enabled" in capsys.readouterr().err


def test_probes_missing_on_the_head_are_an_evaluation_failure_unless_something_else_trips(config: Config) -> None:
    policy = policy_of(config)
    authority = policy.authority
    unprobed = Simulation(before=values(authority), after=values(authority), reverted=False, error=None,
                          touched=frozenset(), probed_after=probes(authority))
    with pytest.raises(EvaluationError):
        policy.evaluator().observe_simulation(PENDING, unprobed, block(10))
    swapped = Simulation(before=values(authority), after=values(authority, threshold=1), reverted=False, error=None,
                         touched=frozenset(), probed_after=probes(authority))
    finding = policy.evaluator().observe_simulation(PENDING, swapped, block(10))
    assert finding is not None and finding.policy.id == SELF_DEFENCE_ID


def test_a_pause_failing_on_the_guardians_own_cooldown_is_no_loss_of_power(config: Config) -> None:
    # The guardian paused a moment ago and the vault is unpaused in the same block (or a reorganisation undid the
    # pause but not the module's record of it): its pause would fail on its own cooldown, which only its key starts.
    policy = policy_of(config)
    authority = policy.authority
    judge = policy.evaluator()
    judge.observe(batch(10), mined(authority))
    cooling = mined(authority, can=False, last_executed=block(11).timestamp - 60)
    assert judge.observe(batch(11), cooling) is None
    # Once the hour has passed it is no longer the cooldown: a pause still failing is power lost.
    judge.observe(batch(400), mined(authority))
    assert judge.observe(batch(401), mined(authority, can=False, last_executed=block(11).timestamp)) is not None


def test_the_engine_simulates_for_the_policies_first_and_for_the_self_defence_after(tmp_path: Path,
                                                                                    config: Config) -> None:
    # The attack's own simulation carries only what the team's simulate policies read; the self-defence's reads
    # and probes are the second stage (the daemon runs it after acting on the first).
    path = tmp_path / "cash.toml"
    path.write_text('id = "vault-cash-guard"\ndescription = "cash"\nkind = "simulate"\nseverity = "critical"\n'
                    'response = ["pause_vault"]\n[reads]\ncash = "asset.balanceOf(vault)"\n[trigger]\n'
                    'condition = "not reverted and after.cash < 70% * before.cash"\n')
    mine = load_policy(path, PolicyEnv(contracts=config.contracts, actions=config.actions))
    engine = PolicyEngine([mine, policy_of(config)])
    first, second = engine.simulation_stages
    assert [j.common.id for j in first.judges] == ["vault-cash-guard"] and not first.probes
    assert {spec.text for spec in first.reads} == {"asset.balanceOf(vault)"}
    assert [j.common.id for j in second.judges] == [SELF_DEFENCE_ID]
    assert second.probes == policy_of(config).authority.probes and second.probes
    assert engine.whole_simulation.reads == first.reads | second.reads
    assert engine.whole_simulation.probes == second.probes
