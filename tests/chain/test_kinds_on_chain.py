"""Each policy kind (event, state, call, outflow) on a real Anvil fork: one case that fires, and one close case
that must not; and a policy whose read reverts is reported, never taken for safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, ATTACKER, BOB, deposit, drain_slice, make_guardian, send, tokens, withdraw

pytestmark = pytest.mark.chain

UPDATER = dev_account(Roles.ORACLE_UPDATER).address
HEADER = 'description = "test policy"\nseverity = "high"\n'


def guardian_with(tmp_path: Path, world, policy_text: str) -> Guardian:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "policy.toml").write_text(HEADER + policy_text)
    return make_guardian(write_config(world, tmp_path / "config", key_env=GUARDIAN_KEY_ENV, policies_dir=folder))


def run(guardian: Guardian, actions) -> list:
    """Starts the guardian, lets `actions` change the chain, and returns the policy ids that fired."""

    async def scenario() -> list:
        try:
            await guardian.start()
            await guardian.step()
            actions()
            decisions = await guardian.step()
            await guardian.drain_responses()
            return [d.finding for d in decisions]
        finally:
            await guardian.close()

    return asyncio.run(scenario())


EVENT_BIG_WITHDRAWAL = """
id = "big-withdrawal"
kind = "event"
response = ["alert"]
[match]
contract = "vault"
event = "Withdraw"
where = "args.receiver != args.owner"
[trigger]
condition = "args.assets > 200_000e18"
"""


def test_event_fires_on_one_large_withdrawal_to_someone_else(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, EVENT_BIG_WITHDRAWAL)
    (finding,) = run(guardian, lambda: drain_slice(chain.w3, chain.world, ALICE, tokens(250_000)))
    assert finding.policy.id == "big-withdrawal"
    assert finding.evidence["events"][0]["args"]["receiver"] == ATTACKER


def test_event_stays_quiet_for_large_honest_withdrawals_and_small_thefts(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, EVENT_BIG_WITHDRAWAL)

    def actions() -> None:
        withdraw(chain.w3, chain.world, ALICE, tokens(250_000))                 # receiver == owner: honest
        drain_slice(chain.w3, chain.world, BOB, tokens(200_000))              # at the limit, not above

    assert run(guardian, actions) == []


STATE_CASH_FLOOR = """
id = "cash-floor"
kind = "state"
response = ["alert"]
[reads]
cash = "asset.balanceOf(vault)"
paused = "vault.paused()"
[trigger]
invariant = "state.paused or state.cash >= 600_000e18"
"""


def test_state_invariant_breaks_when_cash_falls_under_the_floor(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, STATE_CASH_FLOOR)
    def actions() -> None:
        drain_slice(chain.w3, chain.world, ALICE, tokens(300_000))
        drain_slice(chain.w3, chain.world, BOB, tokens(100_001))

    findings = run(guardian, actions)
    assert [f.verdict.value for f in findings] == ["invariant-broken"]
    assert findings[0].evidence["state"]["cash"] == tokens(1_000_000) - tokens(400_001)


def test_state_invariant_holds_at_exactly_the_floor(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, STATE_CASH_FLOOR)
    def actions() -> None:
        drain_slice(chain.w3, chain.world, ALICE, tokens(300_000))
        drain_slice(chain.w3, chain.world, BOB, tokens(100_000))

    assert run(guardian, actions) == []


CALL_SET_PRICE = f"""
id = "price-setter"
kind = "call"
response = ["alert"]
[match]
contract = "oracle"
function = "setPrice"
allow_from = ["{UPDATER}"]
"""


def set_price(chain, sender: str, price: int):
    return send(chain.w3, contract(chain.w3, "PriceOracle", chain.world.oracle).functions.setPrice(price), sender)


def test_call_fires_when_a_stranger_calls_set_price(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, CALL_SET_PRICE)
    (finding,) = run(guardian, lambda: set_price(chain, ATTACKER, 5 * 10**18))  # reverts on chain, still a signal
    assert finding.evidence["calls"][0]["from"] == ATTACKER
    assert finding.evidence["calls"][0]["args"] == {"newPrice": 5 * 10**18}


def test_call_stays_quiet_for_the_allowed_updater(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, CALL_SET_PRICE)
    assert run(guardian, lambda: set_price(chain, UPDATER, 2 * 10**18)) == []


CALL_PRICE_JUMP = """
id = "price-jump"
kind = "call"
response = ["alert"]
[match]
contract = "oracle"
function = "setPrice"
where = "args.newPrice > 2 * state.price"
[reads]
price = "oracle.price()"
"""


def current_price(chain) -> int:
    return int(contract(chain.w3, "PriceOracle", chain.world.oracle).functions.price().call())


def test_call_state_is_read_before_the_mined_call(chain, guardian_config, tmp_path):
    # The README's example: tripled by the updater itself. Read after the block, the price would already be the
    # new one (3x > 2 * 3x is false); read at the parent block, it is the price the call replaced.
    guardian = guardian_with(tmp_path, chain.world, CALL_PRICE_JUMP)
    before = current_price(chain)
    (finding,) = run(guardian, lambda: set_price(chain, UPDATER, 3 * before))
    assert finding.evidence["path"] == "block"
    assert finding.evidence["calls"][0]["args"] == {"newPrice": 3 * before}
    assert current_price(chain) == 3 * before  # the call was mined and took effect


def test_call_state_close_case_does_not_fire(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, CALL_PRICE_JUMP)
    before = current_price(chain)
    assert run(guardian, lambda: set_price(chain, UPDATER, 2 * before)) == []  # exactly twice: not more


OUTFLOW = """
id = "vault-outflow"
kind = "outflow"
response = ["trip_breaker"]
[outflow]
token = "asset"
holder = "vault"
window_blocks = 10
[trigger]
condition = "net_outflow > 20% * holdings_before"
"""


def test_outflow_over_the_window_trips_the_breaker(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, OUTFLOW)

    def actions() -> None:
        chain.mine(10)  # the base chain's deposits (inflows) leave the window first
        for victim in (ALICE, BOB, ALICE):
            drain_slice(chain.w3, chain.world, victim, tokens(70_000))

    (finding,) = run(guardian, actions)
    assert finding.evidence["net_outflow"] == tokens(210_000)
    assert finding.evidence["holdings_before"] == tokens(1_000_000)
    assert contract(chain.w3, "CircuitBreaker", chain.world.breaker).functions.tripped().call()


def test_outflow_balanced_by_deposits_does_not_trip(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, OUTFLOW)

    def actions() -> None:
        chain.mine(10)
        deposit(chain.w3, chain.world, BOB, tokens(150_000))
        withdraw(chain.w3, chain.world, ALICE, tokens(300_000))  # net 150k of 1M: under 20%

    assert run(guardian, actions) == []
    assert not contract(chain.w3, "CircuitBreaker", chain.world.breaker).functions.tripped().call()


def test_a_reverting_read_is_recorded_as_a_failure_and_the_daemon_goes_on(chain, guardian_config, tmp_path):
    guardian = guardian_with(tmp_path, chain.world, """
id = "broken-read"
kind = "state"
response = ["alert"]
[reads]
price = "oracle.price()"
[trigger]
invariant = "state.price > 0"
""")

    def actions() -> None:
        # The oracle's code vanishes (a self-destruct, a wrong address after a migration): reads return nothing.
        chain.w3.provider.make_request("anvil_setCode", [chain.world.oracle, "0x"])
        chain.mine(2)

    assert run(guardian, actions) == []
    store = type(guardian.store)(guardian.config.state)
    (summary,) = store.evaluation_failures()
    assert summary.policy_id == "broken-read" and summary.count >= 2
    assert "oracle.price()" in summary.last_message
    store.close()
