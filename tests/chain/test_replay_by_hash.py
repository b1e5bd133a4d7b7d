"""Replaying a real transaction by hash: an exploit mined on a base chain is re-executed on a fork of the block
before, after the transactions that came before it in its block, with the team's own onguard.toml."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.cli.main import main
from onguard.demo.world import artifact, build_world
from onguard.replay.world import dev_key

pytestmark = pytest.mark.chain

CORPUS = Path(__file__).resolve().parents[1] / "scenarios"
GWEI = 10**9
TOKEN = 10**18


def demo_fixture():
    spec = importlib.util.spec_from_file_location("demo_world_fixture", CORPUS / "fixtures" / "demo_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCENARIO = """
name = "the exploit, by hash"
description = "alice's shares redeemed by the attacker, as mined on the base chain"
modelled_on = "the base chain's own exploit transaction"
expect = "stopped-before-inclusion"
holders = ["vault"]
tokens = ["asset"]

[fork]
rpc_url = "{url}"
block = {block}

[guardian]
config = "team/onguard.toml"

[prices]
dUSD = 1

[[attack]]
tx = "{tx}"
"""


def mine_exploit_block(w3: Web3, world) -> tuple[str, int]:  # noqa: ANN001 (a demo World)
    """One block on the base chain: alice deposits 100,000 more, then the attacker redeems all her shares
    (500,000: the exploit depends on the deposit before it). Returns the exploit's hash and its block."""
    asset = w3.eth.contract(address=world.asset, abi=artifact("TestToken")["abi"])
    vault = w3.eth.contract(address=world.vault, abi=artifact("Vault")["abi"])
    alice, attacker = dev_key(6).address, dev_key(5).address
    w3.provider.make_request("evm_setAutomine", [False])
    earlier = {"from": alice, "maxPriorityFeePerGas": 5 * GWEI, "maxFeePerGas": 50 * GWEI, "gas": 200_000}
    asset.functions.mint(alice, 100_000 * TOKEN).transact(earlier)
    asset.functions.approve(world.vault, 100_000 * TOKEN).transact(earlier)
    vault.functions.deposit(100_000 * TOKEN, alice).transact(earlier)
    exploit = vault.functions.redeemFor(alice, attacker, 500_000 * TOKEN).transact(
        {"from": attacker, "maxPriorityFeePerGas": GWEI, "maxFeePerGas": 50 * GWEI, "gas": 1_000_000})
    w3.provider.make_request("evm_mine", [])
    receipt = w3.eth.get_transaction_receipt(exploit)
    assert receipt["status"] == 1 and receipt["transactionIndex"] == 3  # the deposit came first, and mattered
    return exploit.to_0x_hex(), int(receipt["blockNumber"])


def test_an_exploit_mined_on_the_base_chain_is_replayed_by_hash_with_the_teams_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(CORPUS / "policies" / "vault-cash-guard.toml", policies)
    monkeypatch.setenv("ONGUARD_REPLAY_GUARDIAN_KEY", dev_key(4).key.hex())
    with start_anvil() as base:
        world = build_world(base.rpc_url)
        config = demo_fixture().config_for(world, tmp_path / "team", policies=policies)
        exploit, block = mine_exploit_block(Web3(Web3.HTTPProvider(base.rpc_url)), world)
        code = main(["replay", "--fork-url", base.rpc_url, "--block", str(block - 1), "--tx", exploit,
                     "--config", str(config), "--holder", "vault", "--token", "asset", "--price", "dUSD=1",
                     "--json", str(tmp_path / "out.json"), "--report", str(tmp_path / "out.md")])
        out = capsys.readouterr().out
        # The same transaction named in a scenario file, and a hash the fork source does not know.
        scenario = tmp_path / "by-hash.toml"
        scenario.write_text(SCENARIO.format(url=base.rpc_url, block=block - 1, tx=exploit))
        assert main(["replay", str(scenario)]) == 0
        assert "stopped-before-inclusion; expected stopped-before-inclusion: held" in capsys.readouterr().out
        scenario.write_text(SCENARIO.format(url=base.rpc_url, block=block - 1, tx="0x" + "ab" * 32))
        assert main(["replay", str(scenario)]) == 2
        assert f"{scenario}: attack[0].tx: transaction 0x{'ab' * 32} is not mined" in capsys.readouterr().err
    assert code == 0, out
    (report,) = json.loads((tmp_path / "out.json").read_text())["scenarios"]
    assert report["outcome"] == "stopped-before-inclusion" and report["expectation_held"]
    (trip,) = report["trips"]
    assert trip["policy_id"] == "vault-cash-guard" and trip["path"] == "mempool"
    (response,) = report["responses"]
    (attack,) = report["attack_txs"]
    assert response["status"] == "mined" and response["block"] == attack["block"]
    assert response["position"] < attack["position"] and not attack["succeeded"]
    # 500,000 at risk, not 400,000: alice's deposit earlier in the block was replayed before the exploit.
    assert report["at_risk_usd"] == 500_000 and report["lost_usd"] == 0
    assert f"block {attack['block']} position {response['position']}: before every attack transaction" in out
    markdown = (tmp_path / "out.md").read_text()
    assert "tripped      vault-cash-guard" in markdown
    # The auditor's evidence: the exploit's trace with its revert reason decoded by the Vault's ABI, the pause's
    # trace through the module, the vault's balance unchanged, the chart linked, the versions and the fork.
    traces = {t["label"].split()[0]: t for t in report["traces"]}
    assert traces["--tx[0]"]["revert_reason"] == "EnforcedPause()" and not traces["--tx[0]"]["succeeded"]
    assert traces["--tx[0]"]["calls"][0]["target"] == "vault" and traces["--tx[0]"]["calls"][0]["function"] == "redeemFor"
    assert [c["function"] for c in traces["pause"]["calls"]][-1] == "pause" and traces["pause"]["succeeded"]
    (change,) = report["balances"]
    assert change["holder"] == "vault" and change["token"] == "dUSD" and change["before"] == change["after"]
    assert report["chart"] and (tmp_path / report["chart"]).stat().st_size > 0
    assert f"]({report['chart']})" in markdown
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["onguard"] and report["anvil_version"].startswith("anvil")
    assert report["fork_source"] == f"{base.rpc_url} at block {block - 1}" and report["fork_block"] == block - 1
    assert list(report["policy_files"]) == [str(policies / "vault-cash-guard.toml")]


def test_an_unknown_hash_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with start_anvil() as base:
        world = build_world(base.rpc_url)
        config = demo_fixture().config_for(world, tmp_path)
        code = main(["replay", "--fork-url", base.rpc_url, "--block", "1", "--tx", "0x" + "ab" * 32,
                     "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "--tx" in err and "not mined" in err
