"""policies/kinds/event.py: a watched event, judged one by one or aggregated over a window of blocks or seconds.

Every policy here is a TOML file written to tmp_path and loaded by load_policy against the base config (the
demo contracts' real ABIs), so the tests go through the same parsing the daemon does. Evaluators are fed
hand-built BlockBatch values and a state dict {ReadSpec: value}, as the engine would after its batched read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from onguard.chain.view import ReadFailure
from onguard.config import load_config
from onguard.errors import PolicyError
from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.kinds.event import EventEvaluator, EventPolicy
from onguard.policies.loader import load_policy
from onguard.policies.model import Finding, Verdict
from policykit import ALICE, BOB, CAROL, T0, TOKEN, batch, failed, load_text, log, state, withdraw

ALICE_CS = to_checksum_address(ALICE)
BOB_CS = to_checksum_address(BOB)

HEADER = """
id = "{id}"
description = "an event policy under test"
kind = "event"
severity = "high"
response = ["alert"]
"""


@pytest.fixture
def make(tmp_path: Path, env: PolicyEnv) -> Any:
    """make(body, id="p") -> EventPolicy loaded from HEADER + body written to tmp_path/policies/<id>.toml."""

    def build(body: str, id: str = "p") -> EventPolicy:
        policy = load_text(tmp_path / "policies", env, HEADER.format(id=id) + body, f"{id}.toml")
        assert isinstance(policy, EventPolicy)
        return policy

    return build


def observe(evaluator: EventEvaluator, *args: Any, values: dict[Any, Any] | None = None) -> Finding | None:
    """evaluator.observe(batch(*args), values or {})."""
    return evaluator.observe(batch(*args), values or {})


def aggregate(function: str, *, of: str | None = "assets", window: str = "window_blocks = 5",
              condition: str = "value > 100", group_by: str | None = None, where: str | None = None,
              reads: dict[str, str] | None = None) -> str:
    """The body of an aggregate policy over Vault.Withdraw."""
    reads_table = "[reads]\n" + "".join(f'{name} = "{text}"\n' for name, text in reads.items()) if reads else ""
    return f"""
[match]
contract = "vault"
event = "Withdraw"
{f'where = "{where}"' if where else ""}

[aggregate]
function = "{function}"
{f'of = "{of}"' if of else ""}
{window}
{f'group_by = "{group_by}"' if group_by else ""}

{reads_table}
[trigger]
condition = "{condition}"
"""


PER_EVENT = """
[match]
contract = "vault"
event = "Withdraw"

[trigger]
condition = "args.assets > 100"
"""


# ---- one event at a time (no [aggregate]) ----


def test_per_event_condition_fires_only_on_matching_events(make: Any) -> None:
    policy = make(PER_EVENT)
    evaluator = policy.evaluator()
    noise = (withdraw(1, 0, 500, event="Deposit"), withdraw(1, 1, 500, contract="breaker"),
             log(1, 2, "Transfer", {"from": ALICE, "to": BOB, "value": 500}))
    assert observe(evaluator, 1, *noise) is None
    assert observe(evaluator, 2, withdraw(2, 0, 100)) is None  # at the limit, not above it

    small, big, bigger = withdraw(3, 0, 50), withdraw(3, 1, 150), withdraw(3, 2, 101)
    finding = observe(evaluator, 3, small, *noise, big, bigger)

    assert finding is not None
    assert finding.verdict is Verdict.CONDITION_MET
    assert finding.policy is policy.common
    assert (finding.block_number, finding.block_time) == (3, T0 + 36)
    assert [e["log_index"] for e in finding.evidence["events"]] == [1, 2]  # only the events that met it
    assert finding.evidence["events"][0] == {"tx_hash": big.transaction_hash, "log_index": 1,
                                             "args": dict(big.args)}
    assert finding.evidence["condition"] == "args.assets > 100"
    assert big.transaction_hash in finding.summary


def test_per_event_policy_is_judged_per_block_not_accumulated(make: Any) -> None:
    evaluator = make(PER_EVENT).evaluator()
    for number in range(1, 6):
        assert observe(evaluator, number, withdraw(number, 0, 100)) is None  # 500 in all, never 101 at once


def test_per_event_condition_can_use_state_and_block(make: Any) -> None:
    policy = make("""
[match]
contract = "vault"
event = "Withdraw"

[reads]
assets = "vault.totalAssets()"

[trigger]
condition = "args.assets > 10% * state.assets and block.number >= 10"
""")
    evaluator = policy.evaluator()
    values = state(policy, assets=1000)
    assert observe(evaluator, 9, withdraw(9, 0, 101), values=values) is None   # too early
    assert observe(evaluator, 10, withdraw(10, 0, 100), values=values) is None  # exactly 10%
    finding = observe(evaluator, 11, withdraw(11, 0, 101), values=values)
    assert finding is not None
    assert finding.evidence["state"] == {"assets": 1000}
    assert finding.evidence["reads"] == {"assets": "vault.totalAssets()"}


# ---- where ----


def test_where_filters_events_before_the_condition(make: Any) -> None:
    policy = make("""
[match]
contract = "vault"
event = "Withdraw"
where = "args.receiver != args.owner"

[trigger]
condition = "args.assets > 100"
""")
    evaluator = policy.evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 500, owner=ALICE, receiver=ALICE)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 500, owner=ALICE, receiver=ALICE),
                      withdraw(2, 1, 500, owner=ALICE, receiver=BOB))
    assert finding is not None
    assert [e["log_index"] for e in finding.evidence["events"]] == [1]


def test_where_can_compare_with_watched_contract_addresses(make: Any) -> None:
    """contracts.NAME is the config's (checksummed) address; decoded args may come in any case."""
    evaluator = make(aggregate("count", of=None, condition="value >= 1",
                               where="args.receiver == contracts.breaker")).evaluator()
    breaker = "0x" + "cd" * 20  # the base config's breaker, in lower case
    assert observe(evaluator, 1, withdraw(1, 0, 5, receiver=ALICE)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 5, receiver=to_checksum_address(breaker)))
    assert finding is not None and finding.evidence["events"] == 1
    finding = observe(evaluator, 3, withdraw(3, 0, 5, receiver=breaker))
    assert finding is not None and finding.evidence["events"] == 2


def test_where_also_filters_what_an_aggregate_counts(make: Any) -> None:
    evaluator = make(aggregate("sum", where="args.owner == " + ALICE)).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 100, owner=ALICE), withdraw(1, 1, 1000, owner=BOB)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 1, owner=ALICE))
    assert finding is not None
    assert finding.evidence["value"] == 101


# ---- aggregates over window_blocks ----


def test_sum_trips_strictly_above_and_reports_the_window(make: Any) -> None:
    policy = make(aggregate("sum", condition=f"value > {100 * TOKEN}"))
    evaluator = policy.evaluator()

    assert observe(evaluator, 1, withdraw(1, 0, 60 * TOKEN)) is None
    assert observe(evaluator, 2, withdraw(2, 0, 40 * TOKEN)) is None  # exactly at the threshold
    finding = observe(evaluator, 3, withdraw(3, 0, 1))  # one base unit above

    assert finding is not None
    assert finding.verdict is Verdict.CONDITION_MET
    assert finding.policy is policy.common
    assert finding.evidence["value"] == 100 * TOKEN + 1
    assert finding.evidence["events"] == 3
    assert finding.evidence["measured"] == "sum(assets)"
    assert finding.evidence["window"] == {"from_block": 1, "to_block": 3}
    assert finding.evidence["group"] is None
    assert (finding.block_number, finding.block_time) == (3, T0 + 36)
    assert len(finding.evidence["transactions"]) == 3
    assert finding.evidence["transactions"] == sorted(finding.evidence["transactions"])
    assert str(100 * TOKEN + 1) in finding.summary and "5 blocks" in finding.summary


def test_sum_is_exact_for_uint256_sized_values(make: Any) -> None:
    evaluator = make(aggregate("sum", condition=f"value > {2**255}")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 2**254), withdraw(1, 1, 2**254)) is None  # == 2**255
    finding = observe(evaluator, 2, withdraw(2, 0, 1))
    assert finding is not None and finding.evidence["value"] == 2**255 + 1


def test_events_leave_the_window_exactly_after_n_blocks(make: Any) -> None:
    evaluator = make(aggregate("count", of=None, window="window_blocks = 3", condition="value >= 1")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 1)) is not None
    assert observe(evaluator, 2) is not None
    still = observe(evaluator, 3)  # blocks 1..3: the event is still inside
    assert still is not None and still.evidence["window"] == {"from_block": 1, "to_block": 3}
    assert observe(evaluator, 4) is None  # blocks 2..4: it has left


def test_sliding_sum_over_window_blocks(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_blocks = 3")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 80)) is None
    tripped = observe(evaluator, 3, withdraw(3, 0, 30))  # blocks 1..3: 110
    assert tripped is not None and tripped.evidence["value"] == 110
    assert observe(evaluator, 4) is None  # blocks 2..4: block 1's 80 has left
    assert observe(evaluator, 5, withdraw(5, 0, 70)) is None  # blocks 3..5: 30 + 70 = 100, not above
    assert observe(evaluator, 6, withdraw(6, 0, 1)) is None  # blocks 4..6: 70 + 1


def test_window_of_one_block_only_sees_the_current_block(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_blocks = 1")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 100)) is None
    assert observe(evaluator, 2, withdraw(2, 0, 100)) is None
    finding = observe(evaluator, 3, withdraw(3, 0, 60), withdraw(3, 1, 41))
    assert finding is not None and finding.evidence["window"] == {"from_block": 3, "to_block": 3}


def test_count_counts_events_whatever_their_size(make: Any) -> None:
    evaluator = make(aggregate("count", of=None, condition="value > 2")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 1), withdraw(1, 1, 1)) is None  # 2, not above 2
    finding = observe(evaluator, 2, withdraw(2, 0, 10**30))
    assert finding is not None
    assert finding.evidence["value"] == 3 == finding.evidence["events"]
    assert finding.evidence["measured"] == "count"


def test_events_is_the_number_of_events_for_any_aggregate(make: Any) -> None:
    evaluator = make(aggregate("sum", condition="events >= 3 and value > 10")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 100), withdraw(1, 1, 100)) is None  # two events only
    finding = observe(evaluator, 2, withdraw(2, 0, 1))
    assert finding is not None and finding.evidence["events"] == 3


def test_max_takes_the_largest_event_in_the_window(make: Any) -> None:
    evaluator = make(aggregate("max", condition="value > 50")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 30), withdraw(1, 1, 50), withdraw(1, 2, 40)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 51))
    assert finding is not None
    assert finding.evidence["value"] == 51
    assert finding.evidence["measured"] == "max(assets)"


def test_min_takes_the_smallest_event_until_it_leaves_the_window(make: Any) -> None:
    evaluator = make(aggregate("min", of="shares", window="window_blocks = 2", condition="value < 10")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 1000, shares=30), withdraw(1, 1, 1000, shares=10)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 1000, shares=9))
    assert finding is not None
    assert finding.evidence["value"] == 9
    assert finding.evidence["measured"] == "min(shares)"
    assert observe(evaluator, 3, withdraw(3, 0, 1000, shares=50)) is not None  # blocks 2..3: the 9 is still in
    assert observe(evaluator, 4) is None  # blocks 3..4: min is 50


def test_aggregate_over_an_empty_window_reads_nothing_and_does_not_fire(make: Any) -> None:
    """`value < 10` would hold for an empty sum; an empty window is not evaluated at all."""
    evaluator = make(aggregate("sum", condition="value < 10")).evaluator()
    assert observe(evaluator, 1) is None
    assert observe(evaluator, 2, withdraw(2, 0, 5, event="Deposit")) is None


# ---- window_seconds ----


def test_window_seconds_uses_block_timestamps(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_seconds = 60")).evaluator()
    assert evaluator.observe(batch(1, withdraw(1, 0, 80), timestamp=T0), {}) is None
    finding = evaluator.observe(batch(2, withdraw(2, 0, 30), timestamp=T0 + 59), {})  # 59 s apart: 110
    assert finding is not None and finding.evidence["value"] == 110
    assert finding.evidence["window"] == {"from_block": 1, "to_block": 2}
    assert "60 seconds" in finding.summary
    assert evaluator.observe(batch(3, timestamp=T0 + 60), {}) is None  # block 1 is 60 s old: it has left
    finding = evaluator.observe(batch(4, withdraw(4, 0, 71), timestamp=T0 + 118), {})  # 30 + 71
    assert finding is not None and finding.evidence["value"] == 101


def test_window_seconds_ignores_block_numbers(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_seconds = 60")).evaluator()
    assert evaluator.observe(batch(10, withdraw(10, 0, 50), timestamp=T0 + 100), {}) is None
    finding = evaluator.observe(batch(500, withdraw(500, 0, 51), timestamp=T0 + 150), {})  # 490 blocks, 50 s
    assert finding is not None and finding.evidence["value"] == 101
    assert evaluator.observe(batch(501, timestamp=T0 + 10_000), {}) is None


# ---- group_by ----


def test_group_by_trips_one_group_and_names_it(make: Any) -> None:
    policy = make(aggregate("sum", group_by="owner"))
    evaluator = policy.evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 60, owner=ALICE_CS), withdraw(1, 1, 90, owner=BOB_CS)) is None
    finding = observe(evaluator, 2, withdraw(2, 0, 50, owner=ALICE_CS))  # Alice 110, Bob 90: 150 together
    assert finding is not None
    assert finding.evidence["group"] == ALICE_CS
    assert finding.evidence["value"] == 110
    assert finding.evidence["events"] == 2
    assert finding.evidence["groups_tripped"] == 1
    assert f"for owner {ALICE_CS}" in finding.summary


def test_group_by_with_no_group_over_the_limit_does_not_fire(make: Any) -> None:
    evaluator = make(aggregate("sum", group_by="owner")).evaluator()
    logs = [withdraw(1, i, 100, owner=owner) for i, owner in enumerate((ALICE_CS, BOB_CS, CAROL))]
    assert observe(evaluator, 1, *logs) is None  # 300 in all, but 100 each


def test_group_by_reports_the_largest_of_several_tripped_groups(make: Any) -> None:
    evaluator = make(aggregate("sum", group_by="owner")).evaluator()
    finding = observe(evaluator, 1, withdraw(1, 0, 200, owner=ALICE_CS), withdraw(1, 1, 300, owner=BOB_CS),
                      withdraw(1, 2, 5, owner=to_checksum_address(CAROL)))
    assert finding is not None
    assert finding.evidence["group"] == BOB_CS
    assert finding.evidence["value"] == 300
    assert finding.evidence["groups_tripped"] == 2


def test_group_is_visible_in_the_condition(make: Any) -> None:
    evaluator = make(aggregate("sum", group_by="owner", condition=f"value > 100 and group != {BOB}")).evaluator()
    assert observe(evaluator, 1, withdraw(1, 0, 500, owner=BOB_CS)) is None  # Bob is exempt
    finding = observe(evaluator, 2, withdraw(2, 0, 101, owner=ALICE_CS))
    assert finding is not None and finding.evidence["group"] == ALICE_CS


# ---- duplicates and reorganisations ----


def test_duplicate_observations_are_counted_once(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_blocks = 10")).evaluator()
    log_ = withdraw(1, 0, 60)
    assert observe(evaluator, 1, log_, log_) is None  # twice in one batch
    assert observe(evaluator, 1, log_) is None  # and the same block delivered again
    finding = observe(evaluator, 2, withdraw(2, 0, 41))
    assert finding is not None
    assert finding.evidence["value"] == 101
    assert finding.evidence["events"] == 2


def test_forget_from_drops_reorganised_blocks(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_blocks = 10")).evaluator()
    orphan = withdraw(3, 0, 60)
    assert observe(evaluator, 2, withdraw(2, 0, 30)) is None
    assert observe(evaluator, 3, orphan) is None  # 90

    evaluator.forget_from(3)  # block 3 was reorganised away

    replacement = withdraw(3, 0, 20, fork=1)  # the new block 3 (another hash) has a smaller withdrawal
    assert evaluator.observe(batch(3, replacement, fork=1), {}) is None  # 30 + 20: the orphan's 60 is gone
    finding = observe(evaluator, 4, orphan)  # the same log re-included later: seen as new
    assert finding is not None and finding.evidence["value"] == 110


def test_forget_from_keeps_blocks_before_the_reorganisation(make: Any) -> None:
    evaluator = make(aggregate("sum", window="window_blocks = 10")).evaluator()
    assert observe(evaluator, 2, withdraw(2, 0, 60)) is None
    assert observe(evaluator, 3, withdraw(3, 0, 30)) is None
    evaluator.forget_from(3)
    finding = observe(evaluator, 4, withdraw(4, 0, 41))  # 60 (block 2, kept) + 41
    assert finding is not None and finding.evidence["value"] == 101


# ---- state reads ----


def test_a_failed_read_raises_rather_than_passing(make: Any) -> None:
    policy = make(aggregate("sum", condition="value > 25% * state.assets", reads={"assets": "vault.totalAssets()"}))
    evaluator = policy.evaluator()
    values = {policy.reads.specs["assets"]: ReadFailure(policy.reads.specs["assets"], "execution reverted")}
    with pytest.raises(EvaluationError) as caught:
        observe(evaluator, 1, withdraw(1, 0, 10**30), values=values)
    assert "state.assets" in caught.value.message
    assert "vault.totalAssets()" in caught.value.message
    assert "execution reverted" in caught.value.message


def test_a_failed_read_in_a_per_event_policy_raises_too(make: Any) -> None:
    policy = make("""
[match]
contract = "vault"
event = "Withdraw"

[reads]
supply = "vault.totalSupply()"

[trigger]
condition = "args.assets > state.supply"
""")
    values = {policy.reads.specs["supply"]: failed(policy, "supply", "header not found")}
    with pytest.raises(EvaluationError, match="state.supply"):
        observe(policy.evaluator(), 1, withdraw(1, 0, 1), values=values)


def test_evaluator_declares_its_reads(make: Any) -> None:
    policy = make(aggregate("sum", condition="value > state.a + state.b",
                            reads={"a": "vault.totalAssets()", "b": "vault.balanceOf(vault)"}))
    assert policy.evaluator().reads == frozenset(policy.reads.specs.values())
    assert {spec.text for spec in policy.evaluator().reads} == {"vault.totalAssets()", "vault.balanceOf(vault)"}


# ---- the demo policy ----


@pytest.fixture
def demo(repo_policies_dir: Path, env: PolicyEnv) -> EventPolicy:
    policy = load_policy(repo_policies_dir / "vault-drain.toml", env)
    assert isinstance(policy, EventPolicy)
    return policy


def test_demo_policy_trips_at_300k_of_1m(demo: EventPolicy) -> None:
    """The vault held 1M; 300k leaves in one block, so it now holds 700k: 300k > 25% of 1M."""
    finding = demo.evaluator().observe(batch(10, withdraw(10, 0, 300_000 * TOKEN)),
                                       state(demo, assets=700_000 * TOKEN))
    assert finding is not None
    assert finding.verdict is Verdict.CONDITION_MET
    assert finding.evidence["value"] == 300_000 * TOKEN
    assert finding.evidence["state"] == {"assets": 700_000 * TOKEN}
    assert finding.evidence["reads"] == {"assets": "vault.totalAssets()"}


def test_demo_policy_does_not_trip_at_250k_of_1m(demo: EventPolicy) -> None:
    """Exactly a quarter is not more than a quarter."""
    assert demo.evaluator().observe(batch(10, withdraw(10, 0, 250_000 * TOKEN)),
                                    state(demo, assets=750_000 * TOKEN)) is None


def test_demo_policy_adds_up_withdrawals_within_five_blocks(demo: EventPolicy) -> None:
    evaluator = demo.evaluator()
    assert evaluator.observe(batch(10, withdraw(10, 0, 150_000 * TOKEN)),
                             state(demo, assets=850_000 * TOKEN)) is None
    finding = evaluator.observe(batch(14, withdraw(14, 0, 150_000 * TOKEN)), state(demo, assets=700_000 * TOKEN))
    assert finding is not None
    assert finding.evidence["value"] == 300_000 * TOKEN
    assert finding.evidence["window"] == {"from_block": 10, "to_block": 14}


def test_demo_policy_forgets_withdrawals_older_than_five_blocks(demo: EventPolicy) -> None:
    evaluator = demo.evaluator()
    assert evaluator.observe(batch(10, withdraw(10, 0, 150_000 * TOKEN)),
                             state(demo, assets=850_000 * TOKEN)) is None
    assert evaluator.observe(batch(15, withdraw(15, 0, 150_000 * TOKEN)),
                             state(demo, assets=700_000 * TOKEN)) is None  # block 10 has left: 150k of 850k


def test_demo_policy_explains_itself(demo: EventPolicy) -> None:
    text = " ".join(demo.explain())
    assert "Withdraw events of vault" in text
    assert "sum of assets over the last 5 blocks" in text
    assert "value > 25% * (state.assets + value)" in text


# ---- indexed dynamic arguments ----


def test_indexed_string_argument_cannot_be_compared_with_text(tmp_path: Path, write_toml: Any,
                                                              config_data: dict[str, Any]) -> None:
    abi = [{"type": "event", "name": "Named", "anonymous": False,
            "inputs": [{"name": "label", "type": "string", "indexed": True},
                       {"name": "value", "type": "uint256", "indexed": False}]}]
    (tmp_path / "Registry.json").write_text(json.dumps(abi))
    config_data["contracts"]["registry"] = {"address": "0x" + "77" * 20, "abi": str(tmp_path / "Registry.json")}
    config = load_config(write_toml(config_data))
    env = PolicyEnv(contracts=config.contracts, actions=config.actions)
    body = """
[match]
contract = "registry"
event = "Named"
where = "args.label == 'admin'"

[trigger]
condition = "args.value > 0"
"""
    # What the source would hand the evaluator for Named("admin", 1): the label is its hash.
    label_hash = "0x" + keccak(text="admin").hex()
    topics = [keccak(text="Named(string,uint256)"), keccak(text="admin")]
    decoded = config.contracts["registry"].abi.decode_log(topics, abi_encode(["uint256"], [1]))
    assert decoded is not None and decoded[1]["label"] == label_hash

    with pytest.raises(PolicyError) as caught:
        load_text(tmp_path / "policies", env, HEADER.format(id="named") + body)
    assert caught.value.field == "match.where"
