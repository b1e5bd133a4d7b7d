"""policies/engine.py: every policy sees every block; the state they declare is read in one batch per block;
confirmations hold blocks back; a policy that cannot be evaluated is a recorded failure, never a pass.

The StateReader is a fake that answers from a table keyed by the read's text and records every call.
Coroutines are run with asyncio.run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onguard.chain.view import ReadFailure
from onguard.errors import ChainError
from onguard.observations import BlockBatch, TransactionObservation, frozen_mapping
from onguard.policies.engine import EngineResult, PolicyEngine
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict
from onguard.policies.reads import ReadSpec
from policykit import ALICE, CHAIN_ID, batch, block, ids, load_text, withdraw

Value = Any | Callable[[int], Any]  # a value, or a function of the block number


class FakeReader:
    """A StateReader answering from {read text: value or fn(block)}; records (specs, block) for every call.
    `fail_next` makes the next call raise, as a node that went away would."""

    def __init__(self, values: dict[str, Value] | None = None) -> None:
        self.values = values or {}
        self.calls: list[tuple[list[ReadSpec], int]] = []
        self.fail_next: Exception | None = None

    async def read(self, specs: Iterable[ReadSpec], block: int) -> dict[ReadSpec, Any]:
        specs = list(specs)
        self.calls.append((specs, block))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        answers = {}
        for spec in specs:
            value = self.values[spec.text]
            if isinstance(value, ReadFailure):
                value = ReadFailure(spec, value.reason)
            answers[spec] = value(block) if callable(value) else value
        return answers

    def texts(self, call: int) -> list[str]:
        return sorted(spec.text for spec in self.calls[call][0])

    @property
    def blocks(self) -> list[int]:
        return [block for _, block in self.calls]


@pytest.fixture
def make(tmp_path: Path, env: PolicyEnv) -> Callable[..., Policy]:
    """make(id, kind, body, confirmations=0) -> a policy loaded from a file under tmp_path."""

    def build(id: str, kind: str, body: str, confirmations: int = 0) -> Policy:
        header = (f'id = "{id}"\ndescription = "{id}"\nkind = "{kind}"\nseverity = "high"\nresponse = ["alert"]\n'
                  f"confirmations = {confirmations}\n")
        return load_text(tmp_path / "policies", env, header + body, f"{id}.toml")

    return build


def big_withdrawal(make: Callable[..., Policy], id: str = "big-withdrawal", confirmations: int = 0,
                   condition: str = "args.assets > 100", reads: str = "") -> Policy:
    return make(id, "event", f"""
[match]
contract = "vault"
event = "Withdraw"
{reads}
[trigger]
condition = "{condition}"
""", confirmations)


def invariant(make: Callable[..., Policy], id: str, reads: dict[str, str], text: str,
              confirmations: int = 0) -> Policy:
    table = "".join(f'{name} = "{read}"\n' for name, read in reads.items())
    return make(id, "state", f'[reads]\n{table}\n[trigger]\ninvariant = "{text}"\n', confirmations)


def evaluate(engine: PolicyEngine, block: BlockBatch, reader: FakeReader) -> EngineResult:
    return asyncio.run(engine.evaluate(block, reader))


# ---- one batched read per block ----


def test_all_reads_of_a_block_are_requested_in_one_deduplicated_call(make: Callable[..., Policy]) -> None:
    drain = big_withdrawal(make, condition="args.assets > 25% * state.assets",
                           reads='[reads]\nassets = "vault.totalAssets()"\n')
    solvent = invariant(make, "solvent", {"held": "vault.totalAssets()", "supply": "vault.totalSupply()"},
                        "state.held >= state.supply")
    cash = invariant(make, "cash", {"cash": "vault.balanceOf(vault)", "same_cash": "vault.balanceOf(" + "0x"
                                    + "ab" * 20 + ")"}, "state.cash == state.same_cash")
    reader = FakeReader({"vault.totalAssets()": 1000, "vault.totalSupply()": 900, "vault.balanceOf(vault)": 7})

    result = evaluate(PolicyEngine([drain, solvent, cash]), batch(5, withdraw(5, 0, 10)), reader)

    assert result == EngineResult([], [])
    assert reader.blocks == [5]  # one call, at the block being judged
    # totalAssets() is declared twice and balanceOf(vault) is written two ways: each is read once.
    assert len(reader.calls[0][0]) == 3
    assert reader.texts(0) == ["vault.balanceOf(vault)", "vault.totalAssets()", "vault.totalSupply()"]


def test_the_read_values_reach_every_policy_that_declared_them(make: Callable[..., Policy]) -> None:
    drain = big_withdrawal(make, condition="args.assets > 25% * state.assets",
                           reads='[reads]\nassets = "vault.totalAssets()"\n')
    solvent = invariant(make, "solvent", {"held": "vault.totalAssets()", "supply": "vault.totalSupply()"},
                        "state.held >= state.supply")
    reader = FakeReader({"vault.totalAssets()": 1000, "vault.totalSupply()": 1001})

    result = evaluate(PolicyEngine([drain, solvent]), batch(5, withdraw(5, 0, 251)), reader)

    assert result.failures == []
    assert ids(result.findings) == ["big-withdrawal", "solvent"]
    assert result.findings[0].evidence["state"] == {"assets": 1000}
    assert result.findings[1].evidence["state"] == {"held": 1000, "supply": 1001}
    assert result.findings[1].verdict is Verdict.INVARIANT_BROKEN


def test_no_read_call_when_no_policy_declares_reads(make: Callable[..., Policy]) -> None:
    reader = FakeReader()
    result = evaluate(PolicyEngine([big_withdrawal(make)]), batch(1, withdraw(1, 0, 101)), reader)
    assert reader.calls == []
    assert ids(result.findings) == ["big-withdrawal"]


def test_policy_ids_in_order(make: Callable[..., Policy]) -> None:
    engine = PolicyEngine([big_withdrawal(make, id="b"), big_withdrawal(make, id="a")])
    assert engine.policy_ids == ["b", "a"]


# ---- confirmations ----


def test_confirmations_delay_evaluation_until_two_more_blocks(make: Callable[..., Policy]) -> None:
    policy = big_withdrawal(make, confirmations=2, condition="args.assets > 10% * state.assets",
                            reads='[reads]\nassets = "vault.totalAssets()"\n')
    assert policy.common.confirmations == 2
    reader = FakeReader({"vault.totalAssets()": lambda block: 1000 * block})
    engine = PolicyEngine([policy])

    assert evaluate(engine, batch(10, withdraw(10, 0, 1001)), reader).findings == []
    assert evaluate(engine, batch(11), reader).findings == []
    assert reader.calls == []  # nothing is judged, so nothing is read, until block 10 is two deep

    result = evaluate(engine, batch(12), reader)

    assert reader.blocks == [10]  # the state at the evidence block, not at the head
    [finding] = result.findings
    assert finding.block_number == 10
    assert finding.evidence["state"] == {"assets": 10_000}  # 1001 > 10% of 10_000; at block 12 it would not be


def test_confirmations_keep_judging_one_block_behind_the_other(make: Callable[..., Policy]) -> None:
    policy = big_withdrawal(make, confirmations=2)
    engine = PolicyEngine([policy])
    reader = FakeReader()
    seen = []
    for number in range(1, 8):
        result = evaluate(engine, batch(number, withdraw(number, 0, 101)), reader)
        seen.append([f.block_number for f in result.findings])
    assert seen == [[], [], [1], [2], [3], [4], [5]]


def test_policies_with_and_without_confirmations_read_at_their_own_blocks(make: Callable[..., Policy]) -> None:
    now = invariant(make, "now", {"supply": "vault.totalSupply()"}, "state.supply > 0")
    later = invariant(make, "later", {"supply": "vault.totalSupply()", "assets": "vault.totalAssets()"},
                      "state.assets > 0", confirmations=2)
    reader = FakeReader({"vault.totalSupply()": 1, "vault.totalAssets()": 1})
    engine = PolicyEngine([now, later])
    for number in (1, 2):
        evaluate(engine, batch(number), reader)
    assert reader.blocks == [1, 2]
    evaluate(engine, batch(3), reader)
    assert reader.blocks == [1, 2, 1, 3]  # one call per block judged, each with only what is due there
    assert reader.texts(2) == ["vault.totalAssets()", "vault.totalSupply()"]
    assert reader.texts(3) == ["vault.totalSupply()"]


def test_forget_from_drops_delayed_blocks(make: Callable[..., Policy]) -> None:
    policy = big_withdrawal(make, confirmations=2)
    engine = PolicyEngine([policy])
    reader = FakeReader()
    evaluate(engine, batch(10, withdraw(10, 0, 500)), reader)
    evaluate(engine, batch(11), reader)

    engine.forget_from(10)  # blocks 10 and 11 were reorganised away before they were deep enough

    results = [evaluate(engine, batch(number, fork=1), reader) for number in (10, 11, 12, 13)]
    assert [r.findings for r in results] == [[], [], [], []]  # the orphaned withdrawal is never judged


def test_forget_from_reaches_the_evaluators(make: Callable[..., Policy]) -> None:
    drain = make("window", "event", """
[match]
contract = "vault"
event = "Withdraw"

[aggregate]
function = "sum"
of = "assets"
window_blocks = 10

[trigger]
condition = "value > 100"
""")
    engine = PolicyEngine([drain])
    reader = FakeReader()
    evaluate(engine, batch(1, withdraw(1, 0, 60)), reader)
    evaluate(engine, batch(2, withdraw(2, 0, 30)), reader)
    engine.forget_from(2)
    assert evaluate(engine, batch(2, withdraw(2, 0, 30, fork=1), fork=1), reader).findings == []  # 60 + 30
    assert ids(evaluate(engine, batch(3, withdraw(3, 0, 11)), reader).findings) == ["window"]  # 101


# ---- evaluation failures ----


@dataclass
class RaisingEvaluator:
    common: PolicyCommon
    error: Exception
    reads: frozenset[ReadSpec] = frozenset()

    def observe(self, batch: BlockBatch, state: Any) -> Finding | None:
        raise self.error

    def forget_from(self, block_number: int) -> None:
        pass


@dataclass
class RaisingPolicy:
    common: PolicyCommon
    error: Exception

    def evaluator(self) -> RaisingEvaluator:
        return RaisingEvaluator(self.common, self.error)

    def explain(self) -> list[str]:
        return []


def raising(id: str, error: Exception) -> RaisingPolicy:
    common = PolicyCommon(id=id, kind="event", description=id, severity=Severity.LOW, response=(), cooldown=0.0,
                          enabled=True, dry_run=False, confirmations=0, file=Path(f"{id}.toml"))
    return RaisingPolicy(common, error)


def test_failing_policies_become_failures_and_the_others_still_find(make: Callable[..., Policy]) -> None:
    reverted = invariant(make, "reverted", {"price": "oracle.price()"}, "state.price > 0")
    by_zero = big_withdrawal(make, id="by-zero", condition="args.assets / state.supply > 1",
                             reads='[reads]\nsupply = "vault.totalSupply()"\n')
    mistyped = invariant(make, "mistyped", {"assets": "vault.totalAssets()"}, "state.assets > 0")
    healthy = big_withdrawal(make, id="healthy")
    solvent = invariant(make, "solvent", {"supply": "vault.totalSupply()", "debt": "vault.totalDebt()"},
                        "state.debt <= state.supply")
    reader = FakeReader({"oracle.price()": ReadFailure(None, "execution reverted"),  # type: ignore[arg-type]
                         "vault.totalSupply()": 0, "vault.totalAssets()": "lots", "vault.totalDebt()": 1})
    engine = PolicyEngine([reverted, by_zero, raising("crashing", ZeroDivisionError("integer division by zero")),
                           mistyped, healthy, raising("refusing", ValueError("bad value")), solvent])

    result = evaluate(engine, batch(9, withdraw(9, 0, 500)), reader)

    assert ids(result.findings) == ["healthy", "solvent"]
    assert ids(result.failures) == ["reverted", "by-zero", "crashing", "mistyped", "refusing"]
    assert all(failure.block_number == 9 for failure in result.failures)
    messages = {failure.policy_id: failure.message for failure in result.failures}
    assert "state.price = oracle.price() failed: execution reverted" in messages["reverted"]
    assert "division by zero" in messages["by-zero"]
    assert messages["crashing"] == "ZeroDivisionError: integer division by zero"
    assert "state.assets should be a number" in messages["mistyped"]
    assert messages["refusing"] == "ValueError: bad value"


def test_a_failure_does_not_stop_later_blocks(make: Callable[..., Policy]) -> None:
    policy = invariant(make, "price", {"price": "oracle.price()"}, "state.price > 0")
    answers = iter([ReadFailure(None, "reverted"), 5, 0])  # type: ignore[arg-type]
    reader = FakeReader({"oracle.price()": lambda block: next(answers)})
    engine = PolicyEngine([policy])
    first = evaluate(engine, batch(1), reader)
    assert first.findings == [] and ids(first.failures) == ["price"]
    assert evaluate(engine, batch(2), reader) == EngineResult([], [])
    assert ids(evaluate(engine, batch(3), reader).findings) == ["price"]


def test_an_unreadable_chain_is_an_error_not_a_pass(make: Callable[..., Policy]) -> None:
    """When the node cannot answer the batched read at all, evaluate raises (the daemon retries the block)."""
    reader = FakeReader({"vault.totalSupply()": 1})
    reader.fail_next = ChainError("batch of 1: connection reset")
    engine = PolicyEngine([invariant(make, "supply", {"supply": "vault.totalSupply()"}, "state.supply == 0")])
    with pytest.raises(ChainError):
        evaluate(engine, batch(1), reader)
    assert ids(evaluate(engine, batch(1), reader).findings) == ["supply"]  # the retry judges the block


def test_a_failed_read_does_not_lose_blocks_held_for_confirmations(make: Callable[..., Policy]) -> None:
    policy = big_withdrawal(make, confirmations=2, condition="args.assets > 10% * state.assets",
                            reads='[reads]\nassets = "vault.totalAssets()"\n')
    reader = FakeReader({"vault.totalAssets()": 1000})
    engine = PolicyEngine([policy])
    evaluate(engine, batch(10, withdraw(10, 0, 500)), reader)  # a drain, judged once two blocks deep
    evaluate(engine, batch(11), reader)
    reader.fail_next = ChainError("batch of 1: connection reset")
    with pytest.raises(ChainError):
        evaluate(engine, batch(12), reader)

    found = [f.block_number for n in (12, 13, 14) for f in evaluate(engine, batch(n), reader).findings]

    assert found == [10]  # the retry of block 12 judges block 10
    assert reader.blocks[-3:] == [10, 11, 12]  # every block judged exactly once


# ---- call policies judge a transaction on the state it ran on ----


PRICE_JUMP = """
[match]
contract = "oracle"
function = "setPrice"
where = "args.newPrice > 2 * state.price"
[reads]
price = "oracle.price()"
"""


def set_price(number: int | None, new_price: int) -> TransactionObservation:
    data = bytes.fromhex("91b7f5ed") + new_price.to_bytes(32, "big")  # setPrice(uint256)
    return TransactionObservation(chain_id=CHAIN_ID, hash="0x" + "77" * 32, block_number=number, sender=ALICE,
                                  to="0x" + "ef" * 20, contract="oracle", value=0, input=data,
                                  function="setPrice(uint256)", args=frozen_mapping({"newPrice": new_price}))


def test_a_mined_call_is_judged_on_the_parent_block_state(make: Callable[..., Policy]) -> None:
    # The price is 100 before block 8 and 300 after it, because block 8 holds the call setting it to 300.
    engine = PolicyEngine([make("price-jump", "call", PRICE_JUMP)])
    reader = FakeReader({"oracle.price()": lambda block: 100 if block < 8 else 300})
    mined = BlockBatch(block=block(8), logs=(), transactions=(set_price(8, 300),))

    result = evaluate(engine, mined, reader)

    assert reader.blocks == [7]
    assert ids(result.findings) == ["price-jump"]  # 300 > 2 * 100; read after the block, 300 > 600 is false


def test_a_pending_call_is_judged_on_the_head_state(make: Callable[..., Policy]) -> None:
    engine = PolicyEngine([make("price-jump", "call", PRICE_JUMP)])
    reader = FakeReader({"oracle.price()": lambda block: 100 if block < 8 else 300})

    @dataclass
    class Pending:
        observation: TransactionObservation
        raw: dict[str, Any]

    head = block(7)
    result = asyncio.run(engine.evaluate_pending(Pending(set_price(None, 300), {}), head, reader, None))

    assert reader.blocks == [7]
    assert ids(result.findings) == ["price-jump"]


def test_parent_and_own_block_reads_of_one_block_both_happen(make: Callable[..., Policy]) -> None:
    jump = make("price-jump", "call", PRICE_JUMP)
    solvent = invariant(make, "solvent", {"assets": "vault.totalAssets()"}, "state.assets > 0")
    engine = PolicyEngine([jump, solvent])
    reader = FakeReader({"oracle.price()": lambda block: 100 if block < 8 else 300, "vault.totalAssets()": 0})
    mined = BlockBatch(block=block(8), logs=(), transactions=(set_price(8, 300),))

    result = evaluate(engine, mined, reader)

    assert sorted(reader.blocks) == [7, 8]
    assert {block: sorted(s.text for s in specs) for specs, block in reader.calls} == {
        7: ["oracle.price()"], 8: ["vault.totalAssets()"]}
    assert sorted(ids(result.findings)) == ["price-jump", "solvent"]
