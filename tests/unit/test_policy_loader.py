"""policies/loader.py: policy files are checked against the config; every problem is a PolicyError naming the
file and the field."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from onguard.config import Config, load_config
from onguard.demo.world import World, write_config
from onguard.errors import PolicyError
from onguard.policies.loader import load_policies, load_policy
from onguard.policies.model import Severity

WritePolicy = Callable[..., Path]


def policy_error(path: Path, config: Config) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy(path, config.contracts, config.actions)
    return caught.value


def assert_names(error: PolicyError, path: Path, field: str) -> None:
    assert error.file == str(path)
    assert error.field == field
    assert str(error).startswith(f"{path}: {field}: "), str(error)


# ---- valid policies ----


def test_repo_vault_drain_policy_loads_against_the_demo_config(tmp_path: Path, repo_policies_dir: Path) -> None:
    world = World(rpc_url="http://127.0.0.1:8545", chain_id=31337, safe="0x" + "11" * 20, module="0x" + "22" * 20,
                  asset="0x" + "33" * 20, collateral="0x" + "44" * 20, oracle="0x" + "55" * 20,
                  breaker="0x" + "66" * 20, vault="0x" + "77" * 20, owners=("0x" + "88" * 20,),
                  guardian="0x" + "99" * 20)
    config = load_config(write_config(world, tmp_path, key_env="ONGUARD_UNIT_TEST_KEY",
                                      policies_dir=repo_policies_dir))

    policies = load_policies(config.policies_dir, config.contracts, config.actions)

    by_id = {policy.common.id: policy for policy in policies}
    drain = by_id["vault-drain"]
    assert drain.common.severity is Severity.CRITICAL
    assert drain.common.response == ("pause_vault",)
    assert drain.common.cooldown == 3600.0
    assert drain.common.enabled and not drain.common.dry_run
    assert drain.common.file == repo_policies_dir / "vault-drain.toml"
    assert (drain.contract, drain.event, drain.aggregate, drain.field) == ("vault", "Withdraw", "sum", "assets")
    assert drain.window_blocks == 5
    assert drain.above is None
    assert drain.share == Fraction(1, 4)
    assert drain.share_of == ("vault", "totalAssets()")


def test_policy_fields_are_parsed(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"] = {"aggregate": "max", "field": "shares", "window_blocks": 3, "above": "1_000e18"}
    policy_data["cooldown"] = "15m"
    policy_data["dry_run"] = True
    policy_data["response"] = ["pause_vault", "trip_breaker"]
    policy = load_policy(write_policy(policy_data), config.contracts, config.actions)
    assert policy.aggregate == "max"
    assert policy.field == "shares"
    assert policy.above == 1000 * 10**18
    assert policy.share is None and policy.share_of is None
    assert policy.common.cooldown == 900.0
    assert policy.common.dry_run is True
    assert policy.common.response == ("pause_vault", "trip_breaker")


def test_alert_only_policy_has_no_response_actions(config: Config, write_policy: WritePolicy,
                                                   policy_data: dict[str, Any]) -> None:
    policy_data["response"] = ["alert"]
    policy = load_policy(write_policy(policy_data), config.contracts, config.actions)
    assert policy.common.response == ()
    assert policy.common.alert_only


def test_share_of_without_contract_prefix_defaults_to_the_matched_contract(
        config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["share_of"] = "totalSupply()"
    policy = load_policy(write_policy(policy_data), config.contracts, config.actions)
    assert policy.share_of == ("vault", "totalSupply()")


def test_count_policy_needs_no_field(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"] = {"aggregate": "count", "window_blocks": 10, "above": 3}
    policy = load_policy(write_policy(policy_data), config.contracts, config.actions)
    assert policy.aggregate == "count"
    assert policy.field is None
    assert policy.above == 3


def test_disabled_policy_is_validated_but_not_returned(config: Config, write_policy: WritePolicy,
                                                       policy_data: dict[str, Any]) -> None:
    write_policy(policy_data, "a-enabled.toml")
    disabled = dict(policy_data, id="disabled-one", enabled=False)
    write_policy(disabled, "b-disabled.toml")

    policies = load_policies(config.policies_dir, config.contracts, config.actions)
    assert [p.common.id for p in policies] == ["vault-drain"]

    # ... and it is still checked: a broken disabled policy stops everything.
    broken = dict(disabled, severity="urgent")
    path = write_policy(broken, "b-disabled.toml")
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert_names(caught.value, path, "severity")


def test_non_toml_files_in_the_folder_are_ignored(config: Config, write_policy: WritePolicy,
                                                  policy_data: dict[str, Any]) -> None:
    write_policy(policy_data)
    write_policy("this is not TOML at all [", "README.md")
    policies = load_policies(config.policies_dir, config.contracts, config.actions)
    assert len(policies) == 1


# ---- malformed policies ----


def test_unknown_kind(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["kind"] = "oracle-deviation"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "kind")
    assert "unknown kind 'oracle-deviation'" in str(error)
    assert error.hint == "one of: event"


def test_bad_severity(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["severity"] = "urgent"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "severity")
    assert "unknown severity 'urgent'" in str(error)
    assert error.hint == "one of: info, low, medium, high, critical"


@pytest.mark.parametrize("bad_id", ["Vault-Drain", "-drain", "drain now", "x" * 65])
def test_bad_id(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any], bad_id: str) -> None:
    policy_data["id"] = bad_id
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "id")
    assert "is not a valid id" in str(error)


def test_response_naming_an_unknown_action(config: Config, write_policy: WritePolicy,
                                           policy_data: dict[str, Any]) -> None:
    policy_data["response"] = ["pause_vault", "drain_the_moat"]
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "response")
    assert "no action named 'drain_the_moat' in the config" in str(error)
    assert error.hint is not None and "known actions: pause_vault, trip_breaker" in error.hint


def test_empty_response(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["response"] = []
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "response")
    assert "is empty" in str(error)
    assert error.hint is not None and '["alert"]' in error.hint


def test_response_that_is_not_a_list(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["response"] = "pause_vault"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "response")
    assert "expected a list" in str(error)


def test_unknown_contract(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["match"]["contract"] = "treasury"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "match.contract")
    assert "no watched contract named 'treasury'" in str(error)
    assert error.hint == "watched contracts: vault, breaker, oracle"


def test_unknown_event_lists_the_contracts_events(config: Config, write_policy: WritePolicy,
                                                  policy_data: dict[str, Any]) -> None:
    policy_data["match"]["event"] = "Withdrawal"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "match.event")
    assert "vault has no event 'Withdrawal'" in str(error)
    assert error.hint is not None and error.hint.startswith("its events: ")
    for event in ("Deposit", "Withdraw", "Borrow", "Paused"):
        assert event in error.hint


def test_field_that_is_not_an_argument_of_the_event(config: Config, write_policy: WritePolicy,
                                                    policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["field"] = "amount"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.field")
    assert "Withdraw has no argument 'amount'" in str(error)
    assert error.hint == "its arguments: sender, receiver, owner, assets, shares"


def test_count_with_a_field(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["aggregate"] = "count"
    path = write_policy(policy_data)  # still has field = "assets"
    error = policy_error(path, config)
    assert_names(error, path, "trigger.field")
    assert "count takes no field" in str(error)


@pytest.mark.parametrize("aggregate", ["sum", "max"])
def test_sum_or_max_without_a_field(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any],
                                    aggregate: str) -> None:
    policy_data["trigger"]["aggregate"] = aggregate
    del policy_data["trigger"]["field"]
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.field")
    assert f"{aggregate} needs the event argument to aggregate" in str(error)
    assert error.hint is not None and "assets" in error.hint


def test_unknown_aggregate(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["aggregate"] = "avg"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.aggregate")
    assert error.hint == "one of: sum, count, max"


def test_no_threshold_at_all(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    del policy_data["trigger"]["share"]
    del policy_data["trigger"]["share_of"]
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.above")
    assert "no threshold" in str(error)


def test_share_of_without_share(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    del policy_data["trigger"]["share"]
    policy_data["trigger"]["above"] = "1e18"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.share_of")
    assert "given without share" in str(error)


def test_share_without_share_of(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    del policy_data["trigger"]["share_of"]
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.share_of")
    assert "required but missing" in str(error)


@pytest.mark.parametrize("reference", ["vault.deposit(uint256,address)", "vault.totalValue()", "bank.totalAssets()"])
def test_share_of_must_be_a_known_no_argument_view(config: Config, write_policy: WritePolicy,
                                                   policy_data: dict[str, Any], reference: str) -> None:
    policy_data["trigger"]["share_of"] = reference
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.share_of")


@pytest.mark.parametrize("share", ["0%", "101%", "a quarter"])
def test_bad_share(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any], share: str) -> None:
    policy_data["trigger"]["share"] = share
    path = write_policy(policy_data)
    assert_names(policy_error(path, config), path, "trigger.share")


def test_bad_above_amount(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["above"] = "1.5"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.above")
    assert "whole number of base units" in str(error)


@pytest.mark.parametrize("window", [0, -5])
def test_window_blocks_below_one(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any],
                                 window: int) -> None:
    policy_data["trigger"]["window_blocks"] = window
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.window_blocks")
    assert "at least 1" in str(error)


def test_unknown_field_typo_suggests_the_right_name(config: Config, write_policy: WritePolicy,
                                                    policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["abvoe"] = "1e18"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "trigger.abvoe")
    assert "unknown field" in str(error)
    assert error.hint == "did you mean 'above'?"


def test_unknown_top_level_field_typo(config: Config, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["cooldwon"] = "5m"
    path = write_policy(policy_data)
    error = policy_error(path, config)
    assert_names(error, path, "cooldwon")
    assert error.hint == "did you mean 'cooldown'?"


def test_invalid_toml_in_a_policy_file(config: Config, write_policy: WritePolicy) -> None:
    path = write_policy('id = "x"\nkind = event\n')
    error = policy_error(path, config)
    assert error.file == str(path)
    assert "not valid TOML" in str(error)


def test_duplicate_ids_across_two_files(config: Config, write_policy: WritePolicy,
                                        policy_data: dict[str, Any]) -> None:
    first = write_policy(policy_data, "a.toml")
    second = write_policy(policy_data, "b.toml")
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    error = caught.value
    assert_names(error, second, "id")
    assert f"id 'vault-drain' is already used by {first}" in str(error)


def test_empty_policies_folder_is_an_error(config: Config) -> None:
    config.policies_dir.mkdir()
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert caught.value.file == str(config.policies_dir)
    assert "no policy files" in str(caught.value)


def test_missing_policies_folder_is_an_error(config: Config) -> None:
    assert not config.policies_dir.exists()
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert_names(caught.value, config.policies_dir, "policies.dir")  # type: ignore[arg-type]
    assert "policies folder not found" in str(caught.value)


def test_sum_over_an_address_argument_is_refused(config: Config, write_policy: WritePolicy,
                                                 policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["field"] = "owner"  # Withdraw.owner is an address
    path = write_policy(policy_data)
    assert_names(policy_error(path, config), path, "trigger.field")


def test_infinite_above_is_a_policy_error(config: Config, write_policy: WritePolicy,
                                          policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["above"] = "inf"
    path = write_policy(policy_data)
    assert_names(policy_error(path, config), path, "trigger.above")
