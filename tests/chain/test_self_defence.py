"""The built-in guardian self-defence on real Anvil chains, the real Safe v1.4.1 and the GuardianModule: the daemon's
own loop (`Guardian.run`, mempool source on) with mining held; the Safe's owners sign and send a Safe transaction
that strips the guardian's authority (module disabled, guardian removed, action revoked, owner swapped, threshold
changed, the pauser role renounced on a real OpenZeppelin 5 AccessControl token); one block is mined: the pause is in
it before the owners' transaction. A benign Safe transaction trips nothing; a rotation the team recorded through
`onguard proposals` only alerts; a change mined without being seen pending opens a critical incident on its block."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from safe_eth.eth.contracts import get_safe_V1_4_1_contract
from web3 import Web3

from onguard.chain.keys import load_guardian_account
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Head, Simulator
from onguard.chain.view import ReadFailure
from onguard.chain.module import encode_remove_guardian, encode_revoke_action
from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.incidents.store import Incident, IncidentStatus, ResponseStatus
from onguard.policies.model import ROUTINE_ID, SELF_DEFENCE_ID
from onguard.policies.selfdefence import builtin_policies
from onguard.runtime import Guardian, build_guardian
from onguard.safe.tx import BatchCall, SafeTxData, exec_calldata, sign

from ..conftest import GUARDIAN_KEY_ENV
from ..fixtures.protocols.config import Watched, forge_abi, write_guard_config
from .conftest import ProtocolsChain
from .helpers import LIMIT, until

pytestmark = pytest.mark.chain

SENTINEL = "0x0000000000000000000000000000000000000001"
OWNER1, OWNER2 = dev_account(Roles.OWNERS[0]), dev_account(Roles.OWNERS[1])
ATTACKER = dev_account(Roles.ATTACKER).address
BOB = dev_account(Roles.DEPOSITORS[1]).address
DRAIN_POLICY = Path(__file__).resolve().parents[2] / "policies" / "vault-drain.toml"


@pytest.fixture(autouse=True)
def _guardian_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())


def demo_config(chain: Any, folder: Path, extra: str = "") -> Path:
    """The demo world's onguard.toml with the mempool source on and no policy of its own but the vault's drain
    policy: what pauses here is the built-in self-defence."""
    policies = folder / "policies"
    policies.mkdir(parents=True)
    (policies / "vault-drain.toml").write_text(DRAIN_POLICY.read_text())
    config = write_config(chain.world, folder, key_env=GUARDIAN_KEY_ENV, policies_dir=policies, poll_interval="50ms")
    config.write_text(config.read_text() + f'\n[mempool]\nenabled = true\nws_url = "{chain.node.ws_url}"\n' + extra)
    return config


def owners_send(w3: Web3, safe: str, to: str, data: bytes, owners: tuple[LocalAccount, ...] = (OWNER1, OWNER2),
                wait: bool = False) -> str:
    """An ordinary Safe transaction: the owners sign it with their keys, the first sends it (not waiting for it to
    be mined unless `wait`)."""
    nonce = _safe(w3, safe).functions.nonce().call()
    tx = SafeTxData.call(safe, w3.eth.chain_id, to, data, nonce)
    tx_hash = w3.eth.send_transaction({"from": owners[0].address, "to": safe, "gas": 1_000_000,
                                       "data": exec_calldata(tx, [sign(tx, owner) for owner in owners])})
    if wait:
        w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    return tx_hash.to_0x_hex()


def _safe(w3: Web3, safe: str) -> Any:
    return w3.eth.contract(address=safe, abi=get_safe_V1_4_1_contract(w3).abi)


def safe_call(w3: Web3, safe: str, function: str, *args: Any) -> bytes:
    return bytes.fromhex(_safe(w3, safe).encode_abi(function, list(args))[2:])


@dataclass(frozen=True)
class Held:
    """What one mined block holds after a threat was sent with mining held and the guardian had judged it."""

    block: list[str]
    threat: str
    threat_status: int
    responses: list[str]
    incidents: list[Incident]


def sent(guardian: Guardian) -> list[str]:
    return [r.tx_hash for i in guardian.store.incidents() for r in guardian.store.responses(i.id)
            if r.status in (ResponseStatus.SENT, ResponseStatus.MINED) and r.tx_hash]


def hold_and_mine(w3: Web3, config_path: Path, send_threat: Callable[[], str], *, responses: int) -> Held:
    """The daemon's own loop runs; mining is held; the threat is sent; once the guardian has judged it (and sent
    `responses` transactions), one block is mined, and the guardian handles that block too."""

    async def scenario() -> Held:
        config = load_config(config_path)
        judged: set[str] = set()
        guardian = build_guardian(config, load_guardian_account(config.guardian_key),
                                  on_judged=lambda pending: judged.add(pending.hash.lower()))
        stop = asyncio.Event()
        running = asyncio.create_task(guardian.run(stop))
        try:
            await until(lambda: guardian.ready.is_set() and guardian.mempool is not None and guardian.mempool.live,
                        "the guardian is up with its mempool source", task=running)
            w3.provider.make_request("evm_setAutomine", [False])
            threat = await asyncio.to_thread(send_threat)
            await until(lambda: threat.lower() in judged, "the threat is judged", task=running)
            await until(lambda: len(sent(guardian)) >= responses, f"{responses} response(s) are sent", task=running)
            answered = sent(guardian)
            w3.provider.make_request("evm_mine", [])
            mined = w3.eth.block_number
            await until(lambda: (guardian.source.last_committed or 0) >= mined, "the block is handled", task=running)
            block = [h.to_0x_hex() for h in w3.eth.get_block(mined)["transactions"]]
            return Held(block=block, threat=threat, threat_status=w3.eth.get_transaction_receipt(threat)["status"],
                        responses=answered, incidents=guardian.store.incidents())
        finally:
            stop.set()
            await running
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    return asyncio.run(scenario())


def assert_paused_first(held: Held, responses: int = 2) -> Incident:
    assert len(held.responses) == responses
    assert held.threat in held.block
    for response in held.responses:
        assert held.block.index(response) < held.block.index(held.threat), held.block
    (incident,) = [i for i in held.incidents if i.policy_id == SELF_DEFENCE_ID]
    assert incident.severity == "critical" and incident.evidence["path"] == "mempool"
    assert incident.evidence["threat_tx"] == held.threat
    return incident


def kinds(incident: Incident) -> set[str]:
    return {change["kind"] for change in incident.evidence["changes"]}


def demo_ways(world: Any, w3: Web3) -> dict[str, tuple[str, bytes, set[str]]]:
    """Each way the owners' keys can strip the guardian of its authority: (target, calldata, the changes named)."""
    pause = contract(w3, "Vault", world.vault).functions.pause()._encode_transaction_data()
    return {
        "disable-module": (world.safe, safe_call(w3, world.safe, "disableModule", SENTINEL, world.module),
                           {"module-disabled", "power-lost"}),
        "remove-guardian": (world.module, encode_remove_guardian(world.guardian), {"guardian-removed", "power-lost"}),
        "revoke-action": (world.module, encode_revoke_action(world.vault, bytes.fromhex(pause[2:10])),
                          {"action-revoked", "power-lost"}),
        "swap-owner": (world.safe, safe_call(w3, world.safe, "swapOwner", SENTINEL, OWNER1.address, ATTACKER),
                       {"owners-changed"}),
        "change-threshold": (world.safe, safe_call(w3, world.safe, "changeThreshold", 1), {"threshold-changed"}),
    }


@pytest.mark.parametrize("way", ["disable-module", "remove-guardian", "revoke-action", "swap-owner",
                                 "change-threshold"])
def test_the_owners_stripping_the_guardian_are_paused_first(chain, tmp_path: Path, way: str) -> None:
    w3, world = chain.w3, chain.world
    target, data, named = demo_ways(world, w3)[way]
    held = hold_and_mine(w3, demo_config(chain, tmp_path),
                         lambda: owners_send(w3, world.safe, target, data), responses=2)
    incident = assert_paused_first(held)
    assert named <= kinds(incident)
    # The owners' transaction itself succeeds (no guardian can refuse it); the protocol is paused before it.
    assert held.threat_status == 1
    assert contract(w3, "Vault", world.vault).functions.paused().call() is True
    assert contract(w3, "CircuitBreaker", world.breaker).functions.tripped().call() is True


def test_a_removal_hidden_in_a_multisend_batch_is_paused_first(chain, tmp_path: Path) -> None:
    # The wrapper does not matter: the owners sign a MultiSend batch (a DELEGATECALL to MultiSendCallOnly) whose
    # first call is a harmless role grant and whose second removes the guardian.
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    grant = bytes.fromhex(vault.encode_abi("grantRole", [vault.functions.PAUSER_ROLE().call(), BOB])[2:])

    def send_batch() -> str:
        nonce = _safe(w3, world.safe).functions.nonce().call()
        tx = SafeTxData.batch(world.safe, w3.eth.chain_id, [BatchCall(to=world.vault, data=grant),
                                                            BatchCall(to=world.module,
                                                                      data=encode_remove_guardian(world.guardian))],
                              nonce)
        assert tx.is_batch
        return w3.eth.send_transaction({"from": OWNER1.address, "to": world.safe, "gas": 1_000_000,
                                        "data": exec_calldata(tx, [sign(tx, OWNER1), sign(tx, OWNER2)])}).to_0x_hex()

    held = hold_and_mine(w3, demo_config(chain, tmp_path), send_batch, responses=2)
    incident = assert_paused_first(held)
    assert {"guardian-removed", "power-lost"} <= kinds(incident) and held.threat_status == 1
    assert contract(w3, "GuardianModule", world.module).functions.isGuardian(world.guardian).call() is False


def test_a_benign_safe_transaction_trips_nothing(chain, tmp_path: Path) -> None:
    # The Safe gives bob the vault's pauser role too (a routine rotation of roles): the Safe keeps its own, the
    # module, the guardian and the owners are untouched, and the guardian's pause would still succeed.
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    grant = bytes.fromhex(vault.encode_abi("grantRole", [vault.functions.PAUSER_ROLE().call(), BOB])[2:])
    held = hold_and_mine(w3, demo_config(chain, tmp_path), lambda: owners_send(w3, world.safe, world.vault, grant),
                         responses=0)
    assert held.threat_status == 1 and held.threat in held.block
    assert held.incidents == [] and held.responses == []
    assert vault.functions.paused().call() is False


def test_turned_off_it_lets_the_module_be_disabled(chain, tmp_path: Path) -> None:
    w3, world = chain.w3, chain.world
    target, data, _ = demo_ways(world, w3)["disable-module"]
    held = hold_and_mine(w3, demo_config(chain, tmp_path, "\n[self_defence]\nenabled = false\n"),
                         lambda: owners_send(w3, world.safe, target, data), responses=0)
    assert held.incidents == [] and held.responses == [] and held.threat_status == 1
    assert contract(w3, "Vault", world.vault).functions.paused().call() is False
    assert _safe(w3, world.safe).functions.isModuleEnabled(world.module).call() is False


def test_a_rotation_recorded_through_onguard_proposals_only_alerts(chain, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    w3, world = chain.w3, chain.world
    config = demo_config(chain, tmp_path)
    for name, account in (("OWNER1_KEY", OWNER1), ("OWNER2_KEY", OWNER2)):
        monkeypatch.setenv(name, account.key.to_0x_hex())
    swap = safe_call(w3, world.safe, "swapOwner", SENTINEL, OWNER1.address, BOB)
    assert main(["proposals", "create", "--config", str(config), "--to", world.safe, "--data", "0x" + swap.hex(),
                 "--purpose", "rotate owner1's key to bob", "--by", "ops"]) == 0
    for key in ("OWNER1_KEY", "OWNER2_KEY"):
        assert main(["proposals", "sign", "1", "--config", str(config), "--key-env", key, "--yes"]) == 0
    # The owners execute the recorded proposal exactly as signed: the guardian recognises its safeTxHash.
    held = hold_and_mine(w3, config, lambda: owners_send(w3, world.safe, world.safe, swap), responses=0)
    assert held.threat_status == 1 and held.responses == []
    (incident,) = held.incidents
    assert incident.policy_id == ROUTINE_ID and incident.status == IncidentStatus.ALERTED
    assert incident.evidence["routine"] is True and kinds(incident) == {"owners-changed"}
    assert contract(w3, "Vault", world.vault).functions.paused().call() is False


def test_the_same_rotation_not_recorded_pauses(chain, tmp_path: Path) -> None:
    w3, world = chain.w3, chain.world
    swap = safe_call(w3, world.safe, "swapOwner", SENTINEL, OWNER1.address, BOB)
    held = hold_and_mine(w3, demo_config(chain, tmp_path), lambda: owners_send(w3, world.safe, world.safe, swap),
                         responses=2)
    incident = assert_paused_first(held)
    assert incident.evidence["routine"] is False and incident.evidence["safe_tx_hashes"]


def test_a_change_mined_without_being_seen_pending_opens_a_critical_incident_on_its_block(chain,
                                                                                        tmp_path: Path) -> None:
    # No mempool source: the owners' transaction is only seen mined. The guardian compares its authority block by
    # block (not only in the preflight every 50 blocks): the owners' change pauses on the block that holds it.
    w3, world = chain.w3, chain.world
    config_path = demo_config(chain, tmp_path)
    config_path.write_text(config_path.read_text().replace("[mempool]\nenabled = true", "[mempool]\nenabled = false"))

    async def scenario() -> tuple[int, list[Incident]]:
        config = load_config(config_path)
        guardian = build_guardian(config, load_guardian_account(config.guardian_key))
        stop = asyncio.Event()
        running = asyncio.create_task(guardian.run(stop))
        try:
            await until(guardian.ready.is_set, "the guardian is up", task=running)
            swap = safe_call(w3, world.safe, "swapOwner", SENTINEL, OWNER1.address, ATTACKER)
            tx = await asyncio.to_thread(owners_send, w3, world.safe, world.safe, swap, (OWNER1, OWNER2), True)
            mined = w3.eth.get_transaction_receipt(tx)["blockNumber"]
            await until(lambda: bool(guardian.store.incidents()) and bool(sent(guardian)),
                        "the incident is opened and the pause sent", task=running)
            await guardian.drain_responses(timeout=LIMIT)
            return mined, guardian.store.incidents()
        finally:
            stop.set()
            await running
            await guardian.close()

    mined, incidents = asyncio.run(scenario())
    (incident,) = incidents
    assert incident.policy_id == SELF_DEFENCE_ID and incident.severity == "critical"
    assert incident.evidence["path"] == "block" and incident.opened_block == mined
    assert kinds(incident) == {"owners-changed"}
    assert contract(w3, "Vault", world.vault).functions.paused().call() is True


# ---- a real protocol: OpenZeppelin 5 AccessControl + Pausable ----------------------------------------------------

TOKEN_ACTIONS = """
[actions.pause_token]
contract = "token"
call = "pause()"
done_when = "token.paused()"
"""


def test_the_pauser_role_renounced_on_a_real_oz_token_is_paused_first(protocols: ProtocolsChain,
                                                                      tmp_path: Path) -> None:
    # The GuardedToken (OpenZeppelin 5 AccessControl + Pausable behind an ERC1967Proxy) pauses by PAUSER_ROLE,
    # held by its Safe. The owners' keys have the Safe renounce it: nothing of the Safe or the module changes, only
    # the probe of the guardian's own pause (succeeds now, would revert after) sees it.
    w3, world = protocols.w3, protocols.worlds.token
    governance = world.governance
    token = world.token_contract(w3)
    config = write_guard_config(tmp_path, rpc_url=protocols.node.rpc_url, chain_id=w3.eth.chain_id,
                                governance=governance, contracts={"token": Watched(world.token,
                                                                                   forge_abi("GuardedToken"))},
                                actions=TOKEN_ACTIONS, key_env=GUARDIAN_KEY_ENV,
                                policies={"upgrades.toml": UPGRADES_POLICY.replace("{safe}", governance.safe)},
                                ws_url=protocols.node.ws_url)
    renounce = bytes.fromhex(token.encode_abi("renounceRole", [token.functions.PAUSER_ROLE().call(),
                                                               governance.safe])[2:])
    owners = tuple(dev_account(i) for i in Roles.OWNERS[:governance.threshold])
    held = hold_and_mine(w3, config, lambda: owners_send(w3, governance.safe, world.token, renounce, owners),
                         responses=1)
    incident = assert_paused_first(held, responses=1)
    assert kinds(incident) == {"power-lost"}
    assert held.threat_status == 1
    assert token.functions.paused().call() is True
    assert token.functions.hasRole(token.functions.PAUSER_ROLE().call(), governance.safe).call() is False


UPGRADES_POLICY = """
id = "token-upgrades"
description = "An upgrade of the token by anyone but its Safe"
kind = "call"
severity = "high"
response = ["alert"]
[match]
contract = "token"
function = "upgradeToAndCall"
allow_from = ["{safe}"]
"""


def test_probes_run_on_the_head_once_and_after_each_transaction(chain, tmp_path: Path) -> None:
    # The simulator's part: the guardian's pause probed on the head's state (one request per head, whatever the
    # number of transactions) and right after each pending transaction (here one disabling the module, as the Safe,
    # and one harmless); the probe changes nothing on chain.
    w3, world = chain.w3, chain.world
    config = load_config(demo_config(chain, tmp_path))
    (policy,) = builtin_policies(config, world.guardian)
    probes = policy.authority.probes
    disable = safe_call(w3, world.safe, "disableModule", SENTINEL, world.module)
    vault = contract(w3, "Vault", world.vault)
    grant = vault.functions.grantRole(vault.functions.PAUSER_ROLE().call(), BOB)._encode_transaction_data()
    pending = [{"from": world.safe, "to": world.safe, "input": disable, "value": 0, "gas": 500_000,
                "hash": bytes([1]) * 32},
               {"from": world.safe, "to": world.vault, "input": bytes.fromhex(grant[2:]), "value": 0, "gas": 500_000,
                "hash": bytes([2]) * 32}]
    block = w3.eth.get_block("latest")
    head = Head(block["number"], block["hash"].to_0x_hex())
    requests: list[int] = []

    class CountingRpc(Rpc):
        async def simulation_batch(self, batch, **kwargs):  # type: ignore[no-untyped-def]
            requests.append(len(batch))
            return await super().simulation_batch(batch, **kwargs)

    async def simulate() -> list[Any]:
        rpc = CountingRpc(config.chain.rpc_url)
        try:
            simulator = Simulator(rpc)
            first = await simulator.simulate_many(pending, policy.authority.reads, head, probes)
            third = await simulator.simulate_many([{**pending[1], "hash": bytes([3]) * 32}],
                                                  policy.authority.reads, head, probes)
            return [*first, *third]
        finally:
            await rpc.close()

    disabling, harmless, later = asyncio.run(simulate())
    assert requests == [3, 1], "two simulations and the head's probes, then one simulation: the head's are cached"
    for outcome in (disabling, harmless, later):
        assert all(not isinstance(value, ReadFailure) for value in outcome.probed_before.values())
    assert all(isinstance(value, ReadFailure) for value in disabling.probed_after.values())
    assert all(not isinstance(value, ReadFailure) for value in harmless.probed_after.values())
    assert contract(w3, "Vault", world.vault).functions.paused().call() is False


def test_the_head_warmed_when_it_arrives_leaves_the_transactions_batch(chain, tmp_path: Path) -> None:
    # warm_head (the daemon calls it on each new head): the reads and the guardian's pause on the head's own state
    # in a request of its own, once, so a pending transaction's batch carries only its own simulation (the reads
    # and probes after it) — and what was warmed is what the transaction is judged against.
    w3, world = chain.w3, chain.world
    config = load_config(demo_config(chain, tmp_path))
    (policy,) = builtin_policies(config, world.guardian)
    probes, reads = policy.authority.probes, policy.authority.reads
    disable = safe_call(w3, world.safe, "disableModule", SENTINEL, world.module)
    pending = {"from": world.safe, "to": world.safe, "input": disable, "value": 0, "gas": 500_000,
               "hash": bytes([4]) * 32}
    block = w3.eth.get_block("latest")
    head = Head(block["number"], block["hash"].to_0x_hex())
    requests: list[int] = []
    calls: list[int] = []

    class CountingRpc(Rpc):
        async def simulation_batch(self, batch, **kwargs):  # type: ignore[no-untyped-def]
            requests.append(len(batch))
            calls.extend(len(request[1][0]["blockStateCalls"][0]["calls"]) for request in batch)
            return await super().simulation_batch(batch, **kwargs)

    async def simulate() -> Any:
        rpc = CountingRpc(config.chain.rpc_url)
        try:
            simulator = Simulator(rpc)
            await simulator.warm_head(head, reads, probes)
            await simulator.warm_head(head, reads, probes)  # once per head, however often asked
            (outcome,) = await simulator.simulate_many([pending], reads, head, probes)
            return outcome
        finally:
            await rpc.close()

    disabling = asyncio.run(simulate())
    assert requests == [1, 1], "the head's reads and probes alone, then the transaction alone"
    assert calls == [len(reads) + len(probes), 1 + len(reads) + len(probes)]
    assert disabling.before[policy.authority.module_enabled] is True
    assert disabling.after[policy.authority.module_enabled] is False
    assert all(not isinstance(value, ReadFailure) for value in disabling.probed_before.values())
    assert all(isinstance(value, ReadFailure) for value in disabling.probed_after.values())
