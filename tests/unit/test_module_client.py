"""The GuardianModule client against the compiled module's real ABI: every encoder round-trips through the ABI's
own decoder, and the reads decode what the module returns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from onguard.chain.module import (
    NO_PIN,
    GuardianModuleClient,
    ModuleAction,
    ModuleCall,
    calldata_hash,
    decode_module_error,
    encode_add_guardian,
    encode_allow_action,
    encode_execute,
    encode_execute_batch,
    encode_remove_guardian,
    encode_reset_cooldown,
    encode_revoke_action,
    module_abi,
    safe_abi,
)

# Arbitrary, valid addresses in lower case (the client must checksum them).
SAFE = "0x" + "5a" * 20
MODULE = "0x" + "3c" * 20
VAULT = "0x" + "ab" * 20
BREAKER = "0x" + "cd" * 20
PAUSE = function_signature_to_4byte_selector("pause()")
TRIP = function_signature_to_4byte_selector("trip()")
GUARDIAN = "0x" + "6a" * 20


def decoded(calldata: bytes) -> tuple[str, dict[str, Any]]:
    result = module_abi().decode_call(calldata)
    assert result is not None, "the module's ABI does not know this calldata"
    function, args = result
    return function.signature, args


# ---- the external API the daemon and the owners rely on keeps its signatures ----


@pytest.mark.parametrize("signature", [
    "execute(address,uint256,bytes,uint8)",
    "executeBatch((address,bytes)[])",
    "allowAction(address,bytes4,bytes32,uint64)",
    "revokeAction(address,bytes4)",
    "resetCooldown(address,bytes4)",
    "addGuardian(address)",
    "removeGuardian(address)",
    "getAction(address,bytes4)",
    "isGuardian(address)",
    "actionKey(address,bytes4)",
    "safe()",
    "MIN_COOLDOWN()",
])
def test_the_module_abi_has_the_v2_api(signature: str) -> None:
    assert module_abi().has_function(signature)


def test_the_module_abi_has_the_v2_events() -> None:
    assert {"GuardianAdded", "GuardianRemoved", "ActionAllowed", "ActionRevoked", "ActionExecuted",
            "CooldownReset"} <= set(module_abi().event_names())


# ---- encoders ----


def test_encode_execute_round_trips() -> None:
    calldata = PAUSE
    data = encode_execute(VAULT.lower(), calldata)
    assert data[:4] == function_signature_to_4byte_selector("execute(address,uint256,bytes,uint8)")
    assert decoded(data) == ("execute(address,uint256,bytes,uint8)",
                             {"target": to_checksum_address(VAULT), "value": 0, "data": "0x" + PAUSE.hex(),
                              "operation": 0})


def test_encode_execute_batch_round_trips_in_order() -> None:
    revoke = bytes.fromhex("d547741f") + bytes(64)
    data = encode_execute_batch([ModuleCall(VAULT, PAUSE), ModuleCall(BREAKER, revoke)])
    signature, args = decoded(data)
    assert signature == "executeBatch((address,bytes)[])"
    assert args == {"calls": ((to_checksum_address(VAULT), "0x" + PAUSE.hex()),
                              (to_checksum_address(BREAKER), "0x" + revoke.hex()))}


def test_encode_allow_action_round_trips_unpinned_and_pinned() -> None:
    assert decoded(encode_allow_action(VAULT, PAUSE, 3600)) == (
        "allowAction(address,bytes4,bytes32,uint64)",
        {"target": to_checksum_address(VAULT), "selector": "0x" + PAUSE.hex(), "calldataHash": "0x" + "00" * 32,
         "cooldown": 3600})
    pin = calldata_hash(PAUSE)
    _, args = decoded(encode_allow_action(VAULT, PAUSE, 60, pin))
    assert args["calldataHash"] == "0x" + pin.hex() and args["cooldown"] == 60


@pytest.mark.parametrize(("encode", "signature"), [
    (encode_revoke_action, "revokeAction(address,bytes4)"),
    (encode_reset_cooldown, "resetCooldown(address,bytes4)"),
])
def test_encode_action_calls_round_trip(encode: Any, signature: str) -> None:
    assert decoded(encode(BREAKER, TRIP)) == (
        signature, {"target": to_checksum_address(BREAKER), "selector": "0x" + TRIP.hex()})


@pytest.mark.parametrize(("encode", "signature"), [
    (encode_add_guardian, "addGuardian(address)"),
    (encode_remove_guardian, "removeGuardian(address)"),
])
def test_encode_guardian_calls_round_trip(encode: Any, signature: str) -> None:
    assert decoded(encode(GUARDIAN)) == (signature, {"guardian": to_checksum_address(GUARDIAN)})


def test_encoders_refuse_a_selector_or_hash_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="selector is 4 bytes"):
        encode_revoke_action(VAULT, PAUSE + b"\x00")
    with pytest.raises(ValueError, match="calldata hash is 32 bytes"):
        encode_allow_action(VAULT, PAUSE, 3600, b"\x01" * 31)


def test_calldata_hash_is_keccak256_of_the_full_calldata() -> None:
    assert calldata_hash(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    with_args = PAUSE + (1).to_bytes(32, "big")
    assert calldata_hash(with_args) == keccak(with_args) != calldata_hash(PAUSE)


# ---- revert data ----


def test_decode_module_error_names_the_error_and_its_arguments() -> None:
    cooling = keccak(text="CoolingDown(uint256)")[:4] + abi_encode(["uint256"], [1_700_003_600])
    error = decode_module_error(cooling)
    assert error is not None and error.name == "CoolingDown" and dict(error.args) == {"readyAt": 1_700_003_600}
    assert str(error) == "CoolingDown(readyAt=1700003600)"

    failed = keccak(text="BatchCallFailed(uint256,bytes)")[:4] + abi_encode(["uint256", "bytes"], [1, b"\xde\xad"])
    assert dict(decode_module_error(failed).args) == {"index": 1, "returnData": "0xdead"}  # type: ignore[union-attr]

    empty = keccak(text="EmptyBatch()")[:4]
    assert decode_module_error(empty).name == "EmptyBatch"  # type: ignore[union-attr]


def test_decode_module_error_is_none_for_other_revert_data() -> None:
    safe_revert = keccak(text="Error(string)")[:4] + abi_encode(["string"], ["GS104"])
    assert decode_module_error(safe_revert) is None
    assert decode_module_error(b"") is None
    truncated = keccak(text="CoolingDown(uint256)")[:4] + b"\x01"
    assert decode_module_error(truncated) is None


# ---- ModuleAction ----


def test_module_action_pin_and_readiness() -> None:
    unpinned = ModuleAction(allowed=True, cooldown=3600, last_executed_at=0, calldata_hash=NO_PIN)
    assert not unpinned.pinned and unpinned.ready_at == 0 and unpinned.admits(PAUSE + b"\x01")

    pinned = ModuleAction(allowed=True, cooldown=60, last_executed_at=1_700_000_000,
                          calldata_hash=calldata_hash(PAUSE))
    assert pinned.pinned and pinned.ready_at == 1_700_000_060
    assert pinned.admits(PAUSE) and not pinned.admits(PAUSE + b"\x01")

    revoked = ModuleAction(allowed=False, cooldown=0, last_executed_at=0, calldata_hash=NO_PIN)
    assert not revoked.admits(PAUSE)


# ---- reads, against a caller that answers as the module would ----


class FakeChain:
    """Answers eth_calls from a table keyed by (to, calldata); records every call."""

    def __init__(self, answers: dict[tuple[str, bytes], bytes]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, bytes, int | str]] = []

    async def call(self, to: str, data: bytes, block: int | str = "latest") -> bytes:
        self.calls.append((to, data, block))
        return self.answers[(to, data)]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_get_action_decodes_the_struct_through_the_abi() -> None:
    pin = calldata_hash(PAUSE)
    request = module_abi().encode_call("getAction(address,bytes4)", to_checksum_address(VAULT), PAUSE)
    answer = abi_encode(["(bool,uint64,uint64,bytes32)"], [(True, 3600, 1_700_000_123, pin)])
    chain = FakeChain({(to_checksum_address(MODULE), request): answer})

    action = run(GuardianModuleClient(chain, MODULE).get_action(VAULT, PAUSE, block=42))

    assert action == ModuleAction(allowed=True, cooldown=3600, last_executed_at=1_700_000_123, calldata_hash=pin)
    assert chain.calls == [(to_checksum_address(MODULE), request, 42)]


def test_get_action_of_an_unlisted_pair_is_all_zero() -> None:
    request = module_abi().encode_call("getAction(address,bytes4)", to_checksum_address(VAULT), TRIP)
    chain = FakeChain({(to_checksum_address(MODULE), request): bytes(128)})
    action = run(GuardianModuleClient(chain, MODULE).get_action(VAULT, TRIP))
    assert action == ModuleAction(allowed=False, cooldown=0, last_executed_at=0, calldata_hash=NO_PIN)


@pytest.mark.parametrize("registered", [True, False])
def test_is_guardian_reads_the_module(registered: bool) -> None:
    request = module_abi().encode_call("isGuardian(address)", to_checksum_address(GUARDIAN))
    chain = FakeChain({(to_checksum_address(MODULE), request): abi_encode(["bool"], [registered])})
    assert run(GuardianModuleClient(chain, MODULE).is_guardian(GUARDIAN)) is registered


@pytest.mark.parametrize("enabled", [True, False])
def test_is_module_enabled_asks_the_safe_about_this_module(enabled: bool) -> None:
    request = safe_abi().encode_call("isModuleEnabled(address)", to_checksum_address(MODULE))
    chain = FakeChain({(to_checksum_address(SAFE), request): abi_encode(["bool"], [enabled])})
    assert run(GuardianModuleClient(chain, MODULE).is_module_enabled(SAFE)) is enabled
    ((to, data, _),) = chain.calls
    assert abi_decode(["address"], data[4:]) == (MODULE,)


def test_min_cooldown_reads_the_constant() -> None:
    request = module_abi().encode_call("MIN_COOLDOWN()")
    chain = FakeChain({(to_checksum_address(MODULE), request): abi_encode(["uint64"], [60])})
    assert run(GuardianModuleClient(chain, MODULE).min_cooldown()) == 60
