"""Static Edge TPU check of an int8 TFLite device half (no ``edgetpu_compiler`` needed here).

The Edge TPU compiler only runs on Linux x86-64 and is often not installed on the workstation, so convert
predicts its outcome from the target profile's op list and rules and prints the command to run:

- every tensor must be int8/uint8 (int32 only for biases), shapes static;
- at most ``max_dims_above_one`` dimensions larger than one per tensor;
- the compiler maps ops in order until the first one it cannot map: that op and all later ones run on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tflite_export import tflite_ops

__all__ = ["check_edgetpu"]

_QUANTIZED = {"int8", "uint8", "int32"}


def _reason(op: dict[str, Any], supported: set[str], max_dims: int) -> str | None:
    if op["op"] not in supported:
        return f"{op['op']} is not supported by the Edge TPU"
    float_types = set(op["dtypes"]) - _QUANTIZED
    if float_types:
        return f"{op['op']} has {'/'.join(sorted(float_types))} tensors (the Edge TPU runs only 8-bit ops)"
    for shape in op["activation_shapes"]:
        if sum(1 for d in shape if d > 1) > max_dims:
            return f"{op['op']} has a tensor of shape {shape} with more than {max_dims} dimensions above 1"
    return None


def check_edgetpu(tflite: Path, options: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Which ops would map to the Edge TPU, which fall back to the CPU and why, and the compile command."""
    supported = set(options.get("supported_ops", []))
    max_dims = int(options.get("max_dims_above_one", 3))
    ops, fallen = [], False
    for op in tflite_ops(tflite):
        reason = _reason(op, supported, max_dims)
        if reason is None and fallen:
            reason = "follows an op that runs on the CPU (the compiler maps only the first segment)"
        fallen = fallen or reason is not None
        ops.append({"index": op["index"], "op": op["op"], "tensor": op["output"], "on_tpu": reason is None,
                    "reason": reason})
    cpu = [op for op in ops if not op["on_tpu"]]
    template = options.get("compiler_command", "edgetpu_compiler --show_operations --out_dir {out_dir} {model}")
    return {
        "compiler": "edgetpu (static check)",
        "tpu_ops": len(ops) - len(cpu),
        "cpu_ops": len(cpu),
        "cpu_operations": [{"op": op["op"], "tensor": op["tensor"], "reason": op["reason"]} for op in cpu],
        "all_on_tpu": not cpu,
        "operations": ops,
        "command": template.format(out_dir=out_dir, model=f"{out_dir}/{tflite.name}"),
    }
