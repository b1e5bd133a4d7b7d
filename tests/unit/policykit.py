"""Hand-built chain observations and policy-file helpers shared by the policy-layer unit tests.

Blocks are numbered from 1 with a 12-second slot (block n has timestamp T0 + 12 n) unless a test says
otherwise; logs get a block hash derived from their block number (and a `fork` number, to tell a reorganised
block from the original), so that observation ids are stable and distinct.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onguard.chain.view import ReadFailure
from onguard.observations import BlockBatch, BlockObservation, LogObservation, frozen_mapping
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.loader import load_policy
from onguard.policies.reads import ReadSpec

CHAIN_ID = 31337
T0 = 1_700_000_000
SLOT = 12
TOKEN = 10**18

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20
CAROL = "0x" + "c3" * 20


def block_hash(number: int, fork: int = 0) -> str:
    return "0x" + f"{fork:04x}{number:060x}"


def block(number: int, *, timestamp: int | None = None, fork: int = 0) -> BlockObservation:
    return BlockObservation(chain_id=CHAIN_ID, number=number, hash=block_hash(number, fork),
                            parent_hash=block_hash(number - 1, fork),
                            timestamp=T0 + SLOT * number if timestamp is None else timestamp)


def batch(number: int, *logs: LogObservation, timestamp: int | None = None, fork: int = 0) -> BlockBatch:
    return BlockBatch(block=block(number, timestamp=timestamp, fork=fork), logs=tuple(logs))


def log(number: int, index: int, event: str, args: dict[str, Any], *, contract: str = "vault",
        address: str = "0x" + "ab" * 20, fork: int = 0, tx: str | None = None) -> LogObservation:
    return LogObservation(chain_id=CHAIN_ID, block_number=number, block_hash=block_hash(number, fork),
                          transaction_hash=tx or "0x" + f"{fork:04x}{number:030x}{index:030x}", log_index=index,
                          contract=contract, address=address, event=event, args=frozen_mapping(args))


def withdraw(number: int, index: int, assets: int, *, owner: str = CAROL, receiver: str = CAROL,
             shares: int | None = None, fork: int = 0, contract: str = "vault", event: str = "Withdraw",
             tx: str | None = None) -> LogObservation:
    """A decoded Vault.Withdraw (argument names as the ABI gives them)."""
    args = {"sender": owner, "receiver": receiver, "owner": owner, "assets": assets,
            "shares": assets if shares is None else shares}
    return log(number, index, event, args, contract=contract, fork=fork, tx=tx)


def write_policy_text(folder: Path, text: str, name: str = "policy.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def load_text(folder: Path, env: PolicyEnv, text: str, name: str = "policy.toml") -> Any:
    """Writes a policy file (dedented) under `folder` and loads it; returns the policy (typed Any so tests can
    reach kind-specific fields)."""
    return load_policy(write_policy_text(folder, text, name), env)


def state(policy: Policy, **values: Any) -> dict[ReadSpec, Any]:
    """The state dict an evaluator receives, keyed by the ReadSpec behind each of the policy's read names."""
    specs = policy.reads.specs  # type: ignore[attr-defined]
    assert set(values) == set(specs), f"give a value for each read: {sorted(specs)}"
    return {specs[name]: value for name, value in values.items()}


def failed(policy: Policy, name: str, reason: str = "execution reverted") -> ReadFailure:
    return ReadFailure(policy.reads.specs[name], reason)  # type: ignore[attr-defined]


def ids(items: Iterable[Any]) -> list[str]:
    return [item.policy.id if hasattr(item, "policy") else item.policy_id for item in items]
