"""The protocol a scenario plays on, whatever it is: named contracts with their ABIs, accounts (Anvil's keys or
impersonated addresses), and the fixtures that build a protocol on a fresh chain and hand back the team's config.

A fixture is a Python file next to the scenarios (`[fork] fixture = "fixtures/x.py"`) with two names:
`ABIS` (contract name → ABI list, known before any chain starts, so calls are checked when the file is read) and
`build(rpc_url, folder) -> Deployment`. The replay imports nothing of any protocol: what it knows comes from the
scenario, the config and the fixture it names.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from onguard.chain.anvil import DEV_MNEMONIC
from onguard.errors import InputError, ToolchainError
from onguard.paths import ARTIFACTS_DIR

Account.enable_unaudited_hdwallet_features()

ANVIL_KEYS = 10  # anvil's development accounts: indices 0..9 of its mnemonic

# What the replay needs of a token whose value counts: any ERC-20 answers these.
ERC20_ABI: tuple[dict[str, Any], ...] = (
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
    {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a fixture built: the config a protocol team would write for it, and the addresses of the names the
    config does not hold (the Safe's owners, depositors, tokens not watched…)."""

    config: Path
    addresses: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Fixture:
    path: Path
    abis: Mapping[str, tuple[dict[str, Any], ...]]
    build: Callable[[str, Path], Deployment]


@cache
def dev_key(index: int) -> LocalAccount:
    """Anvil's public development keys (test chains only): every fork the replay starts unlocks them."""
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def forge_artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS_DIR / f"{name}.sol" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolchainError(f"no compiled contract {name!r} ({path})",
                             hint="build the contracts: ./node_modules/.bin/forge build") from None


def read_abi(text: str, base: Path) -> tuple[dict[str, Any], ...]:
    """`abi = "Vault"` (a forge artifact of contracts/src) or `abi = "abis/pool.json"` (a JSON ABI or an
    artifact, relative to the scenario). Raises ValueError with what is wrong."""
    if text.endswith(".json"):
        path = (base / text).resolve()
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"ABI file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"ABI file {path} is not JSON ({exc})") from None
    else:
        try:
            document = forge_artifact(text)
        except ToolchainError as exc:
            raise ValueError(exc.message) from None
    abi = document.get("abi") if isinstance(document, dict) else document
    if not isinstance(abi, list):
        raise ValueError("not an ABI: expected a JSON list or an artifact with an \"abi\" list")
    return tuple(abi)


def load_fixture(path: Path, *, file: str, field: str) -> Fixture:
    """Imports a fixture file by its path (it is not a module of onguard)."""
    spec = importlib.util.spec_from_file_location(f"onguard_replay_fixture_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import the fixture {path}", file=file, field=field,
                         hint="a Python file defining ABIS and build(rpc_url, folder)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    abis, build = getattr(module, "ABIS", None), getattr(module, "build", None)
    if not isinstance(abis, Mapping) or not callable(build):
        raise InputError(f"the fixture {path} does not define ABIS and build()", file=file, field=field,
                         hint="ABIS = {name: abi list}; def build(rpc_url, folder) -> Deployment")
    return Fixture(path=path, abis={name: tuple(abi) for name, abi in abis.items()}, build=build)
