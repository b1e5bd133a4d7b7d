"""An incident's whole life on a real Anvil fork with the real Safe v1.4.1: a drain is paused through the module, a
person acknowledges it (PagerDuty acknowledges the page) and resolves it, `onguard recover` proposes the unpause
and the module's cooldown reset as ONE Safe transaction, the owners sign and execute it, and a second attack is
paused at once; the post-incident report tells the story."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from eth_utils import function_signature_to_4byte_selector

from onguard.chain.module import GuardianModuleClient
from onguard.chain.rpc import Rpc
from onguard.cli.main import main
from onguard.demo.world import Roles, dev_account
from onguard.incidents.store import IncidentStatus, ResponseStatus
from onguard.runtime import Guardian
from tests.unit.receivers import ThreadedHttpReceiver

from .helpers import ALICE, BOB, drain_slice, is_paused, make_guardian, tokens

pytestmark = pytest.mark.chain

SIGNER_ENV = "ONGUARD_TEST_RECOVERY_SIGNER"
PAUSE = function_signature_to_4byte_selector("pause()")
SECRET = "recovery-test-secret"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def cli(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def last_executed_at(rpc_url: str, module: str, target: str) -> int:
    async def go() -> int:
        rpc = Rpc(rpc_url)
        try:
            return (await GuardianModuleClient(rpc, module).get_action(target, PAUSE)).last_executed_at
        finally:
            await rpc.close()
    return asyncio.run(go())


def handle(loop: asyncio.AbstractEventLoop, guardian: Guardian) -> list:
    async def go() -> list:
        decisions = await guardian.step()
        await guardian.drain_responses()
        return decisions
    return loop.run_until_complete(go())


def test_ack_resolve_recover_then_a_second_attack_is_paused_at_once(chain, guardian_config: Path, capsys,
                                                                     monkeypatch, tmp_path: Path) -> None:
    w3, world = chain.w3, chain.world
    guardian = make_guardian(guardian_config)
    loop = asyncio.new_event_loop()  # one loop for the guardian's whole life; the CLI runs its own
    try:
        loop.run_until_complete(guardian.start())
        handle(loop, guardian)
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))
        [decision] = [d for d in handle(loop, guardian) if d.opened]
        incident_id = decision.incident.id
        assert is_paused(w3, world) and guardian.store.incident(incident_id).status == IncidentStatus.SAFE
        assert last_executed_at(world.rpc_url, world.module, world.vault) > 0  # the module's cooldown runs
        chain.mine(6)  # the drain leaves the policy's 5-block window
        handle(loop, guardian)

        config_text = guardian_config.read_text()
        with ThreadedHttpReceiver(SECRET) as receiver:
            guardian_config.write_text(config_text + f"""
[notifications]
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "RECOVERY_PD_KEY"
events_url = "{receiver.url('/pagerduty')}"
[[notifications.routes]]
channels = ["pager"]
""")
            monkeypatch.setenv("RECOVERY_PD_KEY", ROUTING_KEY)
            config_arg = ("--config", str(guardian_config))
            out = cli(capsys, "incidents", *config_arg, "ack", str(incident_id), "--reason", "on it", "--by", "alice")
            assert "pager: notified" in out
            assert main(["recover", *config_arg, str(incident_id), "--root-cause", "x", "--fix", "y",
                         "--policy", "z"]) == 2  # not resolved yet: the guardian would pause again
            assert "resolve it first" in capsys.readouterr().err
            cli(capsys, "incidents", *config_arg, "resolve", str(incident_id), "--reason", "redeemFor fixed",
                "--by", "alice")
            events = [(r.json()["event_action"], r.json()["dedup_key"]) for r in receiver.requests["/pagerduty"]]
        key = f"onguard/{world.chain_id}/incident/{incident_id}"
        assert events == [("acknowledge", key), ("resolve", key)]

        out = cli(capsys, "recover", *config_arg, str(incident_id),
                  "--root-cause", "redeemFor lacked an allowance check", "--fix", "vault v2 deployed",
                  "--policy", "threshold kept at 25%", "--by", "bob")
        proposal = re.search(r"proposal (\d+), Safe tx", out).group(1)
        assert "vault.unpause() (undo pause_vault)" in out and "module.resetCooldown(vault, pause())" in out
        assert is_paused(w3, world)  # recover sends nothing
        shown = cli(capsys, "proposals", *config_arg, "show", proposal)
        assert "batch        2 calls" in shown and "simulation   succeeds" in shown
        for owner in Roles.OWNERS[:world.threshold]:
            monkeypatch.setenv(SIGNER_ENV, dev_account(owner).key.to_0x_hex())
            cli(capsys, "proposals", *config_arg, "sign", proposal, "--key-env", SIGNER_ENV, "--yes")
        monkeypatch.setenv(SIGNER_ENV, dev_account(Roles.DEPLOYER).key.to_0x_hex())
        cli(capsys, "proposals", *config_arg, "execute", proposal, "--key-env", SIGNER_ENV, "--yes")

        assert not is_paused(w3, world)
        assert last_executed_at(world.rpc_url, world.module, world.vault) == 0
        assert handle(loop, guardian) == []  # the unpause itself trips nothing

        for _ in range(2):  # the second attack: 200k of the 500k left
            drain_slice(w3, world, BOB, tokens(100_000))
        [second] = [d for d in handle(loop, guardian) if d.opened]
        assert second.incident.id != incident_id
        (response,) = guardian.store.responses(second.incident.id)
        assert response.status == ResponseStatus.MINED  # the reset cooldown let the module pause at once
        assert is_paused(w3, world)
    finally:
        loop.run_until_complete(guardian.close())
        loop.close()

    capsys.readouterr()  # the guardian's log lines
    code = main(["status", "--config", str(guardian_config), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert status["guardian"] == guardian.account.address
    assert status["preflight"]["ok"] is True and status["chain"]["head"] == w3.eth.block_number
    assert status["incidents"]["total"] == 2 and status["attention"] == [] and code == 0

    report = tmp_path / "report.md"
    cli(capsys, "incidents", "--config", str(guardian_config), "report", str(incident_id), "--out", str(report))
    text = report.read_text()
    assert "| acknowledged | alice | on it |" in text
    assert f"Proposal {proposal} (recover from incident {incident_id}" in text and "status **executed**" in text
    assert "[x] the root cause is understood and noted: redeemFor lacked an allowance check" in text
    assert "| execution |" in text  # what the signers did
