"""Authenticated frames end to end: ``edgekit device run --frame-key`` → real Mosquitto → ``edgekit server run
--frame-keys`` → SQLite, with an attacker on the same broker.

Forged, altered, replayed, moved and untagged frames are each dead-lettered with their own reason while the
genuine stream keeps flowing and is stored exactly once; forged results never reach the agent's counts.
"""

from __future__ import annotations

import json
import secrets
import signal
import time

import pytest

from support.frames import flip_bit, recrc, strip_tag, wrong_tag
from edgekit.auth.keys import KeyStore, write_key_file
from edgekit.auth.tags import seal, sign_message
from edgekit.demo.roles import start_device, start_server
from edgekit.wire.frame_v2 import AUTH_FLAG, split_v2
from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from support.running import db_rows, wait_until

FRAMES = 40
TIME_BYTE = 9  # a byte of the time field of a version-2 frame with seq < 128



def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish as an attacker who may write any topic of the broker (QoS 1, in order)."""
    broker = parse_broker_url(url)
    client = make_client("attacker", "5")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for name, payload in messages:
            client.publish(name, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _frames(sink, device: str) -> list[bytes]:
    return [payload for name, payload, _ in sink.messages if name == topic(device, "features")]


def _confirmations(acks, boot_id: int, seq: int) -> int:
    """How many acks the receiver sent that confirm ``(boot_id, seq)``."""
    from edgekit.delivery.acks import parse_ack

    parsed = [parse_ack(payload) for _, payload, _ in acks.messages]
    return sum(1 for ack in parsed if ack and ack[0] == boot_id and any(a <= seq <= b for a, b in ack[1]))


def _forge(bundle, code, device: str, boot_id: int, seq: int) -> bytes:
    """A well-formed frame tagged with a key the forger made up."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    encoder.sealer = seal(secrets.token_bytes(32), device)
    return encoder.encode(code, *encoder.spec.wire_quant, seq=seq, boot_id=boot_id, timestamp_ns=time.time_ns())


@pytest.fixture
def provisioned(tmp_path):
    """A key store with cam-a and cam-b, and their device key files."""
    keys = KeyStore(tmp_path / "keys", create=True)
    for device in ("cam-a", "cam-b"):
        write_key_file(tmp_path / f"{device}.key", device, keys.add(device))
    return keys


def test_attacks_are_dead_lettered_with_their_reasons_while_genuine_frames_flow(bundle, stream, mosquitto,
                                                                                 collector, provisioned, tmp_path):
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.decoder import WireDecoder

    url, db = mosquitto.url, tmp_path / "r.sqlite"
    sink = collector(url, "edgekit/v1/+/features")
    acks = collector(url, topic("cam-a", "acks"))
    roles = []

    def device(name: str, *extra: str):
        roles.append(start_device(bundle, url, "cam-a", stream(FRAMES), tmp_path / f"{name}.sqlite",
                                  tmp_path / f"{name}.log", "--frame-key", str(tmp_path / "cam-a.key"), *extra))
        return roles[-1]

    try:
        roles.append(start_server([bundle], url, db, tmp_path / "server.log", "--frame-keys",
                                  str(provisioned.folder), "--max-wait-ms", "20"))
        first = device("first", "--fps", "0").final_json()
        assert first["results"] == FRAMES and first["forged_results"] == 0, first
        genuine = _frames(sink, "cam-a")
        assert len(genuine) == FRAMES and all(f[0] == 0xE2 and f[1] & AUTH_FLAG for f in genuine)
        bundle_id = Bundle.load(bundle).bundle_id

        second = device("second", "--fps", "20")  # about 2 s of frames while the attacks run
        assert wait_until(lambda: len(_frames(sink, "cam-a")) > FRAMES)
        live = split_v2(_frames(sink, "cam-a")[FRAMES])
        code = WireDecoder([Bundle.load(bundle)]).decode(genuine[0], verify_tag=lambda *a: None).code
        squat = [_forge(bundle, code, "cam-a", live.boot_id, live.seq + 10 + i) for i in range(3)]
        forged_result = {"seq": live.seq, "boot_id": live.boot_id, "device": "cam-a", "topk": [["0", 1.0]],
                         "timings": {"capture_ns": 1}}
        _publish(url, [
            (topic("cam-a", "features"), flip_bit(genuine[5], TIME_BYTE)),  # damaged: crc-mismatch
            (topic("cam-a", "features"), recrc(flip_bit(genuine[5], TIME_BYTE), bundle_id)),  # altered: bad-tag
            (topic("cam-a", "features"), wrong_tag(genuine[6])),  # bad-tag
            *[(topic("cam-a", "features"), f) for f in squat],  # the live boot's upcoming seqs: bad-tag
            (topic("cam-a", "features"), strip_tag(genuine[7], bundle_id)),  # missing-tag
            (topic("cam-a", "features"), genuine[8]),  # replayed
            (topic("cam-b", "features"), genuine[9]),  # wrong-device
            (topic("cam-a", "features"), _forge(bundle, code, "cam-a", 0x0BAD0001, 0)),  # forged-boot
            (topic("cam-c", "features"), _forge(bundle, code, "cam-c", 0x0BAD0002, 0)),  # unknown-key
            (topic("cam-a", "acks"), json.dumps({"boot_id": live.boot_id, "ranges": [[0, 100]]}).encode()),
            (topic("cam-a", "results"), json.dumps(forged_result).encode()),
            (topic("cam-a", "results"), json.dumps(sign_message(secrets.token_bytes(32), "cam-a", "results",
                                                                forged_result)).encode()),
        ])
        stats = second.final_json()
        replay_confirmed = wait_until(lambda: _confirmations(acks, first["boot_id"], 8) >= 2)
        expected = {"crc-mismatch": 1, "bad-tag": 5, "missing-tag": 1, "replayed": 1, "wrong-device": 1,
                    "forged-boot": 1, "unknown-key": 1}
        assert wait_until(lambda: db_rows(db, "SELECT COUNT(*) FROM deadletters")[0][0] >= sum(expected.values()))
    finally:
        for role in roles:
            role.stop(signal.SIGKILL)
        for role in roles:
            print(f"\n---- {' '.join(role.args[:2])} log ----\n{role.log_text()[-3000:]}")

    assert dict(db_rows(db, "SELECT reason, COUNT(*) FROM deadletters GROUP BY reason")) == expected
    for boot_id in (first["boot_id"], stats["boot_id"]):  # every genuine frame stored, once
        seqs = [s for (s,) in db_rows(db, "SELECT seq FROM results WHERE device = 'cam-a' AND boot_id = ? "
                                        "ORDER BY seq", boot_id)]
        assert seqs == list(range(FRAMES))
    assert db_rows(db, "SELECT COUNT(*) FROM results")[0][0] == 2 * FRAMES
    assert stats["results"] == FRAMES and stats["forged_results"] == 2 and stats["forged_acks"] == 1, stats
    # a replay of a stored frame is confirmed again: its device may have missed the first ack
    assert replay_confirmed, _confirmations(acks, first["boot_id"], 8)
