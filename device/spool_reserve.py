"""Room for the spool on a full filesystem: ``<spool>.reserve``, a file the spool gives back when the disk fills.

On a full filesystem SQLite cannot even delete: a WAL transaction appends to the WAL file, and the checkpoint
that lets the WAL start over must first extend the database file with the pages still in the WAL. So when
SQLite reports the disk full, the spool (device/spool.py) releases this file, checkpoints into the room it
leaves and caps its database at its size (``PRAGMA max_page_count``): its policy then frees pages inside the
file and new frames reuse them, while the WAL cycles within its own length (checkpointed every half reserve,
``wal_autocheckpoint``). Once the filesystem has room for the reserve and as much again, the spool holds it
again and lifts the cap (docs/device.md, Store-and-forward).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgekit.errors import EdgekitError

__all__ = ["RESERVE_BYTES", "MIN_RESERVE_BYTES", "Reserve", "SpoolDiskFull", "free_bytes", "filesystem_full"]

RESERVE_BYTES = 2 * 2**20
MIN_RESERVE_BYTES = 64 * 1024  # the least worth holding when the spool closes on a full filesystem


class SpoolDiskFull(EdgekitError):
    """The spool's filesystem is too full to open the spool at all. Exit code 75 (EX_TEMPFAIL), not a usage
    error's 2: a restart (systemd's) succeeds once there is room."""

    exit_code = 75


class Reserve:
    """``<spool>.reserve``: :data:`RESERVE_BYTES` allocated (``posix_fallocate``) for the spool's own use."""

    def __init__(self, spool: Path):
        self.path = spool.with_name(spool.name + ".reserve")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def restore(self, at_least: int = RESERVE_BYTES) -> bool:
        """Hold :data:`RESERVE_BYTES`, or the most the filesystem gives, halving down to ``at_least``; False (and
        nothing held) when not even that fits."""
        size = RESERVE_BYTES
        while size >= at_least:
            if self._allocate(size):
                return True
            size //= 2
        self.release()
        return False

    def _allocate(self, size: int) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            os.posix_fallocate(fd, 0, size)
            return True
        except OSError:
            os.ftruncate(fd, 0)  # a failed allocation may have kept some blocks
            return False
        finally:
            os.close(fd)


def free_bytes(path: Path) -> int:
    """The room left on the filesystem of the file ``path`` (0 when it cannot be read)."""
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 0


def filesystem_full(path: Path) -> bool:
    """Less room than the reserve is left beside ``path``: its filesystem, not a file's page limit, is full.
    False for a folder that cannot be read (a missing one is not a full disk)."""
    try:
        return shutil.disk_usage(path.parent).free < RESERVE_BYTES
    except OSError:
        return False
