"""Reads policy files from a folder and checks them against the config; an invalid policy stops everything."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from onguard.config import ActionSettings, WatchedContract
from onguard.errors import PolicyError
from onguard.policies.event_threshold import AGGREGATES, EventThresholdPolicy
from onguard.policies.model import ALERT_ONLY, PolicyCommon, Severity
from onguard.tomlfields import Table, read_toml
from onguard.units import parse_amount, parse_duration, parse_share

KINDS = ("event",)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

Policy = EventThresholdPolicy


def load_policies(folder: Path, contracts: Mapping[str, WatchedContract],
                  actions: Mapping[str, ActionSettings]) -> list[Policy]:
    """Every *.toml file in `folder`, validated; disabled policies are loaded (and checked) but not returned."""
    if not folder.is_dir():
        raise PolicyError("policies folder not found", file=str(folder), field="policies.dir",
                          hint="create it, or point policies.dir in onguard.toml at the folder of policy files")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise PolicyError("no policy files (*.toml) in the folder", file=str(folder),
                          hint="a guardian without policies watches nothing; add one (see policies/ in the repo)")
    policies: list[Policy] = []
    seen: dict[str, Path] = {}
    for path in files:
        policy = load_policy(path, contracts, actions)
        if policy.common.id in seen:
            raise PolicyError(f"id {policy.common.id!r} is already used by {seen[policy.common.id]}",
                              file=str(path), field="id", hint="give every policy its own id")
        seen[policy.common.id] = path
        if policy.common.enabled:
            policies.append(policy)
    return policies


def load_policy(path: Path, contracts: Mapping[str, WatchedContract],
                actions: Mapping[str, ActionSettings]) -> Policy:
    table = Table(read_toml(path, PolicyError), file=str(path), prefix="", error=PolicyError)
    kind = table.get("kind", str, hint=f"one of: {', '.join(KINDS)}")
    if kind not in KINDS:
        raise table.fail("kind", f"unknown kind {kind!r}", f"one of: {', '.join(KINDS)}")
    common = _common(table, path, actions)
    policy = _event_threshold(table, common, contracts)
    table.finish()
    return policy


def _common(table: Table, path: Path, actions: Mapping[str, ActionSettings]) -> PolicyCommon:
    policy_id = table.get("id", str)
    if not _ID.match(policy_id):
        raise table.fail("id", f"{policy_id!r} is not a valid id",
                         "lower-case letters, digits, '-', '_' and '.', at most 64 characters")
    severity_name = table.get("severity", str, hint="info, low, medium, high or critical")
    try:
        severity = Severity(severity_name)
    except ValueError:
        raise table.fail("severity", f"unknown severity {severity_name!r}",
                         "one of: " + ", ".join(s.value for s in Severity)) from None
    response = table.get("response", list, hint=f"a list of action names from onguard.toml, or [\"{ALERT_ONLY}\"]")
    names: list[str] = []
    for name in response:
        if name == ALERT_ONLY:
            continue
        if name not in actions:
            raise table.fail("response", f"no action named {name!r} in the config",
                             f"known actions: {', '.join(actions) or '(none)'}; or [\"{ALERT_ONLY}\"] to alert only")
        names.append(name)
    if not response:
        raise table.fail("response", "is empty", f"name the actions to take, or [\"{ALERT_ONLY}\"]")
    return PolicyCommon(
        id=policy_id,
        description=table.get("description", str),
        severity=severity,
        response=tuple(names),
        cooldown=table.parsed("cooldown", parse_duration, default=3600.0),
        enabled=table.get("enabled", bool, default=True),
        dry_run=table.get("dry_run", bool, default=False),
        file=path,
    )


def _event_threshold(table: Table, common: PolicyCommon,
                     contracts: Mapping[str, WatchedContract]) -> EventThresholdPolicy:
    match = table.table("match")
    assert match is not None
    contract_name = match.get("contract", str)
    contract = contracts.get(contract_name)
    if contract is None:
        raise match.fail("contract", f"no watched contract named {contract_name!r}",
                         f"watched contracts: {', '.join(contracts)}")
    event_name = match.get("event", str)
    event = contract.abi.event(event_name)
    if event is None:
        raise match.fail("event", f"{contract_name} has no event {event_name!r}",
                         f"its events: {', '.join(contract.abi.event_names())}")
    match.finish()

    trigger = table.table("trigger")
    assert trigger is not None
    aggregate = trigger.get("aggregate", str, hint=", ".join(AGGREGATES))
    if aggregate not in AGGREGATES:
        raise trigger.fail("aggregate", f"unknown aggregate {aggregate!r}", f"one of: {', '.join(AGGREGATES)}")
    field = trigger.get("field", str, default=None)
    if aggregate == "count":
        if field is not None:
            raise trigger.fail("field", "count takes no field", "remove the field")
    elif field is None:
        raise trigger.fail("field", f"{aggregate} needs the event argument to aggregate",
                           f"arguments of {event_name}: {', '.join(event.names)}")
    elif field not in event.names:
        raise trigger.fail("field", f"{event_name} has no argument {field!r}",
                           f"its arguments: {', '.join(event.names)}")
    elif not event.type_of(field).startswith(("uint", "int")):
        numeric = [name for name in event.names if event.type_of(name).startswith(("uint", "int"))]
        raise trigger.fail("field", f"{aggregate} needs a number, and {event_name}.{field} is "
                                    f"{event.type_of(field)}", f"numeric arguments: {', '.join(numeric) or '(none)'}")
    window = trigger.get("window_blocks", int, hint="how many blocks the aggregate covers, e.g. 5")
    if window < 1:
        raise trigger.fail("window_blocks", "must be at least 1")
    above = trigger.parsed("above", parse_amount, default=None)
    share = trigger.parsed("share", parse_share, default=None)
    share_of = _share_of(trigger, contract_name, contracts) if share is not None else None
    if share is None and trigger.has("share_of"):
        raise trigger.fail("share_of", "given without share", "add share = \"25%\", or remove share_of")
    if above is None and share is None:
        raise trigger.fail("above", "the trigger has no threshold",
                           "give above = \"500_000e18\" (an amount) and/or share = \"25%\" with share_of")
    trigger.finish()
    return EventThresholdPolicy(common=common, contract=contract_name, event=event_name,
                                aggregate=aggregate,  # type: ignore[arg-type]
                                field=field, window_blocks=window, above=above, share=share, share_of=share_of)


def _share_of(trigger: Table, default_contract: str,
              contracts: Mapping[str, WatchedContract]) -> tuple[str, str]:
    reference = trigger.get("share_of", str, hint="a no-argument view such as \"vault.totalAssets()\"")
    contract_name, _, signature = reference.rpartition(".")
    contract_name = contract_name or default_contract
    contract = contracts.get(contract_name)
    if contract is None:
        raise trigger.fail("share_of", f"no watched contract named {contract_name!r}",
                           f"watched contracts: {', '.join(contracts)}")
    if not contract.abi.has_function(signature) or not signature.endswith("()"):
        views = [s for s in contract.abi.function_signatures() if s.endswith("()")]
        raise trigger.fail("share_of", f"{contract_name} has no no-argument view {signature!r}",
                           f"its no-argument functions: {', '.join(views)}")
    return contract_name, signature
