"""policies/kinds/oracle.py: a price feed against its time-weighted average, a band or another feed; its jump
since the previous block and its staleness; exact arithmetic throughout."""

from __future__ import annotations

import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from onguard.chain.view import ReadFailure
from onguard.config import Config
from onguard.errors import PolicyError
from onguard.observations import BlockBatch, BlockObservation
from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.kinds.oracle import OracleEvaluator, OraclePolicy
from onguard.policies.loader import load_policy
from onguard.policies.model import Finding, Verdict

CHAIN_ID = 31337
T0 = 1_700_000_000
E18 = 10**18


def write(config: Config, body: str, *, name: str = "oracle.toml") -> Path:
    config.policies_dir.mkdir(parents=True, exist_ok=True)
    path = config.policies_dir / name
    path.write_text('id = "oracle-test"\ndescription = "a feed"\nkind = "oracle"\nseverity = "high"\n'
                    'response = ["alert"]\n' + textwrap.dedent(body))
    return path


def load(config: Config, body: str) -> OraclePolicy:
    policy = load_policy(write(config, body), PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert isinstance(policy, OraclePolicy)
    return policy


def twap_policy(config: Config, condition: str, blocks: int = 3) -> OraclePolicy:
    return load(config, f"""
        [oracle]
        price = "oracle.price()"
        reference = "twap"
        twap_blocks = {blocks}
        [trigger]
        condition = "{condition}"
        """)


def band_policy(config: Config, condition: str, band: str = '["0.9e18", "1.1e18"]', updated_at: bool = False
                ) -> OraclePolicy:
    return load(config, f"""
        [oracle]
        price = "oracle.price()"
        {'updated_at = "oracle.updatedAt()"' if updated_at else ''}
        reference = "band"
        band = {band}
        [trigger]
        condition = "{condition}"
        """)


def read_policy(config: Config, condition: str) -> OraclePolicy:
    return load(config, f"""
        [oracle]
        price = "oracle.price()"
        reference = "vault.convertToAssets(1e18)"
        [reads]
        supply = "vault.totalSupply()"
        [trigger]
        condition = "{condition}"
        """)


def batch(number: int, timestamp: int | None = None) -> BlockBatch:
    block = BlockObservation(chain_id=CHAIN_ID, number=number, hash="0x" + f"{number:064x}",
                             parent_hash="0x" + f"{number - 1:064x}",
                             timestamp=T0 + 12 * number if timestamp is None else timestamp)
    return BlockBatch(block=block, logs=())


class Driver:
    def __init__(self, policy: OraclePolicy) -> None:
        self.policy = policy
        self.evaluator = policy.evaluator()
        assert isinstance(self.evaluator, OracleEvaluator)

    def state(self, price: Any, *, updated_at: Any = None, reference: Any = None, **reads: Any) -> dict[Any, Any]:
        policy = self.policy
        values = {policy.price: price}
        if policy.updated_at is not None:
            values[policy.updated_at] = updated_at
        if policy.reference.read is not None:
            values[policy.reference.read] = reference
        values.update({policy.reads.specs[name]: value for name, value in reads.items()})
        return values

    def at(self, number: int, price: Any, *, timestamp: int | None = None, **others: Any) -> Finding | None:
        return self.evaluator.observe(batch(number, timestamp), self.state(price, **others))

    def run(self, prices: dict[int, Any]) -> dict[int, Finding | None]:
        return {number: self.at(number, price) for number, price in prices.items()}


def fired(results: dict[int, Finding | None]) -> list[int]:
    return [number for number, finding in results.items() if finding is not None]


# ---- twap arithmetic ----


def test_twap_is_time_weighted_and_exact(config: Config) -> None:
    driver = Driver(twap_policy(config, "price >= 0", blocks=3))  # fires whenever evaluated
    assert driver.at(1, 100, timestamp=100) is None  # no earlier block yet
    second = driver.at(2, 200, timestamp=112)
    assert second is not None and second.evidence["reference"] == 100  # block 1 alone
    third = driver.at(3, 110, timestamp=130)
    # block 1's 100 held 12 s (100 -> 112), block 2's 200 held 18 s (112 -> 130)
    assert third is not None and third.evidence["reference"] == Fraction(100 * 12 + 200 * 18, 30) == 160
    fourth = driver.at(4, 300, timestamp=136)
    # 100 for 12 s, 200 for 18 s, 110 for 6 s (130 -> 136, the current block's time): 5460 / 36
    assert fourth is not None
    assert fourth.evidence["reference"] == Fraction(5460, 36) == Fraction(455, 3)
    assert fourth.evidence["deviation"] == Fraction(300 - Fraction(455, 3)) / Fraction(455, 3) == Fraction(89, 91)
    assert fourth.evidence["twap"] == {"blocks": 3, "from_block": 1, "to_block": 3}
    assert fourth.verdict is Verdict.CONDITION_MET


def test_twap_window_excludes_the_current_block_and_anything_older_than_n(config: Config) -> None:
    driver = Driver(twap_policy(config, "deviation > 0", blocks=2))
    results = driver.run({1: 10**6, 2: 100, 3: 100, 4: 100})
    # block 3: window 1..2 holds block 1's 10**6; block 4: window 2..3, all 100; the current price never counts
    assert fired(results) == [2, 3]
    assert driver.at(5, 101) is not None  # 101 against the twap of 100


def test_twap_of_equal_timestamps_is_the_mean_of_the_blocks(config: Config) -> None:
    driver = Driver(twap_policy(config, "price >= 0", blocks=3))
    for number, price in ((1, 100), (2, 200), (3, 601)):
        driver.at(number, price, timestamp=T0)
    finding = driver.at(4, 1, timestamp=T0)
    assert finding is not None and finding.evidence["reference"] == Fraction(901, 3)


def test_twap_gives_no_weight_to_a_price_replaced_in_the_same_second(config: Config) -> None:
    driver = Driver(twap_policy(config, "price >= 0", blocks=3))
    driver.at(1, 100, timestamp=100)
    driver.at(2, 1000, timestamp=100)  # block 1's price held for 0 s
    driver.at(3, 100, timestamp=110)
    finding = driver.at(4, 100, timestamp=120)
    assert finding is not None and finding.evidence["reference"] == (1000 * 10 + 100 * 10) // 20 == 550


def test_twap_stays_silent_until_an_earlier_block_exists(config: Config) -> None:
    driver = Driver(twap_policy(config, "price >= 0 or deviation > 0 or jump >= 0"))
    assert driver.at(7, 100) is None
    assert driver.at(8, 100) is not None


# ---- deviation: fires, and the close case ----


@pytest.mark.parametrize(("price", "fires"), [(1200 * E18, False), (1200 * E18 + 1, True),
                                              (800 * E18, False), (800 * E18 - 1, True)])
def test_deviation_above_twenty_percent_of_the_twap(config: Config, price: int, fires: bool) -> None:
    driver = Driver(twap_policy(config, "deviation > 20%", blocks=5))
    assert fired(driver.run({n: 1000 * E18 for n in range(1, 6)})) == []
    finding = driver.at(6, price)
    assert (finding is not None) is fires
    if finding is not None:
        assert finding.evidence["reference"] == 1000 * E18
        assert finding.evidence["deviation"] == Fraction(abs(price - 1000 * E18), 1000 * E18)
        assert finding.evidence["price"] == price
        assert finding.evidence["feed"] == {"price": "oracle.price()", "reference": "twap"}
        assert finding.evidence["condition"] == "deviation > 20%"
        assert finding.evidence["reads"] == {}


# ---- jump ----


def test_jump_is_silent_on_the_first_block_and_zero_when_unchanged(config: Config) -> None:
    driver = Driver(band_policy(config, "jump == 0"))
    results = driver.run({1: E18, 2: E18})
    assert fired(results) == [2]
    assert results[2].evidence["previous_price"] == E18  # type: ignore[union-attr]


def test_jump_above_ten_percent_fires_and_ten_percent_does_not(config: Config) -> None:
    driver = Driver(band_policy(config, "jump > 10%"))
    results = driver.run({1: 1000, 2: 1100, 3: 1210 + 1})
    assert fired(results) == [3]
    assert results[3].evidence["jump"] == Fraction(111, 1100)  # type: ignore[union-attr]
    assert driver.at(4, 1211 - 121) is None  # a 9.99...% fall
    assert driver.at(5, 1090 - 110) is not None  # a fall of 10.09...%


def test_jump_compares_with_the_previous_block_seen_even_across_a_gap(config: Config) -> None:
    driver = Driver(band_policy(config, "jump > 10%"))
    driver.at(1, 1000)
    finding = driver.at(9, 2000)
    assert finding is not None and finding.evidence["previous_price"] == 1000


def test_jump_with_a_twap_is_from_the_newest_earlier_block(config: Config) -> None:
    driver = Driver(twap_policy(config, "jump > 10%", blocks=3))
    results = driver.run({1: 1000, 2: 2000, 3: 2100})
    assert fired(results) == [2]  # block 3: 5% above block 2 (110% above block 1, which does not count)
    assert results[2].evidence["jump"] == 1  # type: ignore[union-attr]


def test_jump_from_a_zero_price_is_silent(config: Config) -> None:
    driver = Driver(band_policy(config, "jump > 10%"))
    assert fired(driver.run({1: 0, 2: E18})) == []
    assert driver.at(3, 2 * E18) is not None


def test_a_condition_without_jump_is_judged_from_the_first_block(config: Config) -> None:
    driver = Driver(band_policy(config, "not in_band"))
    finding = driver.at(1, 2 * E18)
    assert finding is not None and finding.evidence["jump"] is None and finding.evidence["previous_price"] is None


# ---- band ----


def test_band_reference_is_its_midpoint_and_its_bounds_are_inside(config: Config) -> None:
    driver = Driver(band_policy(config, "not in_band"))
    assert driver.at(1, 11 * E18 // 10) is None  # the high bound itself
    assert driver.at(2, 9 * E18 // 10) is None  # the low bound itself
    finding = driver.at(3, 11 * E18 // 10 + 1)
    assert finding is not None
    assert finding.evidence["in_band"] is False
    assert finding.evidence["reference"] == E18
    assert finding.evidence["deviation"] == Fraction(E18 // 10 + 1, E18)
    assert finding.evidence["band"] == [9 * E18 // 10, 11 * E18 // 10]
    assert finding.evidence["reference_kind"] == "band"
    assert driver.at(4, 9 * E18 // 10 - 1) is not None


def test_band_midpoint_is_exact(config: Config) -> None:
    driver = Driver(band_policy(config, "in_band and deviation > 0", band="[1, 2]"))
    finding = driver.at(1, 2)
    assert finding is not None and finding.evidence["reference"] == Fraction(3, 2)
    assert finding.evidence["deviation"] == Fraction(1, 3)


# ---- staleness ----


def test_staleness_past_the_limit_fires_and_at_the_limit_does_not(config: Config) -> None:
    driver = Driver(band_policy(config, "staleness > 3600", updated_at=True))
    assert driver.at(1, E18, timestamp=T0 + 3600, updated_at=T0) is None
    finding = driver.at(2, E18, timestamp=T0 + 3601, updated_at=T0)
    assert finding is not None
    assert finding.evidence["staleness"] == 3601 and finding.evidence["updated_at"] == T0
    assert finding.evidence["feed"]["updated_at"] == "oracle.updatedAt()"
    assert "3601 s since its update" in finding.summary
    assert driver.at(3, E18, timestamp=T0 + 3602, updated_at=T0 + 3602) is None  # updated again


# ---- a read as the reference ----


def test_a_read_reference_is_compared_block_by_block(config: Config) -> None:
    policy = read_policy(config, "deviation > 5% and state.supply > 0")
    driver = Driver(policy)
    assert driver.at(1, 105, reference=100, supply=1) is None  # 5% exactly
    finding = driver.at(2, 94, reference=100, supply=1)
    assert finding is not None and finding.evidence["deviation"] == Fraction(6, 100)
    assert finding.evidence["feed"] == {"price": "oracle.price()", "reference": "vault.convertToAssets(1e18)"}
    assert finding.evidence["state"] == {"supply": 1}
    assert finding.evidence["reads"] == {"supply": "vault.totalSupply()"}
    assert driver.at(3, 94, reference=100, supply=0) is None


def test_a_zero_reference_is_silent_for_a_condition_on_deviation(config: Config) -> None:
    driver = Driver(read_policy(config, "deviation > 5%"))
    assert driver.at(1, 10**30, reference=0, supply=1) is None


def test_reads_include_the_feed_the_reference_and_the_named_reads(config: Config) -> None:
    policy = read_policy(config, "deviation > 5%")
    assert {spec.text for spec in policy.evaluator().reads} == {"oracle.price()", "vault.convertToAssets(1e18)",
                                                                "vault.totalSupply()"}
    stale = band_policy(config, "staleness > 1", updated_at=True)
    assert {spec.text for spec in stale.evaluator().reads} == {"oracle.price()", "oracle.updatedAt()"}


@pytest.mark.parametrize("failing", ["price", "updated_at", "reference"])
def test_a_failed_read_is_an_error_not_silence(config: Config, failing: str) -> None:
    policy = load(config, """
        [oracle]
        price = "oracle.price()"
        updated_at = "oracle.updatedAt()"
        reference = "vault.convertToAssets(1e18)"
        [trigger]
        condition = "deviation > 5%"
        """)
    driver = Driver(policy)
    spec = {"price": policy.price, "updated_at": policy.updated_at, "reference": policy.reference.read}[failing]
    values = {"price": 100, "updated_at": T0, "reference": 100}
    values[failing] = ReadFailure(spec, "execution reverted")  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match=f"read {failing} = .* failed: execution reverted"):
        driver.at(1, values["price"], updated_at=values["updated_at"], reference=values["reference"])


# ---- reorganisations ----


def test_forget_from_drops_reorganised_prices_from_the_twap_and_the_jump(config: Config) -> None:
    driver = Driver(load(config, """
        [oracle]
        price = "oracle.price()"
        reference = "twap"
        twap_blocks = 3
        [trigger]
        condition = "deviation > 0 or jump > 0"
        """))
    results = driver.run({1: 1000, 2: 1000, 3: 5000})
    assert fired(results) == [3]
    driver.evaluator.forget_from(3)
    assert driver.at(3, 1000) is None  # neither the orphaned 5000 in the twap nor a jump from it
    assert driver.at(4, 1000) is None
    driver.evaluator.forget_from(1)
    assert driver.at(1, 1000) is None  # nothing earlier any more: silent again


@pytest.mark.parametrize(("reference", "kept"), [('reference = "twap"\ntwap_blocks = 3', [998, 999, 1000]),
                                               ('reference = "band"\nband = [1, 2]', [1000])])
def test_history_is_bounded_by_what_the_next_block_needs(config: Config, reference: str, kept: list[int]) -> None:
    driver = Driver(load(config, f"""
        [oracle]
        price = "oracle.price()"
        {reference}
        [trigger]
        condition = "jump > 10%"
        """))
    driver.run({n: 100 for n in range(1, 1001)})
    assert [sample.block_number for sample in driver.evaluator._samples] == kept


def test_a_block_seen_again_replaces_its_earlier_price(config: Config) -> None:
    driver = Driver(twap_policy(config, "deviation > 0", blocks=1))
    driver.run({1: 1000, 2: 9000})
    assert driver.at(2, 1000) is None
    assert driver.at(3, 1000) is None


# ---- explain ----


def test_explain_names_the_feed_the_reference_and_the_condition(config: Config) -> None:
    lines = band_policy(config, "staleness > 3600 or not in_band", updated_at=True).explain()
    assert lines[0] == "At every block it reads the price oracle.price() and its update time oracle.updatedAt()."
    assert "the midpoint of the band [900000000000000000, 1100000000000000000]" in lines[1]
    assert any("staleness" in line for line in lines)
    assert lines[-1] == "It fires when staleness > 3600 or not in_band."
    twap_lines = twap_policy(config, "deviation > 5%", blocks=20).explain()
    assert "time-weighted average over the previous 20 blocks" in twap_lines[1]


# ---- parse errors: the file and the field ----


def parse_error(config: Config, oracle: str, condition: str = "deviation > 5%") -> PolicyError:
    path = write(config, f'[oracle]\nprice = "oracle.price()"\n{oracle}\n[trigger]\ncondition = "{condition}"\n',
                 name="bad.toml")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert caught.value.file == str(path)
    return caught.value


@pytest.mark.parametrize("reference", ["twapp", "oracle.nope()", "chainlink.price()"])
def test_reference_must_be_twap_band_or_a_valid_read(config: Config, reference: str) -> None:
    error = parse_error(config, f'reference = "{reference}"')
    assert error.field == "oracle.reference"
    assert "neither \"twap\", \"band\" nor a valid read" in error.message


def test_a_read_reference_must_be_numeric(config: Config) -> None:
    error = parse_error(config, 'reference = "vault.paused()"')
    assert error.field == "oracle.reference" and "returns bool, not a number" in error.message


@pytest.mark.parametrize(("band", "message"), [
    ('["1e18"]', "expected two amounts [low, high]"),
    ('["1e18", "2e18", "3e18"]', "expected two amounts [low, high]"),
    ('"1e18"', "expected two amounts [low, high]"),
    ('["one", "2e18"]', "'one' is not an amount"),
    ('["-1", "2e18"]', "outside the uint256 range"),
    ('["1.1e18", "0.9e18"]', "the low bound 1100000000000000000 is above the high bound 900000000000000000"),
    ('["1000000000000000001", "1e18"]', "the low bound 1000000000000000001 is above the high bound"),
    ('[0, 0]', "its midpoint, the reference, would be 0"),
])
def test_band_must_be_two_ordered_amounts(config: Config, band: str, message: str) -> None:
    error = parse_error(config, f'reference = "band"\nband = {band}')
    assert error.field == "oracle.band"
    assert message in error.message


def test_a_band_of_one_value_is_allowed(config: Config) -> None:
    driver = Driver(band_policy(config, "not in_band", band='["1e18", "1e18"]'))
    assert driver.at(1, E18) is None
    assert driver.at(2, E18 + 1) is not None


def test_band_reference_needs_a_band(config: Config) -> None:
    error = parse_error(config, 'reference = "band"')
    assert error.field == "oracle.band" and "required" in error.message


def test_twap_needs_twap_blocks(config: Config) -> None:
    error = parse_error(config, 'reference = "twap"')
    assert error.field == "oracle.twap_blocks" and "required" in error.message


def test_twap_blocks_must_be_at_least_one(config: Config) -> None:
    error = parse_error(config, 'reference = "twap"\ntwap_blocks = 0')
    assert error.field == "oracle.twap_blocks" and "at least 1" in error.message


@pytest.mark.parametrize(("oracle", "field"), [
    ('reference = "band"\nband = [1, 2]\ntwap_blocks = 5', "oracle.twap_blocks"),
    ('reference = "twap"\ntwap_blocks = 5\nband = [1, 2]', "oracle.band"),
    ('reference = "vault.totalAssets()"\ntwap_blocks = 5', "oracle.twap_blocks"),
])
def test_settings_of_another_reference_are_refused(config: Config, oracle: str, field: str) -> None:
    error = parse_error(config, oracle)
    assert error.field == field and "is only used with reference" in error.message


def test_price_must_be_a_numeric_read(config: Config) -> None:
    path = write(config, '[oracle]\nprice = "vault.asset()"\nreference = "twap"\ntwap_blocks = 2\n[trigger]\n'
                         'condition = "deviation > 5%"\n', name="bad.toml")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, PolicyEnv(contracts=config.contracts, actions=config.actions))
    assert caught.value.field == "oracle.price" and "returns address, not a number" in caught.value.message


def test_staleness_needs_updated_at_and_in_band_needs_a_band(config: Config) -> None:
    error = parse_error(config, 'reference = "twap"\ntwap_blocks = 2', condition="staleness > 3600")
    assert error.field == "trigger.condition" and "unknown field staleness" in error.message
    error = parse_error(config, 'reference = "twap"\ntwap_blocks = 2', condition="in_band")
    assert error.field == "trigger.condition" and "unknown field in_band" in error.message


def test_updated_at_must_be_a_valid_read(config: Config) -> None:
    error = parse_error(config, 'updated_at = "oracle.updated()"\nreference = "twap"\ntwap_blocks = 2')
    assert error.field == "oracle.updated_at" and "oracle has no function updated" in error.message
