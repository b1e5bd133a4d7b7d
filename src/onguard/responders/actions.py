"""The one place that knows how a configured action becomes a call and how to read whether it holds. The action
model changes here only: `prepare_action` builds the call, `is_done` reads `done_when`; the response life cycle
and both paths (module, pre-signed) use nothing else of an action."""

from __future__ import annotations

from dataclasses import dataclass

from onguard.chain.rpc import Rpc
from onguard.config import ActionSettings, Config


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """An action's call, ready before any threat: the paths wrap it (module execute, Safe execTransaction)."""

    name: str
    via: str            # "module" | "presigned": the path that executes it
    target: str         # the contract called
    data: bytes         # the calldata, e.g. pause()
    done_check: bytes   # the view on `target` that tells the action holds, e.g. paused()


def prepare_action(config: Config, action: ActionSettings) -> PreparedAction:
    contract = config.contracts[action.contract]
    return PreparedAction(name=action.name, via=action.via, target=contract.address,
                          data=contract.abi.encode_call(action.call),
                          done_check=contract.abi.encode_call(action.done_when))


async def is_done(rpc: Rpc, action: PreparedAction, block: int | str = "latest") -> bool:
    """Whether the action's `done_when` holds at `block` on the chain `rpc` follows."""
    raw = await rpc.call(action.target, action.done_check, block)
    return bool(int.from_bytes(raw[:32], "big")) if raw else False
