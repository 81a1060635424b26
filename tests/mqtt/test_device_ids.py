"""Device ids: the receiver applies the agent's rule (edgekit.mqtt.device_id_problem) to the id in the topic.

Frames on topics whose id the agent would refuse are dead-lettered as ``bad-device-id`` (never stored as
results, never echoed into a topic, the id escaped and cut short in the record), against a real Mosquitto,
while a genuine device's frames are stored.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.running import db_rows, wait_until

from edgekit.errors import UsageError
from edgekit.mqtt.topics import TOPIC_ROOT, check_device_id, device_id_problem, printable_id
from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url
from edgekit.server.receiver import INVALID_DEVICE, Receiver, ReceiverConfig

GIANT = "x" * 60_000
RTL = "cam\u202e70-"  # a right-to-left override: shows as "cam-07" reversed in a terminal
ON_THE_WIRE = ["..", ".", GIANT, RTL, "", "cam 1", "caméra", "x" * 65]  # all valid MQTT topic levels
BAD_IDS = [*ON_THE_WIRE, "cam\n", "a/b", "a+b", "#"]  # MQTT itself refuses these in topic names
# GIANT's 60 KB topic is over the receiver's announced Maximum Packet Size: the broker drops it unseen
REACHES_RECEIVER = [bad for bad in ON_THE_WIRE if bad is not GIANT]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_agent_refuses_what_the_receiver_dead_letters(bad):
    assert device_id_problem(bad) is not None
    with pytest.raises(UsageError) as err:
        check_device_id(bad)
    assert len(str(err.value)) < 300 and "\u202e" not in str(err.value)


@pytest.mark.parametrize("good", ["cam-07", "a", "Pi_4.kitchen", "x" * 64, "..a"])
def test_valid_ids_pass(good):
    assert device_id_problem(good) is None and check_device_id(good) == good


def test_printable_id_is_ascii_and_bounded():
    assert printable_id(RTL) == "'cam\\u202e70-'"
    assert len(printable_id(GIANT)) < 100 and "60000 characters" in printable_id(GIANT)


def _frames(bundle, n: int, boot_id: int) -> list[bytes]:
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    scale, zero_point = encoder.spec.wire_quant
    rng = np.random.default_rng(1)
    return [encoder.encode(rng.integers(-8, 8, encoder.spec.code_shape, dtype=np.int8), scale, zero_point, seq=i,
                           boot_id=boot_id, timestamp_ns=time.time_ns()) for i in range(n)]



def test_bad_ids_are_dead_lettered_and_a_genuine_device_is_stored(bundle, mosquitto, collector, tmp_path):
    db = tmp_path / "r.sqlite"
    receiver = Receiver(ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=db,
                                       client_id="rx-ids", max_wait_s=0.05)).start()
    try:
        assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
        watch = collector(mosquitto.url, f"{TOPIC_ROOT}/+/+")
        genuine, forged = _frames(bundle, 4, boot_id=11), _frames(bundle, 1, boot_id=12)[0]
        client = make_client("ids-sender", "5")
        broker = parse_broker_url(mosquitto.url)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            for bad in ON_THE_WIRE:
                client.publish(f"{TOPIC_ROOT}/{bad}/features", forged, qos=1).wait_for_publish(5)
            for frame in genuine:
                client.publish(f"{TOPIC_ROOT}/cam-ok/features", frame, qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()
        assert wait_until(lambda: receiver.counters.stored >= 4
                          and receiver.counters.deadlettered >= len(REACHES_RECEIVER))
        time.sleep(0.3)  # anything the receiver would still publish for a bad id
    finally:
        receiver.stop()

    assert receiver.counters.deadletter_reasons == {"bad-device-id": len(REACHES_RECEIVER)}
    assert db_rows(db, "SELECT device, seq FROM results ORDER BY seq") == [("cam-ok", i) for i in range(4)]
    dead = db_rows(db, "SELECT device, reason, error FROM deadletters")
    assert len(dead) == len(REACHES_RECEIVER)
    assert {(device, reason) for device, reason, _ in dead} == {(INVALID_DEVICE, "bad-device-id")}
    errors = [error for _, _, error in dead]
    assert all(len(e) < 200 and e.isascii() for e in errors), errors  # the 60,000 characters are not stored
    assert any("(65 characters)" in e for e in errors) and any("\\u202e" in e for e in errors)
    assert any("device id '..': only dots" in e for e in errors) and any("device id '': empty" in e for e in errors)
    published = {t for t, _, _ in watch.messages if not t.endswith("/features")}
    assert published and all(t.startswith(f"{TOPIC_ROOT}/cam-ok/") for t in published), published
