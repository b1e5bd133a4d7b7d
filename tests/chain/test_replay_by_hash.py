"""Replaying a real transaction by hash: an exploit mined on a base chain, not first in its block, is re-executed
at its original position on a fork (the block's earlier transactions first, from their senders, with their fees
and values; the blocks between the fork block and its own rebuilt before it), with the team's own onguard.toml."""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.cli.main import main
from onguard.demo.world import World, artifact, build_world, deploy
from onguard.policies.model import ROUTINE_ID, SELF_DEFENCE_ID
from onguard.replay.world import dev_key

pytestmark = pytest.mark.chain

CORPUS = Path(__file__).resolve().parents[1] / "scenarios"
GWEI = 10**9
TOKEN = 10**18
DEPLOYER, ALICE, BOB, CAROL, ATTACKER = (dev_key(i).address for i in (0, 6, 7, 8, 5))


def demo_fixture():
    spec = importlib.util.spec_from_file_location("demo_world_fixture", CORPUS / "fixtures" / "demo_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class History:
    """What the base chain mined after the demo world: the exploit's hash and block, and WETH's address."""

    exploit: str
    block: int
    weth: str


def mine_history(w3: Web3, world: World) -> History:
    """Three blocks. B-2: alice deposits 100,000 more (the exploit needs her 500,000 shares). B-1: unrelated
    transfers. B: bob wraps 1 ETH (a legacy transaction), alice and carol move tokens (EIP-2930, EIP-1559 with a
    5 gwei tip), the exploit redeems alice's 500,000 shares for the attacker (1 gwei tip), and last the deployer
    sends 10,000 dUSD to the vault (0.5 gwei tip), after the exploit: not part of it."""
    asset = w3.eth.contract(address=world.asset, abi=artifact("TestToken")["abi"])
    vault = w3.eth.contract(address=world.vault, abi=artifact("Vault")["abi"])
    weth = deploy(w3, "WETH9")
    w3.provider.make_request("evm_setAutomine", [False])
    tip = {"maxFeePerGas": 50 * GWEI, "gas": 200_000}
    for call in (asset.functions.mint(ALICE, 100_000 * TOKEN), asset.functions.approve(world.vault, 100_000 * TOKEN),
                 vault.functions.deposit(100_000 * TOKEN, ALICE)):
        call.transact({"from": ALICE, "maxPriorityFeePerGas": 2 * GWEI, **tip})
    w3.provider.make_request("evm_mine", [])
    asset.functions.mint(DEPLOYER, 50_000 * TOKEN).transact({"from": DEPLOYER, "maxPriorityFeePerGas": GWEI, **tip})
    asset.functions.transfer(BOB, 1 * TOKEN).transact({"from": ALICE, "maxPriorityFeePerGas": GWEI, **tip})
    w3.provider.make_request("evm_mine", [])
    # Anvil orders a block by fee cap, then by arrival: all five offer 50 gwei, so they are mined as sent.
    weth.functions.deposit().transact({"from": BOB, "value": TOKEN, "gasPrice": 50 * GWEI, "gas": 100_000})
    asset.functions.transfer(CAROL, 1).transact(
        {"from": ALICE, "gasPrice": 50 * GWEI, "gas": 100_000, "accessList": [{"address": world.asset,
                                                                               "storageKeys": []}]})
    asset.functions.approve(ATTACKER, 1).transact({"from": CAROL, "maxPriorityFeePerGas": 5 * GWEI, **tip})
    exploit = vault.functions.redeemFor(ALICE, ATTACKER, 500_000 * TOKEN).transact(
        {"from": ATTACKER, "maxPriorityFeePerGas": GWEI, **tip, "gas": 1_000_000})
    asset.functions.transfer(world.vault, 10_000 * TOKEN).transact(
        {"from": DEPLOYER, "maxPriorityFeePerGas": GWEI // 2, **tip})
    w3.provider.make_request("evm_mine", [])
    receipt = w3.eth.get_transaction_receipt(exploit)
    assert receipt["status"] == 1 and receipt["transactionIndex"] == 3
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert [tx["type"] for tx in block["transactions"]] == [0, 1, 2, 2, 2]
    w3.provider.make_request("evm_setAutomine", [True])
    return History(exploit=exploit.to_0x_hex(), block=int(receipt["blockNumber"]), weth=weth.address)


SCENARIO = """
name = "the exploit, by hash, three blocks after the fork"
description = "alice's shares redeemed by the attacker, as mined on the base chain"
modelled_on = "the base chain's own exploit transaction"
expect = "stopped-before-inclusion"
holders = ["vault", "{bob}"]
tokens = ["asset", "{weth}"]

[fork]
rpc_url = "{url}"
block = {block}

[guardian]
config = "team/onguard.toml"

[prices]
dUSD = 1
WETH = 0          # bob's wrapped ether shows in the balance changes; it is not the protocol's value

[[attack]]
tx = "{tx}"
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    """A base chain with the demo world and the history above, and the team's onguard.toml for it."""
    folder = tmp_path_factory.mktemp("by-hash")
    policies = folder / "policies"
    policies.mkdir()
    shutil.copy(CORPUS / "policies" / "vault-cash-guard.toml", policies)
    with start_anvil() as node:
        world = build_world(node.rpc_url)
        config = demo_fixture().config_for(world, folder / "team", policies=policies)
        yield node, world, mine_history(Web3(Web3.HTTPProvider(node.rpc_url)), world), config, policies


def test_an_exploit_not_first_in_its_block_is_replayed_at_its_position_with_the_teams_config(
        base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    node, world, history, config, policies = base
    monkeypatch.setenv("ONGUARD_REPLAY_GUARDIAN_KEY", dev_key(4).key.hex())
    code = main(["replay", "--fork-url", node.rpc_url, "--tx", history.exploit, "--config", str(config),
                 "--holder", "vault", "--holder", BOB, "--token", "asset", "--token", history.weth,
                 "--price", "dUSD=1", "--price", "WETH=0",
                 "--json", str(tmp_path / "out.json"), "--report", str(tmp_path / "out.md")])
    out = capsys.readouterr().out
    assert code == 0, out
    (report,) = json.loads((tmp_path / "out.json").read_text())["scenarios"]
    assert report["fork_block"] == history.block - 1  # by default, the block before the exploit's
    assert report["outcome"] == "stopped-before-inclusion" and report["expectation_held"]
    (trip,) = report["trips"]
    assert trip["policy_id"] == "vault-cash-guard" and trip["path"] == "mempool"
    (response,) = report["responses"]
    (attack,) = report["attack_txs"]
    # The block rebuilt as mined: bob's wrap, alice's and carol's transfers, then the exploit, the pause ahead of
    # them all (it outbids the exploit's tip, and the others'); the exploit is one place later than it was.
    assert attack["original_block"] == history.block and attack["original_position"] == 3
    assert response["status"] == "mined" and response["block"] == attack["block"] and response["position"] == 0
    assert attack["position"] == 4 and not attack["succeeded"]
    assert report["at_risk_usd"] == 500_000 and report["lost_usd"] == 0 and report["saved_usd"] == 500_000
    assert f"block {attack['block']} position 0: before every attack transaction" in out
    assert report["rebuilt_blocks"] == [history.block] and report["rebuilt_txs"] == 3
    assert f"rebuilt      blocks {history.block}..{history.block} of the fork source, with 3 of their" in out
    assert (f"replayed     --tx[0] tx {history.exploit[:10]}… at block {attack['block']} position 4; the fork "
            f"source mined it at block {history.block} position 3") in out
    markdown = (tmp_path / "out.md").read_text()
    assert "tripped      vault-cash-guard" in markdown
    # The auditor's evidence: the exploit's trace with its revert reason decoded by the Vault's ABI, the pause's
    # trace through the module, the balances (bob's wrap replayed with its 1 ETH; the deployer's 10,000 dUSD sent
    # after the exploit not replayed), the chart linked, the versions and the fork.
    traces = {t["label"].split()[0]: t for t in report["traces"]}
    assert traces["--tx[0]"]["revert_reason"] == "EnforcedPause()" and not traces["--tx[0]"]["succeeded"]
    assert traces["--tx[0]"]["calls"][0]["target"] == "vault"
    assert traces["--tx[0]"]["calls"][0]["function"] == "redeemFor"
    assert [c["function"] for c in traces["pause"]["calls"]][-1] == "pause" and traces["pause"]["succeeded"]
    changes = {(c["holder"], c["token"]): (c["before"], c["after"]) for c in report["balances"]}
    assert changes["vault", "dUSD"] == (1_100_000 * TOKEN, 1_100_000 * TOKEN)
    assert changes[BOB, "WETH"] == (0, TOKEN)
    assert report["chart"] and (tmp_path / report["chart"]).stat().st_size > 0
    assert f"]({report['chart']})" in markdown
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["onguard"] and report["anvil_version"].startswith("anvil")
    assert report["fork_source"] == f"{node.rpc_url} at block {history.block - 1}"
    assert list(report["policy_files"]) == [str(policies / "vault-cash-guard.toml")]
    # The self-defence ran too, although no file holds it: the report says so, in JSON and in text.
    assert report["built_in_policies"] == [SELF_DEFENCE_ID, ROUTINE_ID]
    assert f"built in     {SELF_DEFENCE_ID}, {ROUTINE_ID}" in out


def test_the_blocks_between_the_fork_and_the_exploit_are_rebuilt_before_it(
        base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    node, _world, history, config, _policies = base
    monkeypatch.setenv("ONGUARD_REPLAY_GUARDIAN_KEY", dev_key(4).key.hex())
    shutil.copytree(config.parent, tmp_path / "team")
    scenario = tmp_path / "by-hash.toml"
    scenario.write_text(SCENARIO.format(url=node.rpc_url, block=history.block - 3, tx=history.exploit, bob=BOB,
                                        weth=history.weth))
    assert main(["replay", str(scenario), "--json", str(tmp_path / "out.json")]) == 0, capsys.readouterr().out
    (report,) = json.loads((tmp_path / "out.json").read_text())["scenarios"]
    # Forked before alice's deposit: unless block B-2 is rebuilt first, she has 400,000 shares and the exploit's
    # 500,000 revert, unopposed too; rebuilt, the vault holds 1,100,000 when the exploit's block begins.
    assert report["held_before_usd"] == 1_100_000 and report["at_risk_usd"] == 500_000
    # B-2 (alice's three), B-1 (two) and B's three before the exploit; the deployer's after it is left out.
    assert report["rebuilt_blocks"] == [history.block - 2, history.block - 1, history.block]
    assert report["rebuilt_txs"] == 8
    (attack,) = report["attack_txs"]
    assert attack["original_position"] == 3 and attack["position"] == 4 and not attack["succeeded"]
    assert report["outcome"] == "stopped-before-inclusion"


@pytest.mark.parametrize(("tx", "block", "field", "words"), [
    ("0x" + "ab" * 32, "{before}", "attack[0].tx", "is not mined"),
    ("{exploit}", "{exploit_block}", "fork.block", "not after the fork block"),
])
def test_a_bad_transaction_names_the_file_and_the_field(base, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        tx: str, block: str, field: str, words: str) -> None:
    node, _world, history, config, _policies = base
    shutil.copytree(config.parent, tmp_path / "team")
    scenario = tmp_path / "bad.toml"
    values = {"exploit": history.exploit, "exploit_block": history.block, "before": history.block - 1}
    scenario.write_text(SCENARIO.format(url=node.rpc_url, block=block.format(**values), tx=tx.format(**values),
                                        bob=BOB, weth=history.weth))
    assert main(["replay", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert f"{scenario}: {field}: " in err and words in err and "hint:" in err


def test_an_unknown_hash_on_the_command_line_names_the_option(base, capsys: pytest.CaptureFixture[str]) -> None:
    node, _world, _history, config, _policies = base
    code = main(["replay", "--fork-url", node.rpc_url, "--block", "1", "--tx", "0x" + "ab" * 32,
                 "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "--tx" in err and "not mined" in err
