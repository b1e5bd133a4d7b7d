"""actions.py through config.py: actions are any call with ABI-normalised arguments (one or several), done_when any
condition over inline reads; the short form of one no-argument call still loads; every bad input names its field."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from onguard.actions import ActionSettings, calldata_hash, compile_done_when
from onguard.chain.view import ReadFailure, decode_read
from onguard.config import Config, load_config
from onguard.errors import ChainError, ConfigError
from onguard.policies.reads import ReadSpec

WriteToml = Callable[..., Path]
VAULT = "0x" + "ab" * 20   # as conftest.base_config_data writes them: lower case
ASSET = "0x" + "a5" * 20
POOL = "0x" + "b0" * 20
USDC = "0x" + "c1" * 20


def _function(name: str, inputs: list[tuple[str, str]], outputs: list[Any] | None = None,
              mutability: str = "nonpayable") -> dict[str, Any]:
    return {"type": "function", "name": name, "stateMutability": mutability,
            "inputs": [{"name": n, "type": t} for n, t in inputs],
            "outputs": outputs if outputs is not None else []}


def _view(name: str, inputs: list[tuple[str, str]], output: str) -> dict[str, Any]:
    return _function(name, inputs, [{"name": "", "type": output}], "view")


POOL_ABI = [
    _function("setPoolPause", [("paused", "bool")]),
    _function("setReservePause", [("asset", "address"), ("paused", "bool")]),
    _function("pause", [("a", "bool"), ("b", "bool"), ("c", "bool"), ("d", "bool"), ("e", "bool")]),
    _function("revokeRole", [("role", "bytes32"), ("account", "address")]),
    _function("setCap", [("cap", "uint8")]),
    _function("setOffset", [("offset", "int16")]),
    _function("setData", [("data", "bytes")]),
    _function("setName", [("name", "string")]),
    _function("setKeepers", [("keepers", "address[]")]),
    _function("freeze", [("asset", "address")]),
    _function("freeze", [("asset", "address"), ("forever", "bool")]),
    _view("paused", [], "bool"),
    _view("getPaused", [("asset", "address")], "bool"),
    _view("configuration", [], "uint256"),
    _view("totalSupply", [], "uint256"),
    _function("getConfiguration", [("asset", "address")], [{"name": "", "type": "tuple", "components": [
        {"name": "data", "type": "uint256"}]}], "view"),
    _function("getReserve", [("asset", "address")], [{"name": "", "type": "tuple", "components": [
        {"name": "configuration", "type": "tuple", "components": [{"name": "data", "type": "uint256"}]},
        {"name": "liquidityIndex", "type": "uint128"}, {"name": "_isFrozen", "type": "bool"}]}], "view"),
    _function("latestRoundData", [], [{"name": n, "type": t} for n, t in (
        ("roundId", "uint80"), ("answer", "int256"), ("startedAt", "uint256"), ("updatedAt", "uint256"),
        ("answeredInRound", "uint80"))], "view"),
]


@pytest.fixture
def data(tmp_path: Path, config_data: dict[str, Any]) -> dict[str, Any]:
    """The base config with a lending pool whose emergency switches take arguments, and a usdc token."""
    (tmp_path / "Pool.json").write_text(json.dumps(POOL_ABI))
    config_data["contracts"]["pool"] = {"address": POOL, "abi": str(tmp_path / "Pool.json")}
    config_data["contracts"]["usdc"] = {"address": USDC, "abi": config_data["contracts"]["asset"]["abi"]}
    return config_data


def load(write_toml: WriteToml, data: dict[str, Any]) -> Config:
    return load_config(write_toml(data))


def load_error(write_toml: WriteToml, data: dict[str, Any]) -> ConfigError:
    path = write_toml(data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(f"{path}: {caught.value.field}: ")
    return caught.value


def encoded(signature: str, types: list[str], values: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi_encode(types, values)


def freeze_pool(*calls: dict[str, Any], done_when: str = "pool.paused() and pool.getPaused(usdc)") -> dict[str, Any]:
    return {"done_when": done_when, "calls": list(calls)}


# ---- what loads ----


def test_the_short_form_of_one_no_argument_call_still_loads(config: Config) -> None:
    action = config.actions["pause_vault"]
    (call,) = action.calls
    assert (call.contract, call.target, call.function.signature) == ("vault", to_checksum_address(VAULT), "pause()")
    assert call.args == ()
    assert call.calldata == encoded("pause()", [], [])
    assert call.text == "vault.pause()"
    assert action.via == "module"
    (read,) = action.done_when.reads
    assert (read.address, read.calldata, read.text) == (to_checksum_address(VAULT), encoded("paused()", [], []),
                                                        "vault.paused()")


def test_the_short_form_takes_arguments_too(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze"] = {"contract": "pool", "call": "setReservePause", "args": ["usdc", True],
                                 "done_when": "getPaused(usdc)"}
    (call,) = load(write_toml, data).actions["freeze"].calls
    assert call.function.signature == "setReservePause(address,bool)"
    assert call.calldata == encoded("setReservePause(address,bool)", ["address", "bool"],
                                    [to_checksum_address(USDC), True])
    assert call.text == "pool.setReservePause(usdc, true)"


def test_several_calls_in_order_with_arguments_of_every_kind(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(
        {"contract": "pool", "function": "setPoolPause(bool)", "args": [True]},
        {"contract": "pool", "function": "setReservePause(address, bool)", "args": ["usdc", True]},
        {"contract": "pool", "function": "revokeRole", "args": ["keccak256:PAUSER_ROLE", ASSET]},
        {"contract": "asset", "function": "mint(address,uint256)", "args": ["vault", "1.5e18"]},
        {"contract": "pool", "function": "pause", "args": [True, False, True, False, True]},
        {"contract": "pool", "function": "setOffset", "args": ["-2_000"]},
        {"contract": "pool", "function": "setData", "args": ["0xdeadBEEF"]},
        {"contract": "pool", "function": "setKeepers", "args": [["vault", "usdc"]]},
        {"contract": "pool", "function": "setName", "args": ["frozen"]},
    )
    action = load(write_toml, data).actions["freeze_pool"]
    vault, usdc, asset = to_checksum_address(VAULT), to_checksum_address(USDC), to_checksum_address(ASSET)
    assert [call.calldata for call in action.calls] == [
        encoded("setPoolPause(bool)", ["bool"], [True]),
        encoded("setReservePause(address,bool)", ["address", "bool"], [usdc, True]),
        encoded("revokeRole(bytes32,address)", ["bytes32", "address"], [keccak(text="PAUSER_ROLE"), asset]),
        encoded("mint(address,uint256)", ["address", "uint256"], [vault, 15 * 10**17]),
        encoded("pause(bool,bool,bool,bool,bool)", ["bool"] * 5, [True, False, True, False, True]),
        encoded("setOffset(int16)", ["int16"], [-2000]),
        encoded("setData(bytes)", ["bytes"], [bytes.fromhex("deadbeef")]),
        encoded("setKeepers(address[])", ["address[]"], [[vault, usdc]]),
        encoded("setName(string)", ["string"], ["frozen"]),
    ]
    assert [call.target for call in action.calls][3] == asset
    assert action.calls[1].text == "pool.setReservePause(usdc, true)"
    assert action.calls[2].text == f"pool.revokeRole(keccak256:PAUSER_ROLE, {ASSET})"
    assert action.calls[7].text == "pool.setKeepers([vault, usdc])"
    assert action.text.startswith("pool.setPoolPause(true); pool.setReservePause(usdc, true); ")


def test_calls_written_as_an_array_of_tables(write_toml: WriteToml, data: dict[str, Any]) -> None:
    del data["actions"]
    text = write_toml(data).read_text() + """
[actions.freeze_pool]
done_when = "pool.paused() and pool.getPaused(usdc)"
[[actions.freeze_pool.calls]]
contract = "pool"
function = "setPoolPause(bool)"
args = [true]
[[actions.freeze_pool.calls]]
contract = "pool"
function = "setReservePause(address,bool)"
args = ["usdc", true]
"""
    action = load_config(write_toml(text)).actions["freeze_pool"]
    assert [call.text for call in action.calls] == ["pool.setPoolPause(true)", "pool.setReservePause(usdc, true)"]


def test_the_calldata_hash_is_keccak256_of_the_exact_calldata(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze"] = {"contract": "pool", "call": "setPoolPause(bool)", "args": [True],
                                 "done_when": "paused()"}
    (call,) = load(write_toml, data).actions["freeze"].calls
    calldata = bytes.fromhex("7641f3d9" + "00" * 31 + "01")  # setPoolPause(true), as cast calldata prints it
    assert call.calldata == calldata
    # as `cast keccak <calldata>` prints it
    expected = "0xea2ba83d701111849717479910b2a4f3c95f2c0a9b20c5202839a0336283bc36"
    assert call.calldata_hash == calldata_hash(calldata) == expected
    assert load(write_toml, data).actions["freeze"].calldata_hashes == (expected,)


def test_the_pre_signed_path_needs_no_module(write_toml: WriteToml, data: dict[str, Any]) -> None:
    del data["safe"]["guardian_module"]
    for action in data["actions"].values():
        action["via"] = "presigned"
    config = load(write_toml, data)
    assert config.safe.guardian_module is None
    assert {a.via for a in config.actions.values()} == {"presigned"}


def test_a_module_action_without_a_module_is_refused(write_toml: WriteToml, data: dict[str, Any]) -> None:
    del data["safe"]["guardian_module"]
    data["actions"]["pause_vault"]["via"] = "presigned"
    error = load_error(write_toml, data)
    assert error.field == "safe.guardian_module"
    assert "action trip_breaker is sent through the GuardianModule" in error.message
    assert error.hint is not None and "via = \"presigned\"" in error.hint


# ---- done_when ----


class FakeReader:
    """Values by read text; counts the batches it was asked for."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values
        self.batches: list[tuple[list[str], int | str]] = []

    async def read(self, specs: Iterable[ReadSpec], block: int | str) -> dict[ReadSpec, Any]:
        specs = list(specs)
        self.batches.append(([s.text for s in specs], block))
        return {s: self.values[s.text] if s.text in self.values else ReadFailure(s, "execution reverted")
                for s in specs}


def holds(action: ActionSettings, values: Mapping[str, Any]) -> tuple[bool, FakeReader]:
    reader = FakeReader(values)
    return asyncio.run(action.done_when.holds(reader)), reader


def test_done_when_over_several_reads_is_one_batch(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool({"contract": "pool", "function": "setPoolPause", "args": [True]})
    action = load(write_toml, data).actions["freeze_pool"]
    done, reader = holds(action, {"pool.paused()": True, "pool.getPaused(usdc)": True})
    assert done
    assert reader.batches == [(["pool.paused()", "pool.getPaused(usdc)"], "latest")]
    assert not holds(action, {"pool.paused()": True, "pool.getPaused(usdc)": False})[0]


def test_done_when_with_bit_operators_on_a_packed_configuration(write_toml: WriteToml,
                                                               data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool({"contract": "pool", "function": "setPoolPause", "args": [True]},
                                                 done_when="(configuration() >> 60) & 1 == 1")
    action = load(write_toml, data).actions["freeze_pool"]
    assert holds(action, {"pool.configuration()": (1 << 60) | 0xFF})[0]
    assert not holds(action, {"pool.configuration()": (1 << 61) | (1 << 59)})[0]


def test_a_failed_read_is_never_done(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool({"contract": "pool", "function": "setPoolPause", "args": [True]},
                                                 done_when="pool.paused() or pool.getPaused(usdc)")
    action = load(write_toml, data).actions["freeze_pool"]
    with pytest.raises(ChainError, match=r"the read pool.getPaused\(usdc\) failed \(execution reverted\)"):
        holds(action, {"pool.paused()": True})


def test_done_when_reads_any_watched_contract(config: Config) -> None:
    condition = compile_done_when("vault.paused() or breaker.tripped()", config.contracts)
    assert [spec.text for spec in condition.reads] == ["vault.paused()", "breaker.tripped()"]
    assert asyncio.run(condition.holds(FakeReader({"vault.paused()": False, "breaker.tripped()": True})))


# ---- what is refused, and where ----


def pool_call(function: str, args: list[Any]) -> dict[str, Any]:
    return {"contract": "pool", "function": function, "args": args}


@pytest.mark.parametrize(("calls", "field", "message", "hint"), [
    ([pool_call("setPoolPause", [])], "calls[0].args",
     "pool.setPoolPause(bool) takes 1 argument(s), got 0", "args = [paused: bool]"),
    ([pool_call("setPoolPause", [True]), pool_call("setReservePause", [True, "usdc"])], "calls[1].args[0]",
     "asset (address) of setReservePause(address,bool): argument True is neither a watched contract's name nor an "
     "address", "write a 0x address or one of"),
    ([pool_call("setPoolPause", [True]), pool_call("setReservePause", ["usdc", "true"])], "calls[1].args[1]",
     "paused (bool) of setReservePause(address,bool): argument 'true' is not a bool", "without quotes"),
    ([pool_call("setCap", [256])], "calls[0].args[0]", "argument 256 is out of range for uint8 (0..255)", None),
    ([pool_call("setCap", [-1])], "calls[0].args[0]", "outside the uint256 range", None),
    ([pool_call("setOffset", ["40000"])], "calls[0].args[0]", "out of range for int16 (-32768..32767)", None),
    ([pool_call("revokeRole", ["PAUSER_ROLE", "vault"])], "calls[0].args[0]", "is not bytes32",
     "\"keccak256:PAUSER_ROLE\" for a role id"),
    ([pool_call("revokeRole", ["0x" + "00" * 31, "vault"])], "calls[0].args[0]",
     "is 31 bytes, bytes32 takes exactly 32", None),
    ([pool_call("revokeRole", ["0x" + "00" * 32, VAULT[:-1] + VAULT[-1].upper()])], "calls[0].args[1]",
     "fails its EIP-55 checksum", None),
    ([pool_call("setKeepers", ["vault"])], "calls[0].args[0]", "is not a list (address[])", None),
    ([pool_call("setPoolPause(uint256)", [1])], "calls[0].function",
     "pool has no function setPoolPause(uint256); did you mean setPoolPause(bool)?", "functions: "),
    ([pool_call("setPoolPuase", [True])], "calls[0].function",
     "pool has no function setPoolPuase; did you mean setPoolPause(bool)?", None),
    ([pool_call("freeze", ["usdc"])], "calls[0].function", "pool.freeze is overloaded",
     "freeze(address), freeze(address,bool)"),
    ([pool_call("paused", [])], "calls[0].function", "pool.paused() is a view", None),
    ([{"contract": "pol", "function": "setPoolPause", "args": [True]}], "calls[0].contract",
     "no contract named 'pol'; did you mean 'pool'?", "known contracts: "),
    ([pool_call("setPoolPause", [True]) | {"value": 1}], "calls[0].value", "unknown field", None),
])
def test_bad_calls_name_their_field(write_toml: WriteToml, data: dict[str, Any], calls: list[dict[str, Any]],
                                    field: str, message: str, hint: str | None) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(*calls)
    error = load_error(write_toml, data)
    assert error.field == f"actions.freeze_pool.{field}"
    assert message in error.message
    if hint is not None:
        assert error.hint is not None and hint in error.hint


@pytest.mark.parametrize(("done_when", "message"), [
    ("pool.totalSupply()", "a condition must be true or false, but this expression is a number"),
    ("pool.configuration() >> 60", "a condition must be true or false"),
    ("pool.isPaused()", "pool has no function isPaused(); did you mean paused?"),
    ("pol.paused()", "no watched contract named 'pol'"),
    ("pool.getPaused(usdt)", "'usdt' is neither a watched contract's name nor an address"),
    ("pool.setPoolPause(true)", "is not a view"),
    ("pool.paused() and", "expected a value, but the expression ends here"),
    ("pool.paused(", "missing ')'"),
    ("true", "'true' reads nothing from the chain"),
    ("1 == 1", "reads nothing from the chain"),
])
def test_bad_done_when_names_its_field(write_toml: WriteToml, data: dict[str, Any], done_when: str,
                                       message: str) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(pool_call("setPoolPause", [True]), done_when=done_when)
    error = load_error(write_toml, data)
    assert error.field == "actions.freeze_pool.done_when"
    assert message in error.message


def test_a_bare_done_when_is_ambiguous_when_the_calls_touch_several_contracts(write_toml: WriteToml,
                                                                            data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(pool_call("setPoolPause", [True]),
                                                 {"contract": "vault", "function": "pause()"}, done_when="paused()")
    error = load_error(write_toml, data)
    assert error.field == "actions.freeze_pool.done_when"
    assert "paused() does not say which contract to read" in error.message
    assert error.hint == "write contract.paused()"


def test_short_and_long_forms_together_are_refused(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(pool_call("setPoolPause", [True])) | {"contract": "pool"}
    error = load_error(write_toml, data)
    assert error.field == "actions.freeze_pool.contract"
    assert "not both" in error.message


@pytest.mark.parametrize(("action", "field", "message"), [
    ({"done_when": "pool.paused()"}, "calls", "is required but missing"),
    ({"done_when": "pool.paused()", "calls": []}, "calls", "is empty"),
    ({"done_when": "pool.paused()", "calls": [1]}, "calls[0]", "expected a table"),
    ({"contract": "pool", "call": "setPoolPause", "args": [True]}, "done_when", "is required but missing"),
])
def test_missing_parts_of_an_action(write_toml: WriteToml, data: dict[str, Any], action: dict[str, Any],
                                    field: str, message: str) -> None:
    data["actions"]["freeze_pool"] = action
    error = load_error(write_toml, data)
    assert error.field == f"actions.freeze_pool.{field}"
    assert message in error.message


def test_a_pre_signed_action_makes_one_call(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(pool_call("setPoolPause", [True]),
                                                 pool_call("setReservePause", ["usdc", True])) | {"via": "presigned"}
    error = load_error(write_toml, data)
    assert error.field == "actions.freeze_pool.via"
    assert "a pre-signed action makes one call, this one makes 2" in error.message


# ---- fields of what a view returns: struct fields and named outputs ----


def test_done_when_reads_a_struct_field_and_decodes_only_it(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(
        {"contract": "pool", "function": "setPoolPause", "args": [True]},
        done_when="(pool.getConfiguration(usdc).data >> 60) & 1 == 1 and pool.getReserve(usdc).isFrozen "
                  "and pool.latestRoundData().answer > 0")
    action = load(write_toml, data).actions["freeze_pool"]
    configuration, reserve, round_data = action.done_when.reads
    assert [spec.text for spec in action.done_when.reads] == [
        "pool.getConfiguration(usdc).data", "pool.getReserve(usdc).isFrozen", "pool.latestRoundData().answer"]
    assert [spec.output_type for spec in action.done_when.reads] == ["uint256", "bool", "int256"]
    # Decoded from what the node returns, as the state reader does.
    assert decode_read(configuration, abi_encode(["(uint256)"], [(1 << 60,)])) == 1 << 60
    assert decode_read(reserve, abi_encode(["((uint256),uint128,bool)"], [((0,), 7, True)])) is True
    assert decode_read(round_data, abi_encode(["uint80", "int256", "uint256", "uint256", "uint80"],
                                              [1, -5, 2, 3, 1])) == -5
    assert holds(action, {"pool.getConfiguration(usdc).data": 1 << 60, "pool.getReserve(usdc).isFrozen": True,
                          "pool.latestRoundData().answer": 1})[0]


def test_a_nested_struct_field(config: Config, data: dict[str, Any], write_toml: WriteToml) -> None:
    contracts = load(write_toml, data).contracts
    (spec,) = compile_done_when("pool.getReserve(usdc).configuration.data == 1", contracts).reads
    assert spec.path == (0, 0, 0) and spec.output_type == "uint256"
    assert decode_read(spec, abi_encode(["((uint256),uint128,bool)"], [((1,), 7, False)])) == 1


def test_two_fields_of_one_call_are_two_reads(data: dict[str, Any], write_toml: WriteToml) -> None:
    contracts = load(write_toml, data).contracts
    condition = compile_done_when("pool.latestRoundData().answer > 0 and pool.latestRoundData().updatedAt > 0",
                                  contracts)
    answer, updated = condition.reads
    assert answer != updated and answer.calldata == updated.calldata
    assert asyncio.run(condition.holds(FakeReader({"pool.latestRoundData().answer": 3,
                                                   "pool.latestRoundData().updatedAt": 0}))) is False


@pytest.mark.parametrize(("done_when", "message", "hint"), [
    ("pool.getConfiguration(usdc) == 1", "must give one number, address, bool, string or bytes value",
     "pick one with .NAME: data"),
    ("pool.latestRoundData() > 0", "must give one number", "pick one with .NAME: roundId, answer, startedAt"),
    ("pool.getConfiguration(usdc).flags == 1", "has no field 'flags' there", "its fields: data"),
    ("pool.paused().value", "gives a single value: it has no field 'value'", "remove .value"),
    ("pool.getReserve(usdc).configuration == 1", "must give one number", "pick one with .NAME: data"),
])
def test_bad_fields_are_refused(data: dict[str, Any], write_toml: WriteToml, done_when: str, message: str,
                                hint: str) -> None:
    data["actions"]["freeze_pool"] = freeze_pool(pool_call("setPoolPause", [True]), done_when=done_when)
    error = load_error(write_toml, data)
    assert error.field == "actions.freeze_pool.done_when"
    assert message in error.message
    assert error.hint is not None and hint in error.hint


def test_actions_are_frozen_and_hashable(write_toml: WriteToml, data: dict[str, Any]) -> None:
    data["actions"]["keepers"] = {"contract": "pool", "call": "setKeepers", "args": [["vault", "usdc"]],
                                  "done_when": "paused()"}
    action = load(write_toml, data).actions["keepers"]
    assert hash(action) == hash(load(write_toml, data).actions["keepers"])
    with pytest.raises(AttributeError):
        action.calls[0].calldata = b""  # type: ignore[misc]
