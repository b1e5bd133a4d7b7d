"""Setting up the GuardianModule as a protocol team would, on real Anvil with the real Safe v1.4.1: `module deploy`
for the Safe, `module plan` prints the exact calldata hashes, `module propose` makes one MultiSend proposal the
owners sign and execute, after which `preflight` is green and the guardian really can act; later changes propose
only the difference."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from eth_utils import keccak
from safe_eth.eth import EthereumClient
from web3 import Web3

from onguard.chain.module import safe_abi
from onguard.allowlist import GUARD_SLOT, PROXY_ADMIN_SLOT
from onguard.cli.main import main
from onguard.demo.world import Roles, World, contract, dev_account, exec_as_owners, write_config

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import is_paused

pytestmark = pytest.mark.chain

KEY_ENV = "ONGUARD_TEST_SIGNER_KEY"
UPDATER = dev_account(Roles.ORACLE_UPDATER).address
GUARDIAN = dev_account(Roles.GUARDIAN).address

# An action with arguments (an AccessControl role revoked) and one of two calls in one transaction.
EXTRA_ACTIONS = f"""
[actions.revoke_updater]
contract = "oracle"
call = "revokeRole(bytes32,address)"
args = ["keccak256:UPDATER_ROLE", "{UPDATER}"]
done_when = "not oracle.hasRole(keccak256:UPDATER_ROLE, {UPDATER})"

[actions.freeze_all]
done_when = "vault.paused() and not oracle.hasRole(keccak256:UPDATER_ROLE, {UPDATER})"
[[actions.freeze_all.calls]]
contract = "vault"
function = "pause()"
[[actions.freeze_all.calls]]
contract = "oracle"
function = "revokeRole(bytes32,address)"
args = ["keccak256:UPDATER_ROLE", "{UPDATER}"]
"""
TRIP_BREAKER = ('[actions.trip_breaker]\ncontract = "breaker"\ncall = "trip()"\ndone_when = "tripped()"\n'
                'undo = "reset()"\n')
RESET_BREAKER = ('\n[actions.reset_breaker]\ncontract = "breaker"\ncall = "reset()"\n'
                 'done_when = "not breaker.tripped()"\n')


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_key(monkeypatch, account) -> list[str]:
    monkeypatch.setenv(KEY_ENV, account.key.to_0x_hex())
    return ["--key-env", KEY_ENV, "--yes"]


def deploy_module(capsys, monkeypatch, world: World) -> str:
    code, out, err = run(capsys, "module", "deploy", "--safe", world.safe, "--rpc-url", world.rpc_url,
                         *as_key(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 0, err
    (module,) = re.findall(r'^guardian_module = "(0x[0-9a-fA-F]{40})"$', out, re.MULTILINE)
    return module


def configure(world: World, folder: Path, extra: str = "") -> Path:
    path = write_config(world, folder, key_env=GUARDIAN_KEY_ENV)
    path.write_text(path.read_text() + extra)
    return path


def sign_and_execute(capsys, monkeypatch, config: Path, proposal: int, owners=Roles.OWNERS[:2]) -> str:
    for owner in owners:
        code, _, err = run(capsys, "proposals", "--config", str(config), "sign", str(proposal),
                           *as_key(monkeypatch, dev_account(owner)))
        assert code == 0, err
    code, out, err = run(capsys, "proposals", "--config", str(config), "execute", str(proposal),
                         *as_key(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 0, err
    return out


def expected_hashes(w3: Web3, world: World) -> dict[str, list[str]]:
    """The calldata hashes computed here, independently of onguard: web3's encoder, keccak256."""
    vault, breaker = contract(w3, "Vault", world.vault), contract(w3, "CircuitBreaker", world.breaker)
    oracle = contract(w3, "PriceOracle", world.oracle)
    digest = lambda data: "0x" + keccak(hexstr=data).hex()  # noqa: E731
    pause = digest(vault.encode_abi("pause", []))
    revoke = digest(oracle.encode_abi("revokeRole", [keccak(text="UPDATER_ROLE"), UPDATER]))
    return {"pause_vault": [pause], "trip_breaker": [digest(breaker.encode_abi("trip", []))],
            "revoke_updater": [revoke], "freeze_all": [pause, revoke]}


@pytest.fixture
def fresh(chain, tmp_path, monkeypatch, capsys):
    """The forked world with a newly deployed module the Safe has not set up, and a config pointing at it."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    world = replace(chain.world, module=deploy_module(capsys, monkeypatch, chain.world))
    return world, configure(world, tmp_path / "cfg", EXTRA_ACTIONS)


def test_plan_prints_every_call_with_its_exact_calldata_hash_and_what_the_module_lacks(chain, fresh, capsys):
    world, config = fresh
    code, out, err = run(capsys, "module", "plan", "--config", str(config))
    assert code == 0, err
    assert "module NOT enabled on the Safe" in out and f"guardian {GUARDIAN} NOT registered" in out
    for hashes in expected_hashes(chain.w3, world).values():
        for digest in hashes:
            assert f"calldata hash {digest}" in out
    assert f"arguments     role=keccak256:UPDATER_ROLE, account={UPDATER}" in out
    assert "cooldown      3600 s" in out and out.count("NOT allowlisted") == 5

    code, out, err = run(capsys, "module", "plan", "--config", str(config), "--json", "--cooldown", "10m")
    assert code == 0, err
    plan = json.loads(out)
    by_action: dict[str, list[str]] = {}
    for entry in plan["entries"]:
        by_action.setdefault(entry["action"], []).append(entry["calldata_hash"])
        assert entry["state"] == "missing" and entry["cooldown"] == 600
    assert by_action == expected_hashes(chain.w3, world)
    assert (plan["module_enabled"], plan["guardian_registered"], plan["min_cooldown"]) == (False, False, 60)


def test_propose_sign_execute_then_preflight_is_green_and_the_guardian_can_act(chain, fresh, capsys, monkeypatch):
    world, config = fresh
    code, out, err = run(capsys, "module", "propose", "--config", str(config), "--by", "alice")
    assert code == 0, err
    # enable, add the guardian, and one allowance per (target, function): freeze_all shares both of its calls.
    assert "proposal 1 created" in out and "a batch of 5 calls through MultiSendCallOnly" in out
    assert f"enable the module {world.module}" in out and f"add the guardian {GUARDIAN}" in out

    code, out, err = run(capsys, "proposals", "--config", str(config), "show", "1")
    assert code == 0, err
    assert "batch        5 calls" in out and "call         enableModule(module=" in out
    assert "call         addGuardian(guardian=" in out and out.count("call         allowAction(") == 3
    assert "simulation   succeeds" in out

    code, out, err = run(capsys, "preflight", "--config", str(config))
    assert code == 2, err  # nothing is set up yet
    sign_and_execute(capsys, monkeypatch, config, 1)

    code, out, err = run(capsys, "module", "plan", "--config", str(config))
    assert code == 0, err
    assert out.count("on chain      allowlisted with this exact calldata") == 5 and "NOT" not in out
    code, out, _ = run(capsys, "module", "propose", "--config", str(config))
    assert code == 0 and "nothing to propose" in out

    code, out, err = run(capsys, "preflight", "--config", str(config))
    assert code == 0, out + err
    assert "✗" not in out and "ready: every action would succeed now" in out
    assert re.search(r"✓ simulation \[pause_vault\]: vault.pause\(\) through the module from the guardian key "
                     r"succeeds and done_when holds afterwards; gas \d+", out)
    assert "✓ simulation [revoke_updater]" in out
    assert (f"✓ simulation [freeze_all]: vault.pause(), then oracle.revokeRole(keccak256:UPDATER_ROLE, {UPDATER}) "
            "through the module from the guardian key succeeds") in out

    # What preflight simulated is what the guardian can really do through the module now.
    module = chain.w3.eth.contract(address=world.module, abi=contract(chain.w3, "GuardianModule", world.module).abi)
    vault = contract(chain.w3, "Vault", world.vault)
    tx = module.functions.execute(world.vault, 0, vault.encode_abi("pause", []), 0).transact({"from": GUARDIAN})
    assert chain.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert is_paused(chain.w3, world)
    code, out, _ = run(capsys, "preflight", "--config", str(config))
    assert "✓ simulation [pause_vault]: already in effect" in out
    # freeze_all pauses the vault too: that call is now cooling down, so freeze_all could not act.
    assert code == 2 and "✗ simulation [freeze_all]" in out and "cooling down until" in out
    assert "fix: wait, or the Safe's owners call resetCooldown" in out


def test_later_changes_propose_only_the_difference(chain, fresh, tmp_path, capsys, monkeypatch):
    world, config = fresh
    assert run(capsys, "module", "propose", "--config", str(config))[0] == 0
    sign_and_execute(capsys, monkeypatch, config, 1)
    # A second guardian key was registered; one action leaves the config, another arrives.
    second = dev_account(Roles.ATTACKER).address
    assert run(capsys, "module", "propose", "--config", str(config), "--guardian", second)[0] == 0
    sign_and_execute(capsys, monkeypatch, config, 2)
    assert TRIP_BREAKER in config.read_text()
    changed = tmp_path / "cfg" / "changed.toml"
    changed.write_text(config.read_text().replace(TRIP_BREAKER, "") + RESET_BREAKER)
    code, out, err = run(capsys, "module", "plan", "--config", str(changed))
    assert code == 0, err
    assert "extra on chain: breaker.trip()" in out and f"another guardian key is registered: {second}" in out

    code, out, err = run(capsys, "module", "propose", "--config", str(changed), "--remove-guardian", second,
                         "--cooldown", "2h")
    assert code == 0, err
    steps = re.findall(r"^  \d+\. (.*)$", out, re.MULTILINE)
    assert steps[0] == f"remove the guardian {second}"
    allowed = [s for s in steps if s.startswith("allow ")]
    assert len(allowed) == 3 and all("cooldown 7200 s" in s for s in allowed)  # the new cooldown, reset added
    assert any(s.startswith("allow breaker.reset()") for s in allowed)
    assert steps[-1] == "revoke breaker.trip() (no configured action calls it)"
    assert len(steps) == 5
    sign_and_execute(capsys, monkeypatch, changed, 3)
    code, out, _ = run(capsys, "module", "propose", "--config", str(changed))
    assert code == 0 and "nothing to propose" in out
    module = contract(chain.w3, "GuardianModule", world.module)
    assert not module.functions.isGuardian(second).call() and module.functions.isGuardian(GUARDIAN).call()


def test_plan_warns_about_targets_and_modules_that_act_with_the_safes_authority(chain, fresh, capsys):
    world, config = fresh
    client = EthereumClient(world.rpc_url)
    other = dev_account(12).address
    exec_as_owners(client, world.safe, world.safe, safe_abi().encode_call("enableModule(address)", other))
    vault = contract(client.w3, "Vault", world.vault)
    exec_as_owners(client, world.safe, world.vault,
                   bytes.fromhex(vault.encode_abi("revokeRole", [keccak(text="PAUSER_ROLE"), world.safe])[2:]))
    code, out, err = run(capsys, "module", "plan", "--config", str(config))
    assert code == 0, err
    assert f"warning: the Safe has another enabled module {other}" in out
    assert f"warning: the Safe does not hold PAUSER_ROLE on vault ({world.vault})" in out
    assert "PAUSER_ROLE on breaker" not in out and "oracle" not in "".join(
        line for line in out.splitlines() if line.startswith("warning"))


def test_plan_warns_when_a_target_is_the_safes_guard_or_a_proxy_the_safe_administers(chain, fresh, capsys):
    world, config = fresh
    # Storage written directly: the plan reads only these slots (Safe 1.4.1's guard slot, EIP-1967's admin slot).
    set_storage = lambda address, slot, value: chain.w3.provider.make_request(  # noqa: E731
        "anvil_setStorageAt", [address, hex(slot), "0x" + value[2:].lower().rjust(64, "0")])
    set_storage(world.safe, GUARD_SLOT, world.breaker)
    set_storage(world.vault, PROXY_ADMIN_SLOT, world.safe)
    code, out, err = run(capsys, "module", "plan", "--config", str(config))
    assert code == 0, err
    assert f"warning: breaker ({world.breaker}) is the Safe's guard" in out
    assert f"warning: vault ({world.vault}) is a proxy whose EIP-1967 admin is the Safe" in out
    assert "oracle (" not in "".join(line for line in out.splitlines() if line.startswith("warning"))


def test_two_actions_pinning_one_function_to_different_arguments_are_refused(chain, fresh, capsys):
    _, config = fresh
    attacker = dev_account(Roles.ATTACKER).address
    config.write_text(config.read_text() + f'\n[actions.revoke_other]\ncontract = "oracle"\n'
                                           f'call = "revokeRole(bytes32,address)"\n'
                                           f'args = ["keccak256:UPDATER_ROLE", "{attacker}"]\n'
                                           f'done_when = "not oracle.hasRole(keccak256:UPDATER_ROLE, {attacker})"\n')
    for step in ("plan", "propose"):
        code, out, err = run(capsys, "module", step, "--config", str(config))
        assert code == 2 and out == ""
        assert err.startswith(f"error: {config}: actions.revoke_other: actions revoke_updater and revoke_other both "
                              "call oracle.revokeRole(bytes32,address) with different arguments")


def test_propose_without_a_deployed_module_says_to_deploy_it(chain, guardian_config, capsys):
    nowhere = dev_account(13).address
    guardian_config.write_text(guardian_config.read_text().replace(chain.world.module, nowhere))
    code, out, err = run(capsys, "module", "propose", "--config", str(guardian_config))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {guardian_config}: safe.guardian_module: no contract at safe.guardian_module")
    assert "onguard module deploy --safe" in err
    code, out, _ = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2 and f"✗ module enabled: no contract at safe.guardian_module {nowhere}" in out
    assert "✗ simulation" not in out  # said once: there is no module to simulate through
