"""Transactions by hash: what a scenario may say around them, how a mined transaction becomes the request that sends
it again unchanged (fee fields, value, access list, authorisations), and the order a rebuilt block is sent in."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from onguard.demo.world import World
from onguard.replay.originals import OriginalBlock, Originals, OriginalTx, _original
from onguard.replay.scenario import ScenarioError, Step, load_scenario

CORPUS = Path(__file__).resolve().parents[1] / "scenarios"
HASH_A, HASH_B = "0x" + "aa" * 32, "0x" + "bb" * 32
SENDER = "0x" + "12" * 20


def team_config(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("demo_world_fixture", CORPUS / "fixtures" / "demo_world.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    world = World.from_json(json.dumps({
        "rpc_url": "http://x", "chain_id": 31337, "safe": "0x" + "11" * 20, "module": "0x" + "22" * 20,
        "asset": "0x" + "33" * 20, "collateral": "0x" + "44" * 20, "oracle": "0x" + "55" * 20,
        "breaker": "0x" + "66" * 20, "vault": "0x" + "77" * 20, "owners": [], "guardian": "0x" + "88" * 20}))
    return fixture.config_for(world, folder)


BY_HASH = f"""
name = "by hash"
description = "a mined exploit"
modelled_on = "the chain's own"
expect = "stopped"
holders = ["vault"]
tokens = ["asset"]

[fork]
rpc_url = "http://127.0.0.1:1"
block = 9

[guardian]
config = "team/onguard.toml"

[accounts]
attacker = 5

[prices]
dUSD = 1

[[attack]]
tx = "{HASH_A}"

[[attack]]
from = "attacker"
call = "vault.pause()"
block = 3
"""


@pytest.fixture
def scenario_dir(tmp_path: Path) -> Path:
    team_config(tmp_path / "team")
    return tmp_path


def test_a_transaction_by_hash_beside_placed_steps_loads(scenario_dir: Path) -> None:
    path = scenario_dir / "s.toml"
    path.write_text(BY_HASH)
    scenario = load_scenario(path)
    assert scenario.attack[0].tx_hash == HASH_A and scenario.attack[1].block == 3 and scenario.mining == "manual"


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda t: t.replace(f'[[attack]]\ntx = "{HASH_A}"', f'[[setup]]\ntx = "{HASH_A}"\n\n[[attack]]\ntx = "{HASH_B}"'),
     "setup[0].tx", "attack step"),
    (lambda t: t.replace(f'tx = "{HASH_A}"', f'tx = "{HASH_A}"\nblock = 1'), "attack[0].block", "its own block"),
    (lambda t: t.replace("[guardian]", '[mining]\nmode = "automine"\n\n[guardian]'), "mining.mode", "manual"),
    (lambda t: t + f'\n[[attack]]\ntx = "{HASH_A}"\n', "attack", "listed twice"),
    (lambda t: t.replace("block = 3\n", ""), "attack[1].block", "required beside transactions by hash"),
])
def test_what_goes_around_a_transaction_by_hash_is_checked(scenario_dir: Path, change, field: str,
                                                            words: str) -> None:
    path = scenario_dir / "s.toml"
    path.write_text(change(BY_HASH))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.field == field and caught.value.file == str(path) and caught.value.exit_code == 2
    assert words in f"{caught.value.message} {caught.value.hint}"


def mined(kind: int, **extra: object) -> dict[str, object]:
    raw: dict[str, object] = {"hash": HASH_A.upper().replace("0X", "0x"), "from": SENDER, "to": "0x" + "34" * 20,
                              "input": "0xabcdef", "value": "0x6f05b59d3b20000", "gas": "0x30d40",
                              "blockNumber": "0xc", "transactionIndex": "0x2", "type": hex(kind), "nonce": "0x7",
                              "gasPrice": "0x3b9aca07"}
    if kind >= 2:
        raw |= {"maxFeePerGas": "0xba43b7400", "maxPriorityFeePerGas": "0x3b9aca00"}
    return raw | extra


def test_a_legacy_transaction_is_sent_again_with_its_gas_price_and_value() -> None:
    tx = _original(mined(0), None, "--tx")
    assert (tx.hash, tx.block, tx.position) == (HASH_A, 12, 2)
    assert dict(tx.request) == {"from": "0x1212121212121212121212121212121212121212", "data": "0xabcdef",
                                "value": "0x6f05b59d3b20000", "gas": "0x30d40",
                                "to": "0x3434343434343434343434343434343434343434", "gasPrice": "0x3b9aca07"}


def test_an_eip1559_transaction_keeps_its_caps_and_access_list_not_the_effective_price() -> None:
    access = [{"address": "0x" + "56" * 20, "storageKeys": ["0x" + "00" * 32]}]
    request = _original(mined(2, accessList=access), None, "--tx").request
    assert request["maxFeePerGas"] == "0xba43b7400" and request["maxPriorityFeePerGas"] == "0x3b9aca00"
    assert "gasPrice" not in request and request["accessList"] == access
    authorisations = [{"chainId": "0x1", "address": "0x" + "78" * 20, "nonce": "0x0", "yParity": "0x1",
                       "r": "0x01", "s": "0x02"}]
    assert _original(mined(4, authorizationList=authorisations), None, "--tx").request["authorizationList"] == (
        authorisations)
    created = _original(mined(2, to=None), None, "--tx").request
    assert "to" not in created


def test_a_blob_transaction_cannot_be_sent_again_and_names_the_field() -> None:
    with pytest.raises(ScenarioError) as caught:
        _original(mined(3), "s.toml", "attack[0].tx")
    assert caught.value.field == "attack[0].tx" and "type 3" in caught.value.message and caught.value.exit_code == 2


def step(field: str, tx_hash: str | None = None, block: int = 0) -> Step:
    return Step(field=field, sender="" if tx_hash else "attacker", contract=None if tx_hash else "vault",
                function=None if tx_hash else "pause", deploy=None, args=(), alias=None, gas=0, block=block,
                tx_hash=tx_hash)


def original(tx_hash: str, block: int, position: int) -> OriginalTx:
    return OriginalTx(hash=tx_hash, sender=SENDER, block=block, position=position,
                      request=MappingProxyType({"from": SENDER}))


def test_a_rebuilt_block_sends_the_sources_transactions_around_the_scenarios_at_their_positions() -> None:
    context = [original("0x" + f"{i:02x}" * 32, 12, i) for i in (0, 1)]
    ours = original(HASH_A, 12, 2)
    between = original("0x" + "cc" * 32, 11, 0)
    originals = Originals(by_hash=MappingProxyType({HASH_A: ours}), fork_block=10, blocks=MappingProxyType({
        0: OriginalBlock(number=11, timestamp=100, base_fee=7, txs=(between,)),
        1: OriginalBlock(number=12, timestamp=112, base_fee=7, txs=(context[0], context[1], ours))}))
    exploit, extra = step("attack[0]", HASH_A), step("attack[1]", block=1)
    assert originals.offset(HASH_A) == 1
    assert originals.plan(0, []) == [between]
    assert originals.plan(1, [exploit, extra]) == [context[0], context[1], exploit, extra]
    assert originals.plan(2, [extra]) == [extra]



def test_a_transaction_by_hash_is_placed_in_the_attack_block_of_its_original_block(scenario_dir: Path) -> None:
    path = scenario_dir / "s.toml"
    path.write_text(BY_HASH)
    originals = Originals(by_hash=MappingProxyType({HASH_A: original(HASH_A, 14, 0)}), fork_block=9)
    placed = originals.placed(load_scenario(path))
    assert [s.block for s in placed.attack] == [4, 3]  # block 14 after a fork at 9; the call step's own block
