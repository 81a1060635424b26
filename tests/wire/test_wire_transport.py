"""What a real agent puts on a real Mosquitto, seen by an MQTT 5 subscriber: the Transport table of
docs/wire-format.md (content type, ``bundle-id`` on version-1 frames, none on version 2), strict JSON heartbeats and logs; and the bundle checks
a role makes at start (wire quantization, codec artifacts) as one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import pytest

from edgekit.bundle.manifest import MANIFEST_NAME, Bundle, write_manifest
from edgekit.demo.roles import start_device
from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url
from edgekit.wire.spec import BUNDLE_ID_PROPERTY, CONTENT_TYPE
from edgekit.wire.decoder import WireDecoder

FRAMES = 30


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as jq, JavaScript and Go do."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


class PropertyCollector:
    """An MQTT 5 subscriber keeping each message's topic, payload and PUBLISH properties."""

    def __init__(self, url: str, topic_filter: str):
        self.messages: list[tuple[str, bytes, object]] = []
        ready = threading.Event()
        broker = parse_broker_url(url)
        self.client = make_client(f"props-{id(self)}", "5")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload), m.properties))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5), "could not subscribe"

    def on(self, kind: str) -> list[tuple[bytes, object]]:
        return [(payload, props) for topic, payload, props in self.messages if topic.endswith("/" + kind)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _run_agent(bundle, stream, mosquitto, tmp_path, device_id: str, *extra: str) -> tuple[dict, str]:
    """A finished agent run: its final stdout JSON and its --json log."""
    device = start_device(bundle, mosquitto.url, device_id, stream(FRAMES), tmp_path / f"{device_id}.sqlite",
                          tmp_path / f"{device_id}.log", "--fps", "0", "--linger", "0", "--heartbeat", "0.05",
                          *extra)
    try:
        out, _ = device.process.communicate(timeout=120)
    finally:
        device.stop()
    assert device.process.returncode == 0, device.log_text()
    return strict_loads(out.decode().strip().splitlines()[-1]), device.log_text()


def _watched_run(bundle, stream, mosquitto, tmp_path, device_id: str, topic_filter: str, *extra: str):
    """:func:`_run_agent` while a :class:`PropertyCollector` on ``topic_filter`` watches: (stats, log, what it
    saw, the features frames among it)."""
    sub = PropertyCollector(mosquitto.url, topic_filter)
    try:
        stats, log = _run_agent(bundle, stream, mosquitto, tmp_path, device_id, *extra)
    finally:
        sub.close()
    return stats, log, sub, sub.on("features")


def test_mqtt5_version_1_frames_carry_content_type_and_bundle_id(bundle, stream, mosquitto, tmp_path):
    """A bundle that allows frame version 1 only (made before version 2): the Transport table's properties."""
    root, manifest = _copy_bundle(bundle, tmp_path)
    manifest["wire"]["frame_versions"] = [1]  # the manifest is not hashed: the bundle still loads
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    stats, _, _, frames = _watched_run(root, stream, mosquitto, tmp_path, "cam-1", "edgekit/v1/+/features")
    b = Bundle.load(root)
    assert stats["acknowledged"] == len(frames) == FRAMES
    decoder = WireDecoder([b])
    for payload, props in frames:
        assert payload[:3] == b"EK\x01"
        assert props.ContentType == CONTENT_TYPE == "application/vnd.edgekit.frame"
        assert props.UserProperty == [(BUNDLE_ID_PROPERTY, b.bundle_id[:16])] == [("bundle-id", payload[8:16].hex())]
        assert decoder.decode(payload).bundle_id == b.bundle_id


def test_mqtt5_version_2_frames_travel_without_properties_and_all_json_is_strict(bundle, stream, mosquitto,
                                                                                 tmp_path):
    stats, log, sub, frames = _watched_run(bundle, stream, mosquitto, tmp_path, "cam-5", "edgekit/v1/+/+")
    b = Bundle.load(bundle)
    assert stats["acknowledged"] == len(frames) == FRAMES
    decoder = WireDecoder([b])
    for payload, props in frames:  # convert's bundles allow version 2: the agent sends it
        assert payload[0] == 0xE2 and not hasattr(props, "ContentType") and not hasattr(props, "UserProperty")
        assert decoder.decode(payload).bundle_id == b.bundle_id
    beats = [strict_loads(p) for p, _ in sub.on("heartbeat")]
    assert beats and all(beat["e2e_p50_ms"] is None for beat in beats)  # no server ran: nothing measured, null
    assert stats["e2e_p95_ms"] is None and stats["results"] == 0
    lines = [strict_loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "heartbeat" and line["e2e_p50_ms"] is None for line in lines)
    assert not any("NaN" in line or "Infinity" in line for line in log.splitlines())


def test_mqtt311_frames_travel_alone(bundle, stream, mosquitto, tmp_path):
    stats, _, _, frames = _watched_run(bundle, stream, mosquitto, tmp_path, "cam-3", "edgekit/v1/+/features",
                                       "--mqtt", "3.1.1")
    assert stats["acknowledged"] == len(frames) == FRAMES
    assert all(not hasattr(props, "ContentType") and not hasattr(props, "UserProperty") for _, props in frames)


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, timeout=120)


def _copy_bundle(bundle, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(bundle, root)
    return root, json.loads((root / MANIFEST_NAME).read_text())


def test_agent_refuses_a_bundle_whose_wire_quant_is_not_its_models(bundle, stream, mosquitto, tmp_path):
    root, manifest = _copy_bundle(bundle, tmp_path)
    manifest["code"]["wire_quant"]["scale"] *= 2  # the manifest is not hashed: the bundle still loads
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    done = _edgekit("device", "run", "--bundle", str(root), "--broker", mosquitto.url, "--device-id", "cam-q",
                    "--source", str(stream(FRAMES)), "--spool", str(tmp_path / "q.sqlite"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "wire_quant" in error[0] and "re-create the bundle" in error[0]


@pytest.mark.parametrize("damage", ["dictionary", "prior"])
def test_receiver_refuses_a_bundle_with_a_damaged_codec_artifact_at_start(bundle, mosquitto, tmp_path, damage):
    root, manifest = _copy_bundle(bundle, tmp_path)
    codecs = manifest["wire"]["codecs"]
    if damage == "dictionary":
        path = root / codecs["zstd"]["dictionary"]
        data = bytearray(path.read_bytes())
        data[8:40] = b"\xff" * 32  # the formatted dictionary's entropy tables
        path.write_bytes(bytes(data))
    else:
        path = root / codecs["ans"]["prior"]
        prior = json.loads(path.read_text())
        prior["freqs"][0][0] += 1
        path.write_text(json.dumps(prior))
    write_manifest(root, {k: v for k, v in manifest.items() if k not in ("files", "bundle_id")})  # hashes match
    Bundle.load(root)
    done = _edgekit("server", "run", "--bundle", str(root), "--broker", mosquitto.url, "--db", str(tmp_path / "r.db"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and ("zstd" if damage == "dictionary" else "ans prior") in error[0]
