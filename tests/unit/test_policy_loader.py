"""policies/loader.py: policy files are checked against the config; every problem is a PolicyError naming the
file and the field, with advice on what to write instead (in the hint, or in parentheses in the message for
the errors of [reads], which come from the read parser)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onguard.config import Config, load_config
from onguard.demo.world import World, write_config
from onguard.errors import PolicyError
from onguard.policies.kinds import event, state
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.kinds.event import EventPolicy
from onguard.policies.kinds.state import StatePolicy
from onguard.policies.loader import KINDS, check_policies, load_policies, load_policy
from onguard.policies.model import Severity

WritePolicy = Callable[..., Path]


def policy_error(path: Path, env: PolicyEnv) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy(path, env)
    return caught.value


def assert_names(error: PolicyError, path: Path, field: str) -> None:
    assert error.file == str(path)
    assert error.field == field
    assert str(error).startswith(f"{path}: {field}: "), str(error)


def advice(error: PolicyError) -> str:
    """Everything the user is told: the message and the hint."""
    return f"{error.message}\n{error.hint or ''}"


def fails(write_policy: WritePolicy, env: PolicyEnv, data: dict[str, Any] | str, field: str) -> PolicyError:
    """Writes the policy, loads it, and checks the error names the file and `field` and says what to do."""
    path = write_policy(data)
    error = policy_error(path, env)
    assert_names(error, path, field)
    assert error.hint or "(" in error.message, f"no advice in: {error.message}"
    return error


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
    assert isinstance(drain, EventPolicy)
    assert drain.common.kind == "event"
    assert drain.common.severity is Severity.CRITICAL
    assert drain.common.response == ("pause_vault",)
    assert drain.common.cooldown == 3600.0
    assert drain.common.enabled and not drain.common.dry_run
    assert drain.common.confirmations == 0
    assert drain.common.file == repo_policies_dir / "vault-drain.toml"
    assert (drain.contract, drain.event, drain.where) == ("vault", "Withdraw", None)
    assert drain.aggregate is not None
    assert (drain.aggregate.function, drain.aggregate.of, drain.aggregate.group_by) == ("sum", "assets", None)
    assert (drain.aggregate.window.blocks, drain.aggregate.window.seconds) == (5, None)
    assert drain.reads.texts() == {"assets": "vault.totalAssets()"}
    assert drain.reads.specs["assets"].address == config.contracts["vault"].address
    assert drain.condition.describe() == "value > 25% * (state.assets + value)"


def test_policy_fields_are_parsed(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data.update(cooldown="15m", dry_run=True, response=["pause_vault", "trip_breaker"], confirmations=3,
                       severity="medium", description="big withdrawals")
    policy_data["aggregate"] = {"function": "max", "of": "shares", "window_blocks": 3}
    policy_data["trigger"] = {"condition": "value > 1_000e18"}
    policy_data.pop("reads")
    path = write_policy(policy_data)
    policy = load_policy(path, env)
    assert isinstance(policy, EventPolicy)
    assert policy.aggregate is not None
    assert (policy.aggregate.function, policy.aggregate.of, policy.aggregate.window.blocks) == ("max", "shares", 3)
    assert policy.condition.evaluate({"value": 1000 * 10**18 + 1}) is True
    assert policy.condition.evaluate({"value": 1000 * 10**18}) is False
    assert policy.reads.specs == {}
    common = policy.common
    assert (common.id, common.kind, common.description) == ("vault-drain", "event", "big withdrawals")
    assert common.severity is Severity.MEDIUM
    assert common.cooldown == 900.0
    assert common.dry_run is True
    assert common.response == ("pause_vault", "trip_breaker")
    assert common.confirmations == 3
    assert common.file == path


def test_defaults(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data.pop("cooldown")
    common = load_policy(write_policy(policy_data), env).common
    assert common.cooldown == 3600.0
    assert common.enabled is True
    assert common.dry_run is False
    assert common.confirmations == 0


def test_alert_only_policy_has_no_response_actions(env: PolicyEnv, write_policy: WritePolicy,
                                                   policy_data: dict[str, Any]) -> None:
    policy_data["response"] = ["alert"]
    policy = load_policy(write_policy(policy_data), env)
    assert policy.common.response == ()
    assert policy.common.alert_only


def test_per_event_policy_without_aggregate(env: PolicyEnv, write_policy: WritePolicy,
                                            policy_data: dict[str, Any]) -> None:
    policy_data.pop("aggregate")
    policy_data["match"]["where"] = "args.receiver != args.owner"
    policy_data["trigger"]["condition"] = "args.assets > 10% * state.assets and block.number > 0"
    policy = load_policy(write_policy(policy_data), env)
    assert isinstance(policy, EventPolicy)
    assert policy.aggregate is None
    assert policy.where is not None and policy.where.describe() == "args.receiver != args.owner"


def test_count_policy_needs_no_of(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"] = {"function": "count", "window_blocks": 10}
    policy_data["trigger"]["condition"] = "value > 3"
    policy = load_policy(write_policy(policy_data), env)
    assert isinstance(policy, EventPolicy) and policy.aggregate is not None
    assert policy.aggregate.function == "count"
    assert policy.aggregate.of is None


def test_window_seconds_and_group_by_with_args_prefixes(env: PolicyEnv, write_policy: WritePolicy,
                                                         policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"] = {"function": "sum", "of": "args.assets", "window_seconds": 600,
                                "group_by": "args.owner"}
    policy_data["trigger"]["condition"] = "value > 25% * state.assets and group != contracts.vault"
    policy = load_policy(write_policy(policy_data), env)
    assert isinstance(policy, EventPolicy) and policy.aggregate is not None
    assert (policy.aggregate.of, policy.aggregate.group_by) == ("assets", "owner")
    assert (policy.aggregate.window.blocks, policy.aggregate.window.seconds) == (None, 600)


def test_state_policy_loads(env: PolicyEnv, write_policy: WritePolicy, state_policy_data: dict[str, Any]) -> None:
    state_policy_data["confirmations"] = 1
    policy = load_policy(write_policy(state_policy_data), env)
    assert isinstance(policy, StatePolicy)
    assert policy.common.kind == "state"
    assert policy.common.confirmations == 1
    assert policy.common.alert_only
    assert policy.reads.texts() == {"assets": "vault.totalAssets()", "supply": "vault.totalSupply()"}
    assert policy.invariant.describe() == "state.assets >= state.supply"


def test_kinds_registry_has_the_event_and_state_parsers() -> None:
    assert KINDS["event"] is event.parse
    assert KINDS["state"] is state.parse


def test_disabled_policy_is_validated_but_not_returned(config: Config, write_policy: WritePolicy,
                                                       policy_data: dict[str, Any]) -> None:
    write_policy(policy_data, "a-enabled.toml")
    disabled = dict(policy_data, id="disabled-one", enabled=False)
    write_policy(disabled, "b-disabled.toml")

    policies = load_policies(config.policies_dir, config.contracts, config.actions)
    assert [p.common.id for p in policies] == ["vault-drain"]
    check = check_policies(config.policies_dir, config.contracts, config.actions)
    assert [(p.common.id, p.common.enabled) for p in check.policies] == [("vault-drain", True),
                                                                         ("disabled-one", False)]
    assert check.errors == []

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


# ---- common fields ----


def test_unknown_kind(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["kind"] = "oracle-deviation"
    error = fails(write_policy, env, policy_data, "kind")
    assert "unknown kind 'oracle-deviation'" in str(error)
    assert error.hint is not None and error.hint.startswith("one of: ")
    assert {"event", "state"} <= set(error.hint.removeprefix("one of: ").split(", "))


def test_missing_kind(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data.pop("kind")
    error = fails(write_policy, env, policy_data, "kind")
    assert "is required but missing" in str(error)


def test_bad_severity(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["severity"] = "urgent"
    error = fails(write_policy, env, policy_data, "severity")
    assert "unknown severity 'urgent'" in str(error)
    assert error.hint == "one of: info, low, medium, high, critical"


@pytest.mark.parametrize("bad_id", ["Vault-Drain", "-drain", "drain now", "x" * 65])
def test_bad_id(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any], bad_id: str) -> None:
    policy_data["id"] = bad_id
    error = fails(write_policy, env, policy_data, "id")
    assert "is not a valid id" in str(error)


def test_response_naming_an_unknown_action(env: PolicyEnv, write_policy: WritePolicy,
                                           policy_data: dict[str, Any]) -> None:
    policy_data["response"] = ["pause_vault", "drain_the_moat"]
    error = fails(write_policy, env, policy_data, "response")
    assert "no action named 'drain_the_moat' in the config" in str(error)
    assert error.hint is not None and "known actions: pause_vault, trip_breaker" in error.hint
    assert '["alert"]' in error.hint


def test_empty_response(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["response"] = []
    error = fails(write_policy, env, policy_data, "response")
    assert "is empty" in str(error)
    assert error.hint is not None and '["alert"]' in error.hint


def test_response_that_is_not_a_list(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["response"] = "pause_vault"
    error = fails(write_policy, env, policy_data, "response")
    assert "expected a list" in str(error)


@pytest.mark.parametrize("confirmations", [-1, -12])
def test_negative_confirmations(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                confirmations: int) -> None:
    policy_data["confirmations"] = confirmations
    error = fails(write_policy, env, policy_data, "confirmations")
    assert "cannot be negative" in str(error)
    assert error.hint is not None and "0 acts on the newest block" in error.hint


@pytest.mark.parametrize("confirmations", ["2", 2.5, True])
def test_confirmations_must_be_an_integer(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                          confirmations: Any) -> None:
    policy_data["confirmations"] = confirmations
    path = write_policy(policy_data)
    error = policy_error(path, env)
    assert_names(error, path, "confirmations")
    assert "expected an integer" in str(error)


def test_bad_cooldown(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["cooldown"] = "soon"
    error = fails(write_policy, env, policy_data, "cooldown")
    assert "'soon' is not a duration" in str(error)


# ---- [match] ----


def test_unknown_contract(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["match"]["contract"] = "treasury"
    error = fails(write_policy, env, policy_data, "match.contract")
    assert "no watched contract named 'treasury'" in str(error)
    assert error.hint is not None and error.hint.endswith(": vault, breaker, oracle, asset")


def test_unknown_event_lists_the_contracts_events(env: PolicyEnv, write_policy: WritePolicy,
                                                  policy_data: dict[str, Any]) -> None:
    policy_data["match"]["event"] = "Withdrawal"
    error = fails(write_policy, env, policy_data, "match.event")
    assert "vault has no event 'Withdrawal'" in str(error)
    assert error.hint is not None and error.hint.startswith("its events: ")
    for name in ("Deposit", "Withdraw", "Borrow", "Paused"):
        assert name in error.hint


def test_where_with_an_unknown_field_suggests_the_right_one(env: PolicyEnv, write_policy: WritePolicy,
                                                            policy_data: dict[str, Any]) -> None:
    policy_data["match"]["where"] = "args.asets > 0"
    error = fails(write_policy, env, policy_data, "match.where")
    assert "unknown field args.asets; did you mean args.assets?" in str(error)
    assert error.hint is not None and "args.assets" in error.hint and "args.owner" in error.hint


def test_where_misspelling_prefers_the_root_that_was_written(env: PolicyEnv, write_policy: WritePolicy,
                                                            policy_data: dict[str, Any]) -> None:
    policy_data["match"]["where"] = "args.asset > 0"  # the config watches a contract named `asset`
    error = fails(write_policy, env, policy_data, "match.where")
    assert "did you mean args.assets?" in str(error)


def test_where_cannot_read_state_or_aggregates(env: PolicyEnv, write_policy: WritePolicy,
                                               policy_data: dict[str, Any]) -> None:
    policy_data["match"]["where"] = "value > state.assets"
    error = fails(write_policy, env, policy_data, "match.where")
    assert "unknown field value" in str(error)


@pytest.mark.parametrize(("table", "key", "source"), [
    ("match", "where", "args.owner > 5"),
    ("trigger", "condition", "args.owner > 5"),
])
def test_type_error_in_a_condition(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                   table: str, key: str, source: str) -> None:
    policy_data.pop("aggregate")  # per event: args are visible in the trigger too
    policy_data[table][key] = source
    error = fails(write_policy, env, policy_data, f"{table}.{key}")
    assert "operator > needs numbers, got address and number" in str(error)


@pytest.mark.parametrize(("table", "key", "source", "message"), [
    ("trigger", "condition", "__import__('os')", "names cannot start with '_'"),
    ("match", "where", "args.__class__ == 1", "names cannot start with '_'"),
    ("trigger", "condition", "value > 0 and args.assets.__class__", "names cannot start with '_'"),
    ("trigger", "condition", "eval('1') == 1", "unknown function eval"),
    ("trigger", "condition", "lambda: true", "'lambda' is not part of the language"),
    ("match", "where", "args.assets.bit_length() > 8", "cannot be called"),
    ("trigger", "condition", "value ** 2 > 0", "unexpected '**'"),
])
def test_forbidden_expressions_are_refused_at_load(env: PolicyEnv, write_policy: WritePolicy,
                                                   policy_data: dict[str, Any], table: str, key: str, source: str,
                                                   message: str) -> None:
    policy_data[table][key] = source
    error = fails(write_policy, env, policy_data, f"{table}.{key}")
    assert message in str(error)


def test_match_typo_is_an_unknown_field(env: PolicyEnv, write_policy: WritePolicy,
                                        policy_data: dict[str, Any]) -> None:
    policy_data["match"]["evnt"] = "Withdraw"
    error = fails(write_policy, env, policy_data, "match.evnt")
    assert "unknown field" in str(error)


def test_where_typo_suggests_where(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["match"]["wher"] = "args.assets > 0"
    error = fails(write_policy, env, policy_data, "match.wher")
    assert error.hint == "did you mean 'where'?"


# ---- [aggregate] ----


@pytest.mark.parametrize("of", ["owner", "receiver", "args.sender"])
def test_aggregate_of_a_non_numeric_argument(env: PolicyEnv, write_policy: WritePolicy,
                                             policy_data: dict[str, Any], of: str) -> None:
    policy_data["aggregate"]["of"] = of
    error = fails(write_policy, env, policy_data, "aggregate.of")
    assert f"Withdraw has no numeric argument '{of.removeprefix('args.')}'" in str(error)
    assert error.hint == "numeric arguments: assets, shares"


def test_aggregate_of_an_argument_the_event_lacks(env: PolicyEnv, write_policy: WritePolicy,
                                                  policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["of"] = "amount"
    error = fails(write_policy, env, policy_data, "aggregate.of")
    assert "Withdraw has no numeric argument 'amount'" in str(error)


def test_count_with_of(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["function"] = "count"
    error = fails(write_policy, env, policy_data, "aggregate.of")
    assert "count takes no argument" in str(error)
    assert error.hint == "remove `of`"


@pytest.mark.parametrize("function", ["sum", "max", "min"])
def test_sum_max_min_without_of(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                function: str) -> None:
    policy_data["aggregate"] = {"function": function, "window_blocks": 5}
    error = fails(write_policy, env, policy_data, "aggregate.of")
    assert f"{function} needs the event argument to aggregate" in str(error)
    assert error.hint == "numeric arguments of Withdraw: assets, shares"


def test_unknown_aggregate_function(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["function"] = "avg"
    error = fails(write_policy, env, policy_data, "aggregate.function")
    assert "unknown aggregate 'avg'" in str(error)
    assert error.hint == "one of: count, sum, max, min"


@pytest.mark.parametrize("windows", [{"window_blocks": 5, "window_seconds": 60}, {}])
def test_exactly_one_window(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                            windows: dict[str, int]) -> None:
    policy_data["aggregate"] = {"function": "sum", "of": "assets", **windows}
    error = fails(write_policy, env, policy_data, "aggregate.window_blocks")
    assert "give exactly one of window_blocks or window_seconds" in str(error)
    assert error.hint is not None and "window_seconds = 600" in error.hint


@pytest.mark.parametrize(("key", "value"), [("window_blocks", 0), ("window_blocks", -5), ("window_seconds", 0)])
def test_window_below_one(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any], key: str,
                          value: int) -> None:
    policy_data["aggregate"] = {"function": "sum", "of": "assets", key: value}
    path = write_policy(policy_data)
    error = policy_error(path, env)
    assert_names(error, path, f"aggregate.{key}")
    assert "at least 1" in str(error)


def test_window_must_be_an_integer(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["window_blocks"] = "5 blocks"
    path = write_policy(policy_data)
    assert_names(policy_error(path, env), path, "aggregate.window_blocks")


def test_group_by_an_argument_the_event_lacks(env: PolicyEnv, write_policy: WritePolicy,
                                              policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["group_by"] = "account"
    error = fails(write_policy, env, policy_data, "aggregate.group_by")
    assert "Withdraw has no argument 'account'" in str(error)
    assert error.hint == "its arguments: sender, receiver, owner, assets, shares"


def test_aggregate_field_typo(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["aggregate"]["gruop_by"] = "owner"
    error = fails(write_policy, env, policy_data, "aggregate.gruop_by")
    assert "unknown field" in str(error)
    assert error.hint == "did you mean 'group_by'?"


# ---- [trigger] ----


def test_condition_that_is_not_a_bool(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = "value + 1"
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "a condition must be true or false, but this expression is a number" in str(error)


def test_aggregate_condition_cannot_read_event_arguments(env: PolicyEnv, write_policy: WritePolicy,
                                                         policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = "args.assets > 1"  # with [aggregate], the trigger sees value, not args
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "unknown field args.assets" in str(error)
    assert error.hint is not None and "value" in error.hint


def test_group_is_unknown_without_group_by(env: PolicyEnv, write_policy: WritePolicy,
                                           policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = f"value > 1 and group == {'0x' + '11' * 20}"
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "unknown field group" in str(error)


def test_condition_reading_an_undeclared_state_value(env: PolicyEnv, write_policy: WritePolicy,
                                                     policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = "value > 25% * state.supply"
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "unknown field state.supply" in str(error)


def test_condition_typo_in_a_field_name(env: PolicyEnv, write_policy: WritePolicy,
                                        policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = "vaule > 1"
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "unknown field vaule; did you mean value?" in str(error)


def test_misspelt_condition_key_suggests_the_right_name(env: PolicyEnv, write_policy: WritePolicy,
                                                        policy_data: dict[str, Any]) -> None:
    policy_data["trigger"] = {"conditon": "value > 1"}
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "is required but missing" in str(error)
    assert error.hint == "found 'conditon': did you mean 'condition'?"


def test_unknown_top_level_field_typo(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["cooldwon"] = "5m"
    error = fails(write_policy, env, policy_data, "cooldwon")
    assert error.hint == "did you mean 'cooldown'?"


def test_unknown_trigger_field_typo(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condtion"] = "value > 2"
    error = fails(write_policy, env, policy_data, "trigger.condtion")
    assert "unknown field" in str(error)
    assert error.hint == "did you mean 'condition'?"


def test_number_out_of_range_in_a_condition(env: PolicyEnv, write_policy: WritePolicy,
                                            policy_data: dict[str, Any]) -> None:
    policy_data["trigger"]["condition"] = "value > 1e999"
    error = fails(write_policy, env, policy_data, "trigger.condition")
    assert "out of range" in str(error)


# ---- [reads] ----


@pytest.mark.parametrize(("read", "message", "advice_text"), [
    ("vault.pause()", "vault.pause() is not a view", "use a view or pure function"),
    ("vault.deposit(1, vault)", "is not a view", "use a view or pure function"),
    ("bank.totalAssets()", "no watched contract named 'bank'", "watched: vault, breaker, oracle, asset"),
    ("vault.balanceOf()", "vault has no function balanceOf taking 0 argument(s)", "its views: "),
    ("vault.balanceOf(vault, vault)", "taking 2 argument(s)", "balanceOf(address)"),
    ("vault.totalAssets", "is not a read", 'e.g. "vault.totalAssets()"'),
    ("vault.convertToAssets(inf)", "'inf' is not an amount", "250_000e18"),
    ("vault.balanceOf(treasury)", "'treasury' is neither a watched contract's name nor an address", "neither"),
])
def test_bad_reads_name_the_read(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                 read: str, message: str, advice_text: str) -> None:
    policy_data["reads"]["held"] = read
    path = write_policy(policy_data)
    error = policy_error(path, env)
    assert_names(error, path, "reads.held")
    assert message in str(error)
    assert advice_text in advice(error)


def test_read_that_is_not_a_string(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any]) -> None:
    policy_data["reads"]["held"] = 5
    error = fails(write_policy, env, policy_data, "reads.held")
    assert 'expected a read such as "vault.totalAssets()", got 5' in str(error)


@pytest.mark.parametrize("name", ["total-assets", "_assets"])
def test_read_name_that_is_not_an_identifier(env: PolicyEnv, write_policy: WritePolicy,
                                             policy_data: dict[str, Any], name: str) -> None:
    policy_data["reads"] = {name: "vault.totalAssets()"}
    policy_data["trigger"]["condition"] = "value > 1"
    error = fails(write_policy, env, policy_data, f"reads.{name}")
    assert name in str(error)


# ---- state policies ----


def test_state_policy_with_empty_reads(env: PolicyEnv, write_policy: WritePolicy,
                                       state_policy_data: dict[str, Any]) -> None:
    state_policy_data["reads"] = {}
    state_policy_data["trigger"]["invariant"] = "block.number > 0"
    error = fails(write_policy, env, state_policy_data, "reads")
    assert "a state policy needs at least one read" in str(error)
    assert error.hint is not None and "vault.totalAssets()" in error.hint


def test_state_policy_without_a_reads_table(env: PolicyEnv, write_policy: WritePolicy,
                                            state_policy_data: dict[str, Any]) -> None:
    state_policy_data.pop("reads")
    state_policy_data["trigger"]["invariant"] = "block.number > 0"
    path = write_policy(state_policy_data)
    error = policy_error(path, env)
    assert_names(error, path, "reads")
    assert "is required but missing" in str(error)


def test_state_policy_without_an_invariant(env: PolicyEnv, write_policy: WritePolicy,
                                           state_policy_data: dict[str, Any]) -> None:
    state_policy_data["trigger"] = {"condition": "state.assets >= state.supply"}
    error = fails(write_policy, env, state_policy_data, "trigger.invariant")
    assert "is required but missing" in str(error)


def test_state_invariant_is_type_checked(env: PolicyEnv, write_policy: WritePolicy,
                                         state_policy_data: dict[str, Any]) -> None:
    state_policy_data["reads"]["paused"] = "vault.paused()"
    state_policy_data["trigger"]["invariant"] = "state.paused > 0"
    error = fails(write_policy, env, state_policy_data, "trigger.invariant")
    assert "operator > needs numbers, got bool and number" in str(error)


def test_state_invariant_that_is_not_a_bool(env: PolicyEnv, write_policy: WritePolicy,
                                             state_policy_data: dict[str, Any]) -> None:
    state_policy_data["trigger"]["invariant"] = "state.assets - state.supply"
    error = fails(write_policy, env, state_policy_data, "trigger.invariant")
    assert "must be true or false" in str(error)


def test_state_policy_has_no_event_fields(env: PolicyEnv, write_policy: WritePolicy,
                                          state_policy_data: dict[str, Any]) -> None:
    state_policy_data["trigger"]["invariant"] = "value < state.assets"
    error = fails(write_policy, env, state_policy_data, "trigger.invariant")
    assert "unknown field value" in str(error)


def test_state_policy_with_a_match_table(env: PolicyEnv, write_policy: WritePolicy,
                                         state_policy_data: dict[str, Any]) -> None:
    state_policy_data["match"] = {"contract": "vault", "event": "Withdraw"}
    error = fails(write_policy, env, state_policy_data, "match")
    assert "unknown field" in str(error)


def test_missing_invariant_hint_is_a_valid_invariant(env: PolicyEnv, write_policy: WritePolicy,
                                                     state_policy_data: dict[str, Any]) -> None:
    state_policy_data["trigger"] = {}
    hint = policy_error(write_policy(state_policy_data), env).hint
    assert hint is not None and hint.count('"') == 2
    example = hint.split('"')[1]
    state_policy_data["trigger"] = {"invariant": example}
    # whatever state.NAME the example uses is declared, so only the example itself is on trial
    state_policy_data["reads"] = {name: "vault.totalAssets()" for name in re.findall(r"state\.(\w+)", example)}
    load_policy(write_policy(state_policy_data), env)  # the suggested invariant should load


@pytest.mark.parametrize("case", ["state without [reads]", "[triger]", "no [match]"])
def test_missing_tables_come_with_a_hint(env: PolicyEnv, write_policy: WritePolicy, policy_data: dict[str, Any],
                                         state_policy_data: dict[str, Any], case: str) -> None:
    if case == "state without [reads]":
        data = state_policy_data
        data.pop("reads")
        data["trigger"]["invariant"] = "block.number > 0"
    elif case == "[triger]":
        data = policy_data
        data["triger"] = data.pop("trigger")
    else:
        data = policy_data
        data.pop("match")
    error = policy_error(write_policy(data), env)
    assert error.hint is not None, str(error)
    if case == "[triger]":
        assert "triger" in error.hint


# ---- files and folders ----


def test_invalid_toml_in_a_policy_file(env: PolicyEnv, write_policy: WritePolicy) -> None:
    path = write_policy('id = "x"\nkind = event\n')
    error = policy_error(path, env)
    assert error.file == str(path)
    assert "not valid TOML" in str(error)
    assert error.hint is not None


def test_duplicate_ids_across_two_files(config: Config, write_policy: WritePolicy,
                                        policy_data: dict[str, Any], state_policy_data: dict[str, Any]) -> None:
    first = write_policy(policy_data, "a.toml")
    state_policy_data["id"] = policy_data["id"]  # another kind, the same id
    second = write_policy(state_policy_data, "b.toml")
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    error = caught.value
    assert_names(error, second, "id")
    assert f"id 'vault-drain' is already used by {first}" in str(error)
    assert error.hint == "give every policy its own id"


def test_check_policies_collects_every_error_and_loads_the_good_files(
        config: Config, write_policy: WritePolicy, policy_data: dict[str, Any],
        state_policy_data: dict[str, Any]) -> None:
    write_policy(policy_data, "a-good.toml")
    bad_severity = write_policy(dict(policy_data, id="b", severity="urgent"), "b-bad.toml")
    write_policy(state_policy_data, "c-good.toml")
    policy_data["match"]["event"] = "Drained"
    bad_event = write_policy(dict(policy_data, id="d"), "d-bad.toml")
    duplicate = write_policy(dict(state_policy_data, description="again"), "e-duplicate.toml")
    bad_read = write_policy(dict(state_policy_data, id="f", reads={"x": "vault.pause()"}), "f-bad.toml")

    check = check_policies(config.policies_dir, config.contracts, config.actions)

    assert [p.common.id for p in check.policies] == ["vault-drain", "vault-solvent"]
    assert [(e.file, e.field) for e in check.errors] == [
        (str(bad_severity), "severity"), (str(bad_event), "match.event"), (str(duplicate), "id"),
        (str(bad_read), "reads.x")]
    with pytest.raises(PolicyError) as caught:  # load_policies raises the first of them
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert (caught.value.file, caught.value.field) == (str(bad_severity), "severity")


def test_empty_policies_folder_is_an_error(config: Config) -> None:
    config.policies_dir.mkdir()
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert caught.value.file == str(config.policies_dir)
    assert "no policy files" in str(caught.value)
    assert caught.value.hint is not None
    check = check_policies(config.policies_dir, config.contracts, config.actions)
    assert check.policies == [] and len(check.errors) == 1


def test_missing_policies_folder_is_an_error(config: Config) -> None:
    assert not config.policies_dir.exists()
    with pytest.raises(PolicyError) as caught:
        load_policies(config.policies_dir, config.contracts, config.actions)
    assert_names(caught.value, config.policies_dir, "policies.dir")  # type: ignore[arg-type]
    assert "policies folder not found" in str(caught.value)
