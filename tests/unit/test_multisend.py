"""safe/tx.py batches: a MultiSendCallOnly batch decodes back to its calls (and safe-eth-py's own decoder agrees),
one call stays a plain CALL, and a DELEGATECALL anywhere but a known MultiSendCallOnly has no calls to show."""

from __future__ import annotations

from dataclasses import replace

import pytest
from safe_eth.safe.multi_send import MultiSend, MultiSendOperation

from onguard.safe.tx import CALL, DELEGATECALL, MULTISEND_CALL_ONLY, BatchCall, SafeTxData, decode_multisend

SAFE = "0x" + "5a" * 20
VAULT = "0x" + "ab" * 20
POOL = "0x" + "cd" * 20
PAUSE = bytes.fromhex("8456cb59")
SET_PAUSED = bytes.fromhex("16c38b3c") + (1).to_bytes(32, "big")
CALLS = (BatchCall(VAULT, PAUSE), BatchCall(POOL, SET_PAUSED, value=7))


def test_a_batch_is_a_delegatecall_to_multisend_call_only_and_decodes_to_its_calls():
    tx = SafeTxData.batch(SAFE, 1, CALLS, 4)
    assert (tx.operation, tx.to, tx.value) == (DELEGATECALL, MULTISEND_CALL_ONLY, 0)
    assert tx.is_batch
    assert [(c.to.lower(), c.data, c.value) for c in tx.calls] == [(VAULT, PAUSE, 0), (POOL, SET_PAUSED, 7)]
    theirs = MultiSend.from_transaction_data(tx.data)
    assert [(t.operation, t.to.lower(), bytes(t.data), t.value) for t in theirs] == [
        (MultiSendOperation.CALL, VAULT, PAUSE, 0), (MultiSendOperation.CALL, POOL, SET_PAUSED, 7)]


def test_one_call_is_a_plain_call_and_an_empty_batch_is_refused():
    tx = SafeTxData.batch(SAFE, 1, CALLS[:1], 4)
    assert (tx.operation, tx.to.lower(), tx.data, tx.is_batch) == (CALL, VAULT, PAUSE, False)
    with pytest.raises(ValueError):
        SafeTxData.batch(SAFE, 1, [], 4)


def test_a_delegatecall_elsewhere_or_a_malformed_batch_has_no_calls():
    batch = SafeTxData.batch(SAFE, 1, CALLS, 4)
    assert replace(batch, to=VAULT).calls == ()
    assert replace(batch, data=batch.data[:-5]).calls == ()
    assert decode_multisend(MULTISEND_CALL_ONLY, PAUSE) is None


def test_the_batch_content_is_covered_by_the_safe_tx_hash():
    assert SafeTxData.batch(SAFE, 1, CALLS, 4).safe_tx_hash != SafeTxData.batch(SAFE, 1, CALLS[::-1], 4).safe_tx_hash
