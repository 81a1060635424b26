"""Junk cannot slow real frames: a flood of invalid messages beside a real device at 50 frames/s, and one
oversized publish, against a real Mosquitto and a real receiver.

The device (``edgekit device run``) and the junk sender are separate processes, as in the field: neither
shares this process's interpreter lock with the receiver under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.mqtt.byte_meter import ByteMeter
from edgekit.demo.roles import start_device
from edgekit.device.spool import Spool
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.server.receiver import Receiver, ReceiverConfig
from support.running import db_rows, start_publisher, wait_until

FPS = 50
JUNK = 20_000

SENDER = Path(__file__).resolve().parents[2] / "tools" / "junk_sender.py"


def _send_junk(url: str, count: int, size: int, seconds: float) -> subprocess.Popen:
    """The junk sender, niced: in the field it runs on another machine, not on the receiver's two cores."""
    return subprocess.Popen([sys.executable, str(SENDER), "--broker", url, "--count", str(count), "--size", str(size),
                             "--seconds", str(seconds)], preexec_fn=lambda: os.nice(10))


def _stream(bundle, spool: Spool, n: int, fps: float, boot_id: int) -> threading.Thread:
    """A device: ``n`` frames at ``fps``, each timestamped when captured (device dev-1)."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(Bundle.load(bundle))
    scale, zero_point = encoder.spec.wire_quant
    codes = np.random.default_rng(0).integers(-8, 8, (16, *encoder.spec.code_shape), dtype=np.int8)

    def run() -> None:
        due = time.monotonic()
        for seq in range(n):
            due += 1 / fps
            time.sleep(max(0.0, due - time.monotonic()))
            spool.put(topic("dev-1", "features"), encoder.encode(codes[seq % 16], scale, zero_point, seq=seq,
                                                                 boot_id=boot_id, timestamp_ns=time.time_ns()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _receiver(bundle, url: str, db) -> Receiver:
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(url), db=db, client_id="rx-junk",
                         threads=1)  # ORT's spinning thread pool would take the CPU the link thread needs
    receiver = Receiver(cfg).start()
    assert receiver.link.subscribed.wait(10), "the receiver did not subscribe"
    return receiver


def _p95_ms(db, start_ns: int, end_ns: int) -> float:
    lat = db_rows(db, f"SELECT (done_ns - capture_ns) / 1e6 FROM results WHERE capture_ns >= {start_ns} AND "
                    f"capture_ns < {end_ns}")
    assert len(lat) >= 100
    return float(np.percentile([v for (v,) in lat], 95))


@pytest.mark.slow
def test_a_junk_flood_is_all_dead_lettered_without_slowing_a_real_device(bundle, stream, mosquitto, tmp_path):
    """20,000 junk messages at 1,000 a second: more than the receiver could dead-letter before (770/s, one at a
    time on the frame path), 20 times the device's own rate. benchmarks/bench_junk.py measures the same at
    other rates, flat out included (docs/server.md, Faults)."""
    db = tmp_path / "r.sqlite"
    quiet_s, junk_s = 4.0, 20.0
    frames = int((quiet_s + junk_s + 3.0) * FPS)
    receiver = _receiver(bundle, mosquitto.url, db)
    device = start_device(bundle, mosquitto.url, "dev-1", stream(frames), tmp_path / "spool.sqlite",
                          tmp_path / "device.log", "--fps", str(FPS), "--linger", "10")
    try:
        assert wait_until(lambda: receiver.counters.stored > 0, 60)
        t0 = time.time_ns()
        time.sleep(quiet_s)
        t1 = time.time_ns()
        assert _send_junk(mosquitto.url, JUNK, 100, junk_s).wait(60) == 0
        t2 = time.time_ns()
        print(f"junk sent at {JUNK / ((t2 - t1) / 1e9):.0f} messages/s")
        stats = device.final_json()
        assert wait_until(lambda: receiver.counters.stored == frames and receiver.counters.deadlettered == JUNK, 60)
    finally:
        device.stop(signal.SIGKILL)
        receiver.stop()
    quiet, junk = _p95_ms(db, t0, t1), _p95_ms(db, t1, t2)
    print(f"device p95 end-to-end: quiet {quiet:.1f} ms, during {JUNK} junk messages {junk:.1f} ms "
          f"({junk / quiet:.2f}x)")
    assert junk <= 3 * quiet
    assert stats["captured"] == frames and stats["dropped"] == 0
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results WHERE device = 'dev-1' ORDER BY seq")] == \
        list(range(frames))
    assert db_rows(db, "SELECT SUM(count) FROM deadletter_totals") == [(JUNK,)]
    samples = db_rows(db, "SELECT device, COUNT(*) FROM deadletters GROUP BY device")
    assert len(samples) == 10 and all(n <= 20 + 1 * (junk_s + 30) for _, n in samples)  # burst + rate × time


def test_an_oversized_publish_is_dropped_by_the_broker_not_buffered_by_the_receiver(bundle, mosquitto, tmp_path):
    """The receiver reads through a byte-counting relay: what reaches its socket bounds what it can buffer.
    A 100 MiB publish must add no more than the announced limit to it (RSS noise here is MiBs: too coarse)."""
    from edgekit.server.receiver import max_incoming_packet

    size = 100 * 2**20
    meter = ByteMeter(parse_broker_url(mosquitto.url))
    receiver = _receiver(bundle, meter.url, tmp_path / "r.sqlite")
    publisher = start_publisher(Spool(tmp_path / "spool.sqlite"), mosquitto)
    try:
        assert publisher.connected.wait(10)
        _, start = meter.snapshot()
        _stream(bundle, publisher.spool, 5, FPS, boot_id=1).join(10)  # the receiver's bytes for five frames: the baseline
        assert wait_until(lambda: receiver.counters.stored == 5, 20)
        _, five = meter.snapshot()
        assert _send_junk(mosquitto.url, 1, size, 0).wait(60) == 0
        _stream(bundle, publisher.spool, 5, FPS, boot_id=2).join(10)
        assert wait_until(lambda: receiver.counters.stored == 10, 20)
        _, after = meter.snapshot()
    finally:
        publisher.stop()
        receiver.stop()
        meter.close()
    limit = max_incoming_packet(receiver.bundles)
    extra = (after - five) - (five - start)  # the second five frames cost what the first five did
    print(f"announced maximum packet size {limit} B; receiver read {after - five} B for five frames and "
          f"the 100 MiB publish ({extra:+d} B beyond five frames alone)")
    assert receiver.counters.received == 10  # the big one never reached us
    assert extra <= limit
