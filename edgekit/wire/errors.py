"""Why a frame was rejected: one :class:`FrameError` subclass per check, each with a stable ``code``.

The ``code`` is what dead letters and metrics carry; ``reason`` is for people. Nothing but these escapes a
decoder (the fuzz test asserts it). docs/wire-format.md lists them in the order of the checks.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError



class FrameError(EdgekitError):
    """A frame was rejected. ``code`` is stable (dead letters, metrics); ``reason`` says what was wrong."""

    code = "frame-error"

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{self.code}: {reason}")


class TruncatedFrame(FrameError):
    """Fewer bytes than a header, or than the header's declared payload length."""

    code = "truncated"


class TrailingBytes(FrameError):
    """More bytes than the header declares: a frame is never padded or concatenated."""

    code = "trailing-bytes"


class BadMagic(FrameError):
    """The first two bytes are not ``EK``: this is not an edgekit frame."""

    code = "bad-magic"


class UnsupportedVersion(FrameError):
    """A frame version this decoder does not implement (never guessed)."""

    code = "unsupported-version"


class UnknownFlags(FrameError):
    """A flag bit this version does not define is set."""

    code = "unknown-flags"


class FrameTooLarge(FrameError):
    """A declared size is above the decoder's limit (checked before any allocation)."""

    code = "too-large"


class CrcMismatch(FrameError):
    """The CRC32C of header and payload does not match: the frame was damaged."""

    code = "crc-mismatch"


class BadHeader(FrameError):
    """A header field holds an impossible value (dtype, ndim, dims, raw_len, scale, zero point, seq, time)."""

    code = "bad-header"


class UnknownBundle(FrameError):
    """No loaded bundle has this bundle-id prefix: the server never decodes with the wrong model."""

    code = "unknown-bundle"


class VersionNotAllowed(FrameError):
    """A frame version this decoder implements, but the frame's bundle does not list in ``wire.frame_versions``:
    the bundle says which versions its receivers read, so a sender that ignores it is refused, not guessed."""

    code = "version-not-allowed"


class LevelNotAllowed(FrameError):
    """A version-2 frame carries a rate level (the ``LEVEL`` flag) its bundle does not list in ``wire.levels``
    (or the bundle has no levels): decoding it with the wrong channel count would mis-read the code."""

    code = "level-not-allowed"


class ShapeMismatch(FrameError):
    """The frame's code shape differs from the bundle's code shape."""

    code = "shape-mismatch"


class QuantMismatch(FrameError):
    """The frame's scale or zero point differs from the bundle's wire quantization (``code.wire_quant``):
    the sender's model is not the one the bundle was validated with, so its code would be mis-read."""

    code = "quant-mismatch"


class UnknownCodec(FrameError):
    """A codec id, or codec parameter, the registry or this bundle does not provide."""

    code = "unknown-codec"


class CorruptPayload(FrameError):
    """The payload passed the CRC but does not decode to exactly ``raw_len`` bytes of code."""

    code = "corrupt-payload"


class Unauthenticated(FrameError):
    """A version-2 frame with the ``authenticated`` flag, and this decoder has no key to check its tag."""

    code = "unauthenticated"


#: Every error a decoder may raise, in the order of the checks. The fuzz test asserts nothing else escapes.
ERROR_TYPES: tuple[type[FrameError], ...] = (
    TruncatedFrame,
    BadMagic,
    UnsupportedVersion,
    UnknownFlags,
    FrameTooLarge,
    TrailingBytes,
    CrcMismatch,
    BadHeader,
    UnknownBundle,
    VersionNotAllowed,
    ShapeMismatch,
    QuantMismatch,
    UnknownCodec,
    CorruptPayload,
    Unauthenticated,
    LevelNotAllowed,
)
