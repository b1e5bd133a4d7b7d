"""chain/keys.py: the guardian key comes from an env var or an encrypted keystore, and is never echoed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from onguard.chain.keys import load_guardian_account
from onguard.config import KeySource, load_config
from onguard.errors import InputError, KeyLoadError

KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = Account.from_key(KEY).address
KEY_VAR = "ONGUARD_UNIT_GUARDIAN_KEY"
PASSWORD_VAR = "ONGUARD_UNIT_KEYSTORE_PASSWORD"
PASSWORD = "correct horse battery staple"


def env_source(variable: str = KEY_VAR) -> KeySource:
    return KeySource(keystore=None, password_env="UNUSED", key_env=variable)


def keystore_source(path: Path) -> KeySource:
    return KeySource(keystore=path, password_env=PASSWORD_VAR, key_env=None)


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    """An encrypted keystore of KEY; pbkdf2 with 2 iterations keeps it cheap to decrypt."""
    path = tmp_path / "guardian.json"
    path.write_text(json.dumps(Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=2)))
    return path


def key_error(source: KeySource) -> KeyLoadError:
    with pytest.raises(KeyLoadError) as caught:
        load_guardian_account(source)
    return caught.value


def assert_not_echoed(error: InputError, *secrets: str) -> None:
    text = error.render() + repr(error.args)
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("0x") not in text


# ---- key_env ----


def test_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, KEY)
    account = load_guardian_account(env_source())
    assert account.address == ADDRESS


def test_key_from_env_tolerates_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, f"  {KEY}\n")
    assert load_guardian_account(env_source()).address == ADDRESS


@pytest.mark.parametrize("value", [None, ""])
def test_unset_or_empty_key_env(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(KEY_VAR, raising=False)
    else:
        monkeypatch.setenv(KEY_VAR, value)
    error = key_error(env_source())
    assert error.field == "guardian.key_env"
    assert f"environment variable {KEY_VAR} is not set" in str(error)
    assert error.exit_code == 2


@pytest.mark.parametrize("value", [
    KEY[:-2],                       # one byte short
    KEY + "ff",                     # one byte long
    KEY[:-1] + "g",                 # not hex
    "0x" + "00" * 32,               # zero is not a valid secp256k1 key
    "correct horse battery staple",  # a password where a key was expected
])
def test_invalid_key_in_env_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(KEY_VAR, value)
    error = key_error(env_source())
    assert error.field == "guardian.key_env"
    assert f"environment variable {KEY_VAR} does not hold a valid private key" in str(error)
    assert_not_echoed(error, value)
    assert error.__cause__ is None and error.__suppress_context__


def test_key_pasted_into_key_env_is_never_echoed(tmp_path: Path, write_toml: Any, config_data: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config_data["guardian"] = {"key_env": KEY}
    path = write_toml(config_data)
    with pytest.raises(InputError) as caught:
        source = load_config(path).guardian_key
        load_guardian_account(source)
    assert_not_echoed(caught.value, KEY)


# ---- encrypted keystore ----


def test_keystore_decrypts_with_the_password_from_env(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    account = load_guardian_account(keystore_source(keystore))
    assert account.address == ADDRESS
    assert account.key.hex().removeprefix("0x") == KEY[2:]


def test_keystore_with_the_wrong_password(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "tr0ub4dor&3")
    error = key_error(keystore_source(keystore))
    assert error.file == str(keystore)
    assert error.field == "guardian.keystore"
    assert "could not decrypt the keystore" in str(error)
    assert_not_echoed(error, "tr0ub4dor&3", KEY)


def test_keystore_without_the_password_env(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    error = key_error(keystore_source(keystore))
    assert error.field == "guardian.password_env"
    assert f"environment variable {PASSWORD_VAR} (the keystore password) is not set" in str(error)
    assert error.hint is not None and f"export {PASSWORD_VAR}" in error.hint


def test_missing_keystore_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    path = tmp_path / "nope.json"
    error = key_error(keystore_source(path))
    assert error.file == str(path)
    assert "keystore file not found" in str(error)


@pytest.mark.parametrize("content", [b"not json", b"\xff\xfe\x00binary"])
def test_keystore_that_is_not_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    path = tmp_path / "guardian.json"
    path.write_bytes(content)
    error = key_error(keystore_source(path))
    assert error.file == str(path)
    assert "not a JSON keystore file" in str(error)


@pytest.mark.parametrize("document", [{}, [], {"crypto": {}}])
def test_json_that_is_not_a_keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: object) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    path = tmp_path / "guardian.json"
    path.write_text(json.dumps(document))
    error = key_error(keystore_source(path))
    assert error.file == str(path)
