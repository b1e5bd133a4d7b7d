"""What the kinds share: the load-time environment, named state reads, and the evaluation context."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from onguard.chain.view import ReadFailure
from onguard.config import ActionSettings, WatchedContract
from onguard.observations import BlockBatch
from onguard.policies.expr import EvaluationError, Expression, ExpressionError, compile_condition
from onguard.policies.model import Finding, PolicyCommon
from onguard.policies.reads import ReadSpec, expression_type, parse_read
from onguard.tomlfields import Table

StateValues = Mapping[ReadSpec, Any]  # a value, or a ReadFailure
READ_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class PolicyEnv:
    """What a policy file may refer to: the config's watched contracts and actions."""

    contracts: Mapping[str, WatchedContract]
    actions: Mapping[str, ActionSettings]

    def contract(self, table: Table, key: str) -> WatchedContract:
        name = table.get(key, str)
        if name not in self.contracts:
            raise table.fail(key, f"no watched contract named {name!r}",
                             f"watched contracts (onguard.toml [contracts]): {', '.join(self.contracts)}")
        return self.contracts[name]

    def address_schema(self) -> dict[str, str]:
        return {f"contracts.{name}": "address" for name in self.contracts}

    def address_context(self) -> dict[str, Any]:
        return {"contracts": {name: c.address for name, c in self.contracts.items()}}


@dataclass(frozen=True, slots=True)
class NamedReads:
    """A policy's [reads] table: names for view calls, visible in conditions as state.NAME."""

    specs: Mapping[str, ReadSpec] = field(default_factory=dict)

    @classmethod
    def parse(cls, table: Table | None, env: PolicyEnv) -> NamedReads:
        if table is None:
            return cls()
        specs: dict[str, ReadSpec] = {}
        for name in table.keys():
            if not READ_NAME.match(name):
                raise table.fail(name, f"{name!r} cannot be used as state.{name} in conditions",
                                 "name reads with a letter then letters, digits or _, e.g. total_assets")
            specs[name] = table.parsed(name, lambda text: read_from_policy(text, env))
        table.finish()
        return cls(MappingProxyType(specs))

    def schema(self) -> dict[str, str]:
        return {f"state.{name}": expression_type(spec.output_type) or "number" for name, spec in self.specs.items()}

    def context(self, values: StateValues) -> dict[str, Any]:
        """state.NAME → value; a failed read raises, so the policy reports an error rather than "safe"."""
        state = {}
        for name, spec in self.specs.items():
            value = values[spec]
            if isinstance(value, ReadFailure):
                raise EvaluationError(f"read state.{name} = {spec.text} failed: {value.reason}")
            state[name] = value
        return state

    def texts(self) -> dict[str, str]:
        return {name: spec.text for name, spec in self.specs.items()}


def read_from_policy(text: object, env: PolicyEnv) -> ReadSpec:
    if not isinstance(text, str):
        raise ValueError(f"expected a read such as \"vault.totalAssets()\", got {text!r}")
    try:
        return parse_read(text, env.contracts)
    except ValueError as exc:
        message, _, hint = str(exc).partition(" — ")
        raise ValueError(f"{message}{f' ({hint})' if hint else ''}") from None


def condition(table: Table, key: str, schema: Mapping[str, str], *,
              hint: str = "a condition, e.g. \"value > 25% * state.assets\"") -> Expression:
    """Compiles a condition field, turning expression errors into policy errors at that field."""
    source = table.get(key, str, hint=hint)
    try:
        return compile_condition(source, schema)
    except ExpressionError as exc:
        raise table.fail(key, exc.message, exc.hint) from None


BLOCK_SCHEMA = {"block.number": "number", "block.timestamp": "number"}


def block_context(batch: BlockBatch) -> dict[str, Any]:
    return {"number": batch.block.number, "timestamp": batch.block.timestamp}


class MemorylessEvaluator:
    """The part shared by kinds that judge each block on its own: nothing kept between blocks, so nothing to
    forget after a reorganisation and nothing to replay after a restart."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.common: PolicyCommon = policy.common

    @property
    def history_blocks(self) -> int:
        return 0

    @property
    def reads(self) -> frozenset[ReadSpec]:
        return frozenset(self.policy.reads.specs.values())

    def forget_from(self, block_number: int) -> None:
        """Nothing kept between blocks."""


class Evaluator(Protocol):
    """Evaluates one policy, block after block. Pure: chain state arrives as already-read values."""

    common: PolicyCommon

    @property
    def reads(self) -> frozenset[ReadSpec]: ...

    @property
    def history_blocks(self) -> int: ...

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None: ...

    def forget_from(self, block_number: int) -> None: ...


class Policy(Protocol):
    common: PolicyCommon
    reads: NamedReads

    def evaluator(self) -> Evaluator: ...

    def explain(self) -> list[str]: ...
