"""Scenario replay on real Anvil chains: every scenario of the corpus holds its expectation, the CLI's exit codes,
state-file forks, and a fork source that is unreachable fails at once with the reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from onguard.chain.anvil import free_port, start_anvil
from onguard.cli.main import main
from onguard.demo.world import World, build_world
from onguard.replay.runner import STOPPED, STOPPED_BEFORE, ReplayFailed, replay
from onguard.replay.scenario import load_scenario, scenario_files

pytestmark = pytest.mark.chain

CORPUS = Path(__file__).resolve().parents[1] / "scenarios"


def demo_fixture():
    """The corpus's demo-world fixture module (it writes the team's onguard.toml for a demo world)."""
    spec = importlib.util.spec_from_file_location("demo_world_fixture", CORPUS / "fixtures" / "demo_world.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relocated(text: str) -> str:
    """A corpus scenario's text with its relative paths made absolute, to be written elsewhere."""
    return (text.replace('"../../policies/', f'"{CORPUS.parent.parent}/policies/')
            .replace('"policies/', f'"{CORPUS}/policies/').replace('"fixtures/', f'"{CORPUS}/fixtures/'))


def on_a_fork_of(text: str, fork: str) -> str:
    """The scenario on another fork source, with the team's onguard.toml (written next to it) instead of the
    fixture."""
    return relocated(text).replace(f'fixture = "{CORPUS}/fixtures/demo_world.py"', fork).replace(
        "[guardian]\n", '[guardian]\nconfig = "onguard.toml"\n', 1)


@pytest.mark.parametrize("path", scenario_files(CORPUS), ids=lambda p: p.stem)
def test_every_corpus_scenario_holds_its_expectation(path: Path) -> None:
    report = replay(load_scenario(path))
    assert report.error is None
    assert report.expectation_held, report
    if report.benign:
        assert report.trips == () and report.responses == ()
    else:
        assert report.outcome in (STOPPED_BEFORE, STOPPED)
        assert report.responses[0].status == "mined" and report.gas_used > 0
        assert report.lost_usd + report.saved_usd == pytest.approx(report.at_risk_usd)


def test_a_pre_empted_drain_reports_where_the_pause_landed() -> None:
    report = replay(load_scenario(CORPUS / "single-tx-drain.toml"))
    assert report.outcome == STOPPED_BEFORE
    (trip,) = report.trips
    assert trip.policy_id == "vault-cash-guard" and trip.path == "mempool" and trip.block_offset == -1
    (response,) = report.responses
    (attack,) = report.attack_txs
    assert (response.block, response.position) < (attack.block, attack.position) and not attack.succeeded
    assert report.at_risk_usd == 400_000 and report.lost_usd == 0 and report.saved_usd == 400_000


def test_a_slow_drain_is_caught_after_inclusion_and_the_rest_reverts() -> None:
    report = replay(load_scenario(CORPUS / "slow-drain.toml"))
    assert report.outcome == STOPPED and report.trips[0].policy_id == "slow-outflow"
    assert report.trips[0].path == "block"
    succeeded = [t for t in report.attack_txs if t.succeeded]
    assert len(succeeded) == 11 and len(report.attack_txs) == 16
    assert report.lost_usd == 275_000 and report.at_risk_usd == 400_000


def test_a_staged_attack_is_caught_at_the_arming_step_not_at_the_strike() -> None:
    report = replay(load_scenario(CORPUS / "staged-oracle-borrow.toml"))
    assert report.outcome == STOPPED and report.trips[0].policy_id == "no-oracle-role-changes"
    trip = report.trips[0]
    assert trip.path == "mempool" and trip.step == "attack[1]" and trip.step_block == 1
    deploy, grant, _fund, strike = report.attack_txs
    (response,) = report.responses
    # The deployment (no signal on its own) is mined first; the pause lands before the grant that arms the exploit.
    assert (deploy.block, deploy.position) < (response.block, response.position) < (grant.block, grant.position)
    assert deploy.succeeded and not strike.succeeded
    assert report.at_risk_usd == 999_990 and report.lost_usd == 0


def test_a_donation_is_seen_on_the_block_path_by_the_share_price() -> None:
    report = replay(load_scenario(CORPUS / "donation-inflation.toml"))
    (trip,) = report.trips
    assert trip.policy_id == "share-price-jump" and trip.path == "block" and trip.block_offset == 0
    assert trip.step is None and report.outcome == STOPPED and report.at_risk_usd == 0


def test_donate_then_self_liquidate_is_paused_before_its_one_transaction_of_internal_calls() -> None:
    # Unopposed, the exploit takes the honest depositors' 2,000,000 dDAI (the market's whole cash, the loan
    # repaid); the simulation of the pending transaction to the exploit contract sees it and the pause goes first.
    report = replay(load_scenario(CORPUS / "donate-self-liquidate.toml"))
    assert report.held_before_usd == 2_000_000 and report.at_risk_usd == 2_000_000 and report.lost_usd == 0
    trip = next(t for t in report.trips if t.policy_id == "market-cash-drain")
    assert trip.path == "mempool" and trip.step == "attack[0]"
    (attack,) = report.attack_txs
    (response,) = (r for r in report.responses if r.action == "pause_market")
    assert response.block == attack.block and response.position < attack.position and not attack.succeeded
    exploit = next(t for t in report.traces if t.label.startswith("attack[0]"))
    assert exploit.calls[0].target == "exploit" and exploit.revert_reason == "EnforcedPause()"
    assert ("market", "deposit") in {(c.target, c.function) for c in exploit.calls}  # internal, not top-level


def test_interval_mining_pre_empts_a_drain_within_the_block_time() -> None:
    # Anvil mines every 2 s on its own clock; the guardian steps at its poll interval as the daemon does. The
    # attack is sent as the chain reaches its offset, so the pause has one block time to reach the pool.
    scenario = load_scenario(CORPUS / "interval-drain.toml")
    assert scenario.mining == "interval" and scenario.block_time == 2
    report = replay(scenario)
    assert report.outcome == STOPPED_BEFORE and report.expectation_held
    (trip,) = report.trips
    assert trip.path == "mempool" and trip.step == "attack[0]" and trip.block_offset == -1
    (response,) = report.responses
    (attack,) = report.attack_txs
    assert response.block == attack.block == report.first_attack_block and response.position < attack.position
    assert not attack.succeeded and report.saved_usd == report.at_risk_usd > 0
    assert response.sent_ms is not None and response.sent_ms < scenario.block_time * 1000


def test_a_contract_the_setup_deploys_is_watched_under_its_name() -> None:
    # The treasury exists only in this scenario: its call policy names it, and its dUSD count as holdings.
    report = replay(load_scenario(CORPUS / "ownership-takeover.toml"))
    assert report.outcome == STOPPED_BEFORE and report.expectation_held
    (trip,) = report.trips
    assert trip.policy_id == "no-treasury-owner-change" and trip.path == "mempool" and trip.step == "attack[0]"
    transfer, sweep = report.attack_txs
    # The transfer itself is not stopped (the guardian can only pause); the sweep is refused while paused.
    assert transfer.succeeded and not sweep.succeeded
    assert report.at_risk_usd == 250_000 and report.lost_usd == 0 and report.saved_usd == 250_000


def test_the_same_scenario_gives_the_same_report_apart_from_milliseconds() -> None:
    scenario = load_scenario(CORPUS / "oracle-borrow.toml")

    def stable(report) -> dict:
        # Wall-clock milliseconds vary; so do transaction hashes, because build_world's Safe gets a random salt
        # (a new Safe address each time, hence other calldata and base fees). Everything else must not.
        data = report.to_dict()
        data.pop("lead_ms")
        for trip in data["trips"]:
            trip.pop("detected_ms")
        for item in (*data["responses"], *data["attack_txs"]):
            item.pop("sent_ms", None)
            item.pop("tx_hash")
        for trace in data["traces"]:
            trace.pop("tx_hash")
        return data

    assert stable(replay(scenario)) == stable(replay(scenario))


def test_a_state_file_fork_replays_without_building_anything(tmp_path: Path) -> None:
    state = tmp_path / "base.state.json"
    with start_anvil("--dump-state", str(state)) as node:
        world = build_world(node.rpc_url)
    (tmp_path / "base.world.json").write_text(world.to_json())
    demo_fixture().config_for(world, tmp_path)   # the team's own onguard.toml, as they wrote it
    text = on_a_fork_of((CORPUS / "single-tx-drain.toml").read_text(),
                        'state_file = "base.state.json"\naddresses = "base.world.json"')
    scenario_path = tmp_path / "from-state.toml"
    scenario_path.write_text(text)
    report = replay(load_scenario(scenario_path))
    assert report.outcome == STOPPED_BEFORE and report.expectation_held


def unreachable_scenario(tmp_path: Path) -> Path:
    world = World.from_json(json.dumps({
        "rpc_url": "http://x", "chain_id": 31337, "safe": "0x" + "11" * 20, "module": "0x" + "22" * 20,
        "asset": "0x" + "33" * 20, "collateral": "0x" + "44" * 20, "oracle": "0x" + "55" * 20,
        "breaker": "0x" + "66" * 20, "vault": "0x" + "77" * 20, "owners": [], "guardian": "0x" + "88" * 20}))
    (tmp_path / "world.json").write_text(world.to_json())
    demo_fixture().config_for(world, tmp_path)
    text = on_a_fork_of((CORPUS / "single-tx-drain.toml").read_text(),
                        f'rpc_url = "http://127.0.0.1:{free_port()}"\nblock = 100\naddresses = "world.json"')
    path = tmp_path / "unreachable.toml"
    path.write_text(text)
    return path


def test_an_unreachable_fork_source_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ReplayFailed, match="unreachable") as caught:
        replay(load_scenario(unreachable_scenario(tmp_path)))
    assert "Connection refused" in caught.value.message and caught.value.hint


def test_the_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(CORPUS / "role-grant.toml")]) == 0
    assert "expected stopped-before-inclusion: held" in capsys.readouterr().out
    # An expectation that does not hold: the role grant is stopped, not missed, so "no-trip" fails.
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(relocated((CORPUS / "role-grant.toml").read_text().replace(
        'expect = "stopped-before-inclusion"', 'expect = "no-trip"')))
    assert main(["replay", str(wrong)]) == 1
    capsys.readouterr()
    bad = tmp_path / "bad" / "bad.toml"
    bad.parent.mkdir()
    bad.write_text('name = "x"\n')
    assert main(["replay", str(bad.parent)]) == 2
    assert "bad.toml: description: is required" in capsys.readouterr().err
    # An error that prevents the run is not an expectation that failed: exit 3, with the reason.
    assert main(["replay", str(unreachable_scenario(tmp_path))]) == 3
    assert "unreachable" in capsys.readouterr().out


def test_a_folder_gives_a_table_figures_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("single-tx-drain.toml", "benign-oracle-move.toml"):
        (folder / name).write_text(relocated((CORPUS / name).read_text()))
    unreachable = unreachable_scenario(tmp_path)
    # The team's files go in a sub-folder: every *.toml of the folder itself is a scenario.
    (folder / "zz-unreachable.toml").write_text(unreachable.read_text().replace(
        'config = "onguard.toml"', 'config = "team/onguard.toml"').replace('"world.json"', '"team/world.json"'))
    (folder / "team").mkdir()
    (folder / "team" / "world.json").write_text((tmp_path / "world.json").read_text())
    (folder / "team" / "onguard.toml").write_text((tmp_path / "onguard.toml").read_text())
    code = main(["replay", str(folder), "--report", str(tmp_path / "out.md"), "--json", str(tmp_path / "out.json")])
    out, err = capsys.readouterr()
    assert code == 3  # the unreachable one could not be played
    assert "[1/3] benign-oracle-move.toml" in err and "[3/3] zz-unreachable.toml: error" in err
    assert "attacks        2: 1 stopped before inclusion, 0 caught after inclusion, 1 missed" in out
    assert "benign         1: 0 false alarm(s)" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["figures"]["stopped_before_inclusion"] == 1 and len(data["scenarios"]) == 3
    assert "| single-transaction drain |" in (tmp_path / "out.md").read_text()


def test_without_self_defence_a_compromised_safe_is_missed_and_the_reverted_pause_says_why(tmp_path: Path) -> None:
    # The corpus scenario with the team's config turning the built-in self-defence off ([self_defence] enabled =
    # false, written by a fixture wrapping the corpus's): the owners' keys disable the module, the drain trips
    # vault-drain, and the pause the guardian sends reverts in the Safe (GS104: not an enabled module).
    fixture = tmp_path / "no_self_defence.py"
    fixture.write_text(f"""
import importlib.util
_spec = importlib.util.spec_from_file_location("corpus_demo_world", {str(CORPUS / "fixtures" / "demo_world.py")!r})
_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_corpus)
ABIS = _corpus.ABIS


def build(rpc_url, folder):
    deployment = _corpus.build(rpc_url, folder)
    deployment.config.write_text(deployment.config.read_text() + "\\n[self_defence]\\nenabled = false\\n")
    return deployment
""")
    text = relocated((CORPUS / "compromised-safe.toml").read_text())
    path = tmp_path / "no-self-defence.toml"
    path.write_text(text.replace(f'fixture = "{CORPUS}/fixtures/demo_world.py"', f'fixture = "{fixture}"'))
    report = replay(load_scenario(path))
    assert report.outcome == "missed" and not report.expectation_held
    assert report.lost_usd == report.at_risk_usd == 400_000
    assert {t.policy_id for t in report.trips} == {"vault-drain"}
    (response,) = report.responses
    assert response.status == "failed" and response.block is not None and "reverted" in (response.error or "")
    (pause,) = [t for t in report.traces if t.label.startswith("pause")]
    assert not pause.succeeded and pause.revert_reason == "GS104" and pause.block == response.block
