"""The receiver's check of an authenticated frame: its tag under the device's key, then its place in the
per-boot replay window.

::

    bytes ─► framing, route, CRC, fields ─► tag_check(device) ─► quant, codec, payload ─► admit ─► batch
             (edgekit.wire, checks 1-9)     unknown-key          (checks 11-13)           missing-tag
                                            wrong-device                                  replayed
                                            forged-boot                                   stale-seq
                                            bad-tag
"""

from __future__ import annotations

import collections
import threading
from typing import Protocol

from edgekit.auth.keys import KeyStore
from edgekit.auth.tags import tag_ok
from edgekit.wire.errors import FrameError
from edgekit.wire.frame_v2 import AUTH_FLAG, split_v2

#: A seq this far (or farther) below the highest stored seq of its boot is ``stale-seq``. An agent sends in
#: seq order with at most its in-flight window (64) outstanding, so a genuine frame is never this late.
REPLAY_WINDOW = 4096


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
            if not tag_ok(key, device, signed, tag):
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
            if key is not None and tag_ok(key, other, signed, tag):
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
