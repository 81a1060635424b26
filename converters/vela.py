"""Compile an int8 TFLite device half for Arm Ethos-U with Vela and summarise what it reports.

Vela runs as a subprocess (``ethos-u-vela`` from PyPI, installed with the ``convert`` extra). From its
stdout (``--show-cpu-operations``) and summary CSV we take: operators mapped to the NPU vs left on the CPU
(named), total SRAM used and the estimated inference time for the profile's system configuration.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekit.errors import ConversionError, UsageError

__all__ = ["compile_vela", "find_vela"]


def find_vela() -> str:
    """The ``vela`` executable next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("vela")
    found = str(beside) if beside.is_file() else shutil.which("vela")
    if not found:
        raise UsageError("Arm Vela is not installed (needed for Ethos-U targets)", "pip install ethos-u-vela")
    return found


def _parse_stdout(text: str) -> dict[str, Any]:
    def count(kind: str) -> int:
        match = re.search(rf"^{kind} operators = (\d+)", text, re.M)
        return int(match.group(1)) if match else 0

    cpu_ops = [{"op": m.group(1), "tensor": m.group(2).strip()}
               for m in re.finditer(r"^\s*CPU: (\S+) = (.+?)(?: \(outputs .*\))?$", text, re.M)]
    return {"npu_ops": count("NPU"), "cpu_ops": count("CPU"), "cpu_operations": cpu_ops}


def _parse_summary(csv_path: Path) -> dict[str, Any]:
    with open(csv_path, newline="") as handle:
        row = next(csv.DictReader(handle))
    return {
        "sram_kib": float(row["sram_memory_used"]),
        "off_chip_flash_kib": float(row["off_chip_flash_memory_used"]),
        "inference_time_ms": float(row["inference_time"]) * 1e3,
        "inferences_per_second": float(row["inferences_per_second"]),
        "macs": int(float(row["nn_macs"])),
        "cycles": int(float(row["cycles_total"])),
    }


def compile_vela(tflite: Path, out_dir: Path, options: dict[str, Any], shown_dir: str) -> tuple[Path, dict[str, Any]]:
    """Run Vela on ``tflite``; return the compiled ``*_vela.tflite`` and the compiler report.

    ``shown_dir`` is the bundle-relative folder used in the reproducible command printed in the report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [find_vela(), str(tflite), "--output-dir", str(out_dir), "--show-cpu-operations",
               "--accelerator-config", options["accelerator_config"]]
    if options.get("system_config"):
        command += ["--system-config", options["system_config"]]
    if options.get("memory_mode"):
        command += ["--memory-mode", options["memory_mode"]]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    compiled = out_dir / f"{tflite.stem}_vela.tflite"
    summaries = sorted(out_dir.glob(f"{tflite.stem}_summary_*.csv"))
    if proc.returncode != 0 or not compiled.is_file() or not summaries:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ConversionError(f"Vela failed for {options['accelerator_config']}: {detail[-1] if detail else 'no output'}",
                              "run the printed vela command by hand to see the full log")
    report = {"compiler": "vela", "accelerator_config": options["accelerator_config"],
              "system_config": options.get("system_config"), "memory_mode": options.get("memory_mode"),
              **_parse_stdout(proc.stdout), **_parse_summary(summaries[0]),
              "command": " ".join(["vela", f"{shown_dir}/{tflite.name}", "--output-dir", shown_dir, *command[4:]])}
    for summary in summaries:  # its figures are in the report; keep the bundle to models
        summary.unlink()
    report["all_on_npu"] = report["cpu_ops"] == 0
    return compiled, report
