"""Several receivers on one PostgreSQL (docs/server.md, PostgreSQL): three ``edgekit server run`` processes
in one shared-subscription group, ten agents streaming at 50 frames/s each, and one receiver killed with
``kill -9`` mid-stream. Its unacknowledged frames come back (its devices re-send them to the others), so every
frame is stored exactly once and none is reported missing by the surviving receivers' ledgers."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

from edgekit.demo.roles import start_server
from edgekit.server.stats import summarize
from support.postgres import query
from support.running import RunningAgent, wait_until

DEVICES, FPS, FRAMES = 10, 50, 250  # 5 s of streaming


def test_one_of_three_receivers_killed_while_ten_agents_stream(bundle, stream, mosquitto, postgres_url, tmp_path):
    # the broker keeps a dead member's session (and what it held) for --session-expiry: 2 s, not the group's 10,
    # drains the devices' re-sends sooner (here 11 s after the kill instead of 24). The grace outlasts re-sends.
    args = ("--group", "rx", "--session-expiry", "2", "--threads", "1", "--gap-grace", "30")
    with ThreadPoolExecutor(3) as pool:  # they load their bundles at once
        receivers = list(pool.map(lambda i: start_server([bundle], mosquitto.url, postgres_url,
                                                         tmp_path / f"rx-{i}.log", "--client-id", f"rx-{i}", *args),
                                  range(3)))
    agents = [RunningAgent(bundle, mosquitto.url, tmp_path / f"spool-{i}.sqlite", stream(FRAMES), f"cam-{i}",
                           fps=FPS, linger_s=30.0).start() for i in range(DEVICES)]
    try:
        assert wait_until(lambda: query(postgres_url, "SELECT COUNT(*) FROM results WHERE receiver = 'rx-0'")[0][0]
                          >= 50, 30)
        receivers[0].stop(signal.SIGKILL)  # mid-stream, with frames in flight and unacknowledged
        stored_by_killed = query(postgres_url, "SELECT COUNT(*) FROM results WHERE receiver = 'rx-0'")[0][0]
        assert wait_until(lambda: all(a.agent.spool.depth == 0 and a.agent.counters.spooled == FRAMES
                                      for a in agents), 60)
        boots = {f"cam-{i}": a.finish()["boot_id"] for i, a in enumerate(agents)}
        assert wait_until(lambda: all(d["pending"] == 0 for d in summarize(postgres_url)["devices"]), 20)
    finally:
        for a in agents:
            a.finish()
        for r in receivers:
            r.stop()
    for device, boot_id in boots.items():
        seqs = [s for (s,) in query(postgres_url, "SELECT seq FROM results WHERE device = ? AND boot_id = ? ORDER BY "
                                    "seq", device, boot_id)]
        assert seqs == list(range(FRAMES)), device  # every frame, once (the key is unique: a second row cannot be)
    by_receiver = dict(query(postgres_url, "SELECT receiver, COUNT(*) FROM results GROUP BY receiver"))
    assert by_receiver["rx-0"] == stored_by_killed and {"rx-1", "rx-2"} <= set(by_receiver)
    summary = summarize(postgres_url)
    assert [(d["stored"], d["missing"], d["pending"]) for d in summary["devices"]] == [(FRAMES, 0, 0)] * DEVICES
    for r in receivers[1:]:
        assert "missing frames" not in r.log_text()
