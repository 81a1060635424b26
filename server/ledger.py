"""Every frame accounted for: per device and boot, what was stored, dropped by the device, or is missing.

The store merges the seq ranges it stores (``seq_ranges``, kind ``stored``) in the results' own
transaction. Devices report in their heartbeats the seq ranges their spool dropped by policy (full, age,
too big, refused by the broker) and, per boot, the seq below which every frame has left their spool
(``settled``); :meth:`Ledger.heartbeat` merges them as kinds ``dropped`` and ``settled`` (``0..below-1``).
Every ``check_every_s`` the ledger recomputes the holes of each boot: seq numbers up to the highest stored
or settled one that are neither stored nor dropped. A frame below the settled mark is no longer on the
device, so if it is not stored either, only the grace stands between it and an alarm; a frame still
spooled (a deep spool draining after an outage) is above the mark and never a hole. A hole still there
after ``grace_s`` (long enough for the device's re-sends to fill it) is *missing*: logged once as a WARNING
naming device, boot and range, and counted by ``edgekit server stats``. All of it lives in the database,
so a restart forgets nothing.

Its own thread: heartbeats and gap checks never run on the link or worker threads that carry frames.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from edgekit.delivery.acks import valid_range
from edgekit.delivery.ranges import size, subtract, union

__all__ = ["Ledger", "parse_drops", "parse_settled", "find_gaps"]

log = logging.getLogger(__name__)

MAX_DROP_RANGES = 1000  # per heartbeat; the agent sends at most 200
MAX_SETTLED_BOOTS = 64  # per heartbeat; the agent sends at most 8


def _entries(payload: bytes, name: str, limit: int) -> list:
    """The first ``limit`` items of a heartbeat's list field ``name``; [] for anything else (junk or an old
    agent's heartbeat)."""
    try:
        entries = json.loads(payload).get(name)
    except (ValueError, AttributeError, RecursionError):  # RecursionError: nested deeper than json parses
        return []
    return entries[:limit] if isinstance(entries, list) else []


def parse_drops(payload: bytes) -> list[tuple[int, int, int]]:
    """``(boot_id, first, last)`` of the well-formed ``drops`` entries of a heartbeat; [] for anything else."""
    return [(entry[0], entry[1], entry[2]) for entry in _entries(payload, "drops", MAX_DROP_RANGES)
            if isinstance(entry, list) and len(entry) >= 3 and valid_range(*entry[:3])]


def parse_settled(payload: bytes) -> list[tuple[int, int]]:
    """``(boot_id, below)`` of the well-formed ``settled`` entries ``[boot_id, below]`` of a heartbeat that
    settle anything (``below`` >= 1); [] for anything else."""
    return [(entry[0], entry[1]) for entry in _entries(payload, "settled", MAX_SETTLED_BOOTS)
            if isinstance(entry, list) and len(entry) == 2 and type(entry[1]) is int and entry[1] >= 1
            and valid_range(entry[0], 0, entry[1] - 1)]


def find_gaps(ranges: dict, old: dict, now: float, grace_s: float) -> dict:
    """The holes of each boot (see the module docstring) as ``(first, last, since, alarmed)``; ``ranges``
    come merged and sorted per kind, as :meth:`~edgekit.server.store.ResultStore.update_gaps` gives them.
    Settled marks count only for a device this database stored frames of (in any boot): every receiver
    hears every device's heartbeats, and a device served by another receiver with another database has
    settled frames that are simply not here. A hole keeps the earliest ``since`` of the old holes it
    overlaps (a hole partly filled late stays as old) and their alarm (reported once); it is alarmed when
    older than ``grace_s``."""
    gaps = {}
    known = {device for (device, _), kinds in ranges.items() if kinds.get("stored")}
    for key, kinds in ranges.items():
        reach = ("stored", "settled") if key[0] in known else ("stored",)
        horizon = max((kinds[kind][-1][1] for kind in reach if kinds.get(kind)), default=None)
        if horizon is None:
            continue
        explained = union(kinds.get("stored", []) + kinds.get("dropped", []))
        holes = subtract([(0, horizon)], explained)
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
        self.missing_frames = 0  # in the ranges alarmed (the receiver's metrics)
        self._lock = threading.Lock()
        self._heartbeats: dict[str, bytes] = {}  # the latest per device: each carries recent drops, settled marks
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
        """Merge the queued heartbeats' drops and settled marks, recompute the gaps, and log each newly
        missing range."""
        with self._lock:
            heartbeats, self._heartbeats = self._heartbeats, {}
        for device, payload in heartbeats.items():
            drops, settled = parse_drops(payload), parse_settled(payload)
            if drops:
                self.store.add_dropped(device, drops)
            if settled:
                self.store.add_settled(device, settled)
        now = time.time()
        for device, boot_id, first, last in self.store.update_gaps(
                lambda ranges, old: find_gaps(ranges, old, now, self.grace_s)):
            self.alarms += 1
            self.missing_frames += size([(first, last)])
            log.warning("missing frames: device %s boot %08x seq %d-%d (%d frames): neither stored nor dropped by "
                        "the device after %.0f s", device, boot_id, first, last, size([(first, last)]), self.grace_s,
                        extra={"event": "missing", "device": device, "boot_id": boot_id, "first": first,
                               "last": last})

    def _run(self) -> None:
        while not self._stop.wait(self.check_every_s):
            try:
                self.check()
            except self.store.outage_errors as err:  # full, locked, read-only, gone: the store_outage line says
                log.debug("delivery accounting waits for the database: %s", err)
            except Exception:  # never die: the next check redoes the work from the database
                log.exception("delivery accounting failed; retrying in %.0f s", self.check_every_s)
