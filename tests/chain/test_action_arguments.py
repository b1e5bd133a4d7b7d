"""An emergency action whose call takes arguments, end to end on the real Safe v1.4.1 and GuardianModule: the
owners allowlist exactly the calldata onguard computes (its keccak256 pinned), a call policy trips on the mined
path with `state.*` read before the call, the guardian revokes the stolen updater key's role, and the action's
done_when (a read with arguments) then holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from eth_utils import keccak
from safe_eth.eth import EthereumClient

from onguard.chain.keys import load_guardian_account
from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader
from onguard.config import load_config
from onguard.demo.world import Roles, contract, dev_account, exec_as_owners, write_config
from onguard.incidents.store import ResponseStatus
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import send

pytestmark = pytest.mark.chain

UPDATER = dev_account(Roles.ORACLE_UPDATER).address  # the key an attacker stole
ACTION = f"""
[actions.revoke_updater]
contract = "oracle"
call = "revokeRole"
args = ["keccak256:UPDATER_ROLE", "{UPDATER}"]
done_when = "not hasRole(keccak256:UPDATER_ROLE, {UPDATER})"
"""
POLICY = """
id = "price-jump"
description = "the price more than doubles in one call"
severity = "critical"
kind = "call"
response = ["revoke_updater"]
[match]
contract = "oracle"
function = "setPrice"
where = "args.newPrice > 2 * state.price"
[reads]
price = "oracle.price()"
"""


def configured(chain, tmp_path: Path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "price-jump.toml").write_text(POLICY)
    path = write_config(chain.world, tmp_path / "config", key_env=GUARDIAN_KEY_ENV, policies_dir=folder,
                        poll_interval="50ms")
    path.write_text(path.read_text() + ACTION)
    return load_config(path)


def allow(chain, target: str, selector: bytes, calldata_hash: bytes) -> None:
    """The owners' multisig transaction allowlisting one call on the module."""
    module = contract(chain.w3, "GuardianModule", chain.world.module)
    exec_as_owners(EthereumClient(chain.world.rpc_url), chain.world.safe, chain.world.module,
                   module.encode_abi("allowAction", [target, selector, calldata_hash, 60]))


def test_an_action_with_arguments_revokes_a_stolen_role_through_the_module(chain, guardian_config, tmp_path):
    config = configured(chain, tmp_path)
    action = config.actions["revoke_updater"]
    (call,) = action.calls
    oracle = contract(chain.w3, "PriceOracle", chain.world.oracle)
    role = keccak(text="UPDATER_ROLE")
    assert role == oracle.functions.UPDATER_ROLE().call()  # keccak256:NAME is the OpenZeppelin role id
    assert call.calldata == bytes.fromhex(oracle.encode_abi("revokeRole", [role, UPDATER])[2:])
    allow(chain, call.target, call.selector, bytes.fromhex(call.calldata_hash[2:]))  # only this exact call
    price = int(oracle.functions.price().call())

    async def scenario() -> tuple[list, list]:
        guardian = Guardian(config, load_guardian_account(config.guardian_key))
        rpc = Rpc(chain.world.rpc_url)
        try:
            await guardian.start()
            await guardian.step()
            assert not await action.done_when.holds(BatchStateReader(rpc))
            send(chain.w3, oracle.functions.setPrice(3 * price), UPDATER)
            decisions = await guardian.step()
            await guardian.drain_responses()
            (incident,) = {d.incident.id for d in decisions}
            assert await action.done_when.holds(BatchStateReader(rpc))
            return decisions, guardian.store.responses(incident)
        finally:
            await rpc.close()
            await guardian.close()

    decisions, responses = asyncio.run(scenario())
    assert [d.finding.policy.id for d in decisions] == ["price-jump"]
    assert [(r.action, r.status) for r in responses] == [("revoke_updater", ResponseStatus.MINED)]
    assert not oracle.functions.hasRole(role, UPDATER).call()
