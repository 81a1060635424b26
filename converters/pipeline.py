"""``convert``: source model → quantized split bundle with a parity report.

    load + split ──► Halves (float device/server, reference)
      calib/eval ──► checked float32 samples
      per target ──► device/<target>/device_int8.{tflite,onnx} (+ Vela / Edge TPU reports)
                 ──► server/server_<precision>.onnx
          parity ──► edgekit.runtime runners on the held-out samples ──► report.{json,md}
            wire ──► edgekit.wire.codecs.fit_codecs (bytes + est. device encode time) ──► wire/ + manifest["wire"]
        baseline ──► image_baseline: the input as JPEG/WebP/PNG beside the frame bytes ──► report
          golden ──► converters.golden: a few inputs, their codes and outputs ──► golden/ + manifest["golden"]
        manifest ──► manifest.json (hashes, bundle id) ──► rename temp dir → output

Everything is written to a temporary directory beside the output and renamed at the very end, so a
failure never leaves a half-written bundle. Models with identical settings are converted once (``cpu`` and
``rpi`` share their files' content).

The steps live in their own modules: :mod:`.inputs` (model, samples, labels), :mod:`.device_exports`
(device half per target), :mod:`.parity_checks` (parity, kernels, layers), :mod:`.bundle_writer` (staging,
wire codecs, report, manifest); :mod:`.state` holds what they share.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import ConversionError, UsageError
from edgekit.preprocess import Preprocessing
from edgekit.reencode.for_convert import hints_for
from edgekit.wire.spec import dequantize

from .levels import level_rows
from .bundle_writer import (build_manifest, build_report, fit_wire, onnx_input, quantize_codes, staged_bundle,
                            write_reports)
from .datasets import MIN_CALIB_SAMPLES
from .device_exports import check_target, compile_device, export_onnx_device, export_tflite_device, target_runtimes
from .golden import write_golden
from .image_baseline import compare_with_frames, input_baseline
from .inputs import load_halves, optional_str, preprocessing_for, read_labels, read_samples
from .onnx_quant import export_server_onnx
from .parity_checks import LAYER_SAMPLES, layer_errors, measure_parity, original_model
from .report import reencode_summary
from .state import ConversionState
from .targets import Runtime, load_target
from .text_source import is_text_model

__all__ = ["convert", "ConvertResult", "DEFAULT_TARGETS"]

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("rpi",)
FORMAT_RUNS = 20  # batch-1 runs per format when choosing the fastest ONNX device format (none with --latency-runs 0)


@dataclass
class ConvertResult:
    bundle_path: Path
    report: dict[str, Any]
    passed: bool


def convert(
    model: str | Path | None = None,
    split: str | None = None,
    calib: str | Path | None = None,
    eval: str | Path | None = None,  # noqa: A002 - the CLI option name
    targets: Sequence[str] = DEFAULT_TARGETS,
    output: str | Path | None = None,
    force: bool = False,
    device_model: str | Path | None = None,
    server_model: str | Path | None = None,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    labels: Sequence[str] | str | Path | None = None,
    runtime: str | None = None,
    server_precision: str = "fp32",
    calib_method: str = "minmax",
    calib_samples: int = 500,
    eval_samples: int = 1000,
    min_agreement: float = 0.99,
    debug_layers: bool = False,
    latency_runs: int = 50,
    threads: int | None = None,
    codec: str | None = None,
    encode_budget_ms: float | None = None,
    seed: int = 0,
    command: str | None = None,
    progress: bool = False,
) -> ConvertResult:
    """Convert a model with a trained re-encoder into a bundle; see ``docs/convert.md``.

    Returns the bundle path, the report (same as report.json) and whether parity passed. A failing parity
    check still writes the bundle (marked failing); bad input raises UsageError/ConversionError and leaves
    nothing behind.
    """
    if output is None:
        raise UsageError("no output directory given", "pass -o/--output DIR")
    if is_text_model(optional_str(model)):  # a sentence encoder folder: its own pipeline (docs/convert.md)
        from .text_pipeline import TEXT_STEPS, convert_text

        if runtime == "tflite":
            raise UsageError("text models convert to ONNX only (no TFLite device half yet)",
                             "drop --runtime tflite, or pass --runtime onnx")
        text_steps = _Progress(progress, TEXT_STEPS)
        result = ConvertResult(*convert_text(model, calib, eval, targets, output, force, calib_samples, eval_samples,
                                             latency_runs=latency_runs, threads=threads, codec=codec,
                                             encode_budget_ms=encode_budget_ms, seed=seed, command=command,
                                             step=text_steps.step))
        text_steps.close()
        return result
    if calib is None:
        raise UsageError("no calibration data given", "pass --calib calib.npz (or .npy, or an image folder)")
    if runtime not in (None, "tflite", "onnx"):
        raise UsageError(f"unknown runtime {runtime!r}", "choose tflite or onnx")
    if not targets:
        raise UsageError("no target given", "pass --target rpi (or another profile)")
    profiles = [load_target(t) for t in dict.fromkeys(targets)]
    output = Path(output)
    rng = np.random.default_rng(seed)
    _seed_frameworks(seed)
    steps = _Progress(progress, 6 + len(profiles))
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as scratch_dir, staged_bundle(output, force) as staging:
        scratch = Path(scratch_dir)
        steps.step("loading and splitting the model")
        reencoder = hints_for(optional_str(model))  # a model made by edgekit reencode: its record, wire scale, prior
        halves = load_halves(optional_str(model), split, optional_str(device_model), optional_str(server_model),
                             scratch)
        if halves.source_format == "pytorch":  # TFLite targets: the device half through litert-torch
            from .torch_tflite import torch_device_half

            halves.device_torch = torch_device_half(model or device_model, split if model else None)
        plans = [(p, target_runtimes(p, halves, runtime)) for p in profiles]
        for profile, runtimes in plans:
            check_target(profile, halves, runtimes)
        if any(d is None for d in halves.code_shape):
            raise ConversionError(f"code {halves.code_name!r} has a dynamic shape {halves.code_shape}",
                                  "the code must have a fixed shape: give the model a fixed input size")
        pre = preprocessing_for(preprocessing, halves, str(calib), optional_str(eval))
        steps.step("reading calibration and evaluation data")
        calib_set = read_samples(str(calib), halves, "calibration", pre, calib_samples, MIN_CALIB_SAMPLES, rng)
        if halves.verify is not None:
            halves.verify(calib_set.x[:32])
        eval_set = read_samples(str(eval), halves, "eval", pre, eval_samples, 1, rng) if eval else calib_set
        label_names = read_labels(labels, eval_set, halves)
        work = ConversionState(staging, scratch, halves, calib_set.x, eval_set, halves.static_input_shape(calib_set.x),
                               profiles={p.name: p for p in profiles}, wire_quant=reencoder and reencoder.wire_quant,
                               reencoder=reencoder)

        for profile, runtimes in plans:
            steps.step(f"calibrating and quantizing the device half for {profile.name} "
                       f"({', '.join(r.value for r in runtimes)}, {len(calib_set.x)} calibration samples)")
            if Runtime.TFLITE in runtimes:
                dev = export_tflite_device(work, profile)
                work.devices.append(dev)
                compile_device(work, profile, dev.path)
            if Runtime.ONNX in runtimes:
                work.devices.append(export_onnx_device(work, profile, calib_method, min(latency_runs, FORMAT_RUNS),
                                                       min_agreement))
            work.compiled.setdefault(profile.name, None)

        steps.step("exporting the server half")
        server_rel = f"server/server_{server_precision}.onnx"
        calib_codes = dequantize(quantize_codes(halves.device_float(calib_set.x), work.wire_quant), *work.wire_quant)
        export_server_onnx(halves.server_onnx, staging / server_rel, server_precision, onnx_input(halves.server_onnx),
                           calib_codes, calib_method)

        evaluated = "held-out" if eval else "calibration (no --eval)"  # progress lines name the data they use
        steps.step(f"measuring parity and latency on {len(eval_set.x)} {evaluated} samples")
        rows, extra, wire_inputs = measure_parity(work, staging / server_rel, latency_runs, threads, progress)
        heldout_codes = wire_inputs["heldout_codes"]
        steps.step(f"fitting wire codecs on {len(calib_set.x)} calibration codes, measuring them on "
                   f"{len(heldout_codes)} {evaluated} codes")
        wire_section, wire_report = fit_wire(work, heldout_codes, codec, encode_budget_ms)
        if wire_section.get("levels"):  # a nested re-encoder: bytes and accuracy per rate level
            wire_report["levels"] = level_rows(work, staging / server_rel, heldout_codes, wire_section, threads)

        worst = min(r["top1_agreement"] for r in rows)
        passed = worst >= min_agreement
        if debug_layers or not passed:
            steps.step(f"per-layer quantization errors on {min(len(eval_set.x), LAYER_SAMPLES)} {evaluated} samples")
        errors = layer_errors(work, calib_method) if (debug_layers or not passed) else None
        report = build_report(work, rows, extra, wire_report, errors, worst, passed, min_agreement,
                              eval is not None, str(eval or calib), server_rel, server_precision,
                              Path(model or device_model))
        report["eval"]["original"] = original_model(work, Path(model or device_model), extra["y_float"])
        report["reencode"] = reencode_summary(reencoder.metadata) if reencoder else None
        report["baseline"] = input_baseline(eval_set.x, pre)
        too_big = compare_with_frames(report["baseline"], wire_report)
        if too_big:
            report["warnings"].append(too_big)
        manifest = build_manifest(
            work, pre, label_names, server_rel, server_precision, profiles, wire_section, report,
            dict(model=model, device_model=device_model, server_model=server_model), command, seed,
            dict(targets=list(targets), runtime=runtime, server_precision=server_precision, calib_method=calib_method,
                 calib_samples=len(calib_set.x), eval_samples=len(eval_set.x), min_agreement=min_agreement,
                 debug_layers=debug_layers, codec=codec, encode_budget_ms=encode_budget_ms))
        manifest["golden"] = write_golden(staging, calib_set.x, work.devices, server_rel, server_precision, threads)
        steps.step("writing the bundle")
        write_reports(staging, report, manifest)
        steps.close()
    return ConvertResult(output, report, passed)


def _seed_frameworks(seed: int) -> None:
    np.random.seed(seed)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)


class _Progress:
    """A line per conversion step on stderr with the elapsed time (long steps can take minutes, also in CI
    logs where stderr is not a terminal); in a terminal a tqdm bar over the steps as well."""

    def __init__(self, enabled: bool, steps: int):
        import time

        from tqdm import tqdm

        self._enabled, self._clock, self._start = enabled, time.monotonic, time.monotonic()
        self._bar = tqdm(total=steps, desc="convert", unit="step", leave=False,
                         disable=not (enabled and sys.stderr.isatty()))

    def step(self, what: str) -> None:
        log.info("%s", what)
        if self._enabled:
            self._bar.write(f"convert: {what} ({self._clock() - self._start:.1f} s elapsed)", file=sys.stderr)
        self._bar.set_postfix_str(what[:40])
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
        if self._enabled:
            print(f"convert: done in {self._clock() - self._start:.1f} s", file=sys.stderr)
