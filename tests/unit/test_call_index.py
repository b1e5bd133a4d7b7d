"""policies/engine.py's index of pending judges: a pending call is shown only to the call policies on its contract
that watch its function (plus the judges that look at every call), and the findings and failures are exactly
those of showing it to every policy loaded, in the same order.

The reference is the engine's former rule, evaluated with a fresh evaluator per call (nothing cached): every
pending judge on the call's contract in load order, then the judges of any contract.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_utils import to_checksum_address

from onguard.chain.view import ReadFailure
from onguard.config import Config
from onguard.errors import OnguardError
from onguard.observations import BlockObservation, TransactionObservation, frozen_mapping
from onguard.policies.engine import EngineResult, PolicyEngine
from onguard.policies.kinds.base import PolicyEnv
from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict
from onguard.policies.reads import ReadSpec, parse_read
from onguard.policies.selfdefence import builtin_policies
from policykit import CHAIN_ID, block, ids, load_text

SENDERS = [to_checksum_address("0x" + f"{n:02x}" * 20) for n in (0x11, 0x22, 0x33)]
GUARDIAN = to_checksum_address("0x" + "9a" * 20)
READS = {"assets": "vault.totalAssets()", "price": "oracle.price()"}
# Conditions over what every call has (no args: a policy may watch several functions), one of them failing on
# some calls (a division by zero when tx.value is 0) and some reading state that may have failed.
WHERES = ["tx.value > 1", "tx.from != contracts.vault", "block.number > 7", "100 / tx.value > 1",
          "state.assets > 5", "state.price < 3 or tx.value == 2", "tx.from == contracts.oracle"]


def common(id: str) -> PolicyCommon:
    return PolicyCommon(id=id, kind="fake", description=id, severity=Severity.HIGH, response=(), cooldown=0.0,
                        enabled=True, dry_run=False, confirmations=0, file=Path(f"{id}.toml"))


@dataclass
class EveryCallJudge:
    """A pending judge that is not a call policy: it looks at every call to its contract (or, with no contract,
    to any), whatever the function; it trips on an odd value and cannot judge a value of 2."""

    policy: Any
    common: PolicyCommon
    reads: frozenset[ReadSpec] = frozenset()
    history_blocks: int = 0

    def observe(self, batch: Any, state: Any) -> None:
        return None

    def forget_from(self, block_number: int) -> None:
        return None

    def observe_pending(self, tx: TransactionObservation, state: Any, head: BlockObservation) -> Finding | None:
        if self.policy.contract is not None and tx.contract != self.policy.contract:
            return None
        if tx.value == 2:
            raise ValueError(f"cannot judge {tx.hash}")
        if tx.value % 2 == 0:
            return None
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=f"{self.common.id} on {tx.hash}",
                       block_number=head.number, block_time=head.timestamp, evidence={"tx": tx.hash})


@dataclass
class EveryCallPolicy:
    contract: str | None
    common: PolicyCommon

    def evaluator(self) -> EveryCallJudge:
        return EveryCallJudge(policy=self, common=self.common)


def random_call_policy(rng: random.Random, index: int, config: Config, tmp_path: Path, env: PolicyEnv) -> Any:
    contract = rng.choice(list(config.contracts))
    signatures = sorted(config.contracts[contract].abi.functions_by_signature)
    functions = rng.sample(signatures, rng.randint(1, min(3, len(signatures))))
    lines = [f'contract = "{contract}"', "functions = [" + ", ".join(f'"{f}"' for f in functions) + "]"]
    senders = [s.lower() for s in SENDERS] + ["vault", "oracle"]
    if rng.random() < 0.3:
        lines.append("allow_from = [" + ", ".join(f'"{s}"' for s in rng.sample(senders, 2)) + "]")
    if rng.random() < 0.2:
        lines.append("deny_from = [" + ", ".join(f'"{s}"' for s in rng.sample(senders, 3)) + "]")
    reads = ""
    if rng.random() < 0.7:
        lines.append(f'where = "{rng.choice(WHERES)}"')
        reads = "[reads]\n" + "".join(f'{name} = "{text}"\n' for name, text in READS.items())
    text = (f'id = "call-{index}"\ndescription = "call {index}"\nkind = "call"\nseverity = "high"\n'
            f'response = ["alert"]\n[match]\n' + "\n".join(lines) + "\n" + reads)
    return load_text(tmp_path / "policies", env, text, f"call-{index}.toml")


def random_call(rng: random.Random, number: int, config: Config) -> TransactionObservation:
    contract = rng.choice(list(config.contracts))
    every = sorted({s for c in config.contracts.values() for s in c.abi.functions_by_signature})
    own = sorted(config.contracts[contract].abi.functions_by_signature)
    function = rng.choice([rng.choice(own), rng.choice(own), rng.choice(every), None])
    sender = rng.choice(SENDERS + [config.contracts["vault"].address, config.contracts["oracle"].address])
    return TransactionObservation(chain_id=CHAIN_ID, hash=f"0x{number:064x}", block_number=None, sender=sender,
                                  to=config.contracts[contract].address, contract=contract,
                                  value=rng.choice([0, 1, 2, 3, 10**18]), input=b"", function=function,
                                  args=frozen_mapping({}))


def heads(config: Config) -> list[tuple[dict[ReadSpec, Any], BlockObservation]]:
    """Heads and their state: read (the same state on two heads, two states on one head), one read failed, one
    value missing."""
    assets, price = (parse_read(READS[name], config.contracts) for name in ("assets", "price"))
    same_state, same_head = {assets: 10, price: 1}, block(9)
    return [(same_state, block(8)), (same_state, block(6)),
            ({assets: 1, price: 5}, same_head),
            ({assets: ReadFailure(assets, "execution reverted"), price: 1}, same_head),
            ({price: 1}, block(10))]


def every_policy(policies: list[Any], tx: TransactionObservation, state: Any,
                 head: BlockObservation) -> EngineResult:
    """The former rule: every pending judge on the call's contract, then those of any contract."""
    result = EngineResult()
    on_contract = [p for p in policies if getattr(p, "contract", None) is not None and hasattr(p, "evaluator")]
    anywhere = [p for p in policies if isinstance(p, EveryCallPolicy) and p.contract is None]
    for policy in [p for p in on_contract if p.contract == tx.contract] + anywhere:
        judge = policy.evaluator()
        if not hasattr(judge, "observe_pending"):
            continue
        try:
            finding = judge.observe_pending(tx, state, head)
        except (OnguardError, ArithmeticError, KeyError, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, OnguardError) else f"{type(exc).__name__}: {exc}"
            result.failures.append(SimpleNamespace(policy_id=judge.common.id, block_number=head.number,
                                                   message=message))
            continue
        if finding is not None:
            result.findings.append(finding)
    return result


@pytest.fixture
def self_defence(config: Config) -> Any:
    (policy,) = builtin_policies(config, GUARDIAN)
    return policy


@pytest.mark.parametrize("seed", range(12))
def test_the_index_finds_exactly_what_every_policy_would(seed: int, config: Config, env: PolicyEnv,
                                                         tmp_path: Path, self_defence: Any) -> None:
    rng = random.Random(seed)
    policies: list[Any] = [random_call_policy(rng, index, config, tmp_path, env) for index in range(40)]
    for index, contract in enumerate(["vault", "oracle", None, "vault"]):
        policies.insert(rng.randrange(len(policies)), EveryCallPolicy(contract, common(f"every-{index}")))
    policies.insert(rng.randrange(len(policies)), self_defence)
    engine = PolicyEngine(policies)
    at = heads(config)
    compared = {"findings": 0, "failures": 0}

    for number in range(400):
        tx = random_call(rng, number, config)
        state, head = rng.choice(at)  # heads alternate: nothing judged on one may leak into another
        expected = every_policy(policies, tx, state, head)

        got = engine.judge_call(SimpleNamespace(observation=tx, raw={}), state, head)

        assert got.findings == expected.findings
        assert [(f.policy_id, f.block_number, f.message) for f in got.failures] == \
            [(f.policy_id, f.block_number, f.message) for f in expected.failures]
        compared["findings"] += len(got.findings)
        compared["failures"] += len(got.failures)
    # The comparison covered calls that trip and calls that cannot be judged, not only calls that pass.
    assert compared["findings"] > 20 and compared["failures"] > 20, compared


def write_call(make: Callable[[str, str], Any], id: str, function: str, where: str | None = None) -> Any:
    condition = f'where = "{where}"\n[reads]\nassets = "vault.totalAssets()"\n' if where else ""
    return make(id, f'[match]\ncontract = "vault"\nfunction = "{function}"\n{condition}')


@pytest.fixture
def make(tmp_path: Path, env: PolicyEnv) -> Callable[[str, str], Any]:
    def build(id: str, body: str) -> Any:
        header = f'id = "{id}"\ndescription = "{id}"\nkind = "call"\nseverity = "high"\nresponse = ["alert"]\n'
        return load_text(tmp_path / "policies", env, header + body, f"{id}.toml")

    return build


def deposit(sender: str = SENDERS[0]) -> TransactionObservation:
    return TransactionObservation(chain_id=CHAIN_ID, hash="0x" + "44" * 32, block_number=None, sender=sender,
                                  to="0x" + "ab" * 20, contract="vault", value=0, input=b"",
                                  function="deposit(uint256,address)", args=frozen_mapping({}))


def test_a_call_is_shown_only_to_the_policies_watching_its_function(make: Callable[[str, str], Any]) -> None:
    policies = [write_call(make, "pause-call", "pause"), write_call(make, "deposit-a", "deposit"),
                write_call(make, "unpause-call", "unpause"), write_call(make, "deposit-b", "deposit", "tx.value > 0")]
    engine = PolicyEngine(policies)
    state = {next(iter(policies[3].reads.specs.values())): 1}

    result = engine.judge_call(SimpleNamespace(observation=deposit(), raw={}), state, block(8))

    assert result.evaluated == ["deposit-a", "deposit-b"]
    assert ids(result.findings) == ["deposit-a"]


def test_a_failed_read_is_reported_on_every_call_to_the_contract_as_before(make: Callable[[str, str], Any]) -> None:
    # A condition whose state could not be read cannot say "safe" about any call to its contract, whatever the
    # function: the failure is reported, as when every policy on the contract judged every call to it.
    watching_pause = write_call(make, "pause-call", "pause", "state.assets > 0")
    engine = PolicyEngine([watching_pause, write_call(make, "deposit-a", "deposit")])
    spec = next(iter(watching_pause.reads.specs.values()))
    failed, fine = {spec: ReadFailure(spec, "execution reverted")}, {spec: 5}

    broken = engine.judge_call(SimpleNamespace(observation=deposit(), raw={}), failed, block(8))
    healthy = engine.judge_call(SimpleNamespace(observation=deposit(), raw={}), fine, block(9))

    assert ids(broken.failures) == ["pause-call"] and ids(broken.findings) == ["deposit-a"]
    assert "state.assets = vault.totalAssets() failed: execution reverted" in broken.failures[0].message
    assert healthy.evaluated == ["deposit-a"] and not healthy.failures
