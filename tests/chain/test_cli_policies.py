"""`onguard policies check | explain | test` and `onguard status`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from onguard.demo.world import Roles, contract, dev_account, write_config

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, ATTACKER, drain_slice, tokens

pytestmark = pytest.mark.chain

ONGUARD = [sys.executable, "-m", "onguard.cli.main"]
ENV = {**os.environ, GUARDIAN_KEY_ENV: dev_account(Roles.GUARDIAN).key.to_0x_hex()}
GOOD = """id = "good"
description = "d"
kind = "state"
severity = "low"
response = ["alert"]
[reads]
paused = "vault.paused()"
[trigger]
invariant = "not state.paused"
"""


def onguard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ONGUARD, *args], capture_output=True, text=True, env=ENV, timeout=120)


def test_check_lists_every_bad_file_with_line_field_and_hint(chain, tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a-good.toml").write_text(GOOD)
    (folder / "b-typo.toml").write_text(GOOD.replace('id = "good"', 'id = "typo"').replace("[trigger]\ninvariant",
                                                                                         "[trigger]\ninvarient"))
    (folder / "c-expr.toml").write_text(GOOD.replace('id = "good"', 'id = "expr"')
                                        .replace('"not state.paused"', '"state.paused.__class__"'))
    (folder / "d-event.toml").write_text('id = "ev"\ndescription = "d"\nkind = "event"\nseverity = "low"\n'
                                         'response = ["alert"]\n[match]\ncontract = "vault"\nevent = "Withdrew"\n'
                                         '[trigger]\ncondition = "true"\n')
    config = write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, policies_dir=folder)
    result = onguard("policies", "--config", str(config), "check")
    assert result.returncode == 2
    assert "ok  good (state, low)" in result.stdout and "1 valid, 3 invalid" in result.stdout
    err = result.stderr
    assert f"{folder / 'b-typo.toml'}:8: trigger.invariant: is required but missing" in err
    assert "found 'invarient': did you mean 'invariant'?" in err
    assert f"{folder / 'c-expr.toml'}:9: trigger.invariant:" in err and "^" in err
    assert f"{folder / 'd-event.toml'}:8: match.event: vault has no event 'Withdrew'" in err
    assert "Withdraw" in err and "Traceback" not in err


def test_explain_says_what_the_demo_policy_does(chain, guardian_config):
    result = onguard("policies", "--config", str(guardian_config), "explain", "policies/vault-drain.toml")
    assert result.returncode == 0
    assert "Watches Withdraw events of vault" in result.stdout
    assert "It fires when value > 25% * (state.assets + value)" in result.stdout
    assert "state.assets is read at each block as vault.totalAssets()" in result.stdout
    assert "vault.pause() through the Safe's guardian module" in result.stdout


def test_test_shows_where_the_policy_would_have_fired_and_acts_on_nothing(chain, guardian_config):
    w3, world = chain.w3, chain.world
    first = w3.eth.block_number + 1
    receipts = [drain_slice(w3, world, ALICE, tokens(100_000)) for _ in range(3)]
    result = onguard("policies", "--config", str(guardian_config), "test", "policies/vault-drain.toml",
                     "--from-block", str(first))
    assert result.returncode == 0, result.stderr
    fired = [line for line in result.stdout.splitlines() if "FIRES" in line]
    assert fired and fired[0].startswith(f"block {receipts[2]['blockNumber']}: FIRES")
    assert f"{len(receipts)} blocks evaluated: fired at 1" in result.stdout
    nonce = w3.eth.get_transaction_count(dev_account(Roles.GUARDIAN).address)
    assert nonce == 0  # nothing was sent


def test_status_flags_policies_that_could_not_be_evaluated(chain, tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "oracle.toml").write_text(GOOD.replace('paused = "vault.paused()"', 'price = "oracle.price()"')
                                        .replace('"not state.paused"', '"state.price > 0"'))
    config = write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, policies_dir=folder,
                          poll_interval="50ms")
    chain.w3.provider.make_request("anvil_setCode", [chain.world.oracle, "0x"])
    daemon = subprocess.Popen([*ONGUARD, "run", "--config", str(config)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        for line in daemon.stderr:
            if "policy could not be evaluated" in line:
                break
        chain.mine(1)
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
    status = onguard("status", "--config", str(config))
    assert status.returncode == 1
    assert "EVALUATION FAILURES" in status.stdout and "oracle.price()" in status.stdout


def test_a_recording_is_judged_offline_as_the_chain_was(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    first = w3.eth.block_number + 1
    receipts = [drain_slice(w3, world, ALICE, tokens(100_000)) for _ in range(3)]
    recording = tmp_path / "drain.jsonl"
    made = onguard("replay", "--record", str(recording), "--config", str(guardian_config), "--from-block", str(first))
    assert made.returncode == 0, made.stderr
    assert f"recorded blocks {first}..{receipts[-1]['blockNumber']}" in made.stdout
    chain.node.stop()  # offline from here: the recording is all there is

    judged = onguard("policies", "--config", str(guardian_config), "test", "policies/vault-drain.toml",
                     "--observations", str(recording))
    assert judged.returncode == 0, judged.stderr
    fired = [line for line in judged.stdout.splitlines() if "FIRES" in line]
    assert fired and fired[0].startswith(f"block {receipts[2]['blockNumber']}: FIRES")
    assert "3 blocks evaluated: fired at 1, could not evaluate at 0" in judged.stdout

    # A policy whose reads were not recorded is reported, never passed as safe.
    other = tmp_path / "other.toml"
    other.write_text(GOOD.replace('paused = "vault.paused()"', 'supply = "vault.totalSupply()"')
                     .replace('"not state.paused"', '"state.supply > 0"'))
    judged = onguard("policies", "--config", str(guardian_config), "test", str(other),
                     "--observations", str(recording))
    assert "ERROR" in judged.stdout and "not in the recording" in judged.stdout


def test_a_live_recording_keeps_pending_transactions_for_call_policies(chain, tmp_path):
    w3, world = chain.w3, chain.world
    config = write_config(world, tmp_path, key_env=GUARDIAN_KEY_ENV, mempool_ws=chain.node.ws_url)
    policy = tmp_path / "roles.toml"
    policy.write_text(f"""id = "no-role-changes"
description = "only the Safe grants roles"
kind = "call"
severity = "high"
response = ["alert"]
[match]
contract = "vault"
function = "grantRole"
allow_from = ["{world.safe}"]
""")
    head = w3.eth.block_number
    recording = tmp_path / "live.jsonl"
    w3.provider.make_request("evm_setAutomine", [False])
    recorder = subprocess.Popen([*ONGUARD, "replay", "--record", str(recording), "--config", str(config),
                                 "--from-block", str(head + 1), "--to-block", str(head + 1)],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in recorder.stderr:
            if "following pending transactions" in line:
                break
        vault = contract(w3, "Vault", world.vault)
        grant = vault.functions.grantRole(vault.functions.PAUSER_ROLE().call(), ATTACKER).transact(
            {"from": ATTACKER, "gas": 200_000}).to_0x_hex()
        deadline = time.monotonic() + 30
        while grant not in (recording.read_text() if recording.exists() else ""):  # recorded while pending
            assert time.monotonic() < deadline and recorder.poll() is None, "the pending grant was never recorded"
            time.sleep(0.05)
        chain.mine(1)
        assert recorder.wait(timeout=30) == 0
    finally:
        if recorder.poll() is None:
            recorder.kill()
        w3.provider.make_request("evm_setAutomine", [True])
    judged = onguard("policies", "--config", str(config), "test", str(policy), "--observations", str(recording))
    assert f"pending {grant}: FIRES" in judged.stdout  # seen while pending, from the file alone
    assert f"block {head + 1}: FIRES" in judged.stdout  # and once mined
