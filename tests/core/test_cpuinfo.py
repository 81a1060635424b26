"""The CPU line of the self-test on a Raspberry Pi names the board: /proc/cpuinfo's ``Model`` line.

A Pi's processor entries name no model (only ``CPU part``), and ``Hardware`` says ``BCM2835`` on every Pi, so
the board's ``Model`` line is what tells a Pi 4 from a Pi 5. The texts below are /proc/cpuinfo as the kernels
print them (a Raspberry Pi 4 on 64-bit Raspberry Pi OS bookworm; an x86 server, whose lower-case ``model`` line
is a number).
"""

from __future__ import annotations

import platform

from edgekit.cpu import cpu_features, describe_cpu, parse_cpuinfo
from edgekit.selftest import SelfTest

_PI4_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
PI4 = "\n".join(_PI4_CORE.format(n=n) for n in range(4)) + """
Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000a1b2c3d4
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_the_board_model_line_names_a_raspberry_pi():
    model, flags = parse_cpuinfo(PI4)
    assert model == "Raspberry Pi 4 Model B Rev 1.4"
    assert {"asimd", "crc32"} <= flags


def test_an_x86_model_number_is_not_taken_for_a_board():
    assert parse_cpuinfo(X86) == ("AMD EPYC 7B13", {"fpu", "sse2", "avx", "avx2", "fma"})


def test_the_selftest_line_names_the_pi(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    (tmp_path / "cpuinfo").write_text(PI4)
    features = cpu_features(tmp_path / "cpuinfo")
    assert describe_cpu(features) == "aarch64, Raspberry Pi 4 Model B Rev 1.4 (neon)"
    result = SelfTest("device", "device/rpi/device_int8.tflite", "litert", "2.3.0", True, "8 golden samples",
                      cpu=features)
    assert "on litert 2.3.0 (aarch64, Raspberry Pi 4 Model B Rev 1.4 (neon)): 8 golden samples" in result.line()
