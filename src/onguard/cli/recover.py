"""`onguard recover ID`: prepares the way back from a resolved incident — every action's undo (unpause) and the
GuardianModule's cooldown reset, as one Safe proposal linked to the incident — once the owners' checklist is
answered (root cause, fix, policy). It never unpauses: the owners sign and execute it with `onguard proposals`."""

from __future__ import annotations

import argparse
import getpass

from onguard.cli.common import add_config_argument
from onguard.cli.signing import connect
from onguard.config import load_config
from onguard.errors import InputError
from onguard.store.audit import AuditKind, AuditLog
from onguard.incidents.recovery import CHECKLIST, checklist_answers, recovery_steps
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStore
from onguard.safe.tx import SafeTxData


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "recover", help="propose the way back after a resolved incident (unpause + module cooldown reset) as one "
                        "Safe transaction for the owners; never unpauses by itself")
    add_config_argument(parser)
    parser.add_argument("id", type=int, help="the incident (resolved first: `onguard incidents resolve`)")
    for key, flag, question in CHECKLIST:
        parser.add_argument(flag, dest=key, default=None, help=f"checklist: {question}")
    parser.add_argument("--nonce", type=int, default=None, help="the Safe nonce (default: the Safe's current one)")
    parser.add_argument("--by", default=None, help="who prepares it (default: the login name)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    answers = checklist_answers({key: getattr(args, key) for key, _, _ in CHECKLIST})
    store = IncidentStore(config.state)
    try:
        try:
            incident = store.incident(args.id)
        except LookupError:
            raise InputError(f"no incident with id {args.id}", hint="`onguard incidents list` shows the ids") from None
        steps = recovery_steps(config, incident, store.responses(incident.id))
        nonce = args.nonce if args.nonce is not None else connect(config).retrieve_state().nonce
        tx = SafeTxData.batch(config.safe.address, config.chain.chain_id, [step.call for step in steps], nonce)
        by = args.by or getpass.getuser()
        purpose = f"recover from incident {incident.id}: " + "; ".join(step.text for step in steps)
        record = SafeTxStore(store.database).add(TxKind.PROPOSAL, tx, purpose=purpose, proposer=by,
                                                 incident_id=incident.id)
        audit = AuditLog(store.database)
        audit.append(AuditKind.PROPOSAL, by, {"proposal": record.id, "purpose": purpose, "incident_id": incident.id,
                                             "safe_tx_hash": record.safe_tx_hash, "to": tx.to, "data": tx.data,
                                             "nonce": nonce})
        audit.append(AuditKind.RECOVERY, by, {"incident_id": incident.id, "proposal": record.id,
                                             "safe_tx_hash": record.safe_tx_hash, "checklist": answers})
        store.add_timeline(incident.id, "recovery-checklist", {"by": by, "items": answers})
        store.add_timeline(incident.id, "recovery-proposed", {"by": by, "proposal": record.id,
                                                              "safe_tx_hash": record.safe_tx_hash,
                                                              "calls": [step.text for step in steps]})
    finally:
        store.close()
    print(f"recovery for incident {incident.id}: proposal {record.id}, Safe tx {record.safe_tx_hash} at nonce {nonce}")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step.text}")
    print("  checklist (confirmed by " + by + "):")
    for question, answer in answers.items():
        print(f"    [x] {question}: {answer}")
    print(f"nothing is sent: the owners review it (`onguard proposals show {record.id}`), sign it "
          f"(`onguard proposals sign {record.id}`) and execute it (`onguard proposals execute {record.id}`).")
    return 0
