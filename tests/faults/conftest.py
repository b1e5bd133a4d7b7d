"""Fault-injection fixtures: `fault_proxy(upstream_url)` makes a FaultProxy in front of a node, stopped after the
test whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import structlog

from onguard.demo.world import Roles, dev_account

from ..conftest import GUARDIAN_KEY_ENV
from .proxy import FaultProxy


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream_url: str) -> FaultProxy:
        proxy = FaultProxy(upstream_url).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """`onguard` commands run in-process point structlog at the capsys stream of the moment: undo it after each
    test, or later tests log to a closed file."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered guardian key, where the configs written here say it is."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
