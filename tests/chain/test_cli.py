"""The commands as a user runs them: `onguard run` as a process (JSON logs, Ctrl-C), `incidents`, `demo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onguard.demo.world import Roles, dev_account

from .helpers import ALICE, drain_slice, is_paused, tokens

pytestmark = pytest.mark.chain

ONGUARD = [sys.executable, "-m", "onguard.cli.main"]
GUARDIAN_KEY = dev_account(Roles.GUARDIAN).key.to_0x_hex()


def read_json_lines_until(process: subprocess.Popen, predicate, timeout: float = 30.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        events.append(json.loads(line))  # every line is one JSON object: fails loudly otherwise
        if predicate(events[-1]):
            return events
    raise AssertionError(f"expected event not seen; got: {[e.get('event') for e in events]}")


def test_run_pauses_a_drain_logs_json_and_stops_on_ctrl_c(chain, guardian_config):
    w3, world = chain.w3, chain.world
    env = {**os.environ, "ONGUARD_TEST_GUARDIAN_KEY": GUARDIAN_KEY}
    process = subprocess.Popen([*ONGUARD, "--log-format", "json", "run", "--config", str(guardian_config)],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        read_json_lines_until(process, lambda e: e["event"] == "no checkpoint: starting")
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))
        events = read_json_lines_until(process, lambda e: e["event"].startswith("response mined"))
        tripped = next(e for e in events if e["event"].startswith("policy tripped"))
        assert tripped["policy_id"] == "vault-drain" and tripped["level"] == "warning"
        assert tripped["incident_id"] == 1 and tripped["chain_id"] == world.chain_id
        assert is_paused(w3, world)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    rest = process.stderr.read()
    assert "Traceback" not in rest and GUARDIAN_KEY[2:] not in rest

    listing = subprocess.run([*ONGUARD, "incidents", "--config", str(guardian_config), "list"],
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "vault-drain" in listing.stdout and "safe" in listing.stdout
    shown = subprocess.run([*ONGUARD, "incidents", "--config", str(guardian_config), "show", "1"],
                           capture_output=True, text=True, env=env)
    assert shown.returncode == 0
    assert "detected" in shown.stdout and "response-mined" in shown.stdout and "pause_vault" in shown.stdout


def test_a_second_daemon_on_the_same_database_refuses_to_start_and_the_first_keeps_guarding(chain, guardian_config):
    w3, world = chain.w3, chain.world
    env = {**os.environ, "ONGUARD_TEST_GUARDIAN_KEY": GUARDIAN_KEY}
    first = subprocess.Popen([*ONGUARD, "--log-format", "json", "run", "--config", str(guardian_config)],
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        read_json_lines_until(first, lambda e: e["event"] == "no checkpoint: starting")
        second = subprocess.run([*ONGUARD, "run", "--config", str(guardian_config)], capture_output=True,
                                text=True, env=env, timeout=60)
        assert second.returncode == 2
        lock = guardian_config.parent / "onguard.db.lock"
        assert second.stderr.startswith(f"error: {lock}: another onguard daemon (pid {first.pid} on host ")
        assert "hint: one daemon per database" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None
        # The first one still guards: a drain is paused by it.
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))
        read_json_lines_until(first, lambda e: e["event"].startswith("response mined"))
        assert is_paused(w3, world)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=20) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_run_refuses_to_start_without_the_guardian_key(chain, guardian_config):
    env = {k: v for k, v in os.environ.items() if k != "ONGUARD_TEST_GUARDIAN_KEY"}
    result = subprocess.run([*ONGUARD, "run", "--config", str(guardian_config)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2
    assert "ONGUARD_TEST_GUARDIAN_KEY is not set" in result.stderr and "Traceback" not in result.stderr


def test_demo_pauses_the_vault_and_exits_zero(tmp_path: Path):
    result = subprocess.run([*ONGUARD, "demo", "--keep", str(tmp_path)], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vault paused yes" in result.stdout
    assert "pause_vault: mined" in result.stdout
    # Act 2: the one-transaction exploit is beaten in the mempool, in the same block.
    assert "0: pause, 1: exploit" in result.stdout
    assert "exploit REVERTED; the vault kept 700,000 of 700,000 dUSD" in result.stdout
    # The kept database holds both incidents: the drain's, resolved by the owners before they unpaused, and the
    # exploit's, safe (the vault is paused) and still watched.
    listing = subprocess.run([*ONGUARD, "incidents", "--config", str(tmp_path / "onguard.toml"), "list"],
                             capture_output=True, text=True)
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert sorted(row[4] for row in rows) == ["resolved", "safe"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_its_anvil(sig):
    process = subprocess.Popen([*ONGUARD, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "deploying" in line:
                break
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        (anvil_pid,) = [int(pid) for pid in children if "anvil" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert _alive(anvil_pid)
        process.send_signal(sig)
        assert process.wait(timeout=30) == 130
        process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while _alive(anvil_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(anvil_pid)


def test_run_with_an_encrypted_keystore_and_a_wrong_chain_id(chain, guardian_config, tmp_path):
    keystore = tmp_path / "guardian.json"
    keystore.write_text(json.dumps(dev_account(Roles.GUARDIAN).encrypt("a long test password", kdf="pbkdf2",
                                                                        iterations=2)))
    text = guardian_config.read_text().replace('key_env = "ONGUARD_TEST_GUARDIAN_KEY"',
                                               f'keystore = "{keystore}"\npassword_env = "TEST_KEYSTORE_PW"')
    config = tmp_path / "keystore.toml"
    config.write_text(text.replace(f"chain_id = {chain.world.chain_id}", "chain_id = 1"))
    env = {**os.environ, "TEST_KEYSTORE_PW": "a long test password"}
    result = subprocess.run([*ONGUARD, "run", "--config", str(config)], capture_output=True, text=True, env=env,
                            timeout=60)
    # The key decrypted (no key error); the chain check then refused the mismatch, naming the field.
    assert result.returncode == 2, result.stderr
    assert "chain.chain_id" in result.stderr and f"on chain {chain.world.chain_id}" in result.stderr
    assert "a long test password" not in result.stderr
