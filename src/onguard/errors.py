"""The one exception tree of onguard; every error says what to do about it."""

from __future__ import annotations


class OnguardError(Exception):
    """Base of every error onguard raises on purpose. `hint` tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(OnguardError):
    """Bad input from the user (a config, policy, key or argument): fix it and run again. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 hint: str | None = None) -> None:
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file = file
        self.field = field


class ConfigError(InputError):
    """onguard.toml is missing, malformed or inconsistent."""


class PolicyError(InputError):
    """A policy file is malformed or refers to something that does not exist."""


class KeyLoadError(InputError):
    """A key could not be loaded from its keystore or environment variable."""


class NotAuthorised(InputError):
    """On chain, the guardian lacks a power its config relies on (module not enabled, key not registered,
    action not allowlisted). The Safe's owners must fix it; the daemon will not start without it."""


class ToolchainError(OnguardError):
    """A tool or build product onguard needs is missing (anvil, compiled contracts)."""

    exit_code = 2


class ChainError(OnguardError):
    """The chain did not answer as expected. Transient ones are retried by the daemon."""


class ChainUnavailable(ChainError):
    """No RPC endpoint answered."""


class SimulationUnsupported(ChainUnavailable):
    """Every simulation endpoint answered that it does not serve eth_simulateV1: pending transactions cannot be
    simulated (the block path is not affected)."""


class ResponseFailed(OnguardError):
    """A response transaction could not be sent or was reverted."""


class ReplayFailed(OnguardError):
    """A replay scenario could not be played to the end (its fork source is unreachable, the guardian refused to
    start…): no expectation was tested. Exit code 3."""

    exit_code = 3
