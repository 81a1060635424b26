"""The device agent streams ``ans`` frames through Mosquitto with constriction absent, bit-identical to the
frames it sends with constriction (issue 8: constriction has no aarch64 wheel, so a Raspberry Pi lacks it).

"Absent" is simulated as on a device where the package is not installed: the agent's interpreter has
``sys.modules["constriction"] = None`` before edgekit is imported, so every ``import constriction`` fails.
Frames differ only in ``boot_id``, ``timestamp_ns`` and the CRC that covers them; everything else, the
payload included, must be equal byte for byte.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np

from edgekit.wire.frame_v2 import split_v2
from edgekit.wire.decoder import WireDecoder

FRAMES = 40


def agent_cmd(blocked: list[str], *args: str) -> list[str]:
    """``edgekit <args>`` in a fresh interpreter where importing any of ``blocked`` fails."""
    prelude = f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n"
    return [sys.executable, "-c", prelude + "from edgekit.cli import main\nsys.exit(main())", *args]


def run_agent(blocked: list[str], bundle, url: str, device: str, source, spool, *extra: str):
    """Run ``edgekit device run`` to the end of ``source``; the completed process."""
    args = ["device", "run", "--bundle", str(bundle), "--broker", url, "--device-id", device, "--source",
            str(source), "--spool", str(spool), "--fps", "0", "--linger", "0", "--json", *extra]
    return subprocess.run(agent_cmd(blocked, *args), capture_output=True, text=True, timeout=180)


def frames_of(messages: list, device: str) -> list[bytes]:
    """The feature frames ``device`` published, in seq order."""
    frames = [payload for topic, payload, _ in messages if topic == f"edgekit/v1/{device}/features"]
    return sorted(frames, key=lambda f: split_v2(f).seq)  # convert's bundles allow frame version 2


def without_boot_and_time(frame: bytes):
    """The header with the per-run fields (and the CRC over them) zeroed, and the payload."""
    header = split_v2(frame)
    return dataclasses.replace(header, boot_id=0, time=0, crc=0), frame[header.crc_offset + 4:]


def test_agent_streams_ans_without_constriction_bit_identical(bundle, stream, mosquitto, collector, tmp_path):
    from edgekit.bundle.manifest import Bundle

    sink = collector(mosquitto.url, "edgekit/v1/+/features")
    runs = {}
    for device, blocked in (("with-constriction", []), ("without-constriction", ["constriction"])):
        done = run_agent(blocked, bundle, mosquitto.url, device, stream(FRAMES), tmp_path / f"{device}.sqlite",
                         "--codec", "ans")
        assert done.returncode == 0, done.stderr[-3000:]
        stats = done.stdout.strip().splitlines()[-1]
        assert f'"captured": {FRAMES}' in stats and f'"acknowledged": {FRAMES}' in stats, stats
        runs[device] = frames_of(sink.wait_for(FRAMES * (len(runs) + 1)), device)

    fast, portable = runs["with-constriction"], runs["without-constriction"]
    assert len(fast) == len(portable) == FRAMES
    assert [without_boot_and_time(f) for f in portable] == [without_boot_and_time(f) for f in fast]
    assert {split_v2(f).codec_id for f in portable} == {2}  # ans
    decoder = WireDecoder([Bundle.load(bundle)])
    for a, b in zip(fast, portable, strict=True):
        assert np.array_equal(decoder.decode(a).code, decoder.decode(b).code)


def test_a_codec_the_device_cannot_run_is_a_one_line_error(bundle, stream, mosquitto, tmp_path):
    done = run_agent(["zstandard"], bundle, mosquitto.url, "no-zstd", stream(FRAMES), tmp_path / "spool.sqlite",
                     "--codec", "zstd")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: codec 'zstd' needs the Python package")
    assert "pip install zstandard" in done.stderr
