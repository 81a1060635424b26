"""The frame MAC and signed JSON messages.

The agent appends a truncated HMAC-SHA256 tag to every version-2 frame (flag ``AUTH``); the receiver, which
holds every device's key, checks it (docs/wire-format.md, "Authenticated frames").

The tag binds the frame to the device id of the topic it travels on: the MAC input starts with a
domain-separation label and the length-prefixed device id, so a genuine frame moved to another device's
topic fails, and a tag made for a frame can never pass as a tag for a results message (another label).
Results the receiver publishes for a device carry a ``mac`` field made with the same key
(:func:`sign_message`); the agent ignores results without a valid one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from edgekit.wire.frame_v2 import AUTH_TAG_BYTES

TAG_SIZE = AUTH_TAG_BYTES  # 16 bytes: docs/security.md says why
_FRAME_LABEL = b"edgekit-frame-mac-v1\x00"
_MESSAGE_LABEL = b"edgekit-message-mac-v1\x00"




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
    """The agent's sealer for :class:`edgekit.wire.encoder.WireEncoder`: frame bytes (flag set) -> their tag."""
    return lambda frame: frame_tag(key, device_id, frame)


def verify_frame(key: bytes, device_id: str, data: bytes) -> bool:
    """True when the last :data:`TAG_SIZE` bytes of ``data`` are the tag of the rest (constant-time compare)."""
    return tag_ok(key, device_id, data[:-TAG_SIZE], data[-TAG_SIZE:])


def tag_ok(key: bytes, device_id: str, signed: bytes, tag: bytes) -> bool:
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
