"""Preflight refuses, on real Anvil with the real Safe and GuardianModule, each configuration that would fail at
trip time — naming the action and the fix: a wrong calldata hash in the allowlist, a Safe that lost the pauser
role, a call the Safe may not make, an unfunded guardian key, a stale pre-signature; bad input is one line, exit 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from eth_utils import keccak
from safe_eth.eth import EthereumClient

from onguard.chain.rpc import Rpc
from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import ACTION_COOLDOWN, Roles, contract, dev_account, exec_as_owners
from onguard.preflight import Check, PreflightReport, run_preflight
from onguard.runtime import PREFLIGHT_EVERY_BLOCKS
from onguard.safe.chain import SafeOnChain

from .helpers import make_guardian

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address
KEY_ENV = "ONGUARD_TEST_SIGNER_KEY"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def preflight(config: Path) -> PreflightReport:
    async def go() -> PreflightReport:
        rpc = Rpc(load_config(config).chain.rpc_url)
        try:
            return await run_preflight(load_config(config), GUARDIAN, rpc)
        finally:
            await rpc.close()
    return asyncio.run(go())


def as_owners(chain, to: str, data: str | bytes) -> None:
    payload = bytes.fromhex(data[2:]) if isinstance(data, str) else data
    exec_as_owners(EthereumClient(chain.world.rpc_url), chain.world.safe, to, payload)


def test_the_demo_world_passes_and_run_preflight_reports_gas_from_the_simulation(chain, guardian_config, capsys):
    report = preflight(guardian_config)
    assert report.ok, report.summary()
    assert set(report.gas_estimates) == {"pause_vault", "trip_breaker"}
    for action, estimate in report.gas_estimates.items():
        assert 21_000 < estimate < report.gas_limits[action]
    code, out, _ = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 0 and out.count("✓") == len(report.results) and "✗" not in out
    code, out, _ = run(capsys, "preflight", "--config", str(guardian_config), "--json")
    document = json.loads(out)
    assert code == 0 and document["ok"] and document["guardian"] == GUARDIAN
    assert set(document["gas_limits"]) == {"pause_vault", "trip_breaker"}
    assert all(check["passed"] for check in document["checks"])


def test_a_wrong_calldata_hash_in_the_allowlist_is_refused_naming_the_action(chain, guardian_config, capsys):
    world = chain.world
    module = contract(chain.w3, "GuardianModule", world.module)
    vault = contract(chain.w3, "Vault", world.vault)
    selector = bytes.fromhex(vault.encode_abi("pause", [])[2:10])
    wrong = keccak(text="not the calldata onguard sends")
    as_owners(chain, world.module, module.encode_abi("allowAction", [world.vault, selector, wrong, ACTION_COOLDOWN]))

    report = preflight(guardian_config)
    failed = {(r.check, r.action) for r in report.failures}
    assert failed == {(Check.ALLOWLISTED, "pause_vault"), (Check.SIMULATION, "pause_vault")}
    assert "pause_vault" in str(report.refusal()) and report.refusal().exit_code == 2
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert "✗ allowlisted [pause_vault]: vault.pause(): allowlisted with a DIFFERENT calldata hash" in out
    assert f"CalldataMismatch: the module pins calldata hash 0x{wrong.hex()}, onguard sends " \
           f"0x{keccak(bytes.fromhex('8456cb59')).hex()}" in out
    assert "fix: run `onguard module propose`" in out
    assert "✓ simulation [trip_breaker]" in out and "NOT ready: 2 check(s) failed" in out


def test_a_safe_without_the_pauser_role_is_refused(chain, guardian_config, capsys):
    world = chain.world
    vault = contract(chain.w3, "Vault", world.vault)
    as_owners(chain, world.vault, vault.encode_abi("revokeRole", [keccak(text="PAUSER_ROLE"), world.safe]))
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert "✓ allowlisted [pause_vault]" in out  # the allowlist is fine: only the simulation can tell
    assert "✗ simulation [pause_vault]: vault.pause() through the module" in out
    assert "the Safe's call vault.pause() reverts: AccessControlUnauthorizedAccount(account=" in out
    assert "fix: give the Safe the right to make this call on vault (e.g. its pauser role)" in out


def test_an_action_calling_a_function_the_safe_may_not_call_is_refused(chain, guardian_config, capsys):
    world = chain.world
    # setPrice is the updater's alone; the owners allowlisted it anyway, with the exact calldata.
    oracle = contract(chain.w3, "PriceOracle", world.oracle)
    module = contract(chain.w3, "GuardianModule", world.module)
    data = bytes.fromhex(oracle.encode_abi("setPrice", [1])[2:])
    as_owners(chain, world.module, module.encode_abi("allowAction", [world.oracle, data[:4], keccak(data),
                                                                     ACTION_COOLDOWN]))
    guardian_config.write_text(guardian_config.read_text() + '\n[actions.zero_price]\ncontract = "oracle"\n'
                               'call = "setPrice(uint256)"\nargs = [1]\ndone_when = "oracle.price() == 1"\n')
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert "✓ allowlisted [zero_price]" in out
    assert "✗ simulation [zero_price]: oracle.setPrice(1)" in out and "AccessControlUnauthorizedAccount" in out


def test_an_unfunded_guardian_key_is_refused(chain, guardian_config, capsys):
    chain.w3.provider.make_request("anvil_setBalance", [GUARDIAN, hex(10**15)])  # 0.001 ETH
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert "✓ simulation [pause_vault]" in out
    assert f"✗ balance: the guardian key {GUARDIAN} holds 0.001000 ETH; 3 responses of" in out
    assert "fix: send at least" in out and f"ETH to {GUARDIAN}, or lower response.max_fee_per_gas" in out
    code, out, _ = run(capsys, "preflight", "--config", str(guardian_config), "--responses", "1")
    assert code == 2 and "1 responses of" in out


def test_a_pre_signature_voided_by_a_nonce_move_is_refused(chain, guardian_config, capsys, monkeypatch):
    guardian_config.write_text(guardian_config.read_text().replace(
        'call = "pause()"\ndone_when = "paused()"\n', 'call = "pause()"\ndone_when = "paused()"\nvia = "presigned"\n'))
    config = str(guardian_config)
    code, out, _ = run(capsys, "preflight", "--config", config)
    assert code == 2 and "✗ pre-signed [pause_vault]: no pre-signature with 2 owners' signatures" in out
    for owner in Roles.OWNERS[:2]:
        monkeypatch.setenv(KEY_ENV, dev_account(owner).key.to_0x_hex())
        assert run(capsys, "presign", "pause_vault", "--config", config, "--key-env", KEY_ENV, "--yes")[0] == 0
    code, out, err = run(capsys, "preflight", "--config", config)
    assert code == 0, out + err
    assert "✓ pre-signed [pause_vault]: 2 owners' signatures for the live nonce" in out
    assert "✓ simulation [pause_vault]: vault.pause() through the Safe's execTransaction (pre-signed) from the " \
           "guardian key succeeds" in out

    nonce = SafeOnChain(chain.world.rpc_url, chain.world.safe).retrieve_state().nonce
    breaker = contract(chain.w3, "CircuitBreaker", chain.world.breaker)
    as_owners(chain, chain.world.breaker, breaker.encode_abi("trip", []))  # a routine transaction moves the nonce
    code, out, _ = run(capsys, "preflight", "--config", config)
    assert code == 2
    assert (f"✗ pre-signed [pause_vault]: no pre-signature with 2 owners' signatures for the Safe's live nonce "
            f"{nonce + 1} (signatures are held for nonce {nonce})") in out
    assert "fix: 2 owners run `onguard presign pause_vault`" in out


@pytest.mark.parametrize(("argv", "field"), [
    (["module", "plan", "--cooldown", "soon"], "--cooldown"),
    (["module", "propose", "--cooldown", "10"], "--cooldown"),           # below the module's MIN_COOLDOWN
    (["module", "propose", "--remove-guardian", "0x1234"], "--remove-guardian"),
    (["module", "plan", "--guardian", "nobody"], "--guardian"),
    (["preflight", "--responses", "0"], "--responses"),
    (["preflight", "--guardian", "0xzz"], "--guardian"),
])
def test_bad_input_is_one_line_and_exit_2(chain, guardian_config, capsys, argv, field):
    code, out, err = run(capsys, *argv[:2], "--config", str(guardian_config), *argv[2:]) if argv[0] == "module" \
        else run(capsys, argv[0], "--config", str(guardian_config), *argv[1:])
    assert code == 2
    assert err.startswith(f"error: {field}: ") and "Traceback" not in err
    assert len([line for line in err.splitlines() if not line.startswith("  hint:")]) == 1


def test_module_deploy_refuses_an_address_that_is_not_a_safe(chain, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, dev_account(Roles.DEPLOYER).key.to_0x_hex())
    code, _, err = run(capsys, "module", "deploy", "--safe", dev_account(12).address, "--rpc-url",
                       chain.world.rpc_url, "--key-env", KEY_ENV, "--yes")
    assert code == 2 and err.startswith("error: --safe: no contract at") and "Traceback" not in err


def test_a_target_without_code_is_refused(chain, guardian_config, capsys):
    moved = dev_account(12).address  # the vault's old address, say: nothing there now
    guardian_config.write_text(guardian_config.read_text().replace(chain.world.vault, moved))
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert f"✗ target deployed: no contract at vault ({moved}): a call to it would succeed and do nothing" in out
    assert "fix: put the contract's current address in contracts.vault.address" in out
    assert "✗ done_when readable [pause_vault]" in out and "✓ simulation [trip_breaker]" in out


def test_an_action_that_succeeds_without_reaching_its_done_when_is_refused(chain, guardian_config, capsys):
    text = guardian_config.read_text()
    assert 'call = "trip()"\ndone_when = "tripped()"' in text
    guardian_config.write_text(text.replace('call = "trip()"\ndone_when = "tripped()"',
                                            'call = "trip()"\ndone_when = "vault.paused()"'))
    code, out, err = run(capsys, "preflight", "--config", str(guardian_config))
    assert code == 2, err
    assert ("✗ simulation [trip_breaker]: breaker.trip() through the module from the guardian key succeeds, but "
            "done_when (vault.paused()) does not hold afterwards") in out
    assert "✓ simulation [pause_vault]" in out


def test_run_preflight_runs_on_the_daemons_own_rpc_client_and_store(chain, guardian_config):
    """As Guardian.start() would call it: its config, key, RPC client and database."""
    async def go() -> PreflightReport:
        guardian = make_guardian(guardian_config)
        try:
            return await run_preflight(guardian.config, guardian.account.address, guardian.rpc,
                                       store=guardian.store)
        finally:
            await guardian.close()
    report = asyncio.run(go())
    assert report.ok, report.summary()
    assert set(report.gas_limits) == {"pause_vault", "trip_breaker"}


class HandedLease:
    """A leader lease the test hands over: `held()` answers `holding`, and says when it was asked once `watching`
    (the reconciler asks it too, while the test's step() handles blocks)."""

    name = "leader:test"

    def __init__(self) -> None:
        self.holding = False
        self.watching = False
        self.asked = asyncio.Event()

    def held(self) -> bool:
        if self.watching:
            self.asked.set()
        return self.holding

    async def confirm(self) -> bool:
        return self.holding


def test_the_scheduled_preflight_runs_on_the_leader_only(chain, guardian_config):
    """Once PREFLIGHT_EVERY_BLOCKS blocks are handled, a replica that does not lead skips the preflight (once-only
    work); the same replica runs it once it leads."""
    async def scenario() -> None:
        guardian = make_guardian(guardian_config)
        lease = HandedLease()
        guardian.replica.leader = lease
        stop = asyncio.Event()
        loop: asyncio.Task[None] | None = None
        try:
            await guardian.start()
            at_start = guardian.preflight
            loop = asyncio.create_task(guardian._preflight_loop(stop))
            await asyncio.sleep(0)  # the loop takes the handled block it counts from
            chain.mine(PREFLIGHT_EVERY_BLOCKS + 1)
            await guardian.step()
            lease.watching = True
            for _ in range(2):  # twice: the loop went round once in between, and any preflight it ran is over
                async with asyncio.timeout(60):
                    await lease.asked.wait()  # the loop found enough blocks handled and asked whether it leads
                lease.asked.clear()
            assert guardian.preflight is at_start  # it does not: no preflight
            lease.holding = True
            async with asyncio.timeout(60):
                while guardian.preflight is at_start:
                    await asyncio.sleep(0.05)
            assert guardian.preflight.ok
        finally:
            stop.set()
            if loop is not None:
                await loop
            await guardian.close()

    asyncio.run(scenario())
