"""policies/kinds/delta.py: the change of a state value between blocks, exact, with its history kept per block
number (silent until there is enough of it) and forgotten on a reorganisation."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from onguard.chain.view import ReadFailure
from onguard.config import Config
from onguard.errors import PolicyError
from onguard.observations import BlockBatch, BlockObservation
from onguard.policies.engine import PolicyEngine
from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.kinds.delta import DeltaEvaluator, DeltaPolicy
from onguard.policies.loader import load_policy
from onguard.policies.model import Finding, Verdict

CHAIN_ID = 31337
T0 = 1_700_000_000
TOKEN = 10**18


def write(config: Config, body: str, *, name: str = "delta.toml") -> Path:
    config.policies_dir.mkdir(parents=True, exist_ok=True)
    path = config.policies_dir / name
    path.write_text('id = "delta-test"\ndescription = "a delta"\nkind = "delta"\nseverity = "high"\n'
                    'response = ["alert"]\n' + textwrap.dedent(body))
    return path


def load(config: Config, body: str) -> DeltaPolicy:
    policy = load_policy(write(config, body), PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert isinstance(policy, DeltaPolicy)
    return policy


def delta_policy(config: Config, condition: str, *, blocks: int = 1, extra_reads: str = "") -> DeltaPolicy:
    return load(config, f"""
        [reads]
        value = "vault.totalAssets()"
        {extra_reads}
        [delta]
        of = "value"
        blocks = {blocks}
        [trigger]
        condition = "{condition}"
        """)


def batch(number: int) -> BlockBatch:
    block = BlockObservation(chain_id=CHAIN_ID, number=number, hash="0x" + f"{number:064x}",
                             parent_hash="0x" + f"{number - 1:064x}", timestamp=T0 + 12 * number)
    return BlockBatch(block=block, logs=())


class Driver:
    """Feeds one value of `of` per block (and any other reads by name) to a fresh evaluator."""

    def __init__(self, policy: DeltaPolicy) -> None:
        self.policy = policy
        self.evaluator = policy.evaluator()
        assert isinstance(self.evaluator, DeltaEvaluator)

    def state(self, value: Any, **others: Any) -> dict[Any, Any]:
        specs = self.policy.reads.specs
        values = {specs[self.policy.of]: value}
        values.update({specs[name]: other for name, other in others.items()})
        return values

    def at(self, number: int, value: Any, **others: Any) -> Finding | None:
        return self.evaluator.observe(batch(number), self.state(value, **others))

    def run(self, values: dict[int, Any]) -> dict[int, Finding | None]:
        return {number: self.at(number, value) for number, value in values.items()}


class FakeReader:
    """A StateReader giving every read the value set for the block."""

    def __init__(self, values: dict[int, Any]) -> None:
        self.values = values

    async def read(self, specs: Iterable[Any], block: int) -> dict[Any, Any]:
        return {spec: self.values[block] for spec in specs}


def fired(results: dict[int, Finding | None]) -> list[int]:
    return [number for number, finding in results.items() if finding is not None]


# ---- firing and the close case ----


def test_a_one_block_rise_above_two_percent_fires_with_exact_evidence(config: Config) -> None:
    policy = delta_policy(config, "change > 2%")
    driver = Driver(policy)

    assert driver.at(1, 1000 * TOKEN) is None
    finding = driver.at(2, 1021 * TOKEN)

    assert finding is not None
    assert finding.verdict is Verdict.CONDITION_MET
    assert finding.policy is policy.common
    assert (finding.block_number, finding.block_time) == (2, T0 + 24)
    evidence = finding.evidence
    assert evidence["change"] == Fraction(21, 1000) and isinstance(evidence["change"], Fraction)
    assert (evidence["current"], evidence["previous"]) == (1021 * TOKEN, 1000 * TOKEN)
    assert (evidence["peak"], evidence["trough"]) == (1021 * TOKEN, 1000 * TOKEN)
    assert evidence["drawdown"] == 0
    assert evidence["of"] == "value" and evidence["read"] == "vault.totalAssets()"
    assert evidence["reads"] == {"value": "vault.totalAssets()"}
    assert evidence["state"] == {"value": 1021 * TOKEN}
    assert evidence["condition"] == "change > 2%"
    assert evidence["window"] == {"from_block": 1, "to_block": 2}
    assert "change > 2%" in finding.summary and "2.1%" in finding.summary


def test_a_rise_of_exactly_two_percent_does_not_fire(config: Config) -> None:
    driver = Driver(delta_policy(config, "change > 2%"))
    # 2% exactly, then one base unit more than 2% of the (new) previous value.
    results = driver.run({1: 1000 * TOKEN, 2: 1020 * TOKEN, 3: 1020 * TOKEN + 1020 * TOKEN * 2 // 100 + 1})
    assert fired(results) == [3]


def test_uint256_sized_values_stay_exact(config: Config) -> None:
    driver = Driver(delta_policy(config, "change > 1%"))
    big = 2**255
    assert driver.at(1, big) is None
    assert driver.at(2, big + big // 100) is None  # exactly 1% (2**255 is divisible by 4, not by 100: floor)
    finding = driver.at(3, (big + big // 100) * 101 // 100 + 1)
    assert finding is not None
    assert finding.evidence["change"] == Fraction((big + big // 100) * 101 // 100 + 1 - (big + big // 100),
                                                  big + big // 100)


def test_a_fall_gives_a_negative_change(config: Config) -> None:
    driver = Driver(delta_policy(config, "change < -10%"))
    assert driver.at(1, 1000) is None
    assert driver.at(2, 900) is None  # -10% exactly
    finding = driver.at(3, 809)
    assert finding is not None and finding.evidence["change"] == Fraction(-91, 900)


# ---- history ----


def test_silent_until_blocks_earlier_samples_exist(config: Config) -> None:
    driver = Driver(delta_policy(config, "current >= 0", blocks=3))  # true whenever it is evaluated
    results = driver.run({1: 10, 2: 10, 3: 10, 4: 10})
    assert fired(results) == [4]
    assert results[4].evidence["previous"] == 10  # type: ignore[union-attr]
    assert results[4].evidence["window"] == {"from_block": 1, "to_block": 4}  # type: ignore[union-attr]


def test_previous_is_the_value_exactly_blocks_ago(config: Config) -> None:
    driver = Driver(delta_policy(config, "current >= 0", blocks=2))
    results = driver.run({1: 100, 2: 200, 3: 300, 4: 400})
    assert [results[n].evidence["previous"] for n in (3, 4)] == [100, 200]  # type: ignore[union-attr]


def test_a_gap_in_the_blocks_seen_is_silence_not_a_wrong_previous(config: Config) -> None:
    driver = Driver(delta_policy(config, "current >= 0", blocks=2))
    results = driver.run({1: 100, 2: 100, 5: 100, 6: 100, 7: 100})
    assert fired(results) == [7]  # 5 and 6 have no sample two blocks back; 7 does (block 5)


# ---- drawdown and the window's edges ----


def test_drawdown_is_measured_from_the_peak_within_the_window(config: Config) -> None:
    driver = Driver(delta_policy(config, "drawdown > 30%", blocks=3))
    results = driver.run({1: 1000, 2: 900, 3: 800, 4: 700})  # peak 1000 (block 1, the window's oldest): 30%
    assert fired(results) == []
    finding = driver.at(5, 629)  # block 1 has left the window: peak 900, (900 - 629) / 900 > 30%
    assert finding is not None
    assert (finding.evidence["peak"], finding.evidence["trough"]) == (900, 629)
    assert finding.evidence["drawdown"] == Fraction(271, 900)
    assert finding.evidence["previous"] == 900
    assert finding.evidence["window"] == {"from_block": 2, "to_block": 5}


def test_the_oldest_block_of_the_window_still_counts_for_the_peak(config: Config) -> None:
    driver = Driver(delta_policy(config, "drawdown > 30%", blocks=3))
    results = driver.run({1: 1000, 2: 500, 3: 500, 4: 699})  # peak 1000 at block 1 = 4 - 3
    assert fired(results) == [4]
    assert results[4].evidence["drawdown"] == Fraction(301, 1000)  # type: ignore[union-attr]
    assert driver.at(5, 699) is None  # block 1 left: peak 699


def test_a_peak_inside_the_window_counts_even_when_previous_is_lower(config: Config) -> None:
    driver = Driver(delta_policy(config, "drawdown > 50% and change > -10%", blocks=3))
    finding = driver.run({1: 100, 2: 1000, 3: 400, 4: 95})[4]
    assert finding is not None  # change is -5%, but the drawdown from 1000 is 90.5%
    assert (finding.evidence["peak"], finding.evidence["trough"]) == (1000, 95)


# ---- undefined relative measures ----


def test_change_from_zero_is_silent_not_a_failure(config: Config) -> None:
    policy = delta_policy(config, "change > 2%")
    driver = Driver(policy)
    assert driver.at(1, 0) is None
    assert driver.at(2, 10**30) is None  # previous == 0: change undefined
    # The same blocks through the engine: no finding and no evaluation failure either.
    engine = PolicyEngine([policy])
    reader = FakeReader({1: 0, 2: 10**30})
    results = [asyncio.run(engine.evaluate(batch(number), reader)) for number in (1, 2)]
    assert all(result.findings == [] and result.failures == [] for result in results)
    assert driver.at(3, 10**30 * 103 // 100) is not None  # defined again from the next block


def test_drawdown_from_a_zero_peak_is_silent(config: Config) -> None:
    driver = Driver(delta_policy(config, "drawdown >= 0", blocks=2))
    assert fired(driver.run({1: 0, 2: 0, 3: 0})) == []
    assert driver.at(4, 5) is not None  # peak 5


def test_a_measure_the_condition_does_not_use_does_not_silence_it(config: Config) -> None:
    # The vault was empty two blocks ago: change is undefined, but a drawdown from its peak since is not.
    driver = Driver(delta_policy(config, "drawdown > 30%", blocks=2))
    results = driver.run({1: 0, 2: 1000, 3: 100})
    assert fired(results) == [3]
    assert results[3].evidence["change"] is None  # type: ignore[union-attr]
    assert results[3].evidence["drawdown"] == Fraction(9, 10)  # type: ignore[union-attr]


# ---- reorganisations ----


def test_forget_from_drops_the_samples_of_reorganised_blocks(config: Config) -> None:
    driver = Driver(delta_policy(config, "change > 2%"))
    assert fired(driver.run({1: 100, 2: 200, 3: 200})) == [2]
    driver.evaluator.forget_from(2)
    assert driver.at(2, 100) is None  # previous is block 1's 100, not the orphaned 200
    finding = driver.at(3, 103)
    assert finding is not None and finding.evidence["previous"] == 100


def test_a_reorganised_peak_no_longer_counts(config: Config) -> None:
    driver = Driver(delta_policy(config, "drawdown > 30%", blocks=3))
    driver.run({1: 100, 2: 1000, 3: 950})
    driver.evaluator.forget_from(2)
    results = driver.run({2: 100, 3: 100, 4: 80})
    assert fired(results) == []  # 20% from 100; the orphaned 1000 would make it 92%


def test_forgetting_everything_restarts_the_history(config: Config) -> None:
    driver = Driver(delta_policy(config, "current >= 0"))
    assert fired(driver.run({1: 1, 2: 1})) == [2]
    driver.evaluator.forget_from(1)
    assert fired(driver.run({1: 1, 2: 1})) == [2]
    driver.evaluator.forget_from(2)
    assert driver.at(3, 1) is None  # block 2 is gone: nothing one block back


def test_a_block_seen_again_replaces_what_followed_it(config: Config) -> None:
    policy = delta_policy(config, "change < -50%")
    driver = Driver(policy)
    driver.run({1: 100, 2: 100, 3: 1000})
    assert driver.at(2, 100) is None  # re-delivered without forget_from
    with pytest.raises(EvaluationError):
        driver.at(3, ReadFailure(policy.reads.specs["value"], "header not found"))
    # Block 3 now has no value: the orphaned 1000 must not serve as block 4's previous (a -90% change).
    assert driver.at(4, 100) is None
    assert driver.at(5, 49) is not None


def test_history_is_bounded_by_the_look_back(config: Config) -> None:
    driver = Driver(delta_policy(config, "change > 2%", blocks=4))
    driver.run({n: 100 for n in range(1, 1001)})
    assert sorted(driver.evaluator._samples) == [996, 997, 998, 999, 1000]


# ---- state, block and failures ----


def test_conditions_can_use_state_block_and_contracts(config: Config) -> None:
    policy = delta_policy(config, "change > 2% and state.supply > 0 and block.number > 1 and "
                                  "contracts.vault != contracts.oracle", extra_reads='supply = "vault.totalSupply()"')
    driver = Driver(policy)
    assert driver.at(1, 100, supply=5) is None
    assert driver.at(2, 103, supply=0) is None
    finding = driver.at(3, 106, supply=1)
    assert finding is not None
    assert finding.evidence["state"] == {"value": 106, "supply": 1}
    assert finding.evidence["reads"] == {"value": "vault.totalAssets()", "supply": "vault.totalSupply()"}


def test_a_failed_read_is_an_error_not_silence(config: Config) -> None:
    policy = delta_policy(config, "change > 2%")
    driver = Driver(policy)
    driver.at(1, 100)
    spec = policy.reads.specs["value"]
    with pytest.raises(EvaluationError, match="state.value = vault.totalAssets\\(\\) failed: execution reverted"):
        driver.at(2, ReadFailure(spec, "execution reverted"))
    assert driver.at(3, 100) is None  # block 2 has no sample: nothing one block back, so silent


def test_explain_describes_the_measures_and_the_condition(config: Config) -> None:
    lines = delta_policy(config, "drawdown > 30%", blocks=10).explain()
    assert lines[0] == "At every block it reads state.value = vault.totalAssets()."
    assert "10 blocks earlier" in lines[1] and "last 11 blocks" in lines[1]
    assert lines[-1] == "It fires when drawdown > 30%."


# ---- parse errors: the file and the field ----


def parse_error(config: Config, body: str) -> PolicyError:
    path = write(config, body, name="bad.toml")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert caught.value.file == str(path)
    return caught.value


GOOD_READS = """
[reads]
tvl = "vault.totalAssets()"
paused = "vault.paused()"
"""


def test_of_must_name_a_read(config: Config) -> None:
    error = parse_error(config, GOOD_READS + '[delta]\nof = "tvll"\nblocks = 1\n[trigger]\ncondition = "change > 0"\n')
    assert error.field == "delta.of"
    assert "no read named 'tvll'" in error.message and "tvl" in (error.hint or "")


def test_of_must_name_a_numeric_read(config: Config) -> None:
    error = parse_error(config, GOOD_READS + '[delta]\nof = "paused"\nblocks = 1\n[trigger]\n'
                                             'condition = "change > 0"\n')
    assert error.field == "delta.of"
    assert "returns bool, not a number" in error.message


@pytest.mark.parametrize("blocks", ["0", "-3"])
def test_blocks_must_be_at_least_one(config: Config, blocks: str) -> None:
    error = parse_error(config, GOOD_READS + f'[delta]\nof = "tvl"\nblocks = {blocks}\n[trigger]\n'
                                             'condition = "change > 0"\n')
    assert error.field == "delta.blocks" and "at least 1" in error.message


def test_blocks_must_be_an_integer(config: Config) -> None:
    error = parse_error(config, GOOD_READS + '[delta]\nof = "tvl"\nblocks = "10"\n[trigger]\n'
                                             'condition = "change > 0"\n')
    assert error.field == "delta.blocks" and "expected an integer" in error.message


def test_the_condition_only_knows_the_delta_names(config: Config) -> None:
    error = parse_error(config, GOOD_READS + '[delta]\nof = "tvl"\nblocks = 1\n[trigger]\n'
                                             'condition = "deviation > 5%"\n')
    assert error.field == "trigger.condition" and "unknown field deviation" in error.message


def test_reads_are_required_and_unknown_fields_are_refused(config: Config) -> None:
    assert parse_error(config, '[delta]\nof = "tvl"\nblocks = 1\n[trigger]\ncondition = "change > 0"\n').field \
        == "reads"
    error = parse_error(config, GOOD_READS + '[delta]\nof = "tvl"\nblocks = 1\nwindow = 3\n[trigger]\n'
                                             'condition = "change > 0"\n')
    assert error.field == "delta.window" and "unknown field" in error.message
