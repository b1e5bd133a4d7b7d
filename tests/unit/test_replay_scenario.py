"""Scenario files: the corpus loads, and every kind of mistake is refused with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from onguard.replay.scenario import (
    ScenarioError,
    load_scenario,
    scenario_files,
    split_args,
)

CORPUS = Path(__file__).resolve().parents[1] / "scenarios"
FIXTURE = CORPUS / "fixtures" / "demo_world.py"

GOOD = f"""
name = "drain"
description = "one redeemFor"
modelled_on = "Team Finance, October 2022"
expect = "stopped-before-inclusion"
holders = ["vault"]
tokens = ["asset", "0x5FbDB2315678afecb367f032d93F642f64180aa3"]

[fork]
fixture = "{FIXTURE}"

[guardian]
policies = ["p.toml"]
key = 4

[accounts]
attacker = 5
alice = 6
whale = "0x00000000219ab540356cBB839Cbe05303d7705Fa"

[contracts.pool]
address = "0x1111111111111111111111111111111111111111"
abi = "TestToken"

[prices]
dUSD = 1.0
dCOL = "0.5"

[[setup]]
from = "attacker"
deploy = "OracleBorrowAttacker"
as = "exploit"

[[attack]]
from = "attacker"
call = "vault.redeemFor(alice, attacker, balance(vault, alice))"
value = "1.5e18"

[[attack]]
from = "attacker"
call = "exploit.attack(oracle, vault, 10e18, 1_000_000e18)"
repeat = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p.toml").write_text("id = 'x'\n")
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_every_corpus_scenario_loads() -> None:
    files = scenario_files(CORPUS)
    assert len(files) >= 6
    for path in files:
        scenario = load_scenario(path)
        assert scenario.benign or scenario.modelled_on, path
        assert scenario.policies is None or all(p.is_file() for p in scenario.policies)


def test_a_good_scenario_reads_its_fields(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.fork.fixture is not None and scenario.mining == "manual" and scenario.mempool is True
    assert scenario.accounts == {"attacker": 5, "alice": 6, "whale": "0x00000000219ab540356cBB839Cbe05303d7705Fa"}
    assert scenario.guardian_key == 4 and scenario.config is None and scenario.policies is not None
    assert scenario.attack[0].value == 15 * 10**17 and scenario.attack[1].value == 0
    assert "pool" in scenario.abis and scenario.contracts["pool"].address == "0x" + "11" * 20
    assert str(scenario.prices["dCOL"]) == "1/2"
    assert scenario.setup[0].deploy == "OracleBorrowAttacker" and scenario.setup[0].alias == "exploit"
    # Steps follow one another a block apart; a repeated step takes one block each.
    assert [s.block for s in scenario.attack] == [0, 1, 2, 3]
    assert scenario.attack[0].args == ("alice", "attacker", "balance(vault, alice)")
    assert scenario.block_time is None and scenario.holders == ("vault",)
    owned = load_scenario(write(tmp_path, GOOD.replace('holders = ["vault"]', 'holders = ["vault", "exploit"]')))
    assert owned.holders == ("vault", "exploit")  # a contract the setup deploys may hold the protocol's value
    interval = load_scenario(write(tmp_path, GOOD.replace(
        "[guardian]", '[mining]\nmode = "interval"\nblock_time = 2\n\n[guardian]')))
    assert interval.mining == "interval" and interval.block_time == 2


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda t: t.replace('modelled_on = "Team Finance, October 2022"\n', ""), "modelled_on", "required"),
    (lambda t: t.replace('expect = "stopped-before-inclusion"', 'expect = "paused"'), "expect", "unknown"),
    (lambda t: t.replace(f'fixture = "{FIXTURE}"', 'fixture = "nope.py"'), "fork.fixture", "not found"),
    (lambda t: t.replace(f'fixture = "{FIXTURE}"', f'fixture = "{FIXTURE}"\nrpc_url = "http://x"'), "fork.rpc_url",
     "exactly one"),
    (lambda t: t.replace(f'fixture = "{FIXTURE}"', 'rpc_url = "http://127.0.0.1:1"'), "fork.block", "required"),
    (lambda t: t.replace(f'fixture = "{FIXTURE}"', 'state_file = "nope.json"'), "fork.state_file", "not found"),
    (lambda t: t.replace(f'fixture = "{FIXTURE}"', 'state_file = "p.toml"'), "guardian.config",
     "team's own onguard.toml"),
    (lambda t: t.replace("key = 4", 'key = 4\nconfig = "p.toml"'), "guardian.config", "does not go"),
    (lambda t: t.replace("key = 4", "key = 12"), "guardian.key", "not one of Anvil's keys"),
    (lambda t: t.replace("alice = 6", 'alice = "bob"'), "accounts.alice", "not an address"),
    (lambda t: t.replace('abi = "TestToken"\n', ""), "contracts.pool.abi", "required"),
    (lambda t: t.replace('abi = "TestToken"', 'abi = "NoSuchArtifact"'), "contracts.pool.abi", "no compiled"),
    (lambda t: t.replace('holders = ["vault"]', 'holders = ["vault", "0x1234"]'), "holders[1]",
     "neither a 0x address"),
    (lambda t: t.replace('tokens = ["asset"', 'tokens = ["usdc"'), "tokens[0]", "neither a 0x address"),
    (lambda t: t.replace('from = "attacker"\ncall = "vault', 'tx = "0xabc"\ncall = "vault'), "attack[0].tx",
     "not a transaction hash"),
    (lambda t: t.replace('from = "attacker"\ncall = "vault.redeemFor(alice, attacker, balance(vault, alice))"',
                         'tx = "0x' + "ab" * 32 + '"'), "attack[0].tx", "needs a node"),
    (lambda t: t.replace('value = "1.5e18"', 'value = "lots"'), "attack[0].value", "not an amount"),
    (lambda t: t.replace('["p.toml"]', '["missing.toml"]'), "guardian.policies[0]", "not found"),
    (lambda t: t.replace('dCOL = "0.5"', 'dCOL = "cheap"'), "prices.dCOL", "not a price"),
    (lambda t: t.replace('from = "attacker"\ncall = "vault', 'from = "mallory"\ncall = "vault'),
     "attack[0].from", "unknown sender"),
    (lambda t: t.replace("vault.redeemFor(", "vualt.redeemFor("), "attack[0].call", "unknown contract"),
    (lambda t: t.replace("vault.redeemFor(", "vault.redeemFro("), "attack[0].call", "did you mean 'redeemFor'"),
    (lambda t: t.replace("balance(vault, alice))", "balance(vault, alice)"), "attack[0].call", "unbalanced"),
    (lambda t: t.replace("exploit.attack(", "exploit2.attack("), "attack[1].call", "unknown contract"),
    (lambda t: t.replace('as = "exploit"', 'as = "vault"'), "setup[0].as", "already a name"),
    (lambda t: t.replace("repeat = 3", "repeat = 0"), "attack[1].repeat", "at least 1"),
    (lambda t: t.replace("repeat = 3", "repaet = 3"), "attack[1].repaet", "unknown field"),
    (lambda t: t.replace('deploy = "OracleBorrowAttacker"', 'deploy = "NoSuchContract"'), "setup[0].deploy",
     "no compiled contract"),
    (lambda t: t.replace('as = "exploit"', 'as = "exploit"\nblock = 2'), "setup[0].block", "only attack steps"),
    (lambda t: 'benign = true\n' + t, "expect", "benign"),
    (lambda t: t.replace("[[attack]]", "[[atack]]"), "attack", "required"),
    (lambda t: t.replace("[guardian]", '[mining]\nmode = "interval"\n\n[guardian]'), "mining.block_time", "required"),
    (lambda t: t.replace("[guardian]", '[mining]\nmode = "interval"\nblock_time = 0\n\n[guardian]'),
     "mining.block_time", "between 1 and 60"),
    (lambda t: t.replace("[guardian]", '[mining]\nblock_time = 2\n\n[guardian]'), "mining.block_time",
     "only interval mode"),
    (lambda t: t.replace('holders = ["vault"]', 'holders = ["vault", "treasury"]'), "holders[1]", "neither"),
])
def test_a_bad_scenario_names_the_file_and_the_field(tmp_path: Path, change, field: str, words: str) -> None:
    path = write(tmp_path, change(GOOD))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.field == field
    assert caught.value.file == str(path)
    assert words in f"{caught.value.message} {caught.value.hint}"
    assert caught.value.exit_code == 2


def test_a_missing_or_broken_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "bad.toml")


def test_an_empty_folder_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no scenario files"):
        scenario_files(tmp_path)


def test_arguments_split_at_top_level_commas_only() -> None:
    assert split_args("a, balance(asset, b), 'x,y', 1e18") == ["a", "balance(asset, b)", "'x,y'", "1e18"]
    assert split_args("") == []
    with pytest.raises(ValueError):
        split_args("a, (b")
    with pytest.raises(ValueError):
        split_args("a,,b")


def test_a_raw_calldata_step_needs_hex_of_whole_bytes_and_a_known_target(tmp_path) -> None:
    from onguard.errors import InputError
    from onguard.replay.scenario import load_scenario

    corpus = Path(__file__).resolve().parents[1] / "scenarios"
    text = (corpus / "role-grant.toml").read_text()
    scenario = tmp_path / "raw.toml"
    for bad, field in (('to = "vault"', 'to = "nowhere"'), ('calldata = "0x2f2f', 'calldata = "0xzz2f')):
        scenario.write_text(text.replace(bad, field).replace('"../../policies', f'"{corpus.parent.parent}/policies')
                            .replace('"policies/', f'"{corpus}/policies/')
                            .replace('"fixtures/', f'"{corpus}/fixtures/'))
        try:
            load_scenario(scenario)
        except InputError as exc:
            assert exc.field == ("attack[0].to" if "nowhere" in field else "attack[0].calldata")
        else:
            raise AssertionError(f"{field} was accepted")


def test_the_one_shot_form_checks_hashes_holders_and_tokens(tmp_path: Path) -> None:
    import importlib.util
    import json

    from onguard.demo.world import World
    from onguard.replay.scenario import one_shot_scenario

    spec = importlib.util.spec_from_file_location("demo_world_fixture", FIXTURE)
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    world = World.from_json(json.dumps({
        "rpc_url": "http://x", "chain_id": 31337, "safe": "0x" + "11" * 20, "module": "0x" + "22" * 20,
        "asset": "0x" + "33" * 20, "collateral": "0x" + "44" * 20, "oracle": "0x" + "55" * 20,
        "breaker": "0x" + "66" * 20, "vault": "0x" + "77" * 20, "owners": [], "guardian": "0x" + "88" * 20}))
    config = fixture.config_for(world, tmp_path)
    tx = "0x" + "ab" * 32
    scenario = one_shot_scenario(config, "http://127.0.0.1:1", 9, [tx], holders=("vault",), tokens=("asset",))
    assert scenario.attack[0].tx_hash == tx and scenario.fork.block == 9 and scenario.config == config
    assert scenario.policies is None and scenario.expect == "stopped" and "vault" in scenario.abis
    for kwargs, field in (({"holders": ("nobody",)}, "--holder"), ({"tokens": ("0x12",)}, "--token")):
        with pytest.raises(ScenarioError) as caught:
            one_shot_scenario(config, "http://127.0.0.1:1", 9, [tx], **kwargs)
        assert caught.value.field == field and caught.value.exit_code == 2
    with pytest.raises(ScenarioError) as caught:
        one_shot_scenario(config, "http://127.0.0.1:1", 9, ["0x1234"])
    assert caught.value.field == "--tx"
