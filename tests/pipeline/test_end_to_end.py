"""The whole transport with real processes: edgekit device run → Mosquitto → edgekit server run → SQLite.

Every test counts rows in the results database exactly: all frames, once each.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time

import pytest

from edgekit.demo.roles import count_results, start_device, start_server
from edgekit.wire.frame_v2 import split_v2
from support.running import db_rows, wait_until

FRAMES = 200



def _spooled(spool) -> int:
    """Frames in a device's spool; 0 while the agent has created the file but not yet its table."""
    try:
        return db_rows(spool, "SELECT COUNT(*) FROM frames")[0][0] if spool.exists() else 0
    except sqlite3.OperationalError:
        return 0


def _exactly_once(db, device: str, boot_id: int, n: int) -> None:
    seqs = [s for (s,) in db_rows(db, "SELECT seq FROM results WHERE device = ? AND boot_id = ? ORDER BY seq",
                                device, boot_id)]
    assert seqs == list(range(n))


@pytest.fixture
def roles(tmp_path):
    """Start server/device subprocesses; stops all of them and prints their logs on failure."""
    started = []

    class Roles:
        def server(self, bundle, url, db, *extra):
            started.append(start_server([bundle], url, db, tmp_path / f"server{len(started)}.log", *extra))
            return started[-1]

        def device(self, bundle, url, device_id, source, *extra, spool=None):
            spool = spool or tmp_path / f"spool-{device_id}.sqlite"
            started.append(start_device(bundle, url, device_id, source, spool, tmp_path / f"{device_id}-{len(started)}.log",
                                        *extra))
            return started[-1]

    yield Roles()
    for role in started:
        role.stop(signal.SIGKILL)
        print(f"\n---- {' '.join(role.args[:2])} log ----\n{role.log_text()[-4000:]}")


def test_broker_restarted_mid_stream_every_frame_once(bundle, stream, mosquitto, roles, tmp_path):
    db = tmp_path / "results.sqlite"
    roles.server(bundle, mosquitto.url, db, "--client-id", "rx-1")
    device = roles.device(bundle, mosquitto.url, "cam-1", stream(FRAMES), "--fps", "100", "--linger", "5")
    assert wait_until(lambda: count_results(db) >= 40, 60)
    mosquitto.restart()
    stats = device.final_json()
    assert stats["connects"] >= 2 and stats["captured"] == FRAMES and stats["dropped"] == 0
    assert wait_until(lambda: count_results(db) >= FRAMES, 30)
    _exactly_once(db, "cam-1", stats["boot_id"], FRAMES)


def test_agent_sigkilled_with_spooled_frames_delivers_them_after_restart(bundle, stream, mosquitto, roles, tmp_path):
    db, spool = tmp_path / "results.sqlite", tmp_path / "spool.sqlite"
    mosquitto.stop()  # the device starts during an outage: everything goes to the spool
    first = roles.device(bundle, mosquitto.url, "cam-2", stream(FRAMES), "--fps", "0", spool=spool)
    assert wait_until(lambda: _spooled(spool) == FRAMES, 60)
    first.stop(signal.SIGKILL)
    boot_ids = {split_v2(p).boot_id for (p,) in db_rows(spool, "SELECT payload FROM frames")}  # version-2 frames
    assert len(boot_ids) == 1
    mosquitto.start()
    roles.server(bundle, mosquitto.url, db)
    second = roles.device(bundle, mosquitto.url, "cam-2", stream(FRAMES), "--limit", "0", spool=spool)
    stats = second.final_json()
    assert stats["captured"] == 0 and stats["acknowledged"] == FRAMES and stats["queue_depth"] == 0
    assert wait_until(lambda: count_results(db) >= FRAMES, 30)
    _exactly_once(db, "cam-2", boot_ids.pop(), FRAMES)


def test_server_killed_while_device_sends_then_restarted_loses_nothing(bundle, stream, mosquitto, roles, tmp_path):
    db = tmp_path / "results.sqlite"
    server = roles.server(bundle, mosquitto.url, db, "--client-id", "rx-persistent")
    device = roles.device(bundle, mosquitto.url, "cam-3", stream(FRAMES), "--fps", "100", "--linger", "0")
    assert wait_until(lambda: count_results(db) >= 30, 60)
    server.stop(signal.SIGKILL)  # acks go out only after the SQLite commit: a crash loses nothing
    during = count_results(db)
    stats = device.final_json()  # the device finishes while no receiver runs: the broker queues the rest
    assert stats["acknowledged"] == FRAMES and count_results(db) == during < FRAMES
    roles.server(bundle, mosquitto.url, db, "--client-id", "rx-persistent")
    assert wait_until(lambda: count_results(db) >= FRAMES, 30)
    _exactly_once(db, "cam-3", stats["boot_id"], FRAMES)


def test_two_receivers_share_the_load_without_duplicates(bundle, stream, mosquitto, roles, tmp_path):
    db = tmp_path / "results.sqlite"
    roles.server(bundle, mosquitto.url, db, "--client-id", "rx-a", "--group", "rx")
    roles.server(bundle, mosquitto.url, db, "--client-id", "rx-b", "--group", "rx")
    devices = [roles.device(bundle, mosquitto.url, f"cam-{i}", stream(FRAMES), "--fps", "200") for i in range(2)]
    boots = {f"cam-{i}": d.final_json()["boot_id"] for i, d in enumerate(devices)}
    assert wait_until(lambda: count_results(db) >= 2 * FRAMES, 30)
    for device, boot in boots.items():
        _exactly_once(db, device, boot, FRAMES)
    per_receiver = dict(db_rows(db, "SELECT receiver, COUNT(*) FROM results GROUP BY receiver"))
    assert set(per_receiver) == {"rx-a", "rx-b"} and sum(per_receiver.values()) == 2 * FRAMES


def test_malformed_payloads_are_dead_lettered_and_valid_frames_still_served(bundle, stream, mosquitto, roles,
                                                                           collector, tmp_path):
    import json
    import random

    from edgekit.bundle.manifest import Bundle
    from edgekit.mqtt.client import make_client
    from edgekit.mqtt.urls import parse_broker_url
    from edgekit.mqtt.topics import topic
    from edgekit.wire.encoder import WireEncoder

    db = tmp_path / "results.sqlite"
    roles.server(bundle, mosquitto.url, db)
    letters = collector(mosquitto.url, "edgekit/v1/+/deadletter")
    b = Bundle.load(bundle)
    enc = WireEncoder.from_bundle(b)
    code = __import__("numpy").zeros(b.code.shape, "int8")
    good = enc.encode(code, *enc.spec.wire_quant, seq=0, boot_id=99, timestamp_ns=time.time_ns())
    foreign = WireEncoder("ee" * 32, b.code.shape, b.wire, bundle, None).encode(code, 0.1, 0, seq=0, boot_id=99,
                                                                             timestamp_ns=time.time_ns())
    rng = random.Random(0)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    bad = ([bytes([0x00]) + rng.randbytes(99) for _ in range(5)]  # random bytes: bad magic
           + [good[: rng.randrange(1, 17)] for _ in range(5)]  # truncated inside the (version-2) header
           + [foreign] * 3 + [bytes(bad_crc)] * 2)
    device = roles.device(bundle, mosquitto.url, "cam-5", stream(FRAMES), "--fps", "200")
    url = parse_broker_url(mosquitto.url)
    evil = make_client("evil", "5")
    evil.connect(url.host, url.port)
    evil.loop_start()
    try:
        for payload in bad:
            evil.publish(topic("cam-x", "features"), payload, qos=1).wait_for_publish(5)
            time.sleep(0.02)
    finally:
        evil.disconnect()
        evil.loop_stop()
    stats = device.final_json()
    assert wait_until(lambda: count_results(db) >= FRAMES, 30)
    _exactly_once(db, "cam-5", stats["boot_id"], FRAMES)
    reasons = dict(db_rows(db, "SELECT reason, COUNT(*) FROM deadletters WHERE device = 'cam-x' GROUP BY reason"))
    assert reasons == {"bad-magic": 5, "truncated": 5, "unknown-bundle": 3, "crc-mismatch": 2}
    got = letters.wait_for(len(bad))
    assert sorted(json.loads(p)["reason"] for _, p, _ in got) == sorted(
        ["bad-magic"] * 5 + ["truncated"] * 5 + ["unknown-bundle"] * 3 + ["crc-mismatch"] * 2)


def test_oversized_frames_refused_locally_without_reconnect_loop(bundle, stream, mosquitto_factory, roles,
                                                                  tmp_path):
    broker = mosquitto_factory("max_packet_size 150")  # a raw v1 frame: 64 header + 64 code bytes, + topic > 150
    v1_only = tmp_path / "v1-bundle"  # the bundle as made before frame version 2 (its manifest is not hashed)
    shutil.copytree(bundle, v1_only)
    manifest = json.loads((v1_only / "manifest.json").read_text())
    manifest["wire"]["frame_versions"] = [1]
    (v1_only / "manifest.json").write_text(json.dumps(manifest))
    device = roles.device(v1_only, broker.url, "cam-6", stream(20), "--fps", "0", "--codec", "raw", "--linger", "0")
    stats = device.final_json()
    assert stats["captured"] == 20 and stats["refused_too_big"] == 20 and stats["acknowledged"] == 0
    assert stats["connects"] == 1 and stats["queue_depth"] == 0
    assert device.log_text().count("refused a 128-byte frame") == 20
    broker.stop()  # flushes its log
    # one session, and before it the protocol probe, which connects as the client it asks for (a broker that
    # binds client ids to user names gives it that id anyway): no reconnect loop
    assert broker.log_text().count("as edgekit-device-cam-6") == 2
    assert "disconnected due to oversize packet" not in broker.log_text()


def test_embedded_amqtt_broker_mqtt311_end_to_end(bundle, stream, roles, tmp_path):
    """The fallback broker (pure Python, MQTT 3.1.1 only): the same pipeline, the same exact count."""
    from edgekit.mqtt.broker import AmqttBroker

    db = tmp_path / "results.sqlite"
    with AmqttBroker(workdir=tmp_path / "amqtt") as broker:
        server = roles.server(bundle, broker.url, db)
        device = roles.device(bundle, broker.url, "cam-7", stream(100), "--fps", "200", "--linger", "5")
        stats = device.final_json()
        assert wait_until(lambda: count_results(db) >= 100, 30)
        _exactly_once(db, "cam-7", stats["boot_id"], 100)
        assert "(MQTT 3.1.1" in server.log_text()
