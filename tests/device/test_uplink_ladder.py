"""The agent's rate ladder (issue 22): a nested bundle's level chosen from the measured uplink.

The ladder's rules on a synthetic clock, then the whole agent against a real Mosquitto through a relay that
limits the uplink's bytes per second, changed mid-run: the agent steps down, comes back up, and every frame
is stored exactly once. No timing is asserted: the level sequence and the counts are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from support.running import RunningAgent, seqs, start_receiver, wait_until
from support.throttle import ThrottledRelay

from edgekit.device.uplink import UplinkLadder, parse_rate
from edgekit.errors import UsageError
from edgekit.mqtt.urls import parse_broker_url

LEVELS = (2, 4, 8)


def feed(ladder: UplinkLadder, start: float, seconds: float, fps: float, acked_rate: float | None,
         acked: list[int], frame_bytes=lambda level: 20 * LEVELS[level]) -> list[tuple[int, int]]:
    """Offer frames at ``fps`` for ``seconds`` with the broker acknowledging ``acked_rate`` B/s at most (None:
    all); ``acked`` holds the running total. Returns the level changes (old, new)."""
    changes, waiting = [], 0.0
    for i in range(int(seconds * fps)):
        now = start + i / fps
        size = frame_bytes(ladder.level)
        ladder.offered(ladder.level, size)
        waiting += size
        sent = waiting if acked_rate is None else min(waiting, acked_rate / fps)
        waiting -= sent
        acked[0] += int(sent)
        change = ladder.update(now, acked[0])
        if change is not None:
            changes.append((change.old, change.new))
    return changes


def test_a_slow_link_steps_down_to_what_fits_and_a_clear_one_steps_back_up():
    ladder, acked = UplinkLadder(LEVELS, window_s=1.0, hold_s=2.0), [0]
    assert feed(ladder, 0, 5, 10, None, acked) == []  # 1,600 B/s go through: the top level stays
    down = feed(ladder, 5, 10, 10, 700.0, acked)  # 700 B/s: level 1 (800 B/s) does not fit, level 0 (400) does
    assert down[0] == (2, 0)
    assert ladder.level == 0
    up = feed(ladder, 15, 30, 10, None, acked)
    assert up == [(0, 1), (1, 2)] and ladder.level == 2


def test_a_probe_up_that_falls_behind_doubles_the_hold():
    ladder, acked = UplinkLadder(LEVELS, window_s=1.0, hold_s=2.0), [0]
    changes = feed(ladder, 0, 40, 10, 700.0, acked)
    # Each probe up fell behind and came back down; the waits between probes double, so 40 simulated seconds
    # hold two probes where a hold that stayed at 2 s would have probed again and again.
    assert ladder.level == 0 and changes.count((0, 1)) == 2 and changes.count((2, 0)) == 3


def test_the_budget_caps_the_level_and_a_pinned_level_never_moves():
    ladder, acked = UplinkLadder(LEVELS, budget=1000.0, window_s=1.0, hold_s=1.0), [0]
    changes = feed(ladder, 0, 10, 10, None, acked)  # 1,600 / 800 / 400 B/s at 10 frames/s
    assert changes == [(2, 1)] and ladder.level == 1
    pinned = UplinkLadder(LEVELS, pinned=0, window_s=1.0)
    assert feed(pinned, 0, 10, 10, 100.0, [0]) == [] and pinned.level == 0


@pytest.mark.parametrize("text, rate", [("2kB/s", 2000), ("1500", 1500), ("1.5 KiB/s", 1536), ("64kB", 64000),
                                        ("3MB/s", 3e6)])
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-2kB/s", "2 kbit/s", ""])
def test_a_bad_rate_is_a_usage_error(text):
    with pytest.raises(UsageError, match="uplink budget"):
        parse_rate(text)


def test_a_ladder_needs_levels_and_a_pinned_level_must_exist():
    with pytest.raises(UsageError, match="no rate levels"):
        UplinkLadder((), budget=1000.0)
    with pytest.raises(UsageError, match="levels 0..2"):
        UplinkLadder(LEVELS, pinned=3)


# ------------------------------------------------------------------------------------------- the agent


@pytest.fixture(scope="module")
def nested_bundle(tmp_path_factory, digits) -> tuple[Path, Path]:
    """A nested re-encoder of a tiny digits model (code 4×4×8, levels 2, 4, 8 channels), converted with the raw
    codec so that each level's frames are in proportion to its channels; and the digits to stream."""
    import keras
    from keras import layers

    from edgekit.converters import convert
    from edgekit.reencode import reencode

    root = tmp_path_factory.mktemp("ladder")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="feat")(x)
    out = layers.Dense(10, name="logits")(layers.Flatten()(x))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    model.save(root / "teacher.keras")
    np.savez(root / "train.npz", x=digits.x_train, y=digits.y_train)
    np.savez(root / "test.npz", x=digits.x_test, y=digits.y_test)
    nested = reencode(root / "teacher.keras", "feat", "entropic", root / "train.npz", root / "nested.keras",
                      levels=list(LEVELS), epochs=1, beta=0.1)
    result = convert(model=nested.output, split="code", calib=root / "train.npz", eval=root / "test.npz",
                     targets=["rpi"], runtime="tflite", output=root / "bundle", latency_runs=0, min_agreement=0.0,
                     codec="raw")
    return result.bundle_path, root / "test.npz"


def test_the_agent_steps_down_on_a_throttled_uplink_and_back_up_losing_no_frame(nested_bundle, mosquitto, tmp_path,
                                                                                 caplog):
    bundle, stream = nested_bundle
    relay = ThrottledRelay(parse_broker_url(mosquitto.url))
    receiver = start_receiver(bundle, mosquitto.url, tmp_path / "results.sqlite")
    caplog.set_level(logging.INFO, logger="edgekit.device.agent")
    running = RunningAgent(bundle, relay.url, tmp_path / "spool.sqlite", stream, fps=40, loop=True,
                           heartbeat_s=30.0, linger_s=30.0, uplink_window_s=0.25, uplink_hold_s=0.5)
    agent = running.agent
    top = len(LEVELS) - 1
    try:
        running.start()
        assert wait_until(lambda: agent.publisher.counters.confirmed >= 40, 30)
        assert agent.ladder.level == top  # an open link: the whole code
        relay.rate = 3200.0  # B/s: the top level's ~6.3 kB/s and level 1's ~3.7 kB/s do not fit, level 0's do
        assert wait_until(lambda: agent.ladder.level == 0, 60), agent.level_counts
        relay.rate = None
        assert wait_until(lambda: agent.ladder.level == top, 60), agent.level_counts
        agent.cfg.limit = agent.counters.captured + 40  # a few frames more at the top, then drain
        assert wait_until(lambda: not running.thread.is_alive(), 90), agent.stats()
    finally:
        stats = running.finish()
        receiver.stop()
        relay.close()
    changes = [(r.old, r.new) for r in caplog.records if getattr(r, "event", None) == "level"]
    path = [top] + [new for _, new in changes]
    assert 0 in path and path[-1] == top and path.index(0) < len(path) - 1, changes
    assert len(changes) == sum(1 for r in caplog.records if r.getMessage().startswith("uplink: rate level"))
    counts = agent.level_counts
    assert all(n > 0 for n in counts) and sum(counts) == stats["spooled"] == stats["captured"]
    assert stats["dropped"] == 0 and stats["queue_depth"] == 0
    registry = agent.metrics.registry  # what Prometheus scrapes (--metrics-port)
    assert [registry.get_sample_value("edgekit_device_frames_by_level_total", {"level": str(i)})
            for i in range(len(LEVELS))] == counts
    assert registry.get_sample_value("edgekit_device_rate_level") == top
    stored = seqs(tmp_path / "results.sqlite", "cam-d", agent.boot_id)
    assert stored == list(range(stats["captured"]))  # every frame, each once


@pytest.mark.parametrize("args, message", [
    (["--uplink-budget", "2kB/s"], "the bundle has no rate levels (wire.levels) — --uplink-budget and --level need"),
    (["--level", "0"], "the bundle has no rate levels"),
    (["--uplink-budget", "fast"], "uplink budget 'fast' is not a positive rate in bytes per second"),
])
def test_ladder_mistakes_are_one_line_errors(cli_runner, bundle, stream, tmp_path, args, message):
    from edgekit.device.commands import device_group

    code, _, err = cli_runner(device_group)("device", "run", "--bundle", bundle, "--device-id", "cam-d", "--source",
                                            stream(4), "--broker", "mqtt://127.0.0.1:9", "--spool",
                                            tmp_path / "spool.sqlite", *args)
    assert code == 2 and "Traceback" not in err, err
    assert f"error: {message}" in err
