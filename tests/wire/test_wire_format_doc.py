"""docs/wire-format.md is enough to write a decoder: this one is written from the document alone.

It uses no edgekit decoding code and no constriction: header fields by their documented offsets, CRC-32C
from its documented parameters, the ans stream by the documented rANS steps, zstd by prepending the magic
number for a stock decoder. It must agree with edgekit's decoder on real frames, and the worked hex examples
in the document must be what the code produces today.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard
from wire_helpers import (
    EXAMPLE_BUNDLE_ID,
    EXAMPLE_CODE,
    EXAMPLE_NOW_NS,
    EXAMPLE_PRIOR,
    EXAMPLE_QUANT,
    EXAMPLE_WIRE,
    ZSTD_VECTOR_SHAPE,
    as_v2,
    example_frames,
    example_frames_v2,
    hexdump,
    vectors_v2,
)

from edgekit.auth.authenticator import BadTag
from edgekit.auth.tags import tag_ok, verify_frame
from edgekit.wire.codecs.fit import limits_for
from edgekit.wire.decoder import WireDecoder
from edgekit.wire.encoder import WireEncoder
from edgekit.wire.frame_v2 import split_v2
from edgekit.wire.spec import WireSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def crc32c_doc(data: bytes) -> int:
    """CRC-32C as the document specifies it: reflected poly 0x82F63B78, init and xorout 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def parse(frame: bytes) -> dict:
    """Header fields at the documented offsets, with the CRC checked."""
    u = lambda fmt, off: struct.unpack_from(fmt, frame, off)[0]  # noqa: E731
    ndim = frame[7]
    head = {"magic": frame[0:2], "version": frame[2], "flags": frame[3], "codec_id": frame[4],
            "codec_param": frame[5], "dtype": frame[6], "ndim": ndim, "bundle": frame[8:16].hex(),
            "seq": u("<Q", 16), "timestamp_ns": u("<Q", 24), "boot_id": u("<I", 32), "scale": u("<f", 36),
            "zero_point": u("<i", 40), "shape": struct.unpack_from("<4H", frame, 44)[:ndim],
            "raw_len": u("<I", 52), "payload_len": u("<I", 56), "crc": u("<I", 60)}
    assert head["magic"] == b"EK" and head["version"] == 1 and head["flags"] == 0 and head["boot_id"] != 0
    assert len(frame) == 64 + head["payload_len"]
    assert crc32c_doc(frame[:60] + frame[64:]) == head["crc"]
    return head


def ans_decode_doc(payload: bytes, prior: dict, shape: tuple[int, ...], trace: list | None = None) -> np.ndarray:
    """The document's rANS decoding steps, in plain integers."""
    freqs = prior["freqs"]
    cdfs = [[sum(row[:i]) for i in range(len(row) + 1)] for row in freqs]
    escape = prior["hi"] - prior["lo"] + 1
    padded = payload + b"\0" * (-len(payload) % 4)
    words = [int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4)]
    state = 0
    if words:
        state = words.pop()
        while words and state < 1 << 32:
            state = (state << 32) | words.pop()

    def pop(freq_row: list[int], cdf: list[int]) -> int:
        nonlocal state
        quantile = state & 0xFFFFFF
        symbol = max(i for i in range(len(freq_row)) if cdf[i] <= quantile)
        if trace is not None:
            trace.append((state, quantile, symbol))
        state = (state >> 24) * freq_row[symbol] + quantile - cdf[symbol]
        if state < 1 << 32 and words:
            state = (state << 32) | words.pop()
        return symbol

    channels = shape[-1] if prior["mode"] == "per_channel" else 1
    per = int(np.prod(shape)) // channels
    symbols = [[pop(freqs[c], cdfs[c]) for _ in range(per)] for c in range(channels)]
    flat = [s for row in symbols for s in row]
    uniform, ucdf = [65536] * 256, [65536 * i for i in range(257)]
    values = [pop(uniform, ucdf) - 128 if s == escape else s + prior["lo"] for s in flat]
    assert state == 0 and not words, "the coder must end exactly empty"
    return np.array(values, dtype=np.int8).reshape(channels, per).T.reshape(shape)


def parse_v2(frame: bytes, bundle_id: str, now_ns: int) -> dict:
    """A version-2 header by the "Version 2" table, with the CRC (seeded by the full bundle id) checked."""
    assert frame[0] == 0xE2 and frame[1] & 0xF0 == 0
    flags, pos = frame[1], 4 + (7 if frame[1] & 0x08 else 0)
    head = {"flags": flags, "codec_id": frame[2] & 15, "codec_param": frame[2] >> 4, "ref": frame[3:pos].hex(),
            "boot_id": int.from_bytes(frame[pos:pos + 4], "little")}
    pos, seq, shift = pos + 4, 0, 0
    while True:
        byte = frame[pos]
        seq, shift, pos = seq | (byte & 0x7F) << shift, shift + 7, pos + 1
        if byte < 0x80:
            break
    head["seq"] = seq
    if flags & 0x02:
        head["timestamp_ns"], pos = int.from_bytes(frame[pos:pos + 8], "little"), pos + 8
    else:
        ms, now = int.from_bytes(frame[pos:pos + 4], "little"), now_ns // 10**6
        head["timestamp_ns"], pos = (now + (ms - now + 2**31) % 2**32 - 2**31) * 10**6, pos + 4
    if flags & 0x04:
        head["scale"], head["zero_point"] = struct.unpack_from("<fi", frame, pos)
        pos += 8
    end = len(frame) - (16 if flags & 0x01 else 0)
    head["payload"] = frame[pos + 4:end]
    crc = crc32c_doc(bytes.fromhex(bundle_id) + frame[:pos] + head["payload"])
    assert crc == int.from_bytes(frame[pos:pos + 4], "little") and head["boot_id"] != 0
    assert bundle_id.startswith(head["ref"])
    return head


def decode_doc(frame: bytes, bundle_dir: Path, wire: dict, shape: tuple[int, ...] | None = None,
               bundle_id: str = "", now_ns: int = 0) -> np.ndarray:
    """A whole frame of either version, by the document (version 2 takes the shape from the bundle)."""
    if frame[0] == 0xE2:
        head = parse_v2(frame, bundle_id, now_ns)
        head["raw_len"] = int(np.prod(shape))
        payload = head["payload"]
    else:
        head = parse(frame)
        payload, shape = frame[64:], head["shape"]
    if head["codec_id"] == 0:
        return np.frombuffer(payload, np.int8).reshape(shape)
    if head["codec_id"] == 1:
        rel = wire["codecs"]["zstd"]["dictionary"]
        assert head["codec_param"] == (1 if rel else 0), "codec_param must be the bundle's"
        zdict = zstandard.ZstdCompressionDict((bundle_dir / rel).read_bytes()) if rel else None
        window = (1 << (10 + (payload[1] >> 3))) * (8 + (payload[1] & 7)) // 8
        assert window >= head["raw_len"] or not rel, "a dictionary frame's window covers raw_len"
        # a decoder holding only the declared window, with the dictionary addressable besides it
        raw = zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=max(window, 1 << 10)).decompress(
            b"\x28\xb5\x2f\xfd" + payload, max_output_size=head["raw_len"])
        return np.frombuffer(raw, np.int8).reshape(shape)
    prior = json.loads((bundle_dir / wire["codecs"]["ans"]["prior"]).read_text())
    assert head["codec_param"] == (prior["mode"] == "per_channel")
    return ans_decode_doc(payload, prior, shape)


@pytest.mark.parametrize("codec", ["raw", "zstd", "ans"])
def test_a_decoder_written_from_the_document_agrees(spec, spec16, codes, codes16, codec):
    for sp, data in ((spec, codes[6000:6040]), (spec16, codes16[6000:6040])):
        enc = WireEncoder(sp.bundle_id, sp.code_shape, sp.wire, sp.base_dir, codec)
        for i, code in enumerate(data):
            frame = enc.encode(code, 0.25, -7, seq=i, boot_id=3, timestamp_ns=99)
            assert np.array_equal(decode_doc(frame, sp.base_dir, sp.wire), code)
            head = parse(frame)
            assert (head["seq"], head["boot_id"], head["zero_point"], head["scale"]) == (i, 3, -7, 0.25)
            assert head["bundle"] == sp.bundle_id[:16]


def test_the_checks_table_lists_every_error_in_order():
    from edgekit.auth.authenticator import AUTH_ERROR_TYPES
    from edgekit.wire.errors import ERROR_TYPES

    text = DOC.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "` | `" in line and line.endswith("` |")]
    listed = [line.split("|")[-2].strip(" `") for line in rows]
    assert list(dict.fromkeys(listed)) == [cls.__name__ for cls in ERROR_TYPES + AUTH_ERROR_TYPES]


def test_the_document_names_the_manifest_keys_a_decoder_reads():
    """The keys WireSpec.from_bundle reads (tests/wire/test_wire_spec_rules.py) are the ones the page lists."""
    section = DOC.read_text().split("## What a decoder reads from the bundle")[1].split("\n## ")[0]
    for key in ("bundle_id", "code.shape", "code.dtype", "code.wire_quant.scale", "code.wire_quant.zero_point",
                "wire.codecs", "wire.limits.max_code_elements", "wire.limits.max_payload_bytes"):
        assert f"`{key}`" in section, key


def test_worked_examples_in_the_document_are_current(tmp_path):
    text = DOC.read_text()
    frames = example_frames(tmp_path)
    for codec, frame in frames.items():
        assert hexdump(frame) in text, f"the {codec} example in {DOC.name} is stale:\n{hexdump(frame)}"
        assert np.array_equal(decode_doc(frame, tmp_path, EXAMPLE_WIRE), EXAMPLE_CODE)
        decoder = WireDecoder([WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), EXAMPLE_WIRE, tmp_path)])
        assert np.array_equal(decoder.decode(frame).code, EXAMPLE_CODE)
    trace: list = []
    ans_decode_doc(frames["ans"][64:], EXAMPLE_PRIOR, (2, 2, 2), trace)
    for state, quantile, symbol in trace:
        assert f"| 0x{state:016x} | 0x{quantile:06x} | {symbol} |" in text



@pytest.mark.parametrize("codec", ["raw", "zstd", "ans"])
def test_a_decoder_written_from_the_document_agrees_on_version_2(spec, spec16, codes, codes16, codec):
    for sp, data in ((as_v2(spec, (0.25, -7)), codes[6000:6040]), (as_v2(spec16, (0.25, -7)), codes16[6000:6040])):
        enc = WireEncoder(sp.bundle_id, sp.code_shape, sp.wire, sp.base_dir, codec, sp.wire_quant)
        for i, code in enumerate(data):
            seq = i * 99_991  # varints of 1 to 3 bytes
            frame = enc.encode(code, 0.25, -7, seq=seq, boot_id=3, timestamp_ns=EXAMPLE_NOW_NS + i)
            assert np.array_equal(decode_doc(frame, sp.base_dir, sp.wire, sp.code_shape, sp.bundle_id,
                                             EXAMPLE_NOW_NS), code)
            head = parse_v2(frame, sp.bundle_id, EXAMPLE_NOW_NS)
            assert (head["seq"], head["boot_id"], head["timestamp_ns"]) == (seq, 3, EXAMPLE_NOW_NS)


def test_version_2_worked_examples_in_the_document_are_current(tmp_path):
    text = DOC.read_text()
    spec = WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), {**EXAMPLE_WIRE, "frame_versions": [1, 2]}, tmp_path,
                    EXAMPLE_QUANT)
    for codec, frame in example_frames_v2(tmp_path).items():
        assert hexdump(frame) in text, f"the version-2 {codec} example in {DOC.name} is stale:\n{hexdump(frame)}"
        assert np.array_equal(decode_doc(frame, tmp_path, EXAMPLE_WIRE, (2, 2, 2), EXAMPLE_BUNDLE_ID,
                                         EXAMPLE_NOW_NS), EXAMPLE_CODE)
        head = parse_v2(frame, EXAMPLE_BUNDLE_ID, EXAMPLE_NOW_NS)
        assert head["timestamp_ns"] == 1_718_000_000_123_000_000
        decoded = WireDecoder([spec]).decode(frame, now_ns=EXAMPLE_NOW_NS)
        assert np.array_equal(decoded.code, EXAMPLE_CODE) and decoded.timestamp_ns == head["timestamp_ns"]


@pytest.mark.parametrize("flags", [dict(full_timestamp=True), dict(quant=EXAMPLE_QUANT), dict(long_ref=True),
                                   dict(tag_fn=lambda body: b"\xaa" * 16),
                                   dict(full_timestamp=True, quant=EXAMPLE_QUANT, long_ref=True)])
def test_the_documents_version_2_extensions_parse(tmp_path, flags):
    """Each flag's extension where the "Version 2" table puts it, as edgekit writes and reads it."""
    from edgekit.wire.frame_v2 import pack_frame_v2

    example_frames_v2(tmp_path)
    frame = pack_frame_v2(codec_id=0, codec_param=0, bundle_id=bytes.fromhex(EXAMPLE_BUNDLE_ID), boot_id=7,
                          seq=300, timestamp_ns=EXAMPLE_NOW_NS + 123_456, payload=EXAMPLE_CODE.tobytes(), **flags)
    head = parse_v2(frame, EXAMPLE_BUNDLE_ID, EXAMPLE_NOW_NS)
    assert (head["seq"], head["boot_id"], head["payload"]) == (300, 7, EXAMPLE_CODE.tobytes())
    exact = "full_timestamp" in flags
    assert head["timestamp_ns"] == EXAMPLE_NOW_NS + (123_456 if exact else 0)
    assert ("scale" in head) == ("quant" in flags)
    spec = WireSpec(EXAMPLE_BUNDLE_ID, (2, 2, 2), {**EXAMPLE_WIRE, "frame_versions": [1, 2]}, tmp_path,
                    EXAMPLE_QUANT)
    decoder = WireDecoder([spec], verify_tag=lambda bundle_id, signed, tag: None)
    decoded = decoder.decode(frame, now_ns=EXAMPLE_NOW_NS)
    assert np.array_equal(decoded.code, EXAMPLE_CODE) and decoded.timestamp_ns == head["timestamp_ns"]


# ------------------------------------------------------------------------------ test vectors, version 2

VECTORS = ("TS_NS", "QUANT", "LONG_REF", "AUTH", "ans per channel", "zstd dictionary")


def doc_section(title: str) -> str:
    """The text of one ``###`` section of the page."""
    return DOC.read_text().split(f"\n### {title}\n")[1].split("\n### ")[0]


def hex_blocks(text: str) -> list[bytes]:
    """The xxd-style blocks of ``text`` (``0000: e2 00 ...``), as bytes."""
    blocks = re.findall(r"```\n((?:[0-9a-f]{4}: .*\n)+)```", text)
    return [bytes.fromhex(" ".join(line.split(": ", 1)[1] for line in block.splitlines())) for block in blocks]


def vector_texts(section: str) -> dict[str, str]:
    """Each vector's paragraphs, from its bold name to the next vector's."""
    parts = re.split(r"\n\*\*([^*]+)\*\* \(", section)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def vector_rows(section: str) -> dict[str, dict]:
    """The table of what each vector decodes to."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`").replace("−", "-") for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in VECTORS:
            codec, param = cells[3].split(", ")
            scale, zero_point = cells[7].split(", ")
            rows[cells[0]] = dict(bytes=int(cells[1]), flags=int(cells[2], 16), codec=codec, param=int(param),
                                  seq=int(cells[4]), boot_id=int(cells[5], 16), timestamp_ns=int(cells[6]),
                                  scale=float(np.float32(scale)), zero_point=int(zero_point),
                                  code=json.loads(cells[8]))
    return rows


def dictionary_parts(data: bytes) -> list[tuple[int, int]]:
    """The first and last byte of each part of a formatted zstd dictionary, found by the page's list:
    magic, id, the literals' Huffman tree description, three FSE table descriptions, repeat offsets, content."""
    header = data[8]
    huffman_end = 9 + (header if header < 128 else (header - 127 + 1) // 2)
    ends = [4, 8, huffman_end]
    for _ in range(3):
        ends.append(fse_description_end(data, ends[-1]))
    ends += [ends[-1] + 12, len(data)]
    return [(start, end - 1) for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def fse_description_end(data: bytes, pos: int) -> int:
    """Where an FSE table description (RFC 8878, "FSE Table Description") starting at ``pos`` ends: 4 bits of
    accuracy log, then probabilities until they add up to ``1 << accuracy_log`` (a zero is followed by 2-bit
    repeat flags), rounded up to a whole byte."""
    bits, offset = int.from_bytes(data[pos:], "little"), 0

    def take(n: int) -> int:
        nonlocal offset
        offset += n
        return (bits >> (offset - n)) & ((1 << n) - 1)

    accuracy = take(4) + 5
    remaining, threshold, width, zero = (1 << accuracy) + 1, 1 << accuracy, accuracy + 1, False
    while remaining > 1:
        while zero and take(2) == 3:  # the repeat flags after a zero probability; only their length matters
            pass
        small = 2 * threshold - 1 - remaining
        if (bits >> offset) & (threshold - 1) < small:
            value = take(width - 1)
        else:
            value = take(width)
            value -= small if value >= threshold else 0
        remaining -= abs(value - 1)
        zero = value == 1
        while remaining < threshold:
            width, threshold = width - 1, threshold >> 1
    return pos + (offset + 7) // 8


def vector_spec(name: str, text: str, root: Path) -> WireSpec:
    """The bundle a vector names on the page: the worked example's, with the prior or the dictionary the
    vector shows written into ``root``."""
    wire = {**EXAMPLE_WIRE, "frame_versions": [1, 2], "codecs": {"raw": {}}}
    bundle_id, shape = doc_bundle_id(), (2, 2, 2)
    (root / "wire").mkdir(parents=True, exist_ok=True)
    if name == "ans per channel":
        (root / "wire" / "prior.json").write_text(re.search(r"```json\n(.*?)```", text, re.S)[1])
        wire["codecs"] = {"ans": {"prior": "wire/prior.json"}}
    if name == "zstd dictionary":
        bundle_id = re.search(r"id\s+`([0-9a-f]{64})`", text)[1]
        shape = tuple(json.loads(re.search(r"`code.shape` `(\[.*?\])`", text)[1]))
        wire["codecs"] = json.loads(re.search(r"`wire.codecs` `(\{.*?\})`", text)[1])
        (root / wire["codecs"]["zstd"]["dictionary"]).write_bytes(hex_blocks(text)[1])
        wire["limits"] = limits_for(shape)
    return WireSpec(bundle_id, shape, wire, root, EXAMPLE_QUANT)


def doc_bundle_id() -> str:
    """The whole bundle id the version-2 worked example spells out."""
    return re.search(r"`([0-9a-f]{64})`", doc_section("Worked example, version 2"))[1]


def test_the_version_2_worked_example_spells_out_the_bundle_id_its_crc_starts_with():
    assert doc_bundle_id() == EXAMPLE_BUNDLE_ID


@pytest.mark.parametrize("name", VECTORS)
def test_each_version_2_test_vector_decodes_to_its_row(tmp_path, name):
    section = doc_section("Test vectors, version 2")
    row, text = vector_rows(section)[name], vector_texts(section)[name]
    frame = hex_blocks(text)[0]
    fields = re.search(r"\n(`[0-9a-f]{2}` version · .*)\n", text)[1]
    assert bytes.fromhex("".join(re.findall(r"`([0-9a-f ]+)`", fields))) == frame, "the byte breakdown"
    spec = vector_spec(name, text, tmp_path / "bundle")
    verify_tag = None
    if name == "AUTH":
        verify_tag = auth_vector_verifier(text, frame)
    decoded = WireDecoder([spec], verify_tag=verify_tag).decode(frame, now_ns=EXAMPLE_NOW_NS)
    assert len(frame) == row["bytes"] and decoded.flags == row["flags"]
    assert (decoded.codec, split_v2(frame).codec_param) == (row["codec"], row["param"])
    assert (decoded.seq, decoded.boot_id, decoded.timestamp_ns) == (row["seq"], row["boot_id"], row["timestamp_ns"])
    assert (decoded.scale, decoded.zero_point) == (row["scale"], row["zero_point"])
    assert decoded.code.ravel().tolist() == row["code"]
    if name == "zstd dictionary":  # libzstd's trainer and compressor may write other (valid) bytes elsewhere
        assert spec.code_shape == ZSTD_VECTOR_SHAPE, "the zstd vector's code.shape"
    else:
        assert frame == vectors_v2(tmp_path / "made")[name], f"the {name} vector is not what the encoder makes"


def auth_vector_verifier(text: str, frame: bytes):
    """Check the AUTH vector's key, device id and tag with edgekit.auth, and the MAC input the page spells
    out with hashlib alone; the decoder's tag check for it."""
    key = bytes.fromhex(re.search(r"key\s+`([0-9a-f]{64})`", text)[1])
    device = re.search(r"device id `([^`]+)`", text)[1]
    tag = bytes.fromhex(re.search(r"tag is\s+`([0-9a-f]{32})`", text)[1])
    assert frame[-16:] == tag and verify_frame(key, device, frame) and not verify_frame(key, device + "x", frame)
    message = b"edgekit-frame-mac-v1\0" + bytes([len(device)]) + device.encode() + frame[:-16]
    assert hmac.new(key, message, hashlib.sha256).digest()[:16] == tag

    def verify(bundle_id: str, signed: bytes, tag: bytes) -> None:
        if not tag_ok(key, device, signed, tag):
            raise BadTag("the AUTH vector's tag does not verify")
    return verify


def test_the_per_channel_ans_vector_decodes_channel_by_channel(tmp_path):
    text = vector_texts(doc_section("Test vectors, version 2"))["ans per channel"]
    prior = json.loads(re.search(r"```json\n(.*?)```", text, re.S)[1])
    trace: list = []
    payload = parse_v2(hex_blocks(text)[0], doc_bundle_id(), EXAMPLE_NOW_NS)["payload"]
    code = ans_decode_doc(payload, prior, (2, 2, 2), trace)
    assert code.ravel().tolist() == EXAMPLE_CODE.ravel().tolist()
    stated = re.search(r"symbols `([\d ]+)`, `([\d ]+)`, bytes `([\d ]+)`", text).groups()
    assert [symbol for _, _, symbol in trace] == [int(s) for group in stated for s in group.split()]


def test_the_zstd_vector_needs_the_whole_dictionary(tmp_path):
    """Its parts lie where the page says, and a decoder given the content alone cannot decode the frame:
    the frame uses the dictionary's tables."""
    text = vector_texts(doc_section("Test vectors, version 2"))["zstd dictionary"]
    frame, dictionary = hex_blocks(text)
    table = text.split("| bytes | part |")[1]
    stated = [tuple(map(int, m)) for m in re.findall(r"^\| (\d+)\.\.(\d+) \|", table, re.M)]
    parts = dictionary_parts(dictionary)
    assert stated == parts and dictionary[:4] == bytes.fromhex("37a430ec")
    dictionary_id = int(re.search(r"`Dictionary_ID` \(0x([0-9A-F]{8})\)", table)[1], 16)
    assert dictionary_id == int.from_bytes(dictionary[4:8], "little")
    assert int(re.search(r"\(header `([0-9a-f]{2})`", table)[1], 16) == dictionary[8]
    first, _ = parts[6]
    offsets = [int.from_bytes(dictionary[first + 4 * i:first + 4 * i + 4], "little") for i in range(3)]
    assert re.search(r"repeat offsets ([\d, ]+) \|", table)[1] == ", ".join(map(str, offsets))
    spec = vector_spec("zstd dictionary", text, tmp_path)
    code = decode_doc(frame, tmp_path, spec.wire, spec.code_shape, spec.bundle_id, EXAMPLE_NOW_NS)
    assert code.ravel().tolist() == vector_rows(doc_section("Test vectors, version 2"))["zstd dictionary"]["code"]
    payload = parse_v2(frame, spec.bundle_id, EXAMPLE_NOW_NS)["payload"]
    content = zstandard.ZstdCompressionDict(dictionary[parts[7][0]:], dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor(dict_data=content).decompress(b"\x28\xb5\x2f\xfd" + payload, max_output_size=24)
