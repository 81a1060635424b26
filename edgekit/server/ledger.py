"""Every frame accounted for: per device and boot, what was stored, dropped by the device, or is missing.

The store merges the seq ranges it stores (``seq_ranges``, kind ``stored``) in the results' own
transaction. Devices report in their heartbeats the seq ranges their spool dropped by policy (full, age,
too big, refused by the broker); :meth:`Ledger.heartbeat` merges them as kind ``dropped``. Every
``check_every_s`` the ledger recomputes the holes of each boot: seq numbers below its highest stored one
that are neither stored nor dropped. A hole still there after ``grace_s`` (long enough for the device's
re-sends to fill it) is *missing*: logged once as a WARNING naming device, boot and range, and counted by
``edgekit server stats``. All of it lives in the database, so a restart forgets nothing.

Its own thread: heartbeats and gap checks never run on the link or worker threads that carry frames.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

from edgekit.acks import valid_range
from edgekit.ranges import size, subtract, union

__all__ = ["Ledger", "parse_drops", "find_gaps"]

log = logging.getLogger(__name__)

MAX_DROP_RANGES = 1000  # per heartbeat; the agent sends at most 200


def parse_drops(payload: bytes) -> list[tuple[int, int, int]]:
    """``(boot_id, first, last)`` of the well-formed ``drops`` entries of a heartbeat; [] for anything else."""
    try:
        drops = json.loads(payload).get("drops")
    except (ValueError, AttributeError):
        return []
    if not isinstance(drops, list):
        return []
    out = []
    for entry in drops[:MAX_DROP_RANGES]:
        if isinstance(entry, list) and len(entry) >= 3 and valid_range(*entry[:3]):
            out.append((entry[0], entry[1], entry[2]))
    return out


def find_gaps(ranges: dict, old: dict, now: float, grace_s: float) -> dict:
    """The holes of each boot (see the module docstring) as ``(first, last, since, alarmed)``. A hole keeps
    the earliest ``since`` of the old holes it overlaps (a hole partly filled late stays as old) and their
    alarm (reported once); it is alarmed when older than ``grace_s``."""
    gaps = {}
    for key, kinds in ranges.items():
        stored = kinds.get("stored", [])
        if not stored:
            continue
        explained = union(stored + kinds.get("dropped", []))
        holes = subtract([(0, stored[-1][1])], explained)
        out = []
        for first, last in holes:
            overlapping = [g for g in old.get(key, []) if g[0] <= last and g[1] >= first]
            since = min((g[2] for g in overlapping), default=now)
            alarmed = any(g[3] for g in overlapping) or now - since >= grace_s
            out.append((first, last, since, int(alarmed)))
        if out:
            gaps[key] = out
    return gaps


class Ledger:
    """The receiver's accounting thread: heartbeats in (from the link thread), gap checks, alarms."""

    def __init__(self, store, grace_s: float = 300.0, check_every_s: float = 1.0):
        self.store = store
        self.grace_s = grace_s
        self.check_every_s = check_every_s
        self.alarms = 0
        self._lock = threading.Lock()
        self._heartbeats: dict[str, bytes] = {}  # the latest per device: each carries the recent drops
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def heartbeat(self, device: str, payload: bytes) -> None:
        """Keep a device's heartbeat for the next check (any thread: the parsing and the writes happen on the
        ledger thread; a flood of heartbeats costs one dictionary entry per device)."""
        with self._lock:
            self._heartbeats[device] = payload

    def check(self) -> None:
        """Merge the queued heartbeats' drops, recompute the gaps, and log each newly missing range."""
        with self._lock:
            heartbeats, self._heartbeats = self._heartbeats, {}
        for device, payload in heartbeats.items():
            drops = parse_drops(payload)
            if drops:
                self.store.add_dropped(device, drops)
        now = time.time()
        for device, boot_id, first, last in self.store.update_gaps(
                lambda ranges, old: find_gaps(ranges, old, now, self.grace_s)):
            self.alarms += 1
            log.warning("missing frames: device %s boot %08x seq %d-%d (%d frames): neither stored nor dropped by "
                        "the device after %.0f s", device, boot_id, first, last, size([(first, last)]), self.grace_s,
                        extra={"event": "missing", "device": device, "boot_id": boot_id, "first": first,
                               "last": last})

    def _run(self) -> None:
        while not self._stop.wait(self.check_every_s):
            try:
                self.check()
            except sqlite3.OperationalError as err:  # full, locked, read-only: the receiver's store_outage line says
                log.debug("delivery accounting waits for the database: %s", err)
            except Exception:  # never die: the next check redoes the work from the database
                log.exception("delivery accounting failed; retrying in %.0f s", self.check_every_s)
