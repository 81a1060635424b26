"""The receiver's counters survive ``kill -9``: they are recorded in the transaction of each batch of results,
so what ``edgekit server stats`` reads back matches what was stored. A real ``edgekit server run`` subprocess,
a real Mosquitto, the real SQLite file."""

from __future__ import annotations

import signal

from edgekit.demo.roles import count_results, start_server
from edgekit.server.stats import summarize
from support.running import wait_until
from test_receiver_robustness import _frames, _publish

JUNK = [b"not a frame", b"EK" + bytes(70)]


def test_counters_match_the_stored_frames_after_kill_9(bundle, mosquitto, tmp_path):
    db = tmp_path / "r.sqlite"
    frames = _frames(bundle, 40)
    # a summary (which also records the counters) only every hour: the batches alone must record them
    server = start_server([bundle], mosquitto.url, db, tmp_path / "rx.log", "--client-id", "rx-kill",
                          "--summary-every", "3600")
    try:
        _publish(mosquitto.url, JUNK + frames + frames[:10])  # then 10 duplicates
        assert wait_until(lambda: count_results(db) == 40, 60)
        assert wait_until(lambda: summarize(db)["receivers"].get("rx-kill", {}).get("duplicates") == 10, 60)
    finally:
        server.stop(signal.SIGKILL)
    counters = summarize(db)["receivers"]["rx-kill"]
    assert counters["stored"] == count_results(db) == 40
    assert counters["received"] == counters["valid"] + counters["deadlettered"] == 52
    assert counters["deadlettered"] == sum(v for k, v in counters.items() if k.startswith("deadletter:")) == 2
    assert counters["batches"] >= 1
    assert "Traceback" not in server.log_text()
