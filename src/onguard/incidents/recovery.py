"""The way back after an incident: for every action the guardian put in effect, its `undo` calls (unpause) and, for
an action taken through the GuardianModule, the module's `resetCooldown` for each call it made (so a second attack
is paused at once, not after the cooldown) — as ONE Safe transaction (a MultiSend batch) for the owners to sign and
execute, linked to the incident. Nothing here sends anything: the owners decide when the protocol runs again."""

from __future__ import annotations

from dataclasses import dataclass

from onguard.actions import Via
from onguard.chain.module import encode_reset_cooldown
from onguard.config import Config
from onguard.errors import InputError
from onguard.incidents.store import Incident, IncidentStatus, ResponseRecord, ResponseStatus
from onguard.safe.tx import BatchCall

# What the owners confirm before the way back is proposed (flag, the question).
CHECKLIST = (("root_cause", "--root-cause", "the root cause is understood and noted"),
             ("fix", "--fix", "the fix is deployed (or nothing needed fixing: say why)"),
             ("policy", "--policy", "the policy that tripped is adjusted, or left as it is on purpose"))


@dataclass(frozen=True, slots=True)
class RecoveryStep:
    """One call of the recovery batch, and what it does in words."""

    action: str
    text: str
    call: BatchCall


def recovery_steps(config: Config, incident: Incident, responses: list[ResponseRecord]) -> list[RecoveryStep]:
    """Undo calls first (each action in the order it was taken), then the module's cooldown resets."""
    if incident.status != IncidentStatus.RESOLVED:
        raise InputError(f"incident {incident.id} is {incident.status}: while it is watched the guardian would "
                         "pause again as soon as the owners unpause",
                         hint=f"resolve it first: `onguard incidents resolve {incident.id} --reason …`")
    taken = [r for r in responses if r.status in (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE)]
    if not taken:
        raise InputError(f"incident {incident.id} has no action in effect: there is nothing to undo",
                         hint="`onguard incidents show ID` lists its responses")
    undo: list[RecoveryStep] = []
    resets: dict[tuple[str, bytes], RecoveryStep] = {}
    for response in taken:
        action = config.actions.get(response.action)
        if action is None:
            raise InputError(f"the action {response.action!r} of incident {incident.id} is no longer configured",
                             hint=f"add [actions.{response.action}] back to {config.path}, with its undo")
        if not action.undo:
            raise InputError(f"the action {action.name} says nothing about how to undo it",
                             field=f"actions.{action.name}.undo",
                             hint=f"add undo = \"unpause()\" (or [[actions.{action.name}.undo]] tables) to "
                                  f"{config.path}")
        undo += [RecoveryStep(action.name, f"{call.text} (undo {action.name})", BatchCall(call.target, call.calldata))
                 for call in action.undo]
        if action.via == Via.MODULE and response.status == ResponseStatus.MINED:
            module = config.safe.guardian_module
            assert module is not None  # a module action is refused at load without one
            for call in action.calls:
                resets.setdefault((call.target, call.selector), RecoveryStep(
                    action.name, f"module.resetCooldown({call.contract}, {call.function.signature})",
                    BatchCall(module, encode_reset_cooldown(call.target, call.selector))))
    return undo + list(resets.values())


def checklist_answers(answers: dict[str, str | None]) -> dict[str, str]:
    """Every checklist item answered in words, or an InputError listing what is missing."""
    missing = [(flag, question) for key, flag, question in CHECKLIST if not (answers.get(key) or "").strip()]
    if missing:
        raise InputError("the owners' checklist is not complete: "
                         + "; ".join(f"{flag} ({question})" for flag, question in missing),
                         hint="answer each in words; they are recorded in the incident and the audit log")
    return {question: str(answers[key]).strip() for key, _, question in CHECKLIST}
