"""Per-device frame keys: 32 random bytes a device holds (``edgekit keys add``; never in a bundle), their
files, and the receiver's key store, which picks up added, rotated and revoked keys while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from edgekit.errors import UsageError
from edgekit.mqtt.topics import check_device_id

log = logging.getLogger(__name__)

KEY_SIZE = 32
KEY_FORMAT = "edgekit-device-key"
_RELOAD_S = 1.0  # how often the key store looks for added, rotated or revoked keys




def new_key() -> bytes:
    """32 random bytes from the OS's CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def write_key_file(path: Path, device_id: str, key: bytes) -> None:
    """Write a key file (mode 0600, replaced atomically): one JSON object
    ``{"format": "edgekit-device-key", "version": 1, "device": ID, "key": 64 hex digits}``."""
    body = json.dumps({"format": KEY_FORMAT, "version": 1, "device": device_id, "key": key.hex()}) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing tmp file keeps its mode otherwise
        os.write(fd, body.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_key_file(path: Path, device_id: str | None = None) -> tuple[str, bytes]:
    """The (device id, key) of a key file; a one-line :class:`UsageError` for a missing, unreadable,
    group/world-readable or malformed file, or one made for another device."""
    path = Path(path)
    fix = "make it with: edgekit keys add DEVICE --store DIR --out FILE"
    try:
        if os.stat(path).st_mode & 0o077:
            raise UsageError(f"key file {path} is readable by other users", f"chmod 600 {path}")
        data = json.loads(path.read_text())
    except OSError as err:
        raise UsageError(f"cannot read key file {path}: {err.strerror}", fix) from None
    except ValueError:
        raise UsageError(f"key file {path} is not JSON", fix) from None
    try:
        ok = data["format"] == KEY_FORMAT and data["version"] == 1
        device, key = check_device_id(data["device"]), bytes.fromhex(data["key"])
    except (TypeError, KeyError, ValueError, UsageError):
        ok = False
    if not ok or len(key) != KEY_SIZE:
        raise UsageError(f"key file {path} is not an {KEY_FORMAT} file with a {KEY_SIZE}-byte key", fix)
    if device_id is not None and device != device_id:
        raise UsageError(f"key file {path} is for device {device!r}, not {device_id!r}",
                         f"use the key file made for {device_id}")
    return device, key


class KeyStore:
    """The server's keys: a folder holding one key file per device, ``<device-id>.key``.

    Looked up per frame from memory; the folder is re-read when its modification time changes (checked at
    most once a second), so ``edgekit keys add`` / ``revoke`` take effect without restarting the receiver.
    """

    def __init__(self, folder: Path | str, *, create: bool = False, reload_s: float = _RELOAD_S):
        self.folder = Path(folder)
        self._reload_s = reload_s
        if create:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.folder.is_dir():
            raise UsageError(f"key store {self.folder} is not a folder",
                             "make one with: edgekit keys add DEVICE --store DIR")
        self._keys: dict[str, bytes] = {}
        self._mtime_ns = -1
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._reload()

    def get(self, device_id: str) -> bytes | None:
        """The device's key, or None when the store has none (never provisioned, or revoked)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._reload_s
            self._reload()
        return self._keys.get(device_id)

    def devices(self) -> list[str]:
        """The device ids that have a key."""
        self._reload()
        return sorted(self._keys)

    def path(self, device_id: str) -> Path:
        return self.folder / f"{check_device_id(device_id)}.key"

    def add(self, device_id: str, *, replace: bool = False) -> bytes:
        """A new key for ``device_id``, written to the store; refuses to replace one unless ``replace``."""
        path = self.path(device_id)
        if path.exists() and not replace:
            raise UsageError(f"device {device_id} already has a key in {self.folder}",
                             "pass --rotate to replace it (the device then needs the new key file)")
        key = new_key()
        write_key_file(path, device_id, key)
        return key

    def revoke(self, device_id: str) -> None:
        """Delete the device's key: its frames are dead-lettered (``unknown-key``) from then on."""
        path = self.path(device_id)
        if not path.exists():
            raise UsageError(f"device {device_id} has no key in {self.folder}", "see: edgekit keys list --store DIR")
        path.unlink()

    def _reload(self) -> None:
        """Re-read every key file when the folder changed. A bad file is skipped (and its device has no key),
        so one broken entry cannot take every device down."""
        with self._lock:
            try:
                mtime = os.stat(self.folder).st_mtime_ns
            except OSError:
                return  # keep the keys we have: a folder that vanished is a misconfiguration, logged by callers
            if mtime == self._mtime_ns:
                return
            keys = {}
            for path in self.folder.glob("*.key"):
                try:
                    device, key = read_key_file(path, path.stem)
                except UsageError as err:
                    log.warning("key store: skipped %s (%s)", path.name, err.problem)  # the error names no key
                    continue
                keys[device] = key
            self._keys, self._mtime_ns = keys, mtime
