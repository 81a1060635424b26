"""The receiver status (issue 20, item 3): a receiver says how far behind it is, so that agents wait instead of
re-sending into the overload; a receiver that dies says nothing more, and its frames go to the next one.

Real receivers against a real Mosquitto: in-process behind a database that refuses writes, and an ``edgekit server
run`` process killed with ``kill -9`` while its database is locked by another process.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import time

import pytest

from edgekit.delivery.receiver_status import MAX_STATUS_BYTES, ReceiverStatus, parse_status
from edgekit.delivery.resend import Receivers, Silence
from edgekit.demo.roles import start_server
from edgekit.mqtt.client import make_client
from edgekit.mqtt.topics import RECEIVER_STATUS_FILTER
from edgekit.server.status import Backlog
from support.running import RunningAgent, seqs, start_receiver, wait_until


class StatusListener:
    """Every receiver status on the broker, parsed, in arrival order."""

    def __init__(self, url):
        self.statuses: list[ReceiverStatus] = []
        self.client = make_client("status-listener", "5")
        self.client.on_message = lambda c, u, m: self.statuses.append(parse_status(m.payload))
        self.client.connect(url.host, url.port)
        self.client.subscribe(RECEIVER_STATUS_FILTER, qos=0)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_status_is_versioned_bounded_json_and_anything_else_is_ignored():
    status = ReceiverStatus("rx-1", 1.0, 12, 0.02, 31.5, 0.004, 0.31)
    assert parse_status(status.encode()) == status and len(status.encode()) < 200
    assert json.loads(status.encode())["v"] == 1 and not status.behind
    good = json.loads(status.encode())
    for junk in [b"", b"[]", b"\xff", b"[" * 10_000, b" " * (MAX_STATUS_BYTES + 1) + status.encode(),
                 json.dumps({**good, "v": 2}).encode(), json.dumps({**good, "queue": -1}).encode(),
                 json.dumps({**good, "queue": 1.5}).encode(), json.dumps({**good, "every_s": 0}).encode(),
                 json.dumps({**good, "caught_up_s": "long"}).encode(), json.dumps({**good, "receiver": ""}).encode(),
                 json.dumps({**good, "oldest_s": 1e300}).encode(), json.dumps({**good, "idle_s": -1}).encode(),
                 json.dumps({k: v for k, v in good.items() if k != "queue"}).encode(),
                 json.dumps({**good, "lag_s": math.nan}).encode()]:
        assert parse_status(junk) is None, junk


def test_the_backlog_is_behind_while_a_frame_waits_and_caught_up_from_when_none_does(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    backlog = Backlog(window=4)
    clock[0] += 10
    assert backlog.status("rx", 1.0).caught_up_s == 10  # caught up since it started
    backlog.arrived()
    backlog.arrived()
    clock[0] += 1  # a frame waited 1 s: behind
    assert backlog.status("rx", 1.0) == ReceiverStatus("rx", 1.0, 2, 1.0, 0.0, 1.0, None)
    monkeypatch.setattr(time, "time_ns", lambda: 9_000_000_000)  # the wall clock, fixed like the monotonic one
    backlog.finished(2, 7_500_000_000)  # the latest frame was captured 1.5 s before it was stored
    clock[0] += 3
    status = backlog.status("rx", 1.0)
    assert (status.queue, status.caught_up_s, status.idle_s, status.lag_s) == (0, 3.0, 4.0, 1.5)
    backlog.unread(True)  # frames wait unread on the connection (its link thread falls behind) ...
    clock[0] += 0.2
    backlog.unread(True)
    assert not backlog.status("rx", 1.0).behind
    clock[0] += 0.1  # ... for longer than BEHIND_S
    backlog.unread(True)
    backlog.unread(False)
    clock[0] += 2
    assert backlog.status("rx", 1.0).caught_up_s == 2
    for _ in range(4):  # the broker's in-flight window is full: it holds more for us, unseen
        backlog.arrived()
    assert backlog.status("rx", 1.0).behind


def test_a_receiver_that_speaks_late_is_gone_only_after_twice_its_longest_silence():
    """A receiver starved of CPU sends its statuses seconds apart: once heard again, it keeps its record."""
    receivers = Receivers("cam-d")
    status = ReceiverStatus("rx", 1.0, 0, 0.0, 0.0, 0.0)
    for at in (0.0, 1.0):
        receivers.heard(status, at)
    assert len(receivers.live(10.9)) == 1 and receivers.live(11.1) == []  # ten intervals: gone
    receivers.heard(status, 15.0)  # it was starved, not dead: a 14 s silence
    assert len(receivers.live(15.0 + 27.9)) == 1 and receivers.live(15.0 + 28.1) == []
    assert receivers.live(15.0 + Silence.WINDOW_S + 1) == [] and receivers._heard == {}  # forgotten


def _on_connection(receiver, sql: str) -> None:
    with receiver.store._lock:
        receiver.store._db.execute(sql)


def test_a_receiver_behind_its_database_says_so_and_the_agent_waits(bundle, stream, mosquitto, tmp_path):
    """The database refuses writes for 3 s (six confirm timeouts) while 60 frames wait in the receiver: without
    the receiver's word, the agent took its silence for a loss and sent them again."""
    db = tmp_path / "r.sqlite"
    listener = StatusListener(mosquitto)
    receiver = start_receiver(bundle, mosquitto.url, db, client_id="rx-behind", status_every_s=0.2)
    _on_connection(receiver, "PRAGMA query_only = ON")
    agent = RunningAgent(bundle, mosquitto.url, tmp_path / "spool.sqlite", stream(60), confirm_timeout_s=0.5).start()
    try:
        assert wait_until(lambda: any(s.queue == 60 and s.behind for s in listener.statuses), 20)
        time.sleep(3.0)
        _on_connection(receiver, "PRAGMA query_only = OFF")
        assert wait_until(lambda: agent.agent.spool.depth == 0, 30), agent.agent.spool.depth
        assert wait_until(lambda: listener.statuses[-1].queue == 0 and not listener.statuses[-1].behind, 5)
        stats = agent.finish()
    finally:
        agent.finish()
        receiver.stop()
        listener.close()
    assert stats["resent"] == 0 and receiver.counters.duplicates == 0, (stats, receiver.counters)
    assert seqs(db, "cam-d", stats["boot_id"]) == list(range(60))
    assert {s.receiver for s in listener.statuses} == {"rx-behind"}


@pytest.mark.parametrize("successor_status_every_s", [0.2, 0.0])  # 0: a receiver without statuses
def test_frames_a_killed_receiver_held_are_re_sent_to_the_next(successor_status_every_s, bundle, stream, mosquitto,
                                                                 tmp_path):
    """rx-a takes 20 frames but cannot store them (another process locks its database) and says it is behind;
    then it is killed for good. Its session keeps the frames for it, so only re-sends bring them to rx-b: once
    rx-a has been silent five status intervals, it counts as gone."""
    db = tmp_path / "r.sqlite"
    first = start_server([bundle], mosquitto.url, db, tmp_path / "rx-a.log", "--client-id", "rx-a")
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    # A timeout longer than rx-a's status interval (1 s): the agent hears it is behind before any timer runs out.
    agent = RunningAgent(bundle, mosquitto.url, tmp_path / "spool.sqlite", stream(20), confirm_timeout_s=2.0).start()
    publisher, second = agent.agent.publisher, None
    try:
        assert wait_until(lambda: publisher.counters.acknowledged == 20, 20)
        assert wait_until(lambda: [h.status.behind for h in publisher._resend.receivers.live(time.monotonic())]
                          == [True], 10)
        time.sleep(3.0)
        assert publisher.counters.resent == 0  # rx-a is behind: wait
        first.stop(signal.SIGKILL)
        lock.rollback()
        second = start_receiver(bundle, mosquitto.url, db, client_id="rx-b", status_every_s=successor_status_every_s)
        assert wait_until(lambda: agent.agent.spool.depth == 0, 60), agent.agent.spool.depth
        stats = agent.finish()
    finally:
        agent.finish()
        first.stop(signal.SIGKILL)
        lock.close()
        if second is not None:
            second.stop()
    assert stats["resent"] >= 20 and seqs(db, "cam-d", stats["boot_id"]) == list(range(20))
