"""The daemon (Guardian.run) against broken read endpoints on a real Anvil fork, through the fault proxy: it
fails over to the next endpoint and says which one failed; a hung node is an error at the request deadline, not
after hidden retries; a node replaced by a fresh chain is said loudly and `onguard status` exits 1 saying why;
new heads arrive by subscription, and by polling when there is no WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from onguard.chain.anvil import start_anvil
from onguard.cli.main import main
from onguard.config import load_config
from onguard.runtime import Guardian
from onguard.sources.heads import HeadMode

from ..chain.helpers import until
from .daemon import configure, running
from .proxy import Mode

pytestmark = pytest.mark.chain

def events(logs: list[dict[str, Any]], text: str, *levels: str) -> list[dict[str, Any]]:
    return [e for e in logs if text in e["event"] and (not levels or e["log_level"] in levels)]


def test_a_black_holed_first_endpoint_is_failed_over_and_named(chain, tmp_path, fault_proxy, key_in_env):
    proxy = fault_proxy(chain.node.rpc_url)
    proxy.set_mode(Mode.BLACKHOLE)
    config_path = configure(chain, tmp_path, proxy.url, rpc_urls=f'["{chain.node.rpc_url}"]',
                            request_timeout='"500ms"')
    # The response goes out through the healthy node, not the black hole.
    config_path.write_text(config_path.read_text() + f'\n[[response.endpoints]]\nurl = "{chain.node.rpc_url}"\n')

    async def follow(guardian: Guardian) -> None:
        for _ in range(3):
            await asyncio.to_thread(chain.mine, 1)
            head = chain.w3.eth.block_number
            await until(lambda: guardian.source.last_committed == head, f"block {head} handled")

    with capture_logs() as logs:
        guardian = asyncio.run(running(config_path, follow))
    failed = events(logs, "rpc endpoint failed", "error")
    assert failed, "no log named the failing endpoint"
    assert {e["endpoint"] for e in failed} == {f"read#1 http://127.0.0.1:{proxy.port}"}
    assert failed[0]["trying_next"] == f"read#2 http://127.0.0.1:{chain.node.port}"
    assert "no answer within 0.5s" in failed[0]["error"]
    first, second = guardian.transport.health()[:2]
    assert not first.healthy and second.healthy


def test_a_hung_node_is_an_error_at_the_request_deadline(chain, tmp_path, fault_proxy, key_in_env):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url, request_timeout='"300ms"')

    def deadline_errors() -> list[dict[str, Any]]:
        return [e for e in events(logs, "chain unreachable", "error") if "no answer within 0.3s" in e["error"]]

    async def hang(guardian: Guardian) -> None:
        proxy.set_mode(Mode.BLACKHOLE)  # (closes the kept-alive connection: the first failure may be that)
        await asyncio.to_thread(chain.mine, 1)
        await until(deadline_errors, "an error about the hung node at the request deadline")

    with capture_logs() as logs:
        asyncio.run(running(config_path, hang))
    # The one deadline, not web3's hidden retries: the daemon's error says it waited 300 ms for one answer.
    (first, *_) = deadline_errors()
    assert "no read endpoint answered" in first["error"]
    endpoint = f"read#1 http://127.0.0.1:{proxy.port}"
    assert any(e["endpoint"] == endpoint and "no answer within 0.3s" in e["error"]
               for e in events(logs, "rpc endpoint failed", "error"))


def test_a_node_replaced_by_a_fresh_chain_is_said_loudly_and_status_exits_1(chain, tmp_path, fault_proxy,
                                                                           key_in_env, capsys):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url, stall_after='"1h"')
    config = load_config(config_path)

    with start_anvil(chain_id=config.chain.chain_id) as fresh:
        async def replace_the_node(guardian: Guardian) -> None:
            await asyncio.to_thread(chain.mine, 2)
            head = chain.w3.eth.block_number
            await until(lambda: guardian.source.last_committed == head, f"block {head} handled")
            proxy.retarget(fresh.rpc_url)  # same URL, another chain (a node restarted on a fresh state)
            await until(lambda: events(logs, "cannot trust what it sees", "critical"), "a critical log")

        with capture_logs() as logs:
            guardian = asyncio.run(running(config_path, replace_the_node))
        loud = [e["problem"] for e in events(logs, "cannot trust what it sees", "critical")]
        assert any(p.startswith("WRONG CHAIN") and "genesis" in p for p in loud)
        assert guardian.chain_health is not None and guardian.chain_health.wrong_chain

        structlog.reset_defaults()
        capsys.readouterr()
        assert main(["status", "--config", str(config_path)]) == 1
        out = capsys.readouterr().out
        assert "WRONG CHAIN" in out and "genesis" in out

    # And with the right node back, status is content again about the chain.
    proxy.retarget(chain.node.rpc_url)
    capsys.readouterr()
    assert main(["status", "--config", str(config_path)]) == 0, capsys.readouterr().out


def test_status_exits_1_when_blind_and_when_behind(chain, tmp_path, fault_proxy, key_in_env, capsys):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url, request_timeout='"300ms"', max_lag="3")

    asyncio.run(running(config_path, lambda guardian: asyncio.sleep(0)))
    capsys.readouterr()
    assert main(["status", "--config", str(config_path)]) == 0
    assert "endpoint      read#1" in capsys.readouterr().out

    chain.mine(5)  # the daemon is stopped: the chain moves on without it
    assert main(["status", "--config", str(config_path)]) == 1
    assert "BEHIND: the last handled block" in capsys.readouterr().out

    proxy.set_mode(Mode.BLACKHOLE)
    assert main(["status", "--config", str(config_path)]) == 1
    out = capsys.readouterr().out
    assert "BLIND: no read endpoint answers" in out and "no answer within 0.3s" in out


def test_new_heads_arrive_by_subscription(chain, tmp_path, key_in_env):
    # A poll interval of a minute: only the subscription can wake the loop in time.
    config_path = configure(chain, tmp_path, chain.node.rpc_url, ws_url=f'"{chain.node.ws_url}"')
    config_path.write_text(config_path.read_text().replace('poll_interval = "50ms"', 'poll_interval = "60s"'))

    async def follow(guardian: Guardian) -> None:
        await until(lambda: guardian.heads.mode == HeadMode.SUBSCRIPTION, "subscribed")
        for _ in range(2):
            await asyncio.to_thread(chain.mine, 1)
            head = chain.w3.eth.block_number
            await until(lambda: guardian.source.last_committed == head, f"block {head} handled")
        assert guardian.heads.notifications >= 2

    asyncio.run(running(config_path, follow))


def test_without_a_websocket_new_heads_are_polled(chain, tmp_path, fault_proxy, key_in_env):
    no_websocket = fault_proxy(chain.node.rpc_url)
    no_websocket.set_mode(Mode.DROP)
    config_path = configure(chain, tmp_path, chain.node.rpc_url, ws_url=f'"{no_websocket.ws_url}"')

    async def follow(guardian: Guardian) -> None:
        for _ in range(2):
            await asyncio.to_thread(chain.mine, 1)
            head = chain.w3.eth.block_number
            await until(lambda: guardian.source.last_committed == head, f"block {head} handled")
        assert guardian.heads.mode == HeadMode.POLL and guardian.heads.notifications == 0

    with capture_logs() as logs:
        asyncio.run(running(config_path, follow))
    assert events(logs, "new-heads subscription down: polling the head meanwhile", "warning")


def test_the_daemon_refuses_to_start_on_another_chain_than_its_database_watched(chain, tmp_path, fault_proxy,
                                                                               key_in_env, capsys):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url)
    asyncio.run(running(config_path, lambda guardian: asyncio.sleep(0)))  # the first start records the genesis
    with start_anvil(chain_id=chain.world.chain_id) as fresh:
        proxy.retarget(fresh.rpc_url)
        capsys.readouterr()
        assert main(["run", "--config", str(config_path)]) == 2
    error = capsys.readouterr().err
    assert f"{config_path}: chain.rpc_url: no read endpoint serves the chain this database watched" in error
    assert "genesis" in error and "hint:" in error


def test_a_start_block_far_beyond_the_head_is_refused_naming_the_field(chain, tmp_path, key_in_env, capsys):
    config_path = configure(chain, tmp_path, chain.node.rpc_url)
    far = chain.w3.eth.block_number + 1_000_000
    config_path.write_text(config_path.read_text().replace('start_block = "latest"', f"start_block = {far}"))
    assert main(["run", "--config", str(config_path)]) == 2
    error = capsys.readouterr().err
    assert f"{config_path}: chain.start_block: start_block {far} is far beyond the chain's head" in error
    assert "hint:" in error
