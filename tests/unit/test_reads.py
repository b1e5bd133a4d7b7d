"""policies/reads.py: "contract.fn(args)" parsed and resolved against the watched contracts' ABIs at load time,
into ReadSpecs that are plain calldata and compare equal when they make the same call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from onguard.chain.abi import ContractAbi
from onguard.config import Config, WatchedContract
from onguard.policies.reads import ReadSpec, expression_type, parse_read
from policykit import TOKEN

VAULT = to_checksum_address("0x" + "ab" * 20)
BREAKER = to_checksum_address("0x" + "cd" * 20)
ASSET = to_checksum_address("0x" + "a5" * 20)
CUSTOM = to_checksum_address("0x" + "12" * 20)


@pytest.fixture
def contracts(config: Config) -> Mapping[str, WatchedContract]:
    """The base config's watched contracts (vault, breaker, oracle, asset), with their real ABIs."""
    return config.contracts


def function(name: str, inputs: list[str], outputs: tuple[str, ...] = ("uint256",),
             mutability: str = "view") -> dict[str, Any]:
    return {"type": "function", "name": name, "stateMutability": mutability,
            "inputs": [{"name": f"_in{i}", "type": t} for i, t in enumerate(inputs)],
            "outputs": [{"name": "", "type": t} for t in outputs]}


@pytest.fixture
def custom(contracts: Mapping[str, WatchedContract]) -> dict[str, WatchedContract]:
    """The watched contracts plus `c`, whose ABI has the shapes the demo contracts lack."""
    abi = ContractAbi.from_json([
        function("level", ["address"]), function("level", ["uint256"]),          # overloaded, same arity
        function("quota", []), function("quota", ["address"]),                   # overloaded, different arity
        function("enabled", ["bool"], ("bool",)),
        function("small", ["uint8"]),
        function("signed", ["int256"], ("int256",)),
        function("named", ["string"]),
        function("many", ["address[]"]),
        function("pair", [], ("uint256", "uint256")),
        function("list", [], ("uint256[]",)),
        function("label", [], ("string",)),
        function("digest", [], ("bytes32",)),
    ])
    return {**contracts, "c": WatchedContract("c", CUSTOM, abi)}


def selector(contracts: Mapping[str, WatchedContract], contract: str, signature: str) -> bytes:
    return contracts[contract].abi.function(signature).selector


def refusal(text: str, contracts: Mapping[str, WatchedContract]) -> str:
    with pytest.raises(ValueError) as caught:
        parse_read(text, contracts)
    return str(caught.value)


# ---- what a read resolves to ----


def test_no_argument_read(contracts: Mapping[str, WatchedContract]) -> None:
    spec = parse_read("vault.totalAssets()", contracts)
    assert spec.address == VAULT
    assert spec.calldata == selector(contracts, "vault", "totalAssets()") == bytes.fromhex("01e1d114")
    assert spec.text == "vault.totalAssets()"
    assert spec.contract == "vault"
    assert spec.function.signature == "totalAssets()"
    assert spec.output_type == "uint256"


def test_contract_names_are_address_arguments(contracts: Mapping[str, WatchedContract]) -> None:
    spec = parse_read("asset.balanceOf(vault)", contracts)
    assert spec.address == ASSET
    assert spec.calldata == selector(contracts, "asset", "balanceOf(address)") + abi_encode(["address"], [VAULT])


def test_two_address_arguments(contracts: Mapping[str, WatchedContract]) -> None:
    spec = parse_read("asset.allowance(vault, breaker)", contracts)
    assert spec.calldata[4:] == abi_encode(["address", "address"], [VAULT, BREAKER])
    assert spec.text == "asset.allowance(vault, breaker)"


def test_literal_address_arguments_in_any_case(contracts: Mapping[str, WatchedContract]) -> None:
    lower = parse_read("asset.balanceOf(" + VAULT.lower() + ")", contracts)
    checksummed = parse_read(f"asset.balanceOf({VAULT})", contracts)
    assert lower.calldata == checksummed.calldata == parse_read("asset.balanceOf(vault)", contracts).calldata


@pytest.mark.parametrize(("text", "expected"), [
    ("1e18", TOKEN),
    ("1.5e18", 15 * 10**17),
    ("1_000e18", 1000 * TOKEN),
    ("123456789012345678901234567", 123456789012345678901234567),  # a float would round this
    ("0", 0),
    (str(2**256 - 1), 2**256 - 1),
])
def test_numbers_are_exact(contracts: Mapping[str, WatchedContract], text: str, expected: int) -> None:
    spec = parse_read(f"vault.convertToAssets({text})", contracts)
    assert spec.calldata[4:] == abi_encode(["uint256"], [expected])


@pytest.mark.parametrize("text", ["1.5", "inf", "nan", "-1", str(2**256), "ten", "0x10"])
def test_numbers_that_are_not_uint256_amounts_are_refused(contracts: Mapping[str, WatchedContract],
                                                          text: str) -> None:
    assert text in refusal(f"vault.convertToAssets({text})", contracts)


def test_bool_argument(custom: dict[str, WatchedContract]) -> None:
    assert parse_read("c.enabled(true)", custom).calldata[4:] == abi_encode(["bool"], [True])
    assert parse_read("c.enabled(false)", custom).calldata[4:] == abi_encode(["bool"], [False])
    assert "not supported" in refusal("c.enabled(yes)", custom)


def test_whitespace_is_normalised_in_the_text(contracts: Mapping[str, WatchedContract]) -> None:
    spec = parse_read("  asset.allowance(  vault ,breaker )  ", contracts)
    assert spec.text == "asset.allowance(vault, breaker)"
    assert parse_read("vault.totalAssets( )", contracts).text == "vault.totalAssets()"


@pytest.mark.parametrize(("text", "output", "kind"), [
    ("vault.totalAssets()", "uint256", "number"),
    ("vault.decimals()", "uint8", "number"),
    ("vault.paused()", "bool", "bool"),
    ("vault.oracle()", "address", "address"),
    ("vault.name()", "string", "string"),
    ("vault.PAUSER_ROLE()", "bytes32", "bytes"),
])
def test_output_types_map_to_expression_types(contracts: Mapping[str, WatchedContract], text: str, output: str,
                                              kind: str) -> None:
    spec = parse_read(text, contracts)
    assert spec.output_type == output
    assert expression_type(spec.output_type) == kind


@pytest.mark.parametrize("abi_type", ["uint256[]", "address[2]", "(uint256,bool)", "function"])
def test_types_the_expressions_cannot_hold(abi_type: str) -> None:
    assert expression_type(abi_type) is None


# ---- what is refused ----


@pytest.mark.parametrize("text", ["vault.pause()", "vault.deposit(1, vault)", "asset.transfer(vault, 1)"])
def test_non_views_are_refused(contracts: Mapping[str, WatchedContract], text: str) -> None:
    message = refusal(text, contracts)
    assert "is not a view" in message
    assert " — " in message  # message — hint, split apart by the policy loader


def test_overloaded_names_of_the_same_arity_are_refused(custom: dict[str, WatchedContract]) -> None:
    assert "c.level is overloaded" in refusal("c.level(vault)", custom)


def test_overloads_of_different_arity_are_told_apart_by_the_argument_count(
        custom: dict[str, WatchedContract]) -> None:
    assert parse_read("c.quota()", custom).function.signature == "quota()"
    assert parse_read("c.quota(vault)", custom).function.signature == "quota(address)"


@pytest.mark.parametrize(("text", "argument"), [
    ("vault.hasRole(0x" + "00" * 32 + ", vault)", bytes(32)),
    ("vault.hasRole(keccak256:PAUSER_ROLE, vault)", keccak(text="PAUSER_ROLE")),
    ("vault.supportsInterface(0x01ffc9a7)", bytes.fromhex("01ffc9a7")),
])
def test_fixed_size_bytes_arguments_and_role_ids(contracts: Mapping[str, WatchedContract], text: str,
                                                 argument: bytes) -> None:
    spec = parse_read(text, contracts)
    assert spec.calldata[4:36] == argument.ljust(32, b"\0")


@pytest.mark.parametrize(("text", "message"), [
    ("vault.hasRole(0x" + "00" * 31 + ", vault)", "is 31 bytes, bytes32 takes exactly 32"),
    ("vault.hasRole(PAUSER_ROLE, vault)", "is not bytes32"),
    ("vault.supportsInterface(0x01ffc9a7ff)", "is 5 bytes, bytes4 takes exactly 4"),
])
def test_fixed_size_bytes_of_the_wrong_size_are_refused(contracts: Mapping[str, WatchedContract], text: str,
                                                       message: str) -> None:
    assert message in refusal(text, contracts)


@pytest.mark.parametrize(("text", "type_"), [
    ("c.named(hello)", "string"),
    ("c.many(vault)", "address[]"),
])
def test_unsupported_argument_types_are_refused(custom: dict[str, WatchedContract], text: str, type_: str) -> None:
    message = refusal(text, custom)
    assert f"of type {type_} is not supported in reads" in message


def test_an_address_argument_that_is_neither_a_contract_nor_an_address(
        contracts: Mapping[str, WatchedContract]) -> None:
    assert "'treasury' is neither a watched contract's name nor an address" in refusal(
        "asset.balanceOf(treasury)", contracts)
    assert "neither" in refusal("asset.balanceOf(0x1234)", contracts)


def test_a_mixed_case_address_with_a_wrong_checksum_is_refused(contracts: Mapping[str, WatchedContract]) -> None:
    typo = VAULT[:-1] + VAULT[-1].swapcase()  # mixed case, but the checksum no longer matches
    assert "checksum" in refusal(f"asset.balanceOf({typo})", contracts)


def test_unknown_contract_lists_the_watched_ones(contracts: Mapping[str, WatchedContract]) -> None:
    message = refusal("bank.totalAssets()", contracts)
    assert "no watched contract named 'bank'" in message
    assert "watched: vault, breaker, oracle, asset" in message


@pytest.mark.parametrize("text", ["vault.balanceOf()", "vault.totalAssets(vault)", "vault.withdrawAll()"])
def test_wrong_argument_count_or_unknown_function_lists_the_views(contracts: Mapping[str, WatchedContract],
                                                                  text: str) -> None:
    message = refusal(text, contracts)
    assert "vault has no function" in message
    assert "its views: " in message and "totalAssets()" in message and "balanceOf(address)" in message
    assert "pause()" not in message.split("its views: ")[1]  # only views are offered


@pytest.mark.parametrize("text", ["vault.totalAssets", "totalAssets()", "vault.totalAssets(", "", "vault..x()",
                                  "vault.totalAssets() + 1"])
def test_text_that_is_not_a_read(contracts: Mapping[str, WatchedContract], text: str) -> None:
    assert "is not a read" in refusal(text, contracts)


@pytest.mark.parametrize(("text", "returns"), [
    ("breaker.requireNotTripped()", "nothing"),
    ("c.pair()", "uint256, uint256"),
    ("c.list()", "uint256[]"),
])
def test_reads_must_return_one_comparable_value(custom: dict[str, WatchedContract], text: str,
                                                returns: str) -> None:
    assert f"(it returns {returns})" in refusal(text, custom)


def test_out_of_range_small_integer_argument_is_a_value_error(custom: dict[str, WatchedContract]) -> None:
    assert parse_read("c.small(255)", custom).calldata[4:] == abi_encode(["uint8"], [255])
    assert "300" in refusal("c.small(300)", custom)


def test_negative_argument_for_a_signed_parameter(custom: dict[str, WatchedContract]) -> None:
    try:
        spec = parse_read("c.signed(-1)", custom)
    except ValueError as exc:
        pytest.fail(f"refused: {exc}")
    assert spec.calldata[4:] == abi_encode(["int256"], [-1])


# ---- equality: the same call is read once ----


def test_the_same_call_written_twice_is_one_spec(contracts: Mapping[str, WatchedContract]) -> None:
    written = [parse_read("vault.convertToAssets(1e18)", contracts),
               parse_read("vault.convertToAssets(1000000000000000000)", contracts),
               parse_read("vault.convertToAssets( 1_000_000_000_000_000_000 )", contracts)]
    assert written[0] == written[1] == written[2]
    assert len(set(written)) == 1
    assert len({spec: None for spec in written}) == 1  # as the engine's {spec: value} state


def test_contract_name_and_literal_address_give_the_same_spec(contracts: Mapping[str, WatchedContract]) -> None:
    assert parse_read("asset.balanceOf(vault)", contracts) == parse_read(f"asset.balanceOf({VAULT.lower()})",
                                                                         contracts)


def test_different_calls_are_different_specs(contracts: Mapping[str, WatchedContract]) -> None:
    specs = {parse_read(text, contracts) for text in [
        "vault.totalSupply()", "asset.totalSupply()",            # same calldata, another contract
        "vault.convertToAssets(1)", "vault.convertToAssets(2)",  # same function, another argument
        "asset.balanceOf(vault)", "asset.balanceOf(breaker)",
    ]}
    assert len(specs) == 6


def test_spec_equality_ignores_the_text_but_not_the_call(contracts: Mapping[str, WatchedContract]) -> None:
    spec = parse_read("vault.totalAssets()", contracts)
    other = ReadSpec(address=spec.address, calldata=spec.calldata, text="whatever", contract="x",
                     function=spec.function)
    assert other == spec and hash(other) == hash(spec)
    assert ReadSpec(address=BREAKER, calldata=spec.calldata, text=spec.text, contract=spec.contract,
                    function=spec.function) != spec
