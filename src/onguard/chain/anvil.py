"""Starts and stops local Anvil nodes (the demo's chain, test chains and forks) from the pinned npm Foundry."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from onguard.errors import ChainUnavailable, ToolchainError
from onguard.paths import PROJECT_ROOT

# Anvil's well-known development mnemonic: its keys are public, so they only ever hold test-chain ether.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_binary() -> str:
    """ONGUARD_ANVIL, else the pinned npm Foundry's platform binary itself — its node_modules/.bin launcher is a
    Node.js script starting that same binary, 0.4-0.7 s of Node start-up per node on 2 busy cores — else the
    launcher, else anvil on the PATH."""
    platform = sorted((PROJECT_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    candidates = [os.environ.get("ONGUARD_ANVIL"), *(str(path) for path in platform),
                  str(PROJECT_ROOT / "node_modules" / ".bin" / "anvil"), shutil.which("anvil")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise ToolchainError("anvil not found", hint="run ./onguard once from the repository (it installs Foundry "
                                                 "from npm), or set ONGUARD_ANVIL to an anvil binary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AnvilNode:
    """A running anvil process. Use as a context manager so it is stopped on every exit path."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    args: tuple[str, ...] = field(default=())

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> AnvilNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(*extra_args: str, chain_id: int = 31337, timeout: float = 20.0,
                log_path: Path | None = None) -> AnvilNode:
    """Starts anvil on a free local port and waits until it answers JSON-RPC."""
    port = free_port()
    args = (anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id),
            "--mnemonic", DEV_MNEMONIC, "--silent", *extra_args)
    output = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    node = AnvilNode(port=port, process=process, log_path=log_path, args=tuple(extra_args))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChainUnavailable(f"anvil exited with code {process.returncode} at start-up",
                                   hint=f"arguments were: {' '.join(extra_args) or '(none)'}")
        if _answers(node.rpc_url):
            return node
        time.sleep(0.05)
    node.stop()
    raise ChainUnavailable(f"anvil did not answer on port {port} within {timeout:.0f}s")


def _answers(url: str) -> bool:
    request = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
