"""Inputs at the edges of what the receiver takes: the largest seq a frame may carry, and JSON nested too deep
for Python's parser on a device's heartbeat topic. In-process receivers against a real Mosquitto and SQLite."""

from __future__ import annotations

import json
import logging

from edgekit.delivery.acks import MAX_SEQ
from support.running import db_rows, seqs, start_receiver, wait_until
from test_receiver_robustness import _frames, _publish


def test_a_frame_with_the_largest_seq_is_stored(bundle, mosquitto, tmp_path):
    """seq 2**63 - 1 passes every wire check; the store's range merge looked one past it (SQLite overflow) and
    dead-lettered it ``store-failed``."""
    db = tmp_path / "r.sqlite"
    receiver = start_receiver(bundle, mosquitto.url, db)
    try:
        _publish(mosquitto.url, _frames(bundle, 3, first_seq=MAX_SEQ - 2))
        assert wait_until(lambda: receiver.counters.stored + receiver.counters.deadlettered == 3)
        assert receiver.counters.deadlettered == 0 and receiver.counters.stored == 3
    finally:
        receiver.stop()
    assert seqs(db, "cam-r", 7) == [MAX_SEQ - 2, MAX_SEQ - 1, MAX_SEQ]
    assert db_rows(db, "SELECT first, last FROM seq_ranges WHERE kind = 'stored'") == [(MAX_SEQ - 2, MAX_SEQ)]
    assert db_rows(db, "SELECT COUNT(*) FROM deadletters") == [(0,)]


def test_heartbeats_nested_too_deep_are_ignored_without_a_traceback(bundle, mosquitto, tmp_path, caplog):
    """``json.loads`` raises RecursionError (not a ValueError) on ``[[[[...``: the ledger logged a traceback
    for it on every check and lost the other devices' heartbeats of that check."""
    db = tmp_path / "r.sqlite"
    receiver = start_receiver(bundle, mosquitto.url, db)
    try:
        with caplog.at_level(logging.DEBUG, logger="edgekit"):
            for _ in range(3):  # within the 16 KiB the receiver takes, beyond the parser's nesting limit
                _publish(mosquitto.url, [b"[" * 10_000, b'{"drops": ' + b"[" * 10_000], device="cam-deep",
                         kind="heartbeat")
                _publish(mosquitto.url, [json.dumps({"drops": [[7, 5, 6]]}).encode()], kind="heartbeat")
            _publish(mosquitto.url, _frames(bundle, 5))
            assert wait_until(lambda: receiver.counters.stored == 5)
            assert wait_until(lambda: db_rows(db, "SELECT device, first, last FROM seq_ranges WHERE kind = 'dropped'")
                              == [("cam-r", 5, 6)])
    finally:
        receiver.stop()
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    assert seqs(db, "cam-r", 7) == list(range(5))
