"""Frame authentication: per-device keys, the frame MAC, the replay window, and signed JSON messages.

Each device holds a 32-byte key provisioned out of band (``edgekit keys add``; never in a bundle). The agent
appends a truncated HMAC-SHA256 tag to every version-2 frame (flag ``AUTH``); the receiver, which holds every
device's key in a key store, checks it (docs/wire-format.md, "Authenticated frames")::

    bytes ─► framing, route, CRC, fields ─► tag_check(device) ─► quant, codec, payload ─► admit ─► batch
             (edgekit.wire, checks 1-9)     unknown-key          (checks 11-13)           missing-tag
                                            wrong-device                                  replayed
                                            forged-boot                                   stale-seq
                                            bad-tag

The tag binds the frame to the device id of the topic it travels on: the MAC input starts with a
domain-separation label and the length-prefixed device id, so a genuine frame moved to another device's
topic fails, and a tag made for a frame can never pass as a tag for a results message (another label).
Results the receiver publishes for a device carry a ``mac`` field made with the same key
(:func:`sign_message`); the agent ignores results without a valid one.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from edgekit.errors import UsageError
from edgekit.frame import AUTH_FLAG, AUTH_TAG_BYTES, FrameError, split_v2
from edgekit.mqtt import check_device_id

__all__ = [
    "KEY_SIZE",
    "TAG_SIZE",
    "KEY_FORMAT",
    "REPLAY_WINDOW",
    "new_key",
    "write_key_file",
    "read_key_file",
    "KeyStore",
    "frame_tag",
    "seal",
    "verify_frame",
    "sign_message",
    "verify_message",
    "AuthError",
    "MissingTag",
    "UnknownKey",
    "BadTag",
    "WrongDevice",
    "ForgedBoot",
    "Replayed",
    "StaleSeq",
    "AUTH_ERROR_TYPES",
    "BootRecords",
    "FrameAuthenticator",
]

log = logging.getLogger(__name__)

KEY_SIZE = 32
TAG_SIZE = AUTH_TAG_BYTES  # 16 bytes: docs/security.md says why
KEY_FORMAT = "edgekit-device-key"
_FRAME_LABEL = b"edgekit-frame-mac-v1\x00"
_MESSAGE_LABEL = b"edgekit-message-mac-v1\x00"
#: A seq this far (or farther) below the highest stored seq of its boot is ``stale-seq``. An agent sends in
#: seq order with at most its in-flight window (64) outstanding, so a genuine frame is never this late.
REPLAY_WINDOW = 4096
_RELOAD_S = 1.0  # how often the key store looks for added, rotated or revoked keys


# ------------------------------------------------------------------------------------------------- keys


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


# ------------------------------------------------------------------------------------------------- MACs


def _mac(key: bytes, label: bytes, device_id: str, *parts: bytes) -> bytes:
    """HMAC-SHA256 over label ‖ u8 len(device id) ‖ device id ‖ parts, truncated to :data:`TAG_SIZE`."""
    device = device_id.encode()
    mac = hmac.new(key, label + bytes([len(device)]) + device, hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()[:TAG_SIZE]


def frame_tag(key: bytes, device_id: str, signed: bytes) -> bytes:
    """The tag of a frame: ``signed`` is every frame byte before the tag (header with its CRC, payload)."""
    return _mac(key, _FRAME_LABEL, device_id, signed)


def seal(key: bytes, device_id: str):
    """The agent's sealer for :class:`edgekit.wire.WireEncoder`: frame bytes (flag set) -> their tag."""
    return lambda frame: frame_tag(key, device_id, frame)


def verify_frame(key: bytes, device_id: str, data: bytes) -> bool:
    """True when the last :data:`TAG_SIZE` bytes of ``data`` are the tag of the rest (constant-time compare)."""
    return _tag_ok(key, device_id, data[:-TAG_SIZE], data[-TAG_SIZE:])


def _tag_ok(key: bytes, device_id: str, signed: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(frame_tag(key, device_id, signed), tag)


def _canonical(kind: str, message: dict[str, Any]) -> bytes:
    """What a message MAC covers: the topic kind, then the JSON of every field but ``mac``, keys sorted, no
    spaces, ASCII only (one text for one object, whatever order or spacing it travelled in)."""
    body = {k: v for k, v in message.items() if k != "mac"}
    return kind.encode() + b"\x00" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_message(key: bytes, device_id: str, kind: str, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` plus ``"mac"``: 32 hex digits binding it to the device and the topic kind (``results``)."""
    return {**message, "mac": _mac(key, _MESSAGE_LABEL, device_id, _canonical(kind, message)).hex()}


def verify_message(key: bytes, device_id: str, kind: str, message: dict[str, Any]) -> bool:
    """True when ``message["mac"]`` is its valid MAC for this device and kind."""
    mac = message.get("mac")
    if not isinstance(mac, str):
        return False
    expected = _mac(key, _MESSAGE_LABEL, device_id, _canonical(kind, message)).hex()
    return hmac.compare_digest(expected, mac)


# ----------------------------------------------------------------------------------------------- errors


class AuthError(FrameError):
    """A frame failed authentication or the replay window (dead-lettered with its ``code``)."""

    code = "auth-failed"


class MissingTag(AuthError):
    """No tag, but the device has a key (or the receiver runs with ``--require-auth``)."""

    code = "missing-tag"


class UnknownKey(AuthError):
    """A tagged frame from a device the key store has no key for (never provisioned, or revoked)."""

    code = "unknown-key"


class BadTag(AuthError):
    """The tag does not match, for a boot the receiver has authenticated before: altered or forged."""

    code = "bad-tag"


class WrongDevice(AuthError):
    """A genuine frame of another device (its boot and its tag are that device's) on this device's topic."""

    code = "wrong-device"


class ForgedBoot(AuthError):
    """The tag does not match and the boot is new: someone tried to open a boot in this device's name."""

    code = "forged-boot"


class Replayed(AuthError):
    """A genuine frame whose (boot, seq) has already been stored."""

    code = "replayed"


class StaleSeq(AuthError):
    """A genuine frame :data:`REPLAY_WINDOW` or more seqs behind the newest stored one of its boot."""

    code = "stale-seq"


#: The receiver's authentication errors, in the order of its checks (docs/wire-format.md).
AUTH_ERROR_TYPES: tuple[type[AuthError], ...] = (UnknownKey, WrongDevice, ForgedBoot, BadTag, MissingTag,
                                                 Replayed, StaleSeq)


# ---------------------------------------------------------------------------------------- replay window


class BootRecords(Protocol):
    """What the replay window needs persisted (``edgekit.server.store.ResultStore`` provides it)."""

    def stored_seqs(self, device: str, boot_id: int, window: int) -> tuple[int, set[int]]: ...
    def add_boot(self, device: str, boot_id: int) -> None: ...
    def boot_devices(self, boot_id: int) -> list[str]: ...


class _Boot:
    """One (device, boot) of the window: the highest stored seq and the stored seqs within the window."""

    __slots__ = ("top", "seqs", "recorded")

    def __init__(self, top: int, seqs: set[int]):
        self.top, self.seqs = top, seqs
        self.recorded = False  # the store knows this boot (written once, on its first authenticated frame)

    def add(self, seq: int) -> None:
        self.seqs.add(seq)
        if seq > self.top:
            self.top = seq
            if len(self.seqs) > 2 * REPLAY_WINDOW:
                self.seqs = {s for s in self.seqs if s > self.top - REPLAY_WINDOW}


class FrameAuthenticator:
    """The receiver's checks: :meth:`tag_check` inside the decoder (key known, tag valid, before any payload
    is read), then :meth:`admit` on the decoded frame (tagged when expected, (boot, seq) new).

    Both run on the link thread; :meth:`stored` runs on the worker thread once a result is committed. The
    window holds only *stored* seqs: a copy of a frame still in the batch is not caught here but by the
    store's UNIQUE key (no second result), and a frame whose batch failed to store stays acceptable when the
    broker re-delivers it.
    """

    def __init__(self, keys: KeyStore | None, records: BootRecords, *, require: bool = False,
                 max_boots: int = 10_000):
        self.keys = keys
        self.records = records
        self.require = require
        self._boots: collections.OrderedDict[tuple[str, int], _Boot] = collections.OrderedDict()
        self._max_boots = max_boots
        self._lock = threading.Lock()

    def tag_check(self, device: str):
        """The decoder's ``verify_tag`` for a frame that came on ``device``'s topic."""
        def verify(bundle_id: str, signed: bytes, tag: bytes) -> None:
            key = self.key(device)
            if key is None:
                raise UnknownKey(f"no key for device {device} in the key store")
            if not _tag_ok(key, device, signed, tag):
                self._raise_bad_tag(device, signed, tag)
        return verify

    def admit(self, device: str, frame) -> bool:
        """Raise the :class:`AuthError` a decoded frame deserves after its tag: True when it carried a valid
        tag, False when it is an untagged frame this receiver accepts (no key, not ``require``)."""
        if not frame.flags & AUTH_FLAG:  # version 1 has no flags, so never a tag
            if self.key(device) is not None or self.require:
                raise MissingTag(f"device {device} must tag its frames" if self.key(device) is not None
                                 else "this receiver requires authenticated frames (--require-auth)")
            return False
        self._check_window(device, frame.boot_id, frame.seq)
        return True

    def key(self, device: str) -> bytes | None:
        """The device's key (to sign its results), or None."""
        return self.keys.get(device) if self.keys is not None else None

    def stored(self, device: str, boot_id: int, seq: int) -> None:
        """Record a committed result. Only boots in memory are updated: those of frames that passed
        :meth:`admit` (an untagged device never loads one); a boot evicted since is reloaded from the store,
        which has this result by then."""
        with self._lock:
            boot = self._boots.get((device, boot_id))
            if boot is not None:
                boot.add(seq)

    def _raise_bad_tag(self, device: str, signed: bytes, tag: bytes) -> None:
        """Tell a moved frame (another device's boot and key) and a forged boot from a bad tag."""
        boot_id = split_v2(signed + tag).boot_id  # parsed again only on this failure path
        owners = self.records.boot_devices(boot_id)
        for other in owners:
            key = self.key(other) if other != device else None
            if key is not None and _tag_ok(key, other, signed, tag):
                raise WrongDevice(f"a frame of device {other} (boot {boot_id:08x}) on {device}'s topic")
        if device not in owners:
            raise ForgedBoot(f"bad tag on the first frame of boot {boot_id:08x} of {device}")
        raise BadTag(f"bad tag on a frame of boot {boot_id:08x} of {device}")

    def _check_window(self, device: str, boot_id: int, seq: int) -> None:
        with self._lock:
            boot = self._boot(device, boot_id)
            if seq in boot.seqs:
                raise Replayed(f"boot {boot_id:08x} seq {seq} of {device} is already stored")
            if seq <= boot.top - REPLAY_WINDOW:
                raise StaleSeq(f"boot {boot_id:08x} seq {seq} of {device} is {boot.top - seq} behind the newest "
                               f"stored ({boot.top}); the window is {REPLAY_WINDOW}")
            if not boot.recorded:
                self.records.add_boot(device, boot_id)
                boot.recorded = True

    def _boot(self, device: str, boot_id: int) -> _Boot:
        """The window of one boot, loaded from the store on first sight (so a restart does not reopen it)."""
        key = (device, boot_id)
        boot = self._boots.get(key)
        if boot is None:
            boot = self._boots[key] = _Boot(*self.records.stored_seqs(device, boot_id, REPLAY_WINDOW))
            if len(self._boots) > self._max_boots:
                self._boots.popitem(last=False)
        self._boots.move_to_end(key)
        return boot
