"""Chain fixtures: one base chain with the Safe, module and demo protocol deployed once per session, and a fresh
Anvil fork of it for every test that needs a chain (isolated, and cheap: a fork starts in well under a second)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from onguard.chain.anvil import AnvilNode, start_anvil
from onguard.demo.world import Roles, World, build_world, dev_account, write_config
from tests.pg import postgres_url, state_location  # noqa: F401  (fixtures for every tier)

GUARDIAN_KEY_ENV = "ONGUARD_TEST_GUARDIAN_KEY"


@pytest.fixture(autouse=True)
def _alone_when_marked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, a test marked `alone` runs while no other worker runs a test: it holds an exclusive lock
    on a file all workers of this run share, every other test a shared one. For tests whose outcome depends on the
    machine's spare CPU (the flood: 2,000 pending transactions judged against a deadline), so that a second worker
    cannot starve them. Without xdist there is no other worker, and nothing is locked."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    mode = fcntl.LOCK_EX if request.node.get_closest_marker("alone") else fcntl.LOCK_SH
    # (the workers' temporary folders are popen-gwN inside one folder of this run)
    with open(tmp_path_factory.getbasetemp().parent / "alone.lock", "a") as lock:
        fcntl.flock(lock, mode)
        yield


@dataclass
class Chain:
    node: AnvilNode
    world: World
    w3: Web3

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])


@pytest.fixture(scope="session")
def base_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AnvilNode, World]]:
    # (its log in this run's, this worker's, temporary folder: runs and pytest-xdist workers each build their own)
    log = tmp_path_factory.mktemp("base-chain") / "anvil.log"
    with start_anvil(log_path=log) as node:
        yield node, build_world(node.rpc_url)


@pytest.fixture
def chain(base_chain: tuple[AnvilNode, World]) -> Iterator[Chain]:
    base, world = base_chain
    with start_anvil("--fork-url", base.rpc_url) as fork:
        yield Chain(node=fork, world=world.at(fork.rpc_url), w3=Web3(Web3.HTTPProvider(fork.rpc_url)))


@pytest.fixture
def guardian_config(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An onguard.toml for the forked world, with the registered guardian key in the environment."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    return write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms")


@pytest.fixture
def postgres_guardian_config(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> Path:  # noqa: F811
    """guardian_config with the state in a fresh PostgreSQL database ([state] database_url = postgres_url)."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    return write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms",
                        database_url=postgres_url)
