"""The one place that knows how a configured action becomes calls and how to read whether it holds: the response
life cycle and both paths (module, pre-signed) use nothing else of an action."""

from __future__ import annotations

from dataclasses import dataclass

from onguard.actions import ActionSettings, DoneCondition, Via
from onguard.chain.module import ModuleCall
from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader
from onguard.config import Config


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """An action's calls, ready before any threat: the paths wrap them (module execute/executeBatch, Safe
    execTransaction)."""

    name: str
    via: Via                          # the path that executes it
    calls: tuple[ModuleCall, ...]     # in order, in one transaction
    done_when: DoneCondition          # holds when the protocol is in this action's safe state
    text: str                         # e.g. "pool.setPoolPause(true); pool.setReservePause(usdc, true)"


def prepare_action(config: Config, action: ActionSettings) -> PreparedAction:
    del config  # the action carries its resolved targets and encoded calldata
    return PreparedAction(name=action.name, via=action.via,
                          calls=tuple(ModuleCall(target=call.target, data=call.calldata) for call in action.calls),
                          done_when=action.done_when, text=action.text)


async def is_done(rpc: Rpc, action: PreparedAction, block: int | str = "latest") -> bool:
    """Whether the action's `done_when` holds at `block` on the chain `rpc` follows (a failed read raises)."""
    return await action.done_when.holds(BatchStateReader(rpc), block)
