"""Re-sends under a receiver that is behind, against a real Mosquitto (issue 20: a receiver more than the confirm
timeout behind made every device re-send, tripling its input).

A stand-in receiver (a plain MQTT client) takes the device's frames in order and confirms them at its own pace,
as a saturated receiver does: confirmations keep flowing, each for an older frame. With ``says``, it also
publishes a receiver status (edgekit/delivery/receiver_status.py) every 0.1 s: behind, or caught up.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time

import pytest
from support.running import start_publisher, wait_until

from edgekit.delivery.acks import encode_ack
from edgekit.delivery.receiver_status import ReceiverStatus
from edgekit.device.spool import Spool
from edgekit.mqtt.client import make_client
from edgekit.mqtt.topics import receiver_status_topic, topic

FEATURES, ACKS = topic("dev-1", "features"), topic("dev-1", "acks")
BOOT = 5


class SlowReceiver:
    """Confirms ``per_ack`` frames every ``interval_s``, oldest first; ``lose`` seqs are dropped the first time
    seen; with ``results``, a result goes out for each frame as it arrives (acks then lag behind the results, as
    a loaded receiver's do: its acks queue behind its results)."""

    def __init__(self, url, interval_s: float, lose: set[int] = frozenset(), per_ack: int = 1,
                 results: bool = False, says: dict[str, bool] | None = None):
        self.seen: collections.Counter[int] = collections.Counter()
        self.lose = set(lose)
        self.per_ack, self.results, self.interval_s = per_ack, results, interval_s  # pace: may change mid-test
        self._queue: collections.deque[int] = collections.deque()
        self._stop = threading.Event()
        self.client = make_client("slow-receiver", "5")
        self.client.on_message = lambda c, u, m: self._arrived(int.from_bytes(m.payload[:4], "big"))
        self.client.connect(url.host, url.port)
        self.client.subscribe(FEATURES, qos=1)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._confirm, daemon=True)
        self._thread.start()
        self.says = says or {}  # receiver name -> whether it says it is behind
        self._status_thread = threading.Thread(target=self._say, daemon=True)
        self._status_thread.start()

    def _say(self) -> None:
        while not self._stop.wait(0.1):
            for name, behind in self.says.items():
                status = ReceiverStatus(name, 0.1, len(self._queue), 0.0, 0.0 if behind else 60.0, 0.0)
                self.client.publish(receiver_status_topic(name), status.encode())

    def _arrived(self, seq: int) -> None:
        self.seen[seq] += 1
        if seq in self.lose:
            self.lose.discard(seq)
            return
        self._queue.append(seq)
        if self.results:
            self.client.publish(topic("dev-1", "results"), json.dumps({"seq": seq, "boot_id": BOOT}), qos=1)

    def _confirm(self) -> None:
        while not self._stop.wait(self.interval_s):
            seqs = [self._queue.popleft() for _ in range(min(self.per_ack, len(self._queue)))]
            if seqs:
                self.client.publish(ACKS, encode_ack(BOOT, [(s, s) for s in seqs]), qos=1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._status_thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def _spool_frames(spool: Spool, n: int) -> None:
    for seq in range(n):
        spool.put(FEATURES, seq.to_bytes(4, "big") * 4, boot_id=BOOT, seq=seq)


def test_a_receiver_that_is_behind_gets_no_re_sends(mosquitto, tmp_path):
    """60 frames at once, confirmed at 25 per second: the last waits 2.4 s, eight times the timeout."""
    receiver = SlowReceiver(mosquitto, 0.04)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.3, boot_id=BOOT)
    try:
        _spool_frames(spool, 60)
        assert wait_until(lambda: pub.counters.confirmed == 60, 30), pub.counters
        assert pub.counters.resent == 0 and set(receiver.seen.values()) == {1}, (pub.counters, receiver.seen)
        assert spool.depth == 0
    finally:
        pub.stop()
        receiver.close()


def test_results_show_a_receiver_is_alive_while_its_acks_lag(mosquitto, tmp_path):
    """Results for every frame at once, acks only every 0.9 s (three timeouts): nothing is sent twice."""
    receiver = SlowReceiver(mosquitto, 0.9, per_ack=1000, results=True)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.3, boot_id=BOOT)
    try:
        _spool_frames(spool, 30)
        assert wait_until(lambda: pub.counters.confirmed == 30, 30), pub.counters
        assert pub.counters.results == 30 and pub.counters.resent == 0, pub.counters
    finally:
        pub.stop()
        receiver.close()


def test_a_receiver_slowing_down_with_a_backlog_gets_no_re_sends(mosquitto, tmp_path):
    """Ten frames every 0.2 s, then ten every 2 s (silences of almost seven timeouts, four times its earlier
    pauses) while 60 frames wait: at the pace measured, serving them takes far longer than a silence."""
    receiver = SlowReceiver(mosquitto, 0.2, per_ack=10)
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.3, boot_id=BOOT)
    try:
        _spool_frames(spool, 30)
        assert wait_until(lambda: pub.counters.confirmed == 30, 30), pub.counters
        receiver.interval_s = 2.0
        for seq in range(30, 90):
            spool.put(FEATURES, seq.to_bytes(4, "big") * 4, boot_id=BOOT, seq=seq)
        assert wait_until(lambda: pub.counters.confirmed == 90, 60), pub.counters
        assert pub.counters.resent == 0 and set(receiver.seen.values()) == {1}, (pub.counters, receiver.seen)
    finally:
        pub.stop()
        receiver.close()


def test_a_frame_the_receiver_never_got_is_re_sent(mosquitto, tmp_path):
    """The receiver confirms later frames but not seq 3: it was lost, so it is sent again and confirmed."""
    receiver = SlowReceiver(mosquitto, 0.01, lose={3})
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.3, boot_id=BOOT)
    try:
        _spool_frames(spool, 20)
        assert wait_until(lambda: pub.counters.confirmed == 20, 30), pub.counters
        assert receiver.seen[3] == 2 and pub.counters.resent >= 1 and spool.depth == 0
    finally:
        pub.stop()
        receiver.close()


def test_a_silent_receiver_still_gets_re_sends(mosquitto, tmp_path):
    """No confirmation at all for longer than the timeout: the frames may be lost with the receiver, send again."""
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.2, boot_id=BOOT)
    try:
        _spool_frames(spool, 5)
        assert wait_until(lambda: pub.counters.resent >= 5, 10), pub.counters
        time.sleep(0.1)
        receiver = SlowReceiver(mosquitto, 0.01)
        assert wait_until(lambda: pub.counters.confirmed == 5, 30), pub.counters
        receiver.close()
    finally:
        pub.stop()


@contextlib.contextmanager
def _publishing_to(receiver: SlowReceiver, mosquitto, tmp_path):
    """``(publisher, spool)`` with a 0.3 s confirm timeout, once it has heard the receiver; both stopped after."""
    spool = Spool(tmp_path / "spool.sqlite")
    pub = start_publisher(spool, mosquitto, confirm_timeout_s=0.3, boot_id=BOOT)
    try:
        time.sleep(0.3)  # the receiver's status first
        yield pub, spool
    finally:
        pub.stop()
        receiver.close()


def test_a_receiver_that_says_it_is_behind_gets_no_re_sends_however_long_it_is_silent(mosquitto, tmp_path):
    """No confirmation for 3 s, ten timeouts, as a receiver waiting for its database: it says it is behind."""
    receiver = SlowReceiver(mosquitto, 3.0, per_ack=1000, says={"rx-a": True})
    with _publishing_to(receiver, mosquitto, tmp_path) as (pub, spool):
        _spool_frames(spool, 20)
        assert wait_until(lambda: pub.counters.confirmed == 20, 30), pub.counters
        assert pub.counters.resent == 0 and set(receiver.seen.values()) == {1}, (pub.counters, receiver.seen)


@pytest.mark.parametrize("lost, behind", [(3, True), (19, False)])
def test_a_frame_the_receiver_never_got_is_re_sent_whatever_it_says(lost, behind, mosquitto, tmp_path):
    """Seq 3 is lost to a receiver behind: it confirms later frames (skipped). No later frame can show that the
    last one, seq 19, was lost: the receiver, caught up since it was sent, does."""
    receiver = SlowReceiver(mosquitto, 0.01, lose={lost}, says={"rx-a": behind})
    with _publishing_to(receiver, mosquitto, tmp_path) as (pub, spool):
        _spool_frames(spool, 20)
        assert wait_until(lambda: pub.counters.confirmed == 20, 30), pub.counters
        assert receiver.seen[lost] == 2 and pub.counters.resent == 1 and spool.depth == 0, (pub.counters, receiver.seen)


def test_with_two_receivers_one_behind_a_later_frame_confirmed_proves_no_loss(mosquitto, tmp_path):
    """A shared subscription splits a device's frames: rx-b confirms 10-19 at once while rx-a, behind, holds 0-9
    for 2 s. Frames of one receiver overtaking another's are not lost: nothing is sent twice."""
    receiver = SlowReceiver(mosquitto, 2.0, per_ack=10, lose=set(range(10, 20)), says={"rx-a": True, "rx-b": False})
    with _publishing_to(receiver, mosquitto, tmp_path) as (pub, spool):
        _spool_frames(spool, 10)
        assert wait_until(lambda: sum(receiver.seen.values()) == 10, 10)
        for seq in range(10, 20):  # rx-b's share, confirmed as soon as it has arrived
            spool.put(FEATURES, seq.to_bytes(4, "big") * 4, boot_id=BOOT, seq=seq)
        assert wait_until(lambda: sum(receiver.seen.values()) == 20, 10)
        receiver.client.publish(ACKS, encode_ack(BOOT, [(10, 19)]), qos=1)
        assert wait_until(lambda: pub.counters.confirmed == 20, 30), pub.counters
        assert pub.counters.resent == 0 and set(receiver.seen.values()) == {1}, (pub.counters, receiver.seen)
