"""`onguard init`: the onguard.toml and policies it scaffolds from ABIs load and pass `policies check` as written,
hold what the ABIs show (privileged functions, outflow events, pause functions), and bad input or an existing
file is refused with exit 2 before anything is written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from onguard.actions import Via
from onguard.cli.main import main
from onguard.config import load_config
from onguard.paths import ARTIFACTS_DIR

SAFE, MODULE, VAULT, POOL, REGISTRY = (to_checksum_address(f"0x{n:040x}") for n in (0xAA, 0xBB, 0xC1, 0xC2, 0xC3))
DEMO_VAULT_ABI = ARTIFACTS_DIR / "Vault.sol" / "Vault.json"  # pause(), paused(), roles, Withdraw

# A Balancer-like pool: the pause takes a bool, and whether it holds is a field of a struct-like result.
POOL_ABI = [
    {"type": "function", "name": "setPaused", "stateMutability": "nonpayable",
     "inputs": [{"name": "paused", "type": "bool"}], "outputs": []},
    {"type": "function", "name": "getPausedState", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "paused", "type": "bool"}, {"name": "pauseWindowEndTime", "type": "uint256"}]},
    {"type": "function", "name": "transferOwnership", "stateMutability": "nonpayable",
     "inputs": [{"name": "newOwner", "type": "address"}], "outputs": []},
    {"type": "function", "name": "swap", "stateMutability": "nonpayable",
     "inputs": [{"name": "amount", "type": "uint256"}], "outputs": []},
    {"type": "event", "name": "OwnershipTransferred", "anonymous": False,
     "inputs": [{"name": "previousOwner", "type": "address", "indexed": True},
                {"name": "newOwner", "type": "address", "indexed": True}]},
    {"type": "event", "name": "Withdrawal", "anonymous": False,
     "inputs": [{"name": "to", "type": "address", "indexed": True},
                {"name": "amount", "type": "uint256", "indexed": False}]},
]
# Nothing to pause, nothing privileged, no outflow.
REGISTRY_ABI = [{"type": "function", "name": "lookup", "stateMutability": "view",
                 "inputs": [{"name": "key", "type": "bytes32"}], "outputs": [{"name": "", "type": "address"}]}]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def abis(tmp_path: Path) -> Path:
    folder = tmp_path / "project" / "abis"
    folder.mkdir(parents=True)
    (folder / "Pool.json").write_text(json.dumps(POOL_ABI))
    (folder / "Registry.json").write_text(json.dumps(REGISTRY_ABI))
    return folder


def init_args(out: Path, abis: Path, *extra: str) -> list[str]:
    return ["init", "--rpc-url", "https://node.example", "--chain-id", "1", "--safe", SAFE,
            "--contract", f"vault={VAULT}:{DEMO_VAULT_ABI}", "--contract", f"pool={POOL}:{abis / 'Pool.json'}",
            "--out", str(out), *extra]


def test_the_scaffold_loads_and_every_policy_passes_check_as_written(tmp_path, abis, capsys) -> None:
    out = abis.parent
    code, printed, err = run_cli(capsys, *init_args(out, abis, "--guardian-module", MODULE))
    assert code == 0, err
    assert f"wrote {out / 'onguard.toml'}" in printed

    config = load_config(out / "onguard.toml")
    assert (config.chain.rpc_url, config.chain.chain_id) == ("https://node.example", 1)
    assert (config.safe.address, config.safe.guardian_module) == (SAFE, MODULE)
    assert config.guardian_key.key_env == "ONGUARD_GUARDIAN_KEY"
    assert {name: c.address for name, c in config.contracts.items()} == {"vault": VAULT, "pool": POOL}
    text = (out / "onguard.toml").read_text()
    assert 'abi = "abis/Pool.json"' in text  # relative to the file
    assert tomllib.loads(text)["guardian"] == {"key_env": "ONGUARD_GUARDIAN_KEY"}  # never the key itself

    pause_vault, pause_pool = config.actions["pause_vault"], config.actions["pause_pool"]
    assert pause_vault.via == Via.MODULE and pause_pool.via == Via.MODULE
    assert [call.calldata for call in pause_vault.calls] == [function_signature_to_4byte_selector("pause()")]
    assert [call.calldata for call in pause_pool.calls] == [
        function_signature_to_4byte_selector("setPaused(bool)") + encode(["bool"], [True])]
    assert pause_vault.done_when.source == "paused()"
    assert pause_pool.done_when.source == "getPausedState().paused"

    code, printed, err = run_cli(capsys, "policies", "check", "--config", str(out / "onguard.toml"))
    assert code == 0, err
    assert "4 valid, 0 invalid" in printed

    policies = {path.name: tomllib.loads(path.read_text()) for path in (out / "policies").glob("*.toml")}
    assert set(policies) == {"vault-admin-calls.toml", "vault-large-outflow.toml", "pool-admin-calls.toml",
                             "pool-large-outflow.toml"}
    pool_calls = policies["pool-admin-calls.toml"]
    assert pool_calls["kind"] == "call" and pool_calls["match"]["allow_from"] == [SAFE]
    assert pool_calls["match"]["functions"] == ["setPaused(bool)", "transferOwnership(address)"]
    vault_calls = policies["vault-admin-calls.toml"]["match"]["functions"]
    assert {"pause()", "unpause()", "grantRole(bytes32,address)", "revokeRole(bytes32,address)"} <= set(vault_calls)
    assert "deposit(uint256,address)" not in vault_calls
    pool_outflow = policies["pool-large-outflow.toml"]
    assert (pool_outflow["kind"], pool_outflow["match"]["event"]) == ("event", "Withdrawal")
    assert (pool_outflow["aggregate"]["of"], pool_outflow["aggregate"]["group_by"]) == ("amount", "to")
    assert policies["vault-large-outflow.toml"]["match"]["event"] == "Withdraw"
    # Starters only alert until a human has reviewed them: nothing pauses on an untested policy.
    assert all(policy["response"] == ["alert"] for policy in policies.values())


def test_without_a_module_the_starter_actions_are_pre_signed_and_a_contract_without_pause_gets_none(
        tmp_path, abis, capsys) -> None:
    out = tmp_path / "elsewhere"
    code, printed, err = run_cli(capsys, *init_args(out, abis, "--contract",
                                                    f"registry={REGISTRY}:{abis / 'Registry.json'}"))
    assert code == 0, err
    config = load_config(out / "onguard.toml")
    assert config.safe.guardian_module is None
    assert set(config.actions) == {"pause_vault", "pause_pool"}
    assert all(action.via == Via.PRESIGNED for action in config.actions.values())
    assert "note: no starter action for registry: its ABI has no pause()/setPaused(bool)-style function" in printed
    assert '"../project/abis/Registry.json"' in (out / "onguard.toml").read_text()
    assert not list((out / "policies").glob("registry-*"))
    code, printed, err = run_cli(capsys, "policies", "check", "--config", str(out / "onguard.toml"))
    assert code == 0 and "4 valid, 0 invalid" in printed, err


@pytest.mark.parametrize("existing", ["onguard.toml", "policies/pool-admin-calls.toml"])
def test_an_existing_file_is_never_overwritten_and_nothing_is_written(tmp_path, abis, capsys, existing) -> None:
    out = tmp_path / "cfg"
    (out / "policies").mkdir(parents=True)
    (out / existing).write_text("# ours\n")
    code, printed, err = run_cli(capsys, *init_args(out, abis))
    assert code == 2 and printed == ""
    assert err.startswith(f"error: {out / existing}: already exists: onguard init never overwrites a file")
    assert "hint: " in err and "Traceback" not in err
    assert (out / existing).read_text() == "# ours\n"
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.toml")] == [existing]


@pytest.mark.parametrize(("change", "expected"), [
    (("--rpc-url", "ws://node.example"), "error: --rpc-url: 'ws://node.example' is not an http(s) URL"),
    (("--chain-id", "mainnet"), "error: --chain-id: 'mainnet' is not a whole number"),
    (("--chain-id", "0"), "error: --chain-id: 0 is not a chain id"),
    (("--safe", "0x1234"), "error: --safe: "),
    (("--contract", "vault:x.json"), "error: --contract: 'vault:x.json' is not NAME=ADDRESS:ABI_PATH"),
    (("--contract", f"Vault={VAULT}:x.json"), "error: --contract: 'Vault' is not a contract name"),
    (("--contract", "vault=0xnope:x.json"), "error: --contract: "),
    (("--contract", f"pool={POOL}:missing.json"), "error: missing.json: ABI file not found"),
    (("--contract", f"vault={VAULT}:{DEMO_VAULT_ABI}"), "error: --contract: the name 'vault' is given twice"),
    (("--key-env", "0xabc123"), "error: --key-env: must be the NAME of an environment variable"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, abis, capsys, change, expected) -> None:
    out = tmp_path / "cfg"
    code, printed, err = run_cli(capsys, *init_args(out, abis, *change))
    assert code == 2 and printed == ""
    assert err.startswith(expected), err
    assert "Traceback" not in err
    assert not out.exists()
