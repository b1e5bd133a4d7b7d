"""Loads the guardian's signing key from an encrypted keystore or an environment variable, never from config."""

from __future__ import annotations

import json
import os

from eth_account import Account
from eth_account.signers.local import LocalAccount

from onguard.config import KeySource
from onguard.errors import KeyLoadError


def load_guardian_account(source: KeySource) -> LocalAccount:
    if source.key_env is not None:
        return _from_env(source.key_env)
    assert source.keystore is not None
    return _from_keystore(source)


def _from_env(variable: str) -> LocalAccount:
    value = os.environ.get(variable)
    if not value:
        raise KeyLoadError(f"environment variable {variable} is not set", field="guardian.key_env",
                           hint=f"export {variable}=0x<64 hex digits> in the daemon's environment")
    try:
        return Account.from_key(value.strip())
    except Exception:
        # Never echo the value: it is, or is close to, a private key.
        raise KeyLoadError(f"environment variable {variable} does not hold a valid private key",
                           field="guardian.key_env", hint="expected 0x followed by 64 hex digits") from None


def _from_keystore(source: KeySource) -> LocalAccount:
    path = source.keystore
    assert path is not None
    try:
        keystore = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyLoadError("keystore file not found", file=str(path), field="guardian.keystore",
                           hint="create one with `onguard keystore new PATH`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeyLoadError("keystore is not a JSON keystore file", file=str(path),
                           field="guardian.keystore") from None
    password = os.environ.get(source.password_env)
    if password is None:
        raise KeyLoadError(f"environment variable {source.password_env} (the keystore password) is not set",
                           field="guardian.password_env",
                           hint=f"export {source.password_env} in the daemon's environment")
    if not isinstance(keystore, dict) or "crypto" not in keystore and "Crypto" not in keystore:
        raise KeyLoadError("not an encrypted keystore (no \"crypto\" section)", file=str(path),
                           field="guardian.keystore", hint="create one with `onguard keystore new PATH`")
    try:
        return Account.from_key(Account.decrypt(keystore, password))
    except ValueError:
        raise KeyLoadError("could not decrypt the keystore: wrong password or damaged file", file=str(path),
                           field="guardian.keystore") from None
    except (KeyError, TypeError):
        raise KeyLoadError("the keystore is damaged or of an unknown version", file=str(path),
                           field="guardian.keystore", hint="create one with `onguard keystore new PATH`") from None
