"""Shared helpers for the unit tests: TOML files written to tmp_path, a valid config, hand-made policies.

Nothing here touches a chain or the network; the only files read outside tmp_path are the compiled contract
artifacts in contracts/out and the repo's policies/ folder.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from onguard.config import Config, load_config
from onguard.policies.kinds.base import PolicyEnv

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "contracts" / "out"
REPO_POLICIES = REPO / "policies"

# Arbitrary, valid addresses written in lower case (the loader must checksum them).
SAFE = "0x" + "5a" * 20
MODULE = "0x" + "3c" * 20
VAULT = "0x" + "ab" * 20
BREAKER = "0x" + "cd" * 20
ORACLE = "0x" + "ef" * 20
ASSET = "0x" + "a5" * 20

KEY_ENV = "ONGUARD_UNIT_TEST_KEY"


def artifact(name: str) -> Path:
    return ARTIFACTS / f"{name}.sol" / f"{name}.json"


# ---- a tiny TOML writer (enough for config and policy files: scalars, lists of scalars, nested tables) ----

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: how lists of tables ([[calls]]) are written here
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}.{key}" if prefix else key
            scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
            if scalars or not value:
                text += f"\n[{name}]\n" + to_toml(scalars)
            text += to_toml({k: v for k, v in value.items() if isinstance(v, dict)}, name)
    return text


def base_config_data(policies_dir: str = "policies") -> dict[str, Any]:
    """A complete, valid onguard.toml as a dict; tests copy it and break one thing."""
    return {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337, "poll_interval": "100ms",
                  "start_block": "latest"},
        "safe": {"address": SAFE, "guardian_module": MODULE},
        "guardian": {"key_env": KEY_ENV},
        "contracts": {
            "vault": {"address": VAULT, "abi": str(artifact("Vault"))},
            "breaker": {"address": BREAKER, "abi": str(artifact("CircuitBreaker"))},
            "oracle": {"address": ORACLE, "abi": str(artifact("PriceOracle"))},
            "asset": {"address": ASSET, "abi": str(artifact("TestToken"))},
        },
        "actions": {
            "pause_vault": {"contract": "vault", "call": "pause()", "done_when": "paused()"},
            "trip_breaker": {"contract": "breaker", "call": "trip()", "done_when": "tripped()"},
        },
        "policies": {"dir": policies_dir},
        "state": {"database": "onguard.db"},
    }


def base_policy_data() -> dict[str, Any]:
    """A valid event policy (the demo's vault-drain, in the current format) against base_config_data's contracts
    and actions."""
    return {
        "id": "vault-drain",
        "description": "withdrawals above a quarter of the vault",
        "kind": "event",
        "severity": "critical",
        "response": ["pause_vault"],
        "cooldown": "1h",
        "match": {"contract": "vault", "event": "Withdraw"},
        "aggregate": {"function": "sum", "of": "assets", "window_blocks": 5},
        "reads": {"assets": "vault.totalAssets()"},
        "trigger": {"condition": "value > 25% * (state.assets + value)"},
    }


def base_state_policy_data() -> dict[str, Any]:
    """A valid state policy: the vault holds at least what its shares are worth one to one."""
    return {
        "id": "vault-solvent",
        "description": "the vault holds at least one asset per share",
        "kind": "state",
        "severity": "high",
        "response": ["alert"],
        "reads": {"assets": "vault.totalAssets()", "supply": "vault.totalSupply()"},
        "trigger": {"invariant": "state.assets >= state.supply"},
    }


@pytest.fixture
def artifacts_dir() -> Path:
    """contracts/out: the compiled forge artifacts (each has an "abi" list)."""
    return ARTIFACTS


@pytest.fixture
def repo_policies_dir() -> Path:
    return REPO_POLICIES


@pytest.fixture
def config_data() -> dict[str, Any]:
    return copy.deepcopy(base_config_data())


@pytest.fixture
def policy_data() -> dict[str, Any]:
    return copy.deepcopy(base_policy_data())


@pytest.fixture
def state_policy_data() -> dict[str, Any]:
    return copy.deepcopy(base_state_policy_data())


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[..., Path]:
    """write_toml(data_or_text, name="onguard.toml") -> the path written under tmp_path."""

    def write(data: dict[str, Any] | str, name: str = "onguard.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else to_toml(data))
        return path

    return write


@pytest.fixture
def config(write_toml: Callable[..., Path]) -> Config:
    """The base config loaded from tmp_path/onguard.toml (its policies dir is tmp_path/policies, not created)."""
    return load_config(write_toml(base_config_data()))


@pytest.fixture
def write_policy(config: Config) -> Callable[..., Path]:
    """write_policy(data_or_text, name="policy.toml") -> the file written in the config's policies folder."""

    def write(data: dict[str, Any] | str, name: str = "policy.toml") -> Path:
        config.policies_dir.mkdir(parents=True, exist_ok=True)
        path = config.policies_dir / name
        path.write_text(data if isinstance(data, str) else to_toml(data))
        return path

    return write


@pytest.fixture
def env(config: Config) -> PolicyEnv:
    """What policy files may refer to: the base config's watched contracts and actions."""
    return PolicyEnv(contracts=config.contracts, actions=config.actions)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog to print to the sys.stderr of the moment (capsys's): undo it after each test."""
    yield
    structlog.reset_defaults()
