"""The recovery plan: an action's optional `undo` (the owners' way back) loads like its calls and refuses bad
input naming its field; `recovery_steps` batches every undo with the module's cooldown resets, only for a resolved
incident whose actions are in effect; the owners' checklist must be answered in full."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import base_config_data
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from onguard.chain.module import encode_reset_cooldown
from onguard.config import Config, load_config
from onguard.errors import ConfigError, InputError
from onguard.incidents.recovery import checklist_answers, recovery_steps
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus

WriteToml = Callable[..., Path]


def with_undo(write_toml: WriteToml, **undo: Any) -> Config:
    data = base_config_data()
    for action, value in undo.items():
        data["actions"][action]["undo"] = value
    return load_config(write_toml(data))


def test_undo_in_the_short_form_is_a_call_on_the_actions_own_contract(write_toml: WriteToml) -> None:
    config = with_undo(write_toml, pause_vault="unpause()")
    (undo,) = config.actions["pause_vault"].undo
    assert undo.text == "vault.unpause()" and undo.calldata == function_signature_to_4byte_selector("unpause()")
    assert config.actions["trip_breaker"].undo == ()  # optional


def test_undo_tables_name_their_contract(write_toml: WriteToml) -> None:
    config = with_undo(write_toml, pause_vault=[{"contract": "vault", "function": "unpause()"},
                                                {"contract": "breaker", "function": "reset()"}])
    assert [c.text for c in config.actions["pause_vault"].undo] == ["vault.unpause()", "breaker.reset()"]


@pytest.mark.parametrize("undo, field, message", [
    ("unpauze()", "actions.pause_vault.undo", "has no function unpauze()"),
    ([], "actions.pause_vault.undo", "is empty"),
    ([{"contract": "nowhere", "function": "x()"}], "actions.pause_vault.undo[0].contract", "no contract named"),
])
def test_a_bad_undo_names_its_field(write_toml: WriteToml, undo: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        with_undo(write_toml, pause_vault=undo)
    assert caught.value.field == field and message in caught.value.message


def incident(store: IncidentStore, status: IncidentStatus, *responses: tuple[str, ResponseStatus]) -> Any:
    opened, _ = store.open_or_join(chain_id=31337, policy_id="vault-drain", cooldown=60.0, severity="critical",
                                   title="drain", dry_run=False, block=10, block_time=1_000, evidence={},
                                   status=IncidentStatus.OPEN, actions=tuple(a for a, _ in responses))
    for action, response in responses:
        store.update_response(opened.id, action, response)
    store.set_status(opened.id, status)
    return store.incident(opened.id)


def test_undo_first_then_one_cooldown_reset_per_module_call_that_ran(write_toml: WriteToml, tmp_path: Path) -> None:
    config = with_undo(write_toml, pause_vault="unpause()", trip_breaker="reset()")
    store = IncidentStore(tmp_path / "state.db")
    try:
        resolved = incident(store, IncidentStatus.RESOLVED, ("pause_vault", ResponseStatus.MINED),
                            ("trip_breaker", ResponseStatus.ALREADY_DONE))
        steps = recovery_steps(config, resolved, store.responses(resolved.id))
    finally:
        store.close()
    assert [s.text for s in steps] == ["vault.unpause() (undo pause_vault)", "breaker.reset() (undo trip_breaker)",
                                       "module.resetCooldown(vault, pause())"]  # the breaker's module call never ran
    vault = to_checksum_address(base_config_data()["contracts"]["vault"]["address"])
    assert steps[-1].call.to == config.safe.guardian_module
    assert steps[-1].call.data == encode_reset_cooldown(vault, function_signature_to_4byte_selector("pause()"))


@pytest.mark.parametrize("status, responses, message", [
    (IncidentStatus.SAFE, (("pause_vault", ResponseStatus.MINED),), "resolve it first"),
    (IncidentStatus.RESOLVED, (("pause_vault", ResponseStatus.FAILED),), "nothing to undo"),
    (IncidentStatus.RESOLVED, (("trip_breaker", ResponseStatus.MINED),), "says nothing about how to undo it"),
])
def test_recovery_is_refused_when_it_would_not_hold(write_toml: WriteToml, tmp_path: Path, status: IncidentStatus,
                                                   responses: tuple, message: str) -> None:
    config = with_undo(write_toml, pause_vault="unpause()")
    store = IncidentStore(tmp_path / "state.db")
    try:
        opened = incident(store, status, *responses)
        with pytest.raises(InputError) as caught:
            recovery_steps(config, opened, store.responses(opened.id))
    finally:
        store.close()
    assert message in str(caught.value) or message in (caught.value.hint or "")


def test_the_checklist_must_be_answered_in_full() -> None:
    with pytest.raises(InputError) as caught:
        checklist_answers({"root_cause": "found", "fix": " ", "policy": None})
    assert "--fix" in caught.value.message and "--policy" in caught.value.message
    assert "--root-cause" not in caught.value.message
    answers = checklist_answers({"root_cause": "a", "fix": "b", "policy": "c"})
    assert list(answers.values()) == ["a", "b", "c"]
