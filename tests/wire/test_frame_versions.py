"""A bundle's ``wire.frame_versions`` is a contract its decoder keeps: a frame of a version the bundle does not
list is refused (``version-not-allowed``) once the frame's bundle is known, never decoded."""

from __future__ import annotations

import numpy as np
import pytest
from wire_helpers import EXAMPLE_BUNDLE_ID, EXAMPLE_CODE, EXAMPLE_FIELDS, EXAMPLE_QUANT, EXAMPLE_WIRE

from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.errors import CrcMismatch, UnknownBundle, VersionNotAllowed
from edgekit.wire.frame_v2 import pack_frame_v2
from edgekit.wire.spec import WireSpec

NOW = EXAMPLE_FIELDS["timestamp_ns"]


def spec_with(versions: list[int] | None, bundle_id: str = EXAMPLE_BUNDLE_ID) -> WireSpec:
    """The worked example's bundle with ``wire.frame_versions`` = ``versions`` (None: the key absent)."""
    wire = {k: v for k, v in EXAMPLE_WIRE.items() if k != "codecs"} | {"codecs": {"raw": {}}}
    if versions is not None:
        wire["frame_versions"] = versions
    return WireSpec(bundle_id, (2, 2, 2), wire, None, EXAMPLE_QUANT)


def frame(version: int, bundle_id: str = EXAMPLE_BUNDLE_ID) -> bytes:
    """The example code as a raw frame of ``version``, made by the encoder of a bundle that allows it."""
    encoder = WireEncoder(bundle_id, (2, 2, 2), spec_with([1, 2], bundle_id).wire, codec="raw",
                          wire_quant=EXAMPLE_QUANT, frame_version=version)
    fields = {k: v for k, v in EXAMPLE_FIELDS.items() if k not in ("scale", "zero_point")}
    return encoder.encode(EXAMPLE_CODE, *EXAMPLE_QUANT, **fields)


@pytest.mark.parametrize("versions, refused", [([1], 2), (None, 2), ([2], 1)])
def test_a_frame_version_the_bundle_does_not_list_is_refused(versions, refused):
    decoder = WireDecoder([spec_with(versions)])
    with pytest.raises(VersionNotAllowed, match=f"frame version {refused}") as info:
        decoder.decode(frame(refused), now_ns=NOW)
    assert info.value.code == "version-not-allowed" and "wire.frame_versions" in info.value.reason
    allowed = 3 - refused
    assert np.array_equal(decoder.decode(frame(allowed), now_ns=NOW).code, EXAMPLE_CODE)


def test_the_version_is_checked_once_the_bundle_is_known_and_before_the_tag():
    """After routing and the CRC (which need the bundle), before the tag: a refused frame costs no HMAC."""
    only_v1 = WireDecoder([spec_with([1])], verify_tag=lambda *args: pytest.fail("the tag was checked"))
    other = "11" + EXAMPLE_BUNDLE_ID[2:]
    with pytest.raises(UnknownBundle):
        only_v1.decode(frame(2, other), now_ns=NOW)
    damaged = bytearray(frame(2))
    damaged[-1] ^= 1
    with pytest.raises(CrcMismatch):
        only_v1.decode(bytes(damaged), now_ns=NOW)
    tagged = pack_frame_v2(codec_id=0, codec_param=0, bundle_id=bytes.fromhex(EXAMPLE_BUNDLE_ID), boot_id=7,
                           seq=1, timestamp_ns=NOW, payload=EXAMPLE_CODE.tobytes(), tag_fn=lambda body: bytes(16))
    with pytest.raises(VersionNotAllowed):
        only_v1.decode(tagged, now_ns=NOW)
