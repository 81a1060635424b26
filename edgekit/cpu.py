"""The CPU features that decide how int8 kernels compute, recorded beside any figure measured on this machine.

ONNX Runtime's fused int8 kernels do not compute the same way on every CPU: x86 with AVX-VNNI or
AVX512-VNNI accumulates int8 products exactly (VPDPBUSD); x86 with only AVX2 multiplies uint8 × int8 with
VPMADDUBSW, whose int16 pair sums saturate; Arm uses NEON (SDOT/UDOT where present), which is exact. So an
int8 figure means little without the CPU that measured it.

    /proc/cpuinfo (Linux) ──► arch, model (a board's "Model" line first), avx2 / avx512_vnni / avx_vnni / neon
    elsewhere              ──► platform.machine() / platform.processor(), flags unknown (None)

Standard library only: the device agent may record it too.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

__all__ = ["INT8_FLAGS", "cpu_features", "describe_cpu", "parse_cpuinfo", "x86_without_vnni"]

# The flags that decide which int8 kernels a runtime picks (x86: AVX2/VNNI/AMX; Arm: NEON, dot product, i8mm).
INT8_FLAGS = ("neon", "asimd", "asimddp", "i8mm", "sve", "sse4_2", "fma", "avx2", "avx512f", "avx512_vnni",
              "avx_vnni", "amx_int8")

_X86 = ("x86_64", "amd64", "i386", "i686")
_ARM = ("aarch64", "arm64", "armv7l", "armv8l")


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model, flags) from the text of /proc/cpuinfo: the flags of the first processor listed; the model from
    the board's ``Model`` line when there is one (a Raspberry Pi: ``Raspberry Pi 4 Model B Rev 1.4``, while its
    CPU lines name no model and ``Hardware`` says only ``BCM2835``), else the first ``model name`` or ``Hardware``.
    ``Model`` is matched with its capital: x86's lower-case ``model`` line is a number."""
    board, model, flags = None, None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Model" and board is None:
            board = value or None
        elif key.lower() in ("model name", "hardware") and model is None:
            model = value or None
        elif key.lower() in ("flags", "features") and not flags:
            flags = set(value.split())
    return board or model, flags


def _read_cpuinfo(path: Path) -> tuple[str | None, set[str]] | None:
    """:func:`parse_cpuinfo` of the file, or None when it is unreadable."""
    try:
        return parse_cpuinfo(path.read_text(errors="replace"))
    except OSError:
        return None


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Architecture, model name and the int8-relevant flags (None = could not be read); ``flags`` lists the
    :data:`INT8_FLAGS` present (empty when unknown)."""
    arch = platform.machine().lower()
    info = _read_cpuinfo(Path(cpuinfo))
    if info is None or not info[1]:
        arm = arch in _ARM
        return {"arch": arch, "model": platform.processor() or None, "avx2": None, "avx512_vnni": None,
                "avx_vnni": None, "neon": True if arch in ("aarch64", "arm64") else None if arm else False,
                "flags": [], "source": "platform"}
    model, flags = info
    return {"arch": arch, "model": model or platform.processor() or None, "avx2": "avx2" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "neon": bool(flags & {"neon", "asimd"}), "flags": [f for f in INT8_FLAGS if f in flags],
            "source": "/proc/cpuinfo"}


def x86_without_vnni(features: dict[str, Any]) -> bool:
    """The CPUs whose fused ORT int8 kernels (U8S8, S8S8) can saturate."""
    return (features.get("arch") in _X86 and features.get("avx512_vnni") is False
            and features.get("avx_vnni") is False)


def describe_cpu(features: dict[str, Any]) -> str:
    """One line for reports: ``x86_64, Intel(R) Xeon(R) ... (avx2, no VNNI)``."""
    flags = [name for name in ("avx2", "avx512_vnni", "avx_vnni", "neon") if features.get(name)]
    if x86_without_vnni(features):
        flags.append("no VNNI")
    if features.get("source") != "/proc/cpuinfo":
        flags.append("flags unknown")
    model = f", {features['model']}" if features.get("model") else ""
    return f"{features.get('arch')}{model} ({', '.join(flags) or 'no int8 SIMD flags'})"
