"""The spool on a real full filesystem: a tmpfs mounted for each test, filled to the last byte by a filler file.

SQLite's own page limit (``PRAGMA max_page_count``, tests/delivery/test_delivery.py) never stops the WAL; on
a real full filesystem the WAL cannot grow either, so even deleting the oldest frames failed and the agent
crashed, also right after a restart (issue 20). Here the real agent runs against a real Mosquitto with its
spool on the full filesystem: it keeps capturing, the policy keeps or drops every frame (each drop counted
and reported), it resumes once the filler is deleted, and it restarts on a full disk. Mounting needs root: a
refused mount fails these tests, which are the point of the fix.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from edgekit.device.commands import device_group
from edgekit.server.stats import summarize
from support.running import RunningAgent, seqs, start_receiver, wait_until

DISK_BYTES = 8 * 2**20  # the spool's 2 MiB reserve, its WAL (1 MiB at most) and the frames


class SmallDisk:
    """A mounted tmpfs and a filler file that takes all the room left on it."""

    def __init__(self, root):
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Append to the filler until the filesystem refuses: not one byte is left."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(root)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {root} ({mount.stderr.strip()}): these tests fill a real "
                    "filesystem, which needs root (mount -t tmpfs)")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=True)


def dropped(drops: list[list], boot_id: int) -> list[int]:
    """The seqs of ``boot_id`` in a heartbeat's drop ranges, sorted (repeated if two ranges overlapped)."""
    return sorted(seq for boot, first, last, _ in drops if boot == boot_id for seq in range(first, last + 1))


def accounted(db) -> tuple[int, int]:
    """What the receiver's ledger has: the frames stored plus those the device reported dropped, over every
    boot, and those missing (neither, after the grace period; re-checked twice a second)."""
    devices = summarize(db)["devices"] if db.exists() else []
    return (devices[0]["stored"] + devices[0]["dropped"], devices[0]["missing"]) if devices else (0, 0)


def agent_on(disk: SmallDisk, bundle, stream, url: str, frames: int, **kw) -> RunningAgent:
    """An agent paced at 300 fps over a looped stream, ``frames`` in all, spooling on ``disk``."""
    return RunningAgent(bundle, url, disk.root / "spool.sqlite", stream(100), fps=300, loop=True, limit=frames, **kw)


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_a_full_disk_keeps_capturing_by_policy_and_resumes_when_room_returns(policy, bundle, stream, mosquitto,
                                                                             small_disk, tmp_path):
    frames, db = 2000, tmp_path / "r.sqlite"
    agent = agent_on(small_disk, bundle, stream, mosquitto.url, frames, spool_policy=policy).start()
    counters, spool = agent.agent.counters, agent.agent.spool
    try:
        assert wait_until(lambda: counters.captured >= 200, 30)  # no receiver yet: every frame stays spooled
        before_full = counters.captured
        small_disk.fill()
        filled_at = counters.captured
        assert wait_until(lambda: counters.captured >= filled_at + 300 or not agent.thread.is_alive(), 30)
        assert agent.thread.is_alive() and spool.full, "the agent stopped on the full disk"
        small_disk.free()
        assert wait_until(lambda: not spool.full or not agent.thread.is_alive(), 30)
        room_at = counters.captured
        assert room_at < frames, "the source ended before room returned: the test proves nothing after it"
        receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
        try:
            assert wait_until(lambda: counters.captured == frames and spool.depth == 0 and
                              accounted(db) == (frames, 0), 60), (counters.captured, spool.depth, accounted(db))
        finally:
            receiver.stop()
        stats = agent.finish()
    finally:
        agent.finish()
    stored, lost = seqs(db, "cam-d", stats["boot_id"]), dropped(stats["drops"], stats["boot_id"])
    assert sorted(stored + lost) == list(range(frames))  # each captured frame delivered or dropped, once
    assert stats["dropped"] == len(lost) > 0 and stats["confirmed"] == len(stored) and stats["queue_depth"] == 0
    assert set(range(room_at, frames)) <= set(stored)  # spooled after room returned: all delivered
    if policy == "drop-oldest":  # the freshest kept: no receiver confirmed any while the disk was full
        assert lost == list(range(len(lost)))
    else:  # the spooled frames kept, the new ones refused
        assert set(range(before_full)) <= set(stored) and stats["spooled"] + stats["dropped"] == frames


def test_an_agent_restarted_on_a_full_disk_keeps_capturing_and_sends_it_all_later(bundle, stream, mosquitto,
                                                                                   small_disk, tmp_path):
    db = tmp_path / "r.sqlite"
    first = agent_on(small_disk, bundle, stream, mosquitto.url, 600).start()
    try:
        assert wait_until(lambda: first.agent.counters.captured >= 200, 30)
        small_disk.fill()
        assert wait_until(lambda: first.agent.counters.captured == 600 or not first.thread.is_alive(), 30)
        assert first.thread.is_alive() and first.agent.spool.full
    finally:
        stats = [first.finish()]
    small_disk.fill()  # also the room its WAL left when it closed: not one byte free at the restart
    again = agent_on(small_disk, bundle, stream, mosquitto.url, 900)
    counters, spool = again.agent.counters, again.agent.spool
    assert spool.full and spool.depth > 0  # it opened on the full disk, with the first boot's frames
    again.start()
    receiver = None
    try:
        assert wait_until(lambda: counters.captured >= 300 or not again.thread.is_alive(), 30)
        assert again.thread.is_alive() and spool.counters.dropped_full > 0
        small_disk.free()
        assert wait_until(lambda: not spool.full, 30)  # no more drops: each frame is then delivered or dropped
        receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
        assert wait_until(lambda: counters.captured == 900 and spool.depth == 0 and accounted(db) == (1500, 0),
                          60), (counters.captured, spool.depth, accounted(db))
        stats.append(again.finish())
    finally:
        again.finish()
        if receiver is not None:
            receiver.stop()
    for boot_stats in stats:  # both boots: every frame delivered or dropped, once; the first boot's drops kept
        boot_id, frames = boot_stats["boot_id"], boot_stats["captured"]
        stored, lost = seqs(db, "cam-d", boot_id), dropped(stats[-1]["drops"], boot_id)
        assert sorted(stored + lost) == list(range(frames)) and lost, boot_id
    first_boot = stats[0]["boot_id"]  # restarted on the full disk, it made room by dropping the oldest frames
    assert len(dropped(stats[1]["drops"], first_boot)) > len(dropped(stats[0]["drops"], first_boot))


def test_a_spool_that_cannot_even_open_on_a_full_disk_exits_75_with_one_line(
        bundle, stream, small_disk, cli_runner):
    small_disk.fill()  # a new spool: not one byte for its first page
    code, _, err = cli_runner(device_group)("device", "run", "--bundle", bundle, "--device-id", "cam-d", "--source",
                                            stream(5), "--spool", small_disk.root / "spool.sqlite",
                                            "--broker", "mqtt://127.0.0.1:1")
    assert err.strip().count("\n") == 0 and "its filesystem is full" in err and "free some space on the " \
        f"filesystem of {small_disk.root}" in err, err
    assert code == 75  # EX_TEMPFAIL, not a usage error's 2: the systemd unit starts the agent again later
