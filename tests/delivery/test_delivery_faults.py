"""Receiver-confirmed delivery under real faults: a broker ``kill -9`` with frames queued for an offline
receiver, and a receiver of a shared-subscription group killed for good. Every frame stored exactly once."""

from __future__ import annotations

import signal

import pytest

from edgekit.demo.roles import count_results, start_server
from support.running import RunningAgent, rows, seqs, start_receiver
from support.running import wait_until


def test_broker_killed_with_frames_queued_for_an_offline_receiver_loses_none(bundle, stream, mosquitto,
                                                                              tmp_path):
    frames, db = 300, tmp_path / "r.sqlite"
    start_receiver(bundle, mosquitto.url, db).stop()  # its persistent session now queues frames for it
    agent = RunningAgent(bundle, mosquitto.url, tmp_path / "spool.sqlite", stream(frames)).start()
    try:
        assert wait_until(lambda: agent.agent.publisher.counters.acknowledged >= frames, 60)
        mosquitto.stop(signal.SIGKILL)  # PUBACKed, queued for the receiver, maybe not yet in mosquitto.db
        mosquitto.start()
        receiver = start_receiver(bundle, mosquitto.url, db)
        try:
            assert wait_until(lambda: agent.agent.spool.depth == 0, 60), agent.agent.spool.depth
        finally:
            receiver.stop()
        stats = agent.finish()
    finally:
        agent.finish()
    assert seqs(db, "cam-d", stats["boot_id"]) == list(range(frames))  # UNIQUE: each stored exactly once
    assert stats["confirmed"] == frames and stats["queue_depth"] == 0


@pytest.mark.slow
def test_a_group_member_killed_for_good_delays_no_frame_beyond_30_s(bundle, stream, mosquitto, tmp_path):
    frames, db = 500, tmp_path / "r.sqlite"
    servers = [start_server([bundle], mosquitto.url, db, tmp_path / f"rx-{name}.log", "--group", "rx",
                            "--client-id", f"rx-{name}") for name in ("a", "b")]
    agent = RunningAgent(bundle, mosquitto.url, tmp_path / "spool.sqlite", stream(frames), fps=50,
                         confirm_timeout_s=5.0).start()
    try:
        assert wait_until(lambda: count_results(db) >= 100, 60)
        servers[0].stop(signal.SIGKILL)  # for good: its session (and its share of frames) expires in 10 s
        assert wait_until(lambda: agent.agent.spool.depth == 0 and agent.agent.counters.captured == frames, 90)
        stats = agent.finish()
    finally:
        agent.finish()
        for server in servers:
            server.stop(signal.SIGKILL)
    assert seqs(db, "cam-d", stats["boot_id"]) == list(range(frames))
    ((worst_s, receivers),) = rows(db, "SELECT MAX(done_ns - capture_ns) / 1e9, COUNT(DISTINCT receiver) "
                                       "FROM results")
    print(f"worst capture-to-stored delay after killing a group member: {worst_s:.1f} s; "
          f"re-sent {stats['resent']} frames")
    assert receivers == 2 and worst_s < 30
