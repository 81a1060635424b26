"""The device half per target: which runtimes a target gets, whether the split model can serve them, and
the int8 model written for each (TFLite, ONNX), with the target's compiler (Vela) or check (Edge TPU).

    target profile ──► runtimes ──► device/<target>/device_int8.tflite (+ Vela / Edge TPU report)
                                └─► device/<target>/device_int8.onnx

The first device model sets the wire quantization (the int8 code's scale and zero point) unless the
re-encoder's record already did; the ONNX device models are quantized with it.
Targets with identical settings are quantized once and copied (``cpu`` and ``rpi`` share their content).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgekit.errors import ConversionError, UsageError

from .halves import Halves
from .onnx_quant import agreement_scorer, quantize_device_onnx, range_quant
from .split_onnx import onnx_runner
from .state import ConversionState, DeviceFile
from .targets import Compiler, Runtime, TargetProfile, TfliteOptions

__all__ = ["target_runtimes", "check_target", "export_tflite_device", "export_onnx_device", "compile_device",
           "float_baselines"]

FORMAT_SAMPLES = 500  # calibration samples an ONNX device format must keep the agreement on to be chosen


def check_target(profile: TargetProfile, halves: Halves, runtimes: list[Runtime]) -> None:
    if profile.static_shapes and any(d is None for d in halves.input_shape):
        raise ConversionError(f"target {profile.name} needs static shapes but input {halves.input_name!r} has shape "
                              f"(batch, {', '.join('?' if d is None else str(d) for d in halves.input_shape)})",
                              "give the model a fixed input size")
    if Runtime.TFLITE in runtimes and halves.device_torch is not None:
        from .torch_tflite import import_litert_torch

        import_litert_torch()  # fail now, before the samples are read, when the PyTorch → LiteRT route is missing
    elif Runtime.TFLITE in runtimes and halves.device_keras is None:
        why = {"onnx": "an ONNX model has no TensorFlow graph for the TFLite converter"}.get(
            halves.source_format, "a single SavedModel is cut on its ONNX export, which has no TensorFlow graph")
        raise ConversionError(f"target {profile.name} needs TFLite, but {why}",
                              "pass the Keras/SavedModel source (or split SavedModel halves), or use an ONNX target "
                              "(cpu, rpi) with --runtime onnx")


def target_runtimes(profile: TargetProfile, halves: Halves, only: str | None) -> list[Runtime]:
    runtimes = list(profile.runtimes)
    if only:
        runtimes = [r for r in runtimes if r.value == only]
        if not runtimes:
            raise UsageError(f"target {profile.name} has no {only} runtime",
                             f"its runtimes are {', '.join(r.value for r in profile.runtimes)}")
    elif halves.device_keras is None and halves.device_torch is None and Runtime.ONNX in runtimes:
        runtimes = [Runtime.ONNX]  # an ONNX-only source produces ONNX outputs
    return runtimes


def _export_tflite(work: ConversionState, options: TfliteOptions | None, path: Path, target: str = "float") -> None:
    """The device half as TFLite: int8 calibrated on the samples, or float (``options`` None); a Keras half
    through the TF converter, a PyTorch one through litert-torch."""
    calib = None if options is None else work.calib
    if work.halves.device_keras is not None:
        from .tflite_export import export_tflite

        export_tflite(work.halves.device_keras, work.input_shape, work.halves.input_name, calib, options, path, target)
    else:
        from .torch_tflite import export_torch_tflite

        export_torch_tflite(work.halves.device_torch, work.input_shape, calib, options, path, target,
                            work.halves.device_float)


def export_tflite_device(work: ConversionState, profile: TargetProfile) -> DeviceFile:
    options = profile.tflite
    key = ("tflite", options)
    if key not in work.cache:
        path = work.scratch / f"tflite_{len(work.cache)}.tflite"
        _export_tflite(work, options, path, profile.name)
        work.cache[key] = path
    rel = f"device/{profile.name}/device_int8.tflite"
    (work.bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work.cache[key], work.bundle / rel)
    from .tflite_export import describe_tflite, float_operations

    floats = [f"{op['op']} ({op['output']})" for op in float_operations(work.bundle / rel)]
    named = ", ".join(floats[:5]) + (f" and {len(floats) - 5} more" if len(floats) > 5 else "")  # one line
    if floats and profile.full_integer:
        raise ConversionError(f"target {profile.name} needs a fully int8 model but {named} stay float32 "
                              "after quantization", "replace those ops with int8-capable ones (e.g. ReLU instead of "
                              "ELU) or choose a CPU target (rpi, cpu)")
    if floats:
        work.warnings.append(f"{profile.name}: {named} run in float32 on the CPU between "
                             "dequantize/quantize")
    info = describe_tflite(work.bundle / rel)
    if info.code_quant is None:
        raise ConversionError(f"target {profile.name}: the TFLite device half does not output a quantized code",
                              "check that the code layer's output is a float tensor the converter can quantize")
    int8_quant = (info.code_quant[0], info.code_quant[1] - 128) if info.code_dtype == "uint8" else info.code_quant
    if work.wire_quant is None:
        work.wire_quant = int8_quant
    return DeviceFile(profile.name, Runtime.TFLITE, rel, info.input_dtype, info.input_quant, info.code_dtype,
                      info.code_quant)


def export_onnx_device(work: ConversionState, profile: TargetProfile, method: str, timing_runs: int = 0,
                       min_agreement: float = 0.0) -> DeviceFile:
    """The int8 ONNX device half; with ``timing_runs``, in the format fastest on this CPU (QDQ, QOperator, or
    the float half) that keeps ``min_agreement`` on calibration samples (see onnx_quant.quantize_device_onnx)."""
    if work.wire_quant is None:
        work.wire_quant = range_quant(work.halves.device_float(work.calib))
    key = ("onnx", profile.onnx, method)
    if key not in work.cache:
        path = work.scratch / f"onnx_{len(work.cache)}.onnx"
        subset = work.calib[:FORMAT_SAMPLES]
        accept = agreement_scorer(subset, work.halves.reference(subset), onnx_runner(work.halves.server_onnx),
                                  work.wire_quant) if timing_runs else None
        quantize_device_onnx(work.halves.device_onnx, path, work.halves.input_name, work.calib, work.wire_quant,
                             profile.onnx, method, timing_runs, accept, min_agreement)
        work.cache[key] = path
    rel = f"device/{profile.name}/device_int8.onnx"
    (work.bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work.cache[key], work.bundle / rel)
    return DeviceFile(profile.name, Runtime.ONNX, rel, "float32", None, "int8", work.wire_quant)


def compile_device(work: ConversionState, profile: TargetProfile, tflite_rel: str) -> None:
    """Run the target's compiler (Vela) or static check (Edge TPU) on its int8 TFLite."""
    tflite = work.bundle / tflite_rel
    if profile.compiler == Compiler.VELA:
        from .vela import compile_vela

        compiled, report = compile_vela(tflite, tflite.parent, profile.compiler_options,
                                        f"device/{profile.name}")
        work.artifacts[profile.name] = [compiled.relative_to(work.bundle).as_posix()]
        work.compiled[profile.name] = report
    elif profile.compiler == Compiler.EDGETPU:
        from .edgetpu import check_edgetpu

        work.compiled[profile.name] = check_edgetpu(tflite, profile.compiler_options, f"device/{profile.name}")


def float_baselines(work: ConversionState) -> dict[str, Path]:
    """Float device halves for the size and latency baseline (kept out of the bundle)."""
    baselines = {"onnx": work.halves.device_onnx}
    if any(d.runtime == Runtime.TFLITE for d in work.devices):
        path = work.scratch / "device_fp32.tflite"
        _export_tflite(work, None, path)
        baselines["tflite"] = path
    return baselines
