"""Replay reports: the terminal table fits 120 columns, traces decode functions and revert reasons by the ABIs
they are given, and the replay's head source tells when the block loop has handled what it announced."""

from __future__ import annotations

import asyncio

from eth_abi import encode
from eth_utils import function_abi_to_4byte_selector

from onguard.replay.evidence import Decoder, amount, trace
from onguard.replay.heads import ReplayHeads
from onguard.replay.report import table
from onguard.replay.runner import ReplayReport, Trip

VAULT = "0x" + "11" * 20
TOKEN = "0x" + "22" * 20
REDEEM = {"type": "function", "name": "redeemFor", "inputs": [{"name": "a", "type": "address"}]}
TRANSFER = {"type": "function", "name": "transfer", "inputs": [{"name": "to", "type": "address"},
                                                               {"name": "v", "type": "uint256"}]}
SHORT = {"type": "error", "name": "InsufficientCash", "inputs": [{"name": "wanted", "type": "uint256"}]}


def report(name: str, policy: str) -> ReplayReport:
    trip = Trip(policy_id=policy, severity="critical", path="mempool", block=10, block_offset=-1, detected_ms=1.0,
                step="attack[12]", step_block=3)
    return ReplayReport(scenario=name, file="x.toml", modelled_on="m", benign=False, expect="stopped",
                        outcome="stopped-before-inclusion", expectation_held=True, trips=(trip,), responses=(),
                        attack_txs=(), first_attack_block=11, held_before_usd=1e9, at_risk_usd=123_456_789.0,
                        lost_usd=0.0, saved_usd=123_456_789.0, gas_used=80_000)


def test_the_terminal_table_fits_120_columns_whatever_the_names() -> None:
    text = table([report("a scenario with a very long descriptive name indeed, longer than any column", "p" * 60),
                  report("short", "vault-cash-guard")])
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "short" in text and "vault-cash-guard @attack[12]" in text and "…" in text


def test_a_trace_names_contracts_functions_and_decodes_revert_reasons() -> None:
    decoder = Decoder({VAULT: ("vault", [REDEEM, SHORT]), TOKEN: ("asset", [TRANSFER])})
    redeem = function_abi_to_4byte_selector(REDEEM) + encode(["address"], [TOKEN])
    transfer = function_abi_to_4byte_selector(TRANSFER) + encode(["address", "uint256"], [VAULT, 5])
    custom = function_abi_to_4byte_selector({**SHORT, "type": "function"}) + encode(["uint256"], [7])
    reason = bytes.fromhex("08c379a0") + encode(["string"], ["ERC20: balance too low"])
    tree = {"type": "CALL", "to": VAULT, "input": "0x" + redeem.hex(), "value": "0x0", "error": "execution reverted",
            "output": "0x" + custom.hex(),
            "calls": [{"type": "CALL", "to": TOKEN, "input": "0x" + transfer.hex(), "error": "execution reverted",
                       "output": "0x" + reason.hex()},
                      {"type": "STATICCALL", "to": "0x" + "33" * 20, "input": "0xdeadbeef"}]}
    traced = trace(tree, decoder, label="attack[0]", tx_hash="0xab", block=5, position=1)
    assert not traced.succeeded and traced.revert_reason == "InsufficientCash(7)"
    top, inner, unknown = traced.calls
    assert (top.target, top.function, top.depth) == ("vault", "redeemFor", 0)
    assert (inner.target, inner.function, inner.error, inner.depth) == (
        "asset", "transfer", "ERC20: balance too low", 1)
    assert unknown.function == "0xdeadbeef" and unknown.error is None and unknown.target.startswith("0x3333")
    panic = bytes.fromhex("4e487b71") + encode(["uint256"], [0x11])
    assert decoder.revert(panic, "execution reverted") == "Panic(0x11)"
    assert decoder.revert(b"", "out of gas") == "out of gas" and decoder.revert(b"", None) is None


def test_amounts_read_as_tokens() -> None:
    assert amount(400_000 * 10**18, 18) == "400,000"
    assert amount(-15 * 10**17, 18) == "-1.5" and amount(0, 6) == "0"


def test_the_replay_heads_are_idle_only_once_the_loop_has_handled_the_announced_head() -> None:
    async def scenario() -> list[str]:
        heads, stop, seen = ReplayHeads(), asyncio.Event(), []
        handled = asyncio.Event()

        async def block_loop() -> None:  # the daemon's shape: step, then wait for the next head
            while not stop.is_set():
                seen.append(f"step {heads.latest}")
                handled.set()
                await heads.wait(stop, timeout=60)

        task = asyncio.create_task(block_loop())
        while not heads.idle():
            await asyncio.sleep(0)
        heads.advance(7)
        assert not heads.idle()          # announced, not yet handled
        while not heads.idle():
            await asyncio.sleep(0)
        stop.set()
        await task
        return seen

    assert asyncio.run(scenario()) == ["step None", "step 7"]


def test_the_replay_imports_no_protocol_and_runs_the_daemons_loop() -> None:
    """Design rule: the demo world is a fixture, never on the replay's code path; the replay builds its guardian
    with the daemon's composition root and runs Guardian.run, not a copy of the loop."""
    import ast
    from pathlib import Path

    import onguard.replay

    folder = Path(onguard.replay.__file__).parent
    sources = [*folder.glob("*.py"), folder.parent / "cli" / "replay.py"]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("onguard.demo"), source
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("onguard.demo") for alias in node.names), source
    runner = (folder / "runner.py").read_text()
    assert "build_guardian(" in runner and "self.guardian.run(" in runner
    assert ".step()" not in runner and ".on_pending(" not in runner and "write_text" not in runner
