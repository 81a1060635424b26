"""The receiver keeps serving whatever one frame or the store does: in-process, against a real Mosquitto."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import numpy as np
import pytest

from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.server.receiver import Receiver, ReceiverConfig
from support.running import db_rows, wait_until

POISON_SEQ = 3



@pytest.fixture
def receivers(bundle, mosquitto, tmp_path):
    """``receivers()`` starts an in-process receiver (fixed client id, so its session persists); all stop after."""
    started: list[Receiver] = []

    def start(**overrides) -> Receiver:
        cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=tmp_path / "r.sqlite",
                             client_id="rx-robust", max_wait_s=0.2, **overrides)
        receiver = Receiver(cfg).start()
        started.append(receiver)
        assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
        return receiver

    yield start
    for receiver in started:
        if receiver.link.alive:
            receiver.stop()


def _publish(url: str, payloads: list[bytes], device: str = "cam-r", kind: str = "features") -> None:
    broker = parse_broker_url(url)
    client = make_client("robust-sender", "5")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic(device, kind), payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _frames(bundle, n: int, first_seq: int = 0) -> list[bytes]:
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    rng = np.random.default_rng(0)
    shape = encoder.spec.code_shape
    scale, zero_point = encoder.spec.wire_quant
    return [encoder.encode(rng.integers(-8, 8, shape, dtype=np.int8), scale, zero_point, seq=i, boot_id=7,
                           timestamp_ns=time.time_ns()) for i in range(first_seq, first_seq + n)]


def test_a_result_the_store_refuses_is_dead_lettered_alone_and_acked(bundle, mosquitto, receivers, tmp_path):
    receiver = receivers()
    insert = receiver.store.insert

    def poisoned_insert(results, *counters):  # as SQLite does for an integer beyond 64 bits
        if any(r.seq == POISON_SEQ for r in results):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return insert(results, *counters)

    receiver.store.insert = poisoned_insert
    _publish(mosquitto.url, _frames(bundle, 6))
    db = tmp_path / "r.sqlite"
    assert wait_until(lambda: receiver.counters.stored == 5 and receiver.counters.deadlettered == 1)
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results ORDER BY seq")] == [0, 1, 2, 4, 5]
    assert wait_until(lambda: db_rows(db, "SELECT device, reason FROM deadletters") == [("cam-r", "store-failed")])
    receiver.stop()

    again = receivers()  # same session: an unacked frame would come back now (counters continue: 6 so far)
    time.sleep(1.5)
    assert again.counters.received == 6


def test_a_dead_letter_the_store_cannot_write_does_not_stop_the_link(bundle, mosquitto, receivers, tmp_path,
                                                                      caplog):
    receiver = receivers()

    def broken(samples, totals, retention):
        raise sqlite3.OperationalError("database or disk is full")

    receiver.store.dead_letters = broken
    with caplog.at_level(logging.WARNING, logger="edgekit.server.deadletters"):
        _publish(mosquitto.url, [b"not a frame", *_frames(bundle, 2)])
        assert wait_until(lambda: receiver.counters.stored == 2)
        assert wait_until(lambda: "dead letters not stored (still counted)" in caplog.text)
    assert receiver.counters.deadlettered == 1 and receiver.link.alive
    receiver.stop()

    again = receivers()  # the bad frame was still acked: it does not come back (counters continue: 3 so far)
    time.sleep(1.5)
    assert again.counters.received == 3


def test_serve_ends_with_a_summary_not_a_closed_database_error(bundle, mosquitto, tmp_path, caplog):
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=tmp_path / "r.sqlite",
                         client_id="rx-serve")
    receiver = Receiver(cfg)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="edgekit.server.receiver"):
        receiver.serve(stop)  # raised ProgrammingError: Cannot operate on a closed database
    assert "summary:" in caplog.text
    assert db_rows(tmp_path / "r.sqlite", "SELECT name FROM counters WHERE receiver = 'rx-serve' AND name = 'received'")
