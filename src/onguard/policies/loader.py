"""Reads policy files from a folder and checks them against the config; an invalid policy stops the daemon,
and `onguard policies check` lists every problem at once."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from onguard.config import ActionSettings, WatchedContract
from onguard.errors import PolicyError
from onguard.policies.kinds import call, delta, event, oracle, outflow, simulate, state
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.model import ALERT_ONLY, BUILT_IN_IDS, PolicyCommon, Severity
from onguard.tomlfields import Table, read_toml
from onguard.units import parse_duration

KINDS: dict[str, Callable[[Table, PolicyCommon, PolicyEnv], Policy]] = {
    "event": event.parse,
    "state": state.parse,
    "delta": delta.parse,
    "oracle": oracle.parse,
    "call": call.parse,
    "outflow": outflow.parse,
    "simulate": simulate.parse,
}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """Every policy file of a folder: the ones that loaded, and the error of each one that did not."""

    policies: list[Policy]
    errors: list[PolicyError]


def load_policies(folder: Path, contracts: Mapping[str, WatchedContract],
                  actions: Mapping[str, ActionSettings]) -> list[Policy]:
    """The enabled policies of `folder`; the first problem found (in any file) is raised."""
    check = check_policies(folder, contracts, actions)
    if check.errors:
        raise check.errors[0]
    return [p for p in check.policies if p.common.enabled]


def check_policies(folder: Path, contracts: Mapping[str, WatchedContract],
                   actions: Mapping[str, ActionSettings]) -> PolicyCheck:
    if not folder.is_dir():
        error = PolicyError("policies folder not found", file=str(folder), field="policies.dir",
                            hint="create it, or point policies.dir in onguard.toml at the folder of policy files")
        return PolicyCheck([], [error])
    files = sorted(folder.glob("*.toml"))
    if not files:
        error = PolicyError("no policy files (*.toml) in the folder", file=str(folder),
                            hint="a guardian without policies watches nothing; add one (see policies/ in the repo)")
        return PolicyCheck([], [error])
    env = PolicyEnv(contracts=contracts, actions=actions)
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            policy = load_policy(path, env)
        except PolicyError as exc:
            errors.append(exc)
            continue
        if policy.common.id in seen:
            errors.append(PolicyError(f"id {policy.common.id!r} is already used by {seen[policy.common.id]}",
                                      file=str(path), field="id", hint="give every policy its own id"))
            continue
        seen[policy.common.id] = path
        policies.append(policy)
    return PolicyCheck(policies, errors)


def load_policy(path: Path, env: PolicyEnv) -> Policy:
    table = Table(read_toml(path, PolicyError), file=str(path), prefix="", error=PolicyError)
    kind = table.get("kind", str, hint=f"one of: {', '.join(KINDS)}")
    if kind not in KINDS:
        raise table.fail("kind", f"unknown kind {kind!r}", f"one of: {', '.join(KINDS)}")
    common = _common(table, path, kind, env.actions)
    policy = KINDS[kind](table, common, env)
    table.finish()
    return policy


def _common(table: Table, path: Path, kind: str, actions: Mapping[str, ActionSettings]) -> PolicyCommon:
    policy_id = table.get("id", str)
    if not _ID.match(policy_id):
        raise table.fail("id", f"{policy_id!r} is not a valid id",
                         "lower-case letters, digits, '-', '_' and '.', at most 64 characters")
    if policy_id in BUILT_IN_IDS:
        raise table.fail("id", f"{policy_id!r} is the id of a built-in policy",
                         "give this policy another id; the built-in guardian self-defence runs without a file "
                         "(`onguard policies check` lists it)")
    severity_name = table.get("severity", str, hint="info, low, medium, high or critical")
    try:
        severity = Severity(severity_name)
    except ValueError:
        raise table.fail("severity", f"unknown severity {severity_name!r}",
                         "one of: " + ", ".join(s.value for s in Severity)) from None
    response = table.get("response", list, hint=f"a list of action names from onguard.toml, or [\"{ALERT_ONLY}\"]")
    if not response:
        raise table.fail("response", "is empty", f"name the actions to take, or [\"{ALERT_ONLY}\"]")
    names: list[str] = []
    for name in response:
        if name == ALERT_ONLY:
            continue
        if name not in actions:
            raise table.fail("response", f"no action named {name!r} in the config",
                             f"known actions: {', '.join(actions) or '(none)'}; or [\"{ALERT_ONLY}\"] to alert only")
        names.append(name)
    confirmations = table.get("confirmations", int, default=0)
    if confirmations < 0:
        raise table.fail("confirmations", "cannot be negative", "0 acts on the newest block; 2 waits two more")
    return PolicyCommon(
        id=policy_id,
        kind=kind,
        description=table.get("description", str),
        severity=severity,
        response=tuple(names),
        cooldown=table.parsed("cooldown", parse_duration, default=3600.0),
        enabled=table.get("enabled", bool, default=True),
        dry_run=table.get("dry_run", bool, default=False),
        confirmations=confirmations,
        file=path,
    )
