"""The README's "Guarding your protocol" set-up followed as written, command by command through the CLI, on a real
protocol whose pause takes an argument: a new Safe 2-of-3 holds the role for Balancer V2's `Vault.setPaused`
and has no module yet; its team deploys the module, writes onguard.toml, plans, proposes, signs, executes,
runs the preflight, and the guardian then beats a pending drain of the Vault's pool in the mempool."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak

from onguard.cli.main import main
from onguard.demo.world import TOKEN, Roles, contract, dev_account

from ..fixtures.protocols.balancer import POOL_LIQUIDITY, set_paused_action_id
from ..fixtures.protocols.config import balancer_abi, forge_abi
from ..fixtures.protocols.governance import THRESHOLD, as_safe, deploy_safe
from ..scenarios.fixtures.balancer_spot_price import POLICIES
from .conftest import ProtocolsChain
from .test_real_protocols_guarded import assert_response_first, race, spot_price_drain

pytestmark = pytest.mark.chain

GUARDIAN_KEY_ENV = "ONGUARD_GUARDIAN_KEY"
SIGNER_KEY_ENV = "ONGUARD_SIGNER_KEY"
EMERGENCY_SAFE_SALT = 0xE5AFE
GUARDIAN = dev_account(Roles.GUARDIAN).address
ATTACKER = dev_account(Roles.ATTACKER).address


def onguard(capsys, monkeypatch, *argv: str, signer=None) -> tuple[int, str, str]:
    """One `onguard …` command, in-process; with `signer`, its key is the one `--key-env` names."""
    if signer is not None:
        monkeypatch.setenv(SIGNER_KEY_ENV, signer.key.to_0x_hex())
        argv = (*argv, "--key-env", SIGNER_KEY_ENV, "--yes")
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def emergency_safe(protocols: ProtocolsChain) -> str:
    """A new 2-of-3 Safe without a module, given the Vault's `setPaused` role by the Authorizer's admin (the
    protocol's governance Safe): the Safe the team now puts the guardian on."""
    balancer = protocols.worlds.balancer
    safe = deploy_safe(protocols.client, protocols.worlds.safe_factory, salt=EMERGENCY_SAFE_SALT)
    authorizer = balancer.authorizer_contract(protocols.w3)
    action_id = set_paused_action_id(balancer.vault_contract(protocols.w3))
    as_safe(protocols.client, balancer.governance, balancer.authorizer,
            authorizer.encode_abi("grantRole", [action_id, safe]))
    assert authorizer.functions.canPerform(action_id, safe, balancer.vault).call()
    return safe


def write_onguard_toml(protocols: ProtocolsChain, folder: Path, safe: str, module: str) -> None:
    """README step 3: onguard.toml with paths relative to it, the ABIs under abis/, the policies folder."""
    (folder / "abis").mkdir()
    shutil.copy(balancer_abi("20210418-vault", "Vault"), folder / "abis" / "Vault.json")
    shutil.copy(forge_abi("TestToken"), folder / "abis" / "TestToken.json")
    (folder / "policies").mkdir()
    (folder / "policies" / "pool-drain.toml").write_text(POLICIES["pool-drain.toml"])
    balancer, uniswap = protocols.worlds.balancer, protocols.worlds.uniswap
    (folder / "onguard.toml").write_text(f"""[chain]
rpc_url = "{protocols.node.rpc_url}"
chain_id = {protocols.worlds.chain_id}
poll_interval = "50ms"
start_block = "latest"

[safe]
address = "{safe}"
guardian_module = "{module}"

[guardian]
key_env = "{GUARDIAN_KEY_ENV}"

[contracts.vault]
address = "{balancer.vault}"
abi = "abis/Vault.json"

[contracts.token0]
address = "{uniswap.token0}"
abi = "abis/TestToken.json"

[actions.pause_vault]
contract = "vault"
call = "setPaused(bool)"
args = [true]
done_when = "vault.getPausedState().paused"

[policies]
dir = "policies"

[state]
database = "onguard.db"

[mempool]
enabled = true
ws_url = "{protocols.node.ws_url}"
""")


def set_paused_true_hash() -> str:
    """keccak256 of `setPaused(true)`'s calldata, encoded here from the signature (not by web3 or onguard)."""
    calldata = function_signature_to_4byte_selector("setPaused(bool)") + encode(["bool"], [True])
    return "0x" + keccak(calldata).hex()


def test_the_readme_set_up_on_a_balancer_vault_then_a_pending_drain_is_beaten(
        protocols: ProtocolsChain, tmp_path: Path, capsys, monkeypatch) -> None:
    w3, balancer, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    monkeypatch.chdir(tmp_path)  # every command below finds ./onguard.toml, as in the README
    safe = emergency_safe(protocols)
    owners = [dev_account(i) for i in Roles.OWNERS]

    # 1. The module, deployed for the Safe.
    code, out, err = onguard(capsys, monkeypatch, "module", "deploy", "--safe", safe, "--rpc-url",
                             protocols.node.rpc_url, signer=dev_account(Roles.DEPLOYER))
    assert code == 0, err
    assert f"deploying GuardianModule for the Safe {safe} (version 1.4.1)" in out
    (module,) = re.findall(r'^guardian_module = "(0x[0-9a-fA-F]{40})"$', out, re.MULTILINE)

    # 2. onguard.toml with the printed module, the Vault, the pause action and a policy.
    write_onguard_toml(protocols, tmp_path, safe, module)

    code, out, err = onguard(capsys, monkeypatch, "policies", "check")
    assert code == 0, err
    assert "ok  vault-pool-drain (simulate, critical)" in out and "1 valid, 0 invalid" in out

    # 3. The plan: the exact calldata hash of setPaused(true), nothing held yet.
    code, out, err = onguard(capsys, monkeypatch, "module", "plan")
    assert code == 0, err
    assert f"Safe {safe}, guardian module {module}" in out
    assert "module NOT enabled on the Safe" in out and f"guardian {GUARDIAN} NOT registered" in out
    assert "action pause_vault: vault.setPaused(true)" in out and "function      setPaused(bool)" in out
    assert f"calldata hash {set_paused_true_hash()}   (keccak256 of the calldata)" in out
    assert out.count("NOT allowlisted") == 1 and "warning" not in out
    code, out, err = onguard(capsys, monkeypatch, "module", "plan", "--json")
    assert code == 0, err
    (entry,) = json.loads(out)["entries"]
    assert (entry["action"], entry["target"], entry["calldata_hash"]) == (
        "pause_vault", balancer.vault, set_paused_true_hash())

    # 4. One proposal: enable, add the guardian, allow setPaused(true).
    code, out, err = onguard(capsys, monkeypatch, "module", "propose")
    assert code == 0, err
    assert "proposal 1 created" in out and "a batch of 3 calls through MultiSendCallOnly" in out
    assert f"enable the module {module}" in out and f"add the guardian {GUARDIAN}" in out
    assert f"allow vault.setPaused(true) (hash {set_paused_true_hash()}, cooldown 3600 s)" in out
    code, out, err = onguard(capsys, monkeypatch, "proposals", "show", "1")
    assert code == 0, err
    assert "batch        3 calls" in out and "simulation   succeeds" in out

    # 5. Two owners sign, anyone executes.
    for count, owner in enumerate(owners[:THRESHOLD], start=1):
        code, out, err = onguard(capsys, monkeypatch, "proposals", "sign", "1", signer=owner)
        assert code == 0, err
        assert f"signed by {owner.address}: {count} of {THRESHOLD}" in out
    code, out, err = onguard(capsys, monkeypatch, "proposals", "execute", "1", signer=dev_account(Roles.DEPLOYER))
    assert code == 0, err
    assert re.search(r"^executed in 0x[0-9a-f]{64} \(block \d+, gas \d+\)$", out, re.MULTILINE)

    # 6. The preflight is green: the guardian can pause the Vault through the new module.
    code, out, err = onguard(capsys, monkeypatch, "preflight")
    assert code == 0, out + err
    assert "✗" not in out and "ready: every action would succeed now" in out
    assert (f"✓ allowlisted [pause_vault]: vault.setPaused(true): allowlisted with this exact calldata (onguard "
            f"sends calldata hash {set_paused_true_hash()})") in out
    assert re.search(r"✓ simulation \[pause_vault\]: vault.setPaused\(true\) through the module from the guardian "
                     r"key succeeds and done_when holds afterwards; gas \d+", out)

    # 7. The guardian, mining held, sees a pending drain of the pool and pauses the Vault ahead of it.
    token0 = contract(w3, "TestToken", uniswap.token0)
    outcome = race(w3, tmp_path / "onguard.toml", spot_price_drain(w3, balancer, uniswap))

    assert_response_first(outcome, "vault-pool-drain")
    assert balancer.vault_contract(w3).functions.getPausedState().call()[0] is True
    assert token0.functions.balanceOf(balancer.vault).call() == POOL_LIQUIDITY[0] * TOKEN
    assert token0.functions.balanceOf(ATTACKER).call() == 0
    pause = w3.eth.get_transaction(outcome.pause)
    assert pause["from"] == GUARDIAN and pause["to"] == module  # through the new module, not the old one
