"""Replicas under test: N `onguard run` processes, each with its own guardian key registered on the module and its
own replica id, against one Anvil chain and one PostgreSQL database (a replica's database connection may go
through a FaultProxy, to cut it). Each logs JSON lines to a file the test reads; `wait_for` waits on a condition,
bounded only so that a broken build fails instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from safe_eth.eth import EthereumClient

from onguard.demo.world import contract, dev_account, exec_as_owners, write_config

LIMIT = 90.0  # seconds
ONGUARD = [sys.executable, "-m", "onguard.cli.main", "--log-format", "json"]
# Dev accounts of the default mnemonic past the demo's roles: each replica's own guardian key (the first replica
# uses the demo's registered guardian, index 4).
REPLICA_KEYS = (4, 12, 13, 14)


@dataclass
class Replica:
    name: str
    account: LocalAccount
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    _handle: Any = field(default=None, repr=False)

    def start(self) -> None:
        env = {**os.environ, _key_env(self.name): self.account.key.to_0x_hex()}
        self._handle = self.log.open("ab")
        self.process = subprocess.Popen([*ONGUARD, "run", "--config", str(self.config)], stdout=self._handle,
                                        stderr=self._handle, env=env)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """Every complete JSON line logged so far (a line still being written is left for the next look)."""
        text = self.log.read_text() if self.log.exists() else ""
        lines = text.split("\n")[:-1]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def saw(self, event: str, **fields: Any) -> bool:
        return any(e.get("event", "").startswith(event) and all(e.get(k) == v for k, v in fields.items())
                   for e in self.events())

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (the leases are not released; they must expire)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=LIMIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self._handle is not None:
            self._handle.close()
        return int(self.process.returncode)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text() if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def register_guardians(chain: Any, accounts: list[LocalAccount]) -> None:
    """The Safe's owners add each replica's key as a guardian of the module (an ordinary multisig transaction), and
    the chain gives each key gas money."""
    world, w3 = chain.world, chain.w3
    module = contract(w3, "GuardianModule", world.module)
    client = EthereumClient(world.rpc_url)
    for account in accounts:
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        if not module.functions.isGuardian(account.address).call():
            exec_as_owners(client, world.safe, world.module, module.encode_abi("addGuardian", [account.address]))


def replica_config(chain: Any, folder: Path, name: str, database_url: str, extra_toml: str = "",
                   **replicas: str) -> Path:
    """The demo world's onguard.toml for one replica: its key from its own variable, the shared PostgreSQL
    database, and a [replicas] section (`replicas`: TOML values as written), then `extra_toml`."""
    path = write_config(chain.world, folder / name, key_env=_key_env(name), poll_interval="50ms",
                        database=folder / name / "unused.db")
    text = path.read_text()
    start = text.index("[state]")
    text = text[:start] + f'[state]\ndatabase_url = "{database_url}"\n'
    text += f'\n[replicas]\nid = "{name}"\n' + "".join(f"{key} = {value}\n" for key, value in replicas.items())
    path.write_text(text + extra_toml)
    return path


@contextmanager
def replicas(chain: Any, folder: Path, urls: list[str], extra_toml: str = "",
             **settings: str) -> Iterator[list[Replica]]:
    """Starts one replica per database URL (replica i with key REPLICA_KEYS[i]); kills what is left after.
    `extra_toml`: sections every replica's config ends with."""
    accounts = [dev_account(index) for index in REPLICA_KEYS[:len(urls)]]
    register_guardians(chain, accounts)
    started: list[Replica] = []
    try:
        for index, (url, account) in enumerate(zip(urls, accounts, strict=True)):
            name = f"r{index + 1}"
            config = replica_config(chain, folder, name, url, extra_toml, **settings)
            replica = Replica(name=name, account=account, config=config, log=folder / f"{name}.log")
            replica.start()
            started.append(replica)
        yield started
    finally:
        for replica in started:
            if replica.running:
                replica.process.kill()  # type: ignore[union-attr]
                replica.process.wait(timeout=30)  # type: ignore[union-attr]


def wait_for(condition: Callable[[], Any], what: str, replicas_: list[Replica] | None = None) -> Any:
    deadline = time.monotonic() + LIMIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {r.name} ---\n{r.tail()}" for r in replicas_ or [])
            raise AssertionError(f"never happened: {what}\n{logs}")
        time.sleep(0.05)


def _key_env(name: str) -> str:
    return f"ONGUARD_TEST_REPLICA_KEY_{name.upper()}"
