"""Junk costs no real frame: a flood of invalid messages beside a real device at 50 frames/s, and one
oversized publish, against a real Mosquitto and a real receiver.

The device (``edgekit device run``) and the junk sender are separate processes, as in the field: neither
shares this process's interpreter lock with the receiver under test. How much junk delays real frames depends
on the machine and its load: that is measured by benchmarks/bench_junk.py, not asserted here.
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
from edgekit.mqtt.client import RECEIVE_MAXIMUM
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.server.deadletters import SampleRate
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


class _Highest:
    """The highest value ``read()`` returned, polled on a thread of its own until :meth:`stop`."""

    def __init__(self, read):
        self.value = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(read,), daemon=True)
        self._thread.start()

    def _run(self, read) -> None:
        while not self._stop.wait(0.005):
            self.value = max(self.value, read())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.value


@pytest.mark.slow
def test_a_junk_flood_is_all_dead_lettered_and_every_real_frame_stored_once(bundle, stream, mosquitto, tmp_path):
    """20,000 junk messages at 1,000 a second beside a real device: more than the receiver could dead-letter
    before (770/s, one at a time on the frame path), 20 times the device's own rate. Every junk message is
    counted, every frame stored exactly once, and the frames waiting for inference never exceed what the
    broker may have in flight to the receiver. Timeouts here only catch a hang."""
    db = tmp_path / "r.sqlite"
    junk_s = 20.0
    frames = int((junk_s + 3.0) * FPS)  # the device streams through the whole flood
    receiver = _receiver(bundle, mosquitto.url, db)
    device = start_device(bundle, mosquitto.url, "dev-1", stream(frames), tmp_path / "spool.sqlite",
                          tmp_path / "device.log", "--fps", str(FPS), "--linger", "10")
    queued = _Highest(receiver.batcher.qsize)
    try:
        assert wait_until(lambda: receiver.counters.stored > 0, 60)
        started = time.monotonic()
        assert _send_junk(mosquitto.url, JUNK, 100, junk_s).wait(180) == 0
        stats = device.final_json()
        assert wait_until(lambda: receiver.counters.stored == frames and receiver.counters.deadlettered == JUNK, 120)
        elapsed_s = time.monotonic() - started
    finally:
        queued.stop()
        device.stop(signal.SIGKILL)
        receiver.stop()
    assert stats["captured"] == frames and stats["dropped"] == 0
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results WHERE device = 'dev-1' ORDER BY seq")] == \
        list(range(frames))  # each seq once: no frame lost, none stored twice
    assert db_rows(db, "SELECT SUM(count) FROM deadletter_totals") == [(JUNK,)]
    print(f"at most {queued.value} frames waited for inference during the flood")
    assert queued.value <= RECEIVE_MAXIMUM  # junk never piles valid frames up in the receiver's memory
    rate = SampleRate()  # the receiver's default: samples stored per device are rate-limited
    samples = db_rows(db, "SELECT device, COUNT(*) FROM deadletters GROUP BY device")
    assert len(samples) == 10 and all(n <= rate.burst + rate.per_s * elapsed_s + 1 for _, n in samples), samples


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
