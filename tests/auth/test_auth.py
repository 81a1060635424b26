"""edgekit/auth/ on its own: key files and the key store, the frame tag, signed messages, and the receiver's
checks and replay window over a real SQLite result store."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgekit.auth.authenticator import (REPLAY_WINDOW, BadTag, ForgedBoot, FrameAuthenticator, MissingTag, Replayed,
                                        StaleSeq, UnknownKey, WrongDevice)
from edgekit.auth.tags import TAG_SIZE, frame_tag, seal, sign_message, verify_frame, verify_message
from edgekit.auth.keys import KeyStore, read_key_file, write_key_file
from edgekit.errors import UsageError
from support.frames import flip_bit, recrc, strip_tag, wrong_tag
from edgekit.wire.frame_v2 import AUTH_FLAG
from edgekit.wire.errors import CrcMismatch, Unauthenticated
from edgekit.server.store import Result, ResultStore
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.spec import WireSpec

BUNDLE_ID = "ab" * 32
WIRE = {"frame_versions": [1, 2], "default_codec": "raw", "codecs": {"raw": {}},
        "limits": {"max_code_elements": 8, "max_payload_bytes": 96}}
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def _encoder(key: bytes | None = None, device: str = "cam-a") -> WireEncoder:
    encoder = WireEncoder(BUNDLE_ID, (2, 2, 2), WIRE, wire_quant=(0.1, 0))
    if key is not None:
        encoder.sealer = seal(key, device)
    return encoder


def _frame(seq: int = 0, boot_id: int = 7, key: bytes | None = KEY_A, device: str = "cam-a") -> bytes:
    code = (np.arange(8) + seq).astype(np.int8).reshape(2, 2, 2)
    return _encoder(key, device).encode(code, 0.1, 0, seq=seq, boot_id=boot_id, timestamp_ns=1)


# ---------------------------------------------------------------------------------------------- key files


def test_key_file_round_trip_mode_0600(tmp_path):
    path = tmp_path / "cam-a.key"
    write_key_file(path, "cam-a", KEY_A)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_key_file(path, "cam-a") == ("cam-a", KEY_A)


@pytest.mark.parametrize("problem, edit", [
    ("readable by other users", lambda p: os.chmod(p, 0o644)),
    ("is for device 'cam-a', not 'cam-b'", None),
    ("is not JSON", lambda p: p.write_text("key=00")),
    ("32-byte key", lambda p: p.write_text('{"format": "edgekit-device-key", "version": 1, "device": "cam-a", '
                                           '"key": "00ff"}')),
])
def test_bad_key_files_are_one_line_errors(tmp_path, problem, edit):
    path = tmp_path / "cam-a.key"
    write_key_file(path, "cam-a", KEY_A)
    if edit is not None:
        edit(path)
    with pytest.raises(UsageError, match=problem):
        read_key_file(path, "cam-b" if edit is None else "cam-a")


def test_key_store_add_revoke_and_reload_without_restart(tmp_path):
    store = KeyStore(tmp_path / "keys", create=True, reload_s=0)
    key = store.add("cam-a")
    assert len(key) == 32 and store.get("cam-a") == key and store.devices() == ["cam-a"]
    with pytest.raises(UsageError, match="already has a key"):
        store.add("cam-a")
    assert store.add("cam-a", replace=True) != key
    other = KeyStore(tmp_path / "keys", reload_s=0)  # a receiver watching the same folder
    store.revoke("cam-a")
    assert other.get("cam-a") is None
    with pytest.raises(UsageError, match="bad device id"):
        store.add("../etc")


def test_a_bad_store_entry_is_skipped_with_a_warning_naming_no_key(tmp_path, caplog):
    store = KeyStore(tmp_path / "keys", create=True, reload_s=0)
    key = store.add("cam-a")
    os.chmod(store.path("cam-a"), 0o644)
    store.add("cam-b")  # changes the folder: the store is re-read
    assert store.get("cam-a") is None and store.get("cam-b") is not None
    assert "skipped cam-a.key" in caplog.text and "readable by other users" in caplog.text
    assert key.hex() not in caplog.text


# ------------------------------------------------------------------------------------------------- tags


def test_tag_is_bound_to_key_device_and_every_bit():
    frame = _frame()
    assert len(frame) == 17 + 8 + TAG_SIZE and frame[1] == AUTH_FLAG
    assert verify_frame(KEY_A, "cam-a", frame)
    assert not verify_frame(KEY_B, "cam-a", frame)
    assert not verify_frame(KEY_A, "cam-b", frame)
    assert not verify_frame(KEY_A, "cam-a\x00", frame)  # the length prefix: no ambiguity between ids
    for bit in range(0, len(frame) * 8, 7):
        assert not verify_frame(KEY_A, "cam-a", flip_bit(frame, bit // 8, bit % 8)), bit


def test_the_decoder_hands_the_signed_bytes_and_the_tag_and_the_crc_does_not_cover_the_tag():
    frame, seen = _frame(), []
    decoder = _decoder()
    decoded = decoder.decode(frame, verify_tag=lambda bundle_id, signed, tag: seen.append((signed, tag)))
    assert decoded.flags == AUTH_FLAG and seen == [(frame[:-TAG_SIZE], frame[-TAG_SIZE:])]
    assert np.array_equal(decoded.code, decoder.decode(_frame(key=None)).code)
    with pytest.raises(Unauthenticated):  # a decoder given no tag check never decodes a tagged frame
        decoder.decode(frame)
    with pytest.raises(CrcMismatch):  # a line error in the payload stays a CRC error, before the tag
        decoder.decode(flip_bit(frame, 17), verify_tag=lambda *a: seen.append(a))
    assert len(seen) == 1


def test_frame_tag_and_message_mac_use_separate_labels():
    message = {"seq": 1, "boot_id": 7}
    signed = sign_message(KEY_A, "cam-a", "results", message)
    assert signed["mac"] != frame_tag(KEY_A, "cam-a", b"results\x00" + b'{"boot_id":7,"seq":1}').hex()


def test_signed_messages():
    signed = sign_message(KEY_A, "cam-a", "results", {"seq": 1, "topk": [["3", 0.9]], "timings": {"a": 1.5}})
    reordered = dict(reversed(list(signed.items())))
    assert verify_message(KEY_A, "cam-a", "results", reordered)
    assert not verify_message(KEY_B, "cam-a", "results", signed)
    assert not verify_message(KEY_A, "cam-b", "results", signed)
    assert not verify_message(KEY_A, "cam-a", "status", signed)
    assert not verify_message(KEY_A, "cam-a", "results", {**signed, "seq": 2})
    assert not verify_message(KEY_A, "cam-a", "results", {k: v for k, v in signed.items() if k != "mac"})
    assert not verify_message(KEY_A, "cam-a", "results", {**signed, "mac": 5})


# --------------------------------------------------------------------------------- checks and the window


@pytest.fixture
def checks(tmp_path, results_db):
    """An authenticator over a real key store (cam-a, cam-b) and a real result store (SQLite, PostgreSQL)."""
    keys = KeyStore(tmp_path / "keys", create=True, reload_s=0)
    for device, key in (("cam-a", KEY_A), ("cam-b", KEY_B)):
        write_key_file(keys.path(device), device, key)
    store = ResultStore(results_db)
    yield keys, store, FrameAuthenticator(keys, store)
    store.close()


def _decoder() -> WireDecoder:
    return WireDecoder([WireSpec(BUNDLE_ID, (2, 2, 2), WIRE, wire_quant=(0.1, 0))])


def _check(auth: FrameAuthenticator, device: str, frame: bytes) -> bool:
    """What the receiver does with a frame from ``device``'s topic."""
    return auth.admit(device, _decoder().decode(frame, verify_tag=auth.tag_check(device)))


def _store(store: ResultStore, auth: FrameAuthenticator, device: str, boot_id: int, seq: int) -> None:
    store.insert([Result(device, boot_id, seq, BUNDLE_ID, 0, "0", 1.0, [("0", 1.0)], 1, 2, 3, 1)])
    auth.stored(device, boot_id, seq)


def test_each_failure_has_its_own_reason(checks):
    keys, store, auth = checks
    assert _check(auth, "cam-a", _frame(seq=0)) is True
    _store(store, auth, "cam-a", 7, 0)
    with pytest.raises(MissingTag):  # cam-a has a key: an untagged frame is refused even without --require-auth
        _check(auth, "cam-a", _frame(seq=1, key=None))
    with pytest.raises(UnknownKey):
        _check(auth, "cam-x", _frame(seq=1, device="cam-x"))
    with pytest.raises(BadTag):  # a known boot, a wrong tag
        _check(auth, "cam-a", wrong_tag(_frame(seq=1)))
    with pytest.raises(BadTag):  # a flipped payload bit with the CRC fixed up
        _check(auth, "cam-a", recrc(flip_bit(_frame(seq=1), 17), BUNDLE_ID))
    with pytest.raises(MissingTag):  # the tag stripped off a genuine frame
        _check(auth, "cam-a", strip_tag(_frame(seq=1), BUNDLE_ID))
    with pytest.raises(WrongDevice):  # cam-a's genuine frame on cam-b's topic
        _check(auth, "cam-b", _frame(seq=1))
    with pytest.raises(ForgedBoot):  # a boot nobody opened, with a tag made without cam-a's key
        _check(auth, "cam-a", _frame(seq=0, boot_id=99, key=KEY_B))
    with pytest.raises(Replayed):
        _check(auth, "cam-a", _frame(seq=0))
    assert _check(auth, "cam-a", _frame(seq=1)) is True  # the genuine next frame still passes


def test_unauthenticated_frames_pass_only_from_keyless_devices_without_require(checks):
    keys, store, auth = checks
    assert _check(auth, "cam-x", _frame(key=None, device="cam-x")) is False
    with pytest.raises(MissingTag, match="--require-auth"):
        _check(FrameAuthenticator(keys, store, require=True), "cam-x", _frame(key=None, device="cam-x"))


def test_window_rejects_stale_seqs_and_survives_a_restart(checks, results_db):
    keys, store, auth = checks
    top = REPLAY_WINDOW + 10
    for seq in (3, top):
        _check(auth, "cam-a", _frame(seq=seq))
        _store(store, auth, "cam-a", 7, seq)
    with pytest.raises(StaleSeq):
        _check(auth, "cam-a", _frame(seq=10))
    assert _check(auth, "cam-a", _frame(seq=top - REPLAY_WINDOW + 1)) is True  # late, but inside the window
    restarted = FrameAuthenticator(keys, ResultStore(results_db, "rx-2"))  # another receiver on the database
    with pytest.raises(Replayed):
        _check(restarted, "cam-a", _frame(seq=top))
    with pytest.raises(BadTag):  # the boot is remembered: not reported as a forged boot
        _check(restarted, "cam-a", wrong_tag(_frame(seq=top + 1)))
