"""config.py: a valid onguard.toml loads into settings; every malformed one is a ConfigError naming file and field."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_utils import to_checksum_address

from onguard.config import load_config
from onguard.errors import ConfigError, InputError

WriteToml = Callable[..., Path]

A_PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def assert_names(error: InputError, path: Path, field: str) -> None:
    """The message starts with '<file>: <dotted field>: ' and the error carries both."""
    assert error.file == str(path)
    assert error.field == field
    assert str(error).startswith(f"{path}: {field}: "), str(error)


# ---- a valid config ----


def test_valid_config_loads_with_checksummed_addresses(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    safe, module = config_data["safe"]["address"], config_data["safe"]["guardian_module"]
    vault, key_env = config_data["contracts"]["vault"]["address"], config_data["guardian"]["key_env"]
    assert safe == safe.lower()  # written in lower case: the loader must checksum it

    config = load_config(write_toml(config_data))

    assert config.chain.rpc_url == "http://127.0.0.1:8545"
    assert config.chain.chain_id == 31337
    assert config.chain.poll_interval == pytest.approx(0.1)
    assert config.chain.start_block is None  # "latest"
    assert config.safe.address == to_checksum_address(safe)
    assert config.safe.address != safe
    assert config.safe.guardian_module == to_checksum_address(module)
    assert config.contracts["vault"].address == to_checksum_address(vault)
    assert set(config.contracts) == {"vault", "breaker", "oracle", "asset"}
    assert config.contracts["vault"].abi.has_function("totalAssets()")
    (pause,) = config.actions["pause_vault"].calls
    assert pause.function.signature == "pause()"
    assert pause.calldata == bytes.fromhex("8456cb59")  # pause()
    (trip,) = config.actions["trip_breaker"].calls
    assert trip.contract == "breaker"
    assert trip.target == to_checksum_address(config_data["contracts"]["breaker"]["address"])
    assert config.guardian_key.key_env == key_env
    assert config.guardian_key.keystore is None


def test_valid_config_fills_defaults(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    del config_data["chain"]["poll_interval"]
    del config_data["chain"]["start_block"]
    del config_data["state"]
    config_data["policies"] = {}
    path = write_toml(config_data)

    config = load_config(path)

    assert config.chain.poll_interval == 1.0
    assert config.chain.start_block is None
    assert config.chain.max_block_range == 500
    assert config.policies_dir == path.parent / "policies"
    assert config.database == path.parent / "onguard.db"
    assert config.guardian_key.password_env == "ONGUARD_KEYSTORE_PASSWORD"
    assert config.response.receipt_timeout == 60.0
    assert config.response.max_fee_per_gas == 500 * 10**9
    assert config.response.priority_fee == 2 * 10**9


def test_response_amounts_are_parsed_exactly(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["response"] = {"receipt_timeout": "2m", "max_fee_per_gas": "1.5e12", "priority_fee": 3}
    config = load_config(write_toml(config_data))
    assert config.response.receipt_timeout == 120.0
    assert config.response.max_fee_per_gas == 15 * 10**11
    assert config.response.priority_fee == 3


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(
        tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any], artifacts_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "deploy" / "abis").mkdir(parents=True)
    shutil.copy(artifacts_dir / "Vault.sol" / "Vault.json", tmp_path / "deploy" / "abis" / "Vault.json")
    config_data["contracts"]["vault"]["abi"] = "abis/Vault.json"
    config_data["guardian"] = {"keystore": "keys/guardian.json"}
    config_data["policies"]["dir"] = "rules"
    config_data["state"]["database"] = "state/onguard.db"
    path = write_toml(config_data, "deploy/onguard.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(path)

    assert config.contracts["vault"].abi.has_function("pause()")
    assert config.guardian_key.keystore == tmp_path / "deploy" / "keys" / "guardian.json"
    assert config.guardian_key.key_env is None
    assert config.policies_dir == tmp_path / "deploy" / "rules"
    assert config.database == tmp_path / "deploy" / "state" / "onguard.db"


def test_absolute_paths_are_kept(tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["policies"]["dir"] = str(tmp_path / "abs-policies")
    config = load_config(write_toml(config_data, "sub/onguard.toml"))
    assert config.policies_dir == tmp_path / "abs-policies"


def test_start_block_number_is_kept(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["start_block"] = 1234
    assert load_config(write_toml(config_data)).chain.start_block == 1234


@pytest.mark.parametrize("url", ["https://rpc.example.org", "http://node:8545/rpc"])
def test_http_and_https_urls_are_accepted(write_toml: WriteToml, config_data: dict[str, Any], url: str) -> None:
    config_data["chain"]["rpc_url"] = url
    assert load_config(write_toml(config_data)).chain.rpc_url == url


def test_contract_at_finds_a_watched_contract_whatever_the_case(write_toml: WriteToml,
                                                                config_data: dict[str, Any]) -> None:
    breaker = config_data["contracts"]["breaker"]["address"]
    config = load_config(write_toml(config_data))
    found = config.contract_at("0x" + breaker[2:].upper())
    assert found is not None and found.name == "breaker"
    assert config.contract_at("0x" + "00" * 20) is None


# ---- malformed configs: each names the file and the dotted field ----


def test_missing_chain_table(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    del config_data["chain"]
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain")
    assert "required but missing" in str(error)


def test_missing_rpc_url(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    del config_data["chain"]["rpc_url"]
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.rpc_url")
    assert "required but missing" in str(error)


@pytest.mark.parametrize("url", ["ftp://example.org", "127.0.0.1:8545", "localhost", "wsx://127.0.0.1:8546",
                                 "http:/rpc.example.org"])
def test_rpc_url_with_a_bad_scheme(write_toml: WriteToml, config_data: dict[str, Any], url: str) -> None:
    config_data["chain"]["rpc_url"] = url
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.rpc_url")
    assert f"{url!r} is not an http(s) or ws(s) URL" in str(error)
    assert error.hint is not None and "http://" in error.hint


def test_chain_id_written_as_a_string(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["chain_id"] = "31337"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.chain_id")
    assert "expected an integer, got str '31337'" in str(error)
    assert error.hint is not None and "31337 for Anvil" in error.hint


@pytest.mark.parametrize("start", [-1, "earliest"])
def test_bad_start_block(write_toml: WriteToml, config_data: dict[str, Any], start: object) -> None:
    config_data["chain"]["start_block"] = start
    path = write_toml(config_data)
    assert_names(load_error(path), path, "chain.start_block")


def test_max_block_range_below_one(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["max_block_range"] = 0
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.max_block_range")
    assert "at least 1" in str(error)


def test_bad_poll_interval_names_the_field(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["poll_interval"] = "soon"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.poll_interval")
    assert "not a duration" in str(error)


@pytest.mark.parametrize(("table", "key", "value"), [
    ("safe", "address", "0x1234"),
    ("safe", "address", "0x" + "ab" * 21),
    ("safe", "guardian_module", "not-an-address"),
    ("safe", "guardian_module", "0x" + "zz" * 20),
])
def test_bad_addresses(write_toml: WriteToml, config_data: dict[str, Any], table: str, key: str, value: str) -> None:
    config_data[table][key] = value
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, f"{table}.{key}")
    assert "is not an address" in str(error)
    assert error.hint is not None and "0x-prefixed" in error.hint


def test_address_with_a_wrong_eip55_checksum_is_refused(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    good = to_checksum_address(config_data["contracts"]["vault"]["address"])
    typo = good[:-1] + good[-1].swapcase()  # mixed case, but the checksum no longer matches
    assert typo != good and typo.lower() == good.lower()
    config_data["contracts"]["vault"]["address"] = typo
    path = write_toml(config_data)
    assert_names(load_error(path), path, "contracts.vault.address")


def test_bad_contract_address_names_the_contract(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["contracts"]["breaker"]["address"] = "0xzz"
    path = write_toml(config_data)
    assert_names(load_error(path), path, "contracts.breaker.address")


def test_unknown_field_next_to_the_right_one_suggests_it(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["rpc_ulr"] = "http://127.0.0.1:8545"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.rpc_ulr")
    assert "unknown field" in str(error)
    assert error.hint == "did you mean 'rpc_url'?"


def test_misspelt_optional_field_suggests_the_right_one(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    del config_data["chain"]["poll_interval"]
    config_data["chain"]["poll_intervall"] = "1s"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "chain.poll_intervall")
    assert error.hint == "did you mean 'poll_interval'?"


def test_unknown_top_level_table_suggests_the_right_one(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["respons"] = {"priority_fee": 1}
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "respons")
    assert error.hint == "did you mean 'response'?"


def test_misspelt_required_field_gets_the_did_you_mean_hint(write_toml: WriteToml,
                                                            config_data: dict[str, Any]) -> None:
    config_data["chain"]["rpc_ulr"] = config_data["chain"].pop("rpc_url")
    path = write_toml(config_data)
    error = load_error(path)
    assert "rpc_ulr" in error.render()
    assert "did you mean 'rpc_url'?" in error.render()


@pytest.mark.parametrize("secret", ["private_key", "key", "password", "mnemonic", "secret"])
def test_secrets_in_the_guardian_table_are_refused_without_echoing_them(
        write_toml: WriteToml, config_data: dict[str, Any], secret: str) -> None:
    config_data["guardian"][secret] = A_PRIVATE_KEY
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, f"guardian.{secret}")
    assert "must never be written in the config file" in str(error)
    assert A_PRIVATE_KEY not in error.render()
    assert A_PRIVATE_KEY[2:] not in error.render()
    assert error.hint is not None and "key_env" in error.hint


def test_a_key_under_an_unknown_name_is_refused_without_echoing_it(write_toml: WriteToml,
                                                                   config_data: dict[str, Any]) -> None:
    config_data["guardian"]["guardian_pk"] = A_PRIVATE_KEY
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "guardian.guardian_pk")
    assert A_PRIVATE_KEY[2:] not in error.render()


def test_keystore_and_key_env_together_are_refused(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["guardian"]["keystore"] = "guardian.json"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "guardian.keystore")
    assert "exactly one of keystore or key_env" in str(error)


def test_neither_keystore_nor_key_env_is_refused(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["guardian"] = {"password_env": "PW"}
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "guardian.keystore")
    assert "exactly one of keystore or key_env" in str(error)


def test_no_watched_contract(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["contracts"] = {}
    config_data["actions"] = {}
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "contracts")
    assert "no contract is watched" in str(error)


def test_action_naming_an_unknown_contract(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["actions"]["pause_vault"]["contract"] = "vualt"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "actions.pause_vault.contract")
    assert "no contract named 'vualt'" in str(error)
    assert error.hint == "known contracts: vault, breaker, oracle, asset"


def test_action_calling_a_function_the_abi_lacks(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["actions"]["trip_breaker"]["call"] = "halt()"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "actions.trip_breaker.call")
    assert "breaker has no function halt()" in str(error)
    assert error.hint is not None and "trip()" in error.hint and "tripped()" in error.hint


def test_action_done_when_the_abi_lacks(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["actions"]["pause_vault"]["done_when"] = "isPaused()"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "actions.pause_vault.done_when")
    assert "vault has no function isPaused()" in str(error)


def test_action_calling_a_function_with_arguments_but_giving_none(write_toml: WriteToml,
                                                                  config_data: dict[str, Any]) -> None:
    config_data["actions"]["pause_vault"]["call"] = "borrow(uint256)"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "actions.pause_vault.args")
    assert "vault.borrow(uint256) takes 1 argument(s), got 0" in str(error)
    assert error.hint == "args = [amount: uint256]"


def test_missing_abi_file(tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["contracts"]["oracle"]["abi"] = "out/Nope.json"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "contracts.oracle.abi")
    assert "ABI file not found" in str(error)
    assert error.hint is not None and "forge build" in error.hint


def test_abi_file_that_is_not_json(tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    (tmp_path / "broken.json").write_text("{ not json")
    config_data["contracts"]["vault"]["abi"] = "broken.json"
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "contracts.vault.abi")
    assert "not valid JSON" in str(error)


def test_invalid_toml_syntax(write_toml: WriteToml) -> None:
    path = write_toml('[chain]\nrpc_url = "http://127.0.0.1:8545\nchain_id = 1\n')  # unterminated string
    error = load_error(path)
    assert error.file == str(path)
    assert str(error).startswith(f"{path}: not valid TOML (")
    assert "line 2" in str(error)
    assert error.hint is not None and "line and column" in error.hint


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "onguard.toml"
    error = load_error(path)
    assert error.file == str(path)
    assert str(error) == f"{path}: file not found"
    assert error.exit_code == 2


def test_config_errors_render_with_their_hint(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["chain"]["chain_id"] = "1"
    path = write_toml(config_data)
    rendered = load_error(path).render()
    assert rendered.startswith(f"error: {path}: chain.chain_id: ")
    assert "\n  hint: the chain's id" in rendered


def test_infinite_fee_is_a_config_error(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["response"] = {"max_fee_per_gas": "inf"}
    path = write_toml(config_data)
    assert_names(load_error(path), path, "response.max_fee_per_gas")


def test_environment_is_not_consulted_while_loading(write_toml: WriteToml, config_data: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading a config never reads the key: the variable may be unset until the daemon starts.
    key_env = config_data["guardian"]["key_env"]
    monkeypatch.delenv(key_env, raising=False)
    assert key_env not in os.environ
    assert load_config(write_toml(config_data)).guardian_key.key_env == key_env


# ---- [response] and [mempool]: every number has a sane range ----


@pytest.mark.parametrize(("table", "key", "value", "message"), [
    ("response", "receipt_timeout", "0s", "0s is out of range: must be from 1s to 3600s"),
    ("response", "receipt_timeout", "2h", "7200s is out of range: must be from 1s to 3600s"),
    ("response", "receipt_timeout", "100000000000h", "3.6e+14s is out of range"),
    ("response", "receipt_timeout", "9" * 400 + "h", "is too long a duration"),
    ("response", "max_fee_per_gas", 1, "1 wei is out of range: must be from 1000000000 wei (1 gwei)"),
    ("response", "max_fee_per_gas", "1e30", "is out of range"),
    ("response", "priority_fee", "600e9", "600000000000 wei (600 gwei) is out of range: must be from 0 wei to "
                                          "500000000000 wei (500 gwei)"),
    ("response", "outbid_factor", 11, "11 is out of range: must be from 1 to 10"),
    ("response", "outbid_factor", 0.5, "0.5 is below 1"),
    ("response", "outbid_margin", "1e18", "is out of range"),
    ("response", "bump_after", "0s", "0s must be more than 0s and less than receipt_timeout (60s)"),
    ("response", "bump_after", "60s", "60s must be more than 0s and less than receipt_timeout (60s)"),
    ("response", "bump_factor", 1.05, "1.05 is out of range: must be from 1.1 to 10"),
    ("response", "bump_factor", 100, "100 is out of range"),
    ("response", "public_fallback_after", "1m", "60s is not less than receipt_timeout (60s)"),
    ("mempool", "simulation_timeout", "1ms", "1ms is out of range: must be from 10ms to 30s"),
    ("mempool", "simulation_timeout", "1m", "60s is out of range"),
    ("mempool", "max_concurrent_simulations", 0, "0 is out of range: must be from 1 to 256"),
    ("mempool", "max_concurrent_simulations", 1000, "1000 is out of range"),
    ("mempool", "simulations_per_second", 0, "0 is out of range: must be from 1 to 100000"),
    ("mempool", "simulations_per_second", 10**6, "1000000 is out of range"),
])
def test_response_and_mempool_numbers_out_of_range_are_refused(
        write_toml: WriteToml, config_data: dict[str, Any], table: str, key: str, value: object,
        message: str) -> None:
    config_data[table] = {key: value}
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, f"{table}.{key}")
    assert message in error.message, error.message
    assert error.hint


def test_max_fee_below_the_priority_fee_is_refused(write_toml: WriteToml, config_data: dict[str, Any]) -> None:
    config_data["response"] = {"max_fee_per_gas": "2e9", "priority_fee": "3e9"}
    path = write_toml(config_data)
    error = load_error(path)
    assert_names(error, path, "response.priority_fee")
    assert "cannot exceed max_fee_per_gas" in (error.hint or "")


def test_bump_after_is_compared_with_the_receipt_timeout_written(write_toml: WriteToml,
                                                                 config_data: dict[str, Any]) -> None:
    config_data["response"] = {"receipt_timeout": "2s", "bump_after": "30s"}
    path = write_toml(config_data)
    assert "less than receipt_timeout (2s)" in load_error(path).message


def test_numbers_at_the_edges_of_their_ranges_are_accepted(write_toml: WriteToml,
                                                           config_data: dict[str, Any]) -> None:
    config_data["response"] = {"receipt_timeout": "1h", "max_fee_per_gas": "1e9", "priority_fee": "1e9",
                               "outbid_factor": 10, "outbid_margin": 0, "bump_after": "100ms",
                               "bump_factor": 1.1, "public_fallback_after": "0s"}
    config_data["mempool"] = {"simulation_timeout": "10ms", "max_concurrent_simulations": 256,
                              "simulations_per_second": 100_000}
    config = load_config(write_toml(config_data))
    assert config.response.receipt_timeout == 3600.0
    assert config.response.max_fee_per_gas == config.response.priority_fee == 10**9
    assert config.response.bump_factor == Fraction(11, 10)
    assert config.response.public_fallback_after == 0.0
    assert config.mempool.simulation_timeout == 0.01
    assert config.mempool.max_concurrent_simulations == 256
