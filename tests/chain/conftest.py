"""Multisig fixtures for the signers' tests: the demo world under a 2-of-3 Safe (the shared base chain) and under
a 3-of-5 Safe (a second base chain built once per session), each test on a fresh fork. And the real protocols
(tests/fixtures/protocols) on a base chain of their own, built once per session, forked per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog
from eth_account.signers.local import LocalAccount
from safe_eth.eth import EthereumClient
from web3 import Web3

from onguard.chain.anvil import AnvilNode, start_anvil
from onguard.demo.world import Roles, World, build_world, dev_account

from ..conftest import Chain
from ..fixtures.protocols import ProtocolWorlds, build_protocols

OWNERS_3_OF_5 = (*Roles.OWNERS, 10, 11)  # dev accounts 10 and 11 hold no ether: signing needs none


@dataclass
class Multisig:
    chain: Chain
    owners: tuple[LocalAccount, ...]
    threshold: int

    @property
    def label(self) -> str:
        return f"{self.threshold}-of-{len(self.owners)}"


@pytest.fixture(scope="session")
def base_chain_3_of_5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AnvilNode, World]]:
    log = tmp_path_factory.mktemp("base-chain-3-of-5") / "anvil.log"
    with start_anvil(log_path=log) as node:
        yield node, build_world(node.rpc_url, owner_indexes=OWNERS_3_OF_5, threshold=3)


@pytest.fixture(params=["2-of-3", "3-of-5"])
def multisig(request, base_chain) -> Iterator[Multisig]:
    if request.param == "2-of-3":
        base, world, indexes = *base_chain, Roles.OWNERS
    else:
        base, world = request.getfixturevalue("base_chain_3_of_5")
        indexes = OWNERS_3_OF_5
    with start_anvil("--fork-url", base.rpc_url) as fork:
        chain = Chain(node=fork, world=world.at(fork.rpc_url), w3=Web3(Web3.HTTPProvider(fork.rpc_url)))
        yield Multisig(chain=chain, owners=tuple(dev_account(i) for i in indexes), threshold=world.threshold)


@dataclass
class ProtocolsChain:
    node: AnvilNode
    worlds: ProtocolWorlds
    client: EthereumClient

    @property
    def w3(self) -> Web3:
        return self.client.w3


@pytest.fixture(scope="session")
def protocols_base_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AnvilNode, ProtocolWorlds]]:
    log = tmp_path_factory.mktemp("protocols-chain") / "anvil.log"
    with start_anvil(log_path=log) as node:
        yield node, build_protocols(node.rpc_url)


@pytest.fixture
def protocols(protocols_base_chain: tuple[AnvilNode, ProtocolWorlds]) -> Iterator[ProtocolsChain]:
    """A fresh fork of the real protocols' base chain: Balancer V2, Uniswap V2 and the GuardedToken, each under
    its own Safe with the GuardianModule."""
    base, worlds = protocols_base_chain
    with start_anvil("--fork-url", base.rpc_url) as fork:
        yield ProtocolsChain(node=fork, worlds=worlds, client=EthereumClient(fork.rpc_url))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands run in-process configure structlog to print to the sys.stderr of the moment (capsys's): undo it
    after each test, or later tests log to a closed file."""
    yield
    structlog.reset_defaults()
