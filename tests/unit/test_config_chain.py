"""config.py, the [chain] section: read endpoints, new-heads WebSocket, deadlines and the stall threshold load
into ChainSettings; every number outside its sane range is a ConfigError naming file and field, with a hint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onguard.config import load_config
from onguard.errors import ChainError, ConfigError
from onguard.safe.chain import SafeOnChain

WriteToml = Callable[..., Path]


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_defaults_keep_one_read_endpoint_and_no_subscription(write_toml: WriteToml,
                                                             config_data: dict[str, Any]) -> None:
    chain = load_config(write_toml(config_data)).chain
    assert chain.read_urls == ("http://127.0.0.1:8545",)
    assert chain.ws_url is None
    assert chain.request_timeout == 10.0
    assert chain.stall_after == 60.0
    assert chain.max_lag == 20
    assert chain.requests_per_second == 500


def test_extra_read_endpoints_follow_rpc_url_in_order(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"].update(rpc_urls=["https://b.example/key", "http://10.0.0.3:8545"],
                                ws_url="ws://127.0.0.1:8546", request_timeout="2s", stall_after="45s",
                                max_lag=5, requests_per_second=50, poll_interval="10ms", max_block_range=10_000)
    chain = load_config(write_toml(config_data)).chain
    assert chain.read_urls == ("http://127.0.0.1:8545", "https://b.example/key", "http://10.0.0.3:8545")
    assert chain.ws_url == "ws://127.0.0.1:8546"
    assert (chain.request_timeout, chain.stall_after, chain.max_lag) == (2.0, 45.0, 5)
    assert chain.requests_per_second == 50
    assert chain.poll_interval == pytest.approx(0.01)
    assert chain.max_block_range == 10_000


@pytest.mark.parametrize(("field", "value", "says"), [
    ("poll_interval", "0s", "outside 10ms..60s"),
    ("poll_interval", "100000000000h", "outside 10ms..60s"),
    ("poll_interval", "61s", "outside 10ms..60s"),
    ("request_timeout", "0s", "outside 100ms..120s"),
    ("request_timeout", "1h", "outside 100ms..120s"),
    ("stall_after", "500ms", "outside 1s..86400s"),
    ("max_block_range", 0, "at least 1"),
    ("max_block_range", 10_001, "outside 1..10_000"),
    ("max_lag", 0, "outside 1..1_000_000"),
    ("requests_per_second", 0, "outside 1..100_000"),
])
def test_numbers_outside_their_range_are_refused(write_toml: WriteToml, config_data: dict[str, Any],
                                                 field: str, value: object, says: str) -> None:
    config_data["chain"][field] = value
    path = write_toml(config_data)
    error = load_error(path)
    assert (error.file, error.field) == (str(path), f"chain.{field}")
    assert says in str(error)
    assert error.hint and ("e.g." in error.hint)
    assert error.exit_code == 2


def test_every_endpoint_field_takes_a_websocket_url(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    """ws:// and wss:// go wherever http(s) does: the transport keeps one WebSocket open to each."""
    config_data["chain"].update(rpc_url="ws://127.0.0.1:8545", rpc_urls=["wss://b.example/key", "http://c:8545"])
    config_data["mempool"] = {"simulation_urls": ["ws://10.0.0.2:8545", "https://sim.example/key"]}
    config_data["response"] = {"endpoints": [{"url": "wss://relay.example/key", "private": True},
                                             {"url": "ws://127.0.0.1:8545"}]}
    config = load_config(write_toml(config_data))
    assert config.chain.read_urls == ("ws://127.0.0.1:8545", "wss://b.example/key", "http://c:8545")
    assert config.chain.http_url == "http://c:8545"  # the CLI's HTTP-only Safe client reads through this one
    assert config.mempool.simulation_urls == ("ws://10.0.0.2:8545", "https://sim.example/key")
    assert [(e.url, e.private) for e in config.response.endpoints] == [("wss://relay.example/key", True),
                                                                        ("ws://127.0.0.1:8545", False)]


def test_with_only_websocket_read_endpoints_the_clis_safe_client_asks_for_an_http_one(
        write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"].update(rpc_url="ws://127.0.0.1:8545", rpc_urls=["wss://b.example/key"])
    config = load_config(write_toml(config_data))
    assert config.chain.http_url is None
    with pytest.raises(ChainError) as caught:
        SafeOnChain(config.chain.http_url, config.safe.address)
    assert "no read endpoint is an http(s) URL" in caught.value.message
    assert caught.value.hint and "chain.rpc_urls" in caught.value.hint


def test_a_send_endpoint_with_a_bad_scheme_is_refused(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["response"] = {"endpoints": [{"url": "http://a:1"}, {"url": "udp://relay.example"}]}
    path = write_toml(config_data)
    error = load_error(path)
    assert (error.file, error.field) == (str(path), "response.endpoints[1].url")
    assert "not an http(s) or ws(s) URL" in str(error)
    assert error.hint and "wss://" in error.hint


@pytest.mark.parametrize(("field", "value", "says"), [
    ("rpc_urls", ["ftp://127.0.0.1:8546"], "not an http(s) or ws(s) URL"),
    ("rpc_urls", ["http://127.0.0.1:8545"], "twice"),
    ("rpc_urls", ["http://a:1", "http://a:1"], "twice"),
    ("rpc_urls", "http://a:1", "expected a list"),
    ("ws_url", "http://127.0.0.1:8545", "not a ws:// or wss:// URL"),
])
def test_bad_endpoints_are_refused(write_toml: WriteToml, config_data: dict[str, Any], field: str, value: object,
                                   says: str) -> None:
    config_data["chain"][field] = value
    path = write_toml(config_data)
    error = load_error(path)
    assert (error.file, error.field) == (str(path), f"chain.{field}")
    assert says in str(error)


def test_simulation_endpoints_are_read_in_order_and_default_to_none(write_toml: WriteToml,
                                                                    config_data: dict[str, Any]) -> None:
    assert load_config(write_toml(config_data)).mempool.simulation_urls == ()
    config_data["mempool"] = {"simulation_urls": ["http://127.0.0.1:8545", "https://sim.example/key"]}
    assert load_config(write_toml(config_data)).mempool.simulation_urls == ("http://127.0.0.1:8545",
                                                                             "https://sim.example/key")


@pytest.mark.parametrize(("fields", "says"), [
    ({"simulation_urls": ["tcp://127.0.0.1:8546"]}, "not an http(s) or ws(s) URL"),
    ({"simulation_urls": ["http://a:1", "http://a:1"]}, "lists an endpoint twice"),
    ({"simulation_urls": "http://a:1"}, "expected a list"),
    ({"simulation_urls": [f"http://a:{port}" for port in range(1, 18)]}, "17 endpoints, more than 16"),
    ({"simulation_urls": ["http://a:1"], "simulate": False}, "is set but simulate = false"),
])
def test_bad_simulation_endpoints_are_refused(write_toml: WriteToml, config_data: dict[str, Any],
                                              fields: dict[str, Any], says: str) -> None:
    config_data["mempool"] = fields
    path = write_toml(config_data)
    error = load_error(path)
    assert (error.file, error.field) == (str(path), "mempool.simulation_urls")
    assert says in str(error)
    assert error.hint
    assert error.exit_code == 2
