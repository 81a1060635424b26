"""Frames of many devices batched together (a backlog drained at full speed, the next batch running through the
model while the previous one is stored): each stored once, its result published once, confirmed to its
device and acknowledged to the broker. In-process receiver, real Mosquitto, real bundle."""

from __future__ import annotations

import json
import time

import numpy as np

from edgekit.delivery.acks import parse_ack
from edgekit.mqtt.client import make_client
from edgekit.mqtt.topics import topic
from edgekit.mqtt.urls import parse_broker_url
from support.running import db_rows, start_receiver, wait_until

DEVICES = [f"cam-b{i:02d}" for i in range(12)]
PER_DEVICE = 12


def _queue_backlog(bundle, url: str) -> None:
    """Every device publishes its frames (QoS 1, all acknowledged by the broker) while no receiver runs."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    scale, zero_point = encoder.spec.wire_quant
    rng = np.random.default_rng(1)
    broker = parse_broker_url(url)
    client = make_client("batching-fleet", "5")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for seq in range(PER_DEVICE):
            for boot_id, device in enumerate(DEVICES, start=100):
                code = rng.integers(-8, 8, encoder.spec.code_shape, dtype=np.int8)
                frame = encoder.encode(code, scale, zero_point, seq=seq, boot_id=boot_id, timestamp_ns=time.time_ns())
                client.publish(topic(device, "features"), frame, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_frames_of_many_devices_batched_together_are_stored_published_and_acked_once(bundle, mosquitto, collector,
                                                                                     tmp_path):
    db = tmp_path / "batching.sqlite"
    start_receiver(bundle, mosquitto.url, db, client_id="rx-batching").stop()  # its session now queues frames
    results = collector(mosquitto.url, topic("+", "results"))
    acks = collector(mosquitto.url, topic("+", "acks"))
    _queue_backlog(bundle, mosquitto.url)
    total = len(DEVICES) * PER_DEVICE

    receiver = start_receiver(bundle, mosquitto.url, db, client_id="rx-batching", max_batch=16, max_wait_s=0.05)
    try:
        assert wait_until(lambda: receiver.counters.stored == total, 60), receiver.counters
        assert wait_until(lambda: len(results.messages) >= total)
        receiver.send_acks(force=True)
        confirmed: dict[str, set[int]] = {}

        def all_confirmed() -> bool:
            for topic_name, payload, _ in list(acks.messages):
                boot_id, ranges = parse_ack(payload)
                confirmed.setdefault(topic_name.split("/")[2], set()).update(
                    seq for first, last in ranges for seq in range(first, last + 1))
            return all(confirmed.get(d) == set(range(PER_DEVICE)) for d in DEVICES)

        assert wait_until(all_confirmed), confirmed
    finally:
        receiver.stop()

    rows = db_rows(db, "SELECT device, seq, batch_size, done_ns FROM results")
    assert sorted((d, s) for d, s, _, _ in rows) == sorted((d, s) for d in DEVICES for s in range(PER_DEVICE))
    by_batch: dict[int, set[str]] = {}
    for device, _, _, done_ns in rows:
        by_batch.setdefault(done_ns, set()).add(device)
    assert max(len(devices) for devices in by_batch.values()) > 1, "no batch held frames of several devices"
    assert max(size for _, _, size, _ in rows) > 1
    published = [(m["device"], m["seq"]) for m in (json.loads(p) for _, p, _ in results.messages)]
    assert sorted(published) == sorted((d, s) for d in DEVICES for s in range(PER_DEVICE)), "a result twice or none"

    again = start_receiver(bundle, mosquitto.url, db, client_id="rx-batching")  # every frame was acked: none back
    try:
        received = again.counters.received
        time.sleep(1.0)
        assert again.counters.received == received and again.counters.duplicates == 0
    finally:
        again.stop()
    assert db_rows(db, "SELECT COUNT(*) FROM results") == [(total,)]
