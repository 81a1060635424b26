"""``convert``: source model → quantized split bundle with a parity report.

    load + split ──► Halves (float device/server, reference)
      calib/eval ──► checked float32 samples
      per target ──► device/<target>/device_int8.{tflite,onnx} (+ Vela / Edge TPU reports)
                 ──► server/server_<precision>.onnx
          parity ──► edgekit.runtime runners on the held-out samples ──► report.{json,md}
            wire ──► edgekit.codecs.fit_codecs (bytes + est. device encode time) ──► wire/ + manifest["wire"]
        baseline ──► image_baseline: the input as JPEG/WebP/PNG beside the frame bytes ──► report
          golden ──► converters.golden: a few inputs, their codes and outputs ──► golden/ + manifest["golden"]
        manifest ──► manifest.json (hashes, bundle id) ──► rename temp dir → output

Everything is written to a temporary directory beside the output and renamed at the very end, so a
failure never leaves a half-written bundle. Models with identical settings are converted once (``cpu`` and
``rpi`` share their files' content).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import platform
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

import edgekit
from edgekit.bundle import FORMAT_VERSION, sha256_file, write_manifest
from edgekit.cpu import cpu_features
from edgekit.errors import ConversionError, UsageError
from edgekit.preprocess import Preprocessing
from edgekit.reencode.for_convert import ReencoderHints, hints_for
from edgekit.wire import dequantize

from .datasets import MIN_CALIB_SAMPLES, Samples, check_samples, load_samples
from .golden import write_golden
from .halves import Halves, batched
from .image_baseline import compare_with_frames, input_baseline
from .onnx_quant import export_server_onnx, quantize_device_onnx, range_quant
from .parity import EVAL_BATCH, deployed_outputs, kernel_check, kernel_warnings, latency_comparison, parity_metrics
from .report import render_markdown
from .sources import SourceFormat, detect_format, load_keras
from .targets import Compiler, Runtime, TargetProfile, load_target

__all__ = ["convert", "ConvertResult", "DEFAULT_TARGETS"]

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("rpi",)
_LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert",
              "ethos-u-vela", "numpy")


@dataclass
class ConvertResult:
    bundle_path: Path
    report: dict[str, Any]
    passed: bool


@dataclass
class _DeviceFile:
    """One device model written into the bundle."""

    target: str
    runtime: Runtime
    path: str  # relative to the bundle
    input_dtype: str
    input_quant: tuple[float, int] | None
    code_dtype: str
    code_quant: tuple[float, int]


@dataclass
class _Work:
    """State shared by the conversion steps."""

    bundle: Path
    scratch: Path
    halves: Halves
    calib: np.ndarray
    eval: Samples
    input_shape: tuple[int, ...]
    wire_quant: tuple[float, int] | None = None
    devices: list[_DeviceFile] = field(default_factory=list)
    compiled: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    profiles: dict[str, TargetProfile] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cache: dict[tuple, Path] = field(default_factory=dict)
    reencoder: ReencoderHints | None = None  # the record of a model made by edgekit reencode


# --------------------------------------------------------------------------------------------- inputs

def _halves(model: str | None, split: str | None, device_model: str | None, server_model: str | None,
            scratch: Path) -> Halves:
    from .split_keras import join_keras, keras_to_onnx, split_keras
    from .split_onnx import join_onnx, split_onnx

    if model is not None:
        if device_model or server_model:
            raise UsageError("give either a model with --split or --device-model/--server-model, not both",
                             "drop one of them")
        if not split:
            raise UsageError("--split is required with a single model", "name the layer/tensor that outputs the code")
        fmt = detect_format(model)
        if fmt == SourceFormat.KERAS:
            return split_keras(load_keras(model), split, fmt.value, scratch)
        if fmt == SourceFormat.SAVEDMODEL:
            # A SavedModel is opaque to Keras: cut its ONNX export by tensor name (ONNX outputs only).
            wrapped = load_keras(model)
            onnx_path = keras_to_onnx(wrapped, wrapped.inputs[0].name, tuple(wrapped.inputs[0].shape[1:]),
                                      scratch / "savedmodel.onnx")
            return split_onnx(onnx_path, split, fmt.value, scratch)
        return split_onnx(Path(model), split, fmt.value, scratch)
    if not (device_model and server_model):
        raise UsageError("no model given", "pass MODEL with --split NAME, or both --device-model and --server-model")
    fmt, server_fmt = detect_format(device_model), detect_format(server_model)
    if (fmt == SourceFormat.ONNX) != (server_fmt == SourceFormat.ONNX):
        raise UsageError(f"the device model is {fmt.value} but the server model is {server_fmt.value}",
                         "pass both halves in the same family (Keras/SavedModel or ONNX)")
    if fmt == SourceFormat.ONNX:
        return join_onnx(Path(device_model), Path(server_model), fmt.value, scratch)
    return join_keras(load_keras(device_model), load_keras(server_model), fmt.value, scratch)


def _preprocessing(options: Preprocessing | dict | None, halves: Halves, calib: str, eval_path: str | None
                   ) -> Preprocessing | None:
    """Preprocessing for image folders: the given options, completed from the model input shape."""
    if isinstance(options, Preprocessing):
        return options
    uses_images = Path(calib).is_dir() or (eval_path is not None and Path(eval_path).is_dir())
    if not uses_images and not options:
        return None
    options = dict(options or {})
    shape = halves.input_shape
    layout = options.get("layout") or ("nchw" if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3)
                                       else "nhwc")
    channels = shape[0] if layout == "nchw" else shape[-1]
    spatial = shape[1:] if layout == "nchw" else shape[:2]
    size = options.get("size") or (tuple(spatial) if None not in spatial else None)
    if size is None:
        raise UsageError("the model input has a dynamic image size", "pass --image-size HxW for the image folder")
    pre = Preprocessing(size=tuple(size), color=options.get("color") or ("grayscale" if channels == 1 else "rgb"),
                        scale=options.get("scale") if options.get("scale") is not None else 1.0 / 255.0,
                        mean=tuple(options.get("mean") or (0.0,)), std=tuple(options.get("std") or (1.0,)),
                        layout=layout)
    expected = tuple(d for d in shape)
    if any(d is not None and d != p for d, p in zip(expected, pre.input_shape)) or len(expected) != 3:
        raise UsageError(f"preprocessing makes images of shape {pre.input_shape} but the model input is {expected}",
                         "fix --image-size / --color / --layout to match the model")
    return pre


def _samples(path: str, halves: Halves, role: str, pre: Preprocessing | None, limit: int, minimum: int,
             rng: np.random.Generator) -> Samples:
    samples = check_samples(load_samples(path, halves.input_name, role, pre), halves.input_shape, role, path, minimum)
    if len(samples.x) > limit:
        keep = np.sort(rng.choice(len(samples.x), limit, replace=False))
        samples = Samples(samples.x[keep], None if samples.y is None else samples.y[keep], samples.labels)
    return samples


def _labels(labels: Sequence[str] | str | Path | None, eval_samples: Samples, halves: Halves) -> list[str] | None:
    if isinstance(labels, (str, Path)):
        try:
            labels = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
        except OSError as err:
            raise UsageError(f"cannot read labels file {labels}: {err}", "pass a text file with one label per line") from None
    labels = list(labels) if labels is not None else eval_samples.labels
    classes = int(np.prod([d for d in halves.output_shape if d])) if halves.output_shape else 1
    if labels is not None and len(labels) != classes:
        raise UsageError(f"{len(labels)} labels given but the model outputs {classes} values",
                         "give one label per output class")
    return labels


def _check_target(profile: TargetProfile, halves: Halves, runtimes: list[Runtime]) -> None:
    if profile.static_shapes and any(d is None for d in halves.input_shape):
        raise ConversionError(f"target {profile.name} needs static shapes but input {halves.input_name!r} has shape "
                              f"(batch, {', '.join('?' if d is None else str(d) for d in halves.input_shape)})",
                              "give the model a fixed input size")
    if Runtime.TFLITE in runtimes and halves.device_keras is None:
        why = ("an ONNX model has no TensorFlow graph for the TFLite converter" if halves.source_format == "onnx"
               else "a single SavedModel is cut on its ONNX export, which has no TensorFlow graph")
        raise ConversionError(f"target {profile.name} needs TFLite, but {why}",
                              "pass the Keras/SavedModel source (or split SavedModel halves), or use an ONNX target "
                              "(cpu, rpi) with --runtime onnx")


def _runtimes(profile: TargetProfile, halves: Halves, only: str | None) -> list[Runtime]:
    runtimes = list(profile.runtimes)
    if only:
        runtimes = [r for r in runtimes if r.value == only]
        if not runtimes:
            raise UsageError(f"target {profile.name} has no {only} runtime",
                             f"its runtimes are {', '.join(r.value for r in profile.runtimes)}")
    elif halves.device_keras is None and Runtime.ONNX in runtimes:
        runtimes = [Runtime.ONNX]  # an ONNX-only source produces ONNX outputs
    return runtimes


# --------------------------------------------------------------------------------------------- device half

def _tflite(work: _Work, profile: TargetProfile) -> _DeviceFile:
    from .tflite_export import export_tflite

    options = profile.tflite
    key = ("tflite", options)
    if key not in work.cache:
        path = work.scratch / f"tflite_{len(work.cache)}.tflite"
        export_tflite(work.halves.device_keras, work.input_shape, work.halves.input_name, work.calib, options, path,
                      profile.name)
        work.cache[key] = path
    rel = f"device/{profile.name}/device_int8.tflite"
    (work.bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work.cache[key], work.bundle / rel)
    from .tflite_export import describe_tflite, float_operations

    floats = [f"{op['op']} ({op['output']})" for op in float_operations(work.bundle / rel)]
    if floats and profile.full_integer:
        raise ConversionError(f"target {profile.name} needs a fully int8 model but {', '.join(floats)} stay float32 "
                              "after quantization", "replace those ops with int8-capable ones (e.g. ReLU instead of "
                              "ELU) or choose a CPU target (rpi, cpu)")
    if floats:
        work.warnings.append(f"{profile.name}: {', '.join(floats)} run in float32 on the CPU between "
                             "dequantize/quantize")
    info = describe_tflite(work.bundle / rel)
    if info.code_quant is None:
        raise ConversionError(f"target {profile.name}: the TFLite device half does not output a quantized code",
                              "check that the code layer's output is a float tensor the converter can quantize")
    int8_quant = (info.code_quant[0], info.code_quant[1] - 128) if info.code_dtype == "uint8" else info.code_quant
    if work.wire_quant is None:
        work.wire_quant = int8_quant
    return _DeviceFile(profile.name, Runtime.TFLITE, rel, info.input_dtype, info.input_quant, info.code_dtype,
                       info.code_quant)


def _onnx(work: _Work, profile: TargetProfile, method: str) -> _DeviceFile:
    if work.wire_quant is None:
        work.wire_quant = range_quant(work.halves.device_float(work.calib))
    key = ("onnx", profile.onnx, method)
    if key not in work.cache:
        path = work.scratch / f"onnx_{len(work.cache)}.onnx"
        quantize_device_onnx(work.halves.device_onnx, path, work.halves.input_name, work.calib, work.wire_quant,
                             profile.onnx, method)
        work.cache[key] = path
    rel = f"device/{profile.name}/device_int8.onnx"
    (work.bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work.cache[key], work.bundle / rel)
    return _DeviceFile(profile.name, Runtime.ONNX, rel, "float32", None, "int8", work.wire_quant)


def _compile(work: _Work, profile: TargetProfile, tflite_rel: str) -> None:
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


# --------------------------------------------------------------------------------------------- parity

def _float_baselines(work: _Work) -> dict[str, Path]:
    """Float device halves for the size and latency baseline (kept out of the bundle)."""
    baselines = {"onnx": work.halves.device_onnx}
    if work.halves.device_keras is not None and any(d.runtime == Runtime.TFLITE for d in work.devices):
        from .tflite_export import export_tflite

        path = work.scratch / "device_fp32.tflite"
        export_tflite(work.halves.device_keras, work.input_shape, work.halves.input_name, None, None, path)
        baselines["tflite"] = path
    return baselines


def _parity(work: _Work, server_path: Path, latency_runs: int, threads: int | None,
            progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    from tqdm import tqdm

    from edgekit.runtime import open_device_runner, open_server_runner

    x, y = work.eval.x, work.eval.y
    y_float = work.halves.reference(x)
    code_float = work.halves.device_float(x)
    server = open_server_runner(server_path, threads=threads)
    baselines = _float_baselines(work)
    float_runners = {rt: open_device_runner(p, runtime="onnxruntime" if rt == "onnx" else None, threads=threads)
                     for rt, p in baselines.items()}
    measured: dict[str, dict[str, Any]] = {}
    codes: dict[str, np.ndarray] = {}
    rows = []
    for dev in tqdm(work.devices, desc="parity", unit="model", disable=not (progress and sys.stderr.isatty()),
                    leave=False):
        path = work.bundle / dev.path
        digest = sha256_file(path)
        if digest not in measured:
            runner = open_device_runner(path, runtime="onnxruntime" if dev.runtime == Runtime.ONNX else None,
                                        threads=threads, code_quant=dev.code_quant)
            code, code_deq, y_dep = deployed_outputs(runner, server, x)
            codes[digest] = code
            metrics = parity_metrics(y_float, y_dep, code_float, code_deq, y)
            metrics["latency"] = latency_comparison(float_runners[dev.runtime.value], runner, x[0], latency_runs) \
                if latency_runs > 0 else None
            metrics["reference_kernels"] = _reference_kernels(path, dev, server, work.eval, y_float, code_float, code,
                                                              threads) if dev.runtime == Runtime.ONNX else None
            measured[digest] = metrics
        size = path.stat().st_size
        float_size = baselines[dev.runtime.value].stat().st_size if dev.runtime.value in baselines else None
        rows.append({"target": dev.target, "runtime": dev.runtime.value, "path": dev.path, "sha256": digest,
                     "bytes": size, "float_bytes": float_size,
                     "size_vs_float": round(size / float_size, 4) if float_size else None, **measured[digest]})
    float_sizes = {rt: p.stat().st_size for rt, p in baselines.items()}
    first = sha256_file(work.bundle / work.devices[0].path)
    return rows, {"float_sizes": float_sizes, "y_float": y_float}, {"heldout_codes": codes[first]}


def _reference_kernels(path: Path, dev: _DeviceFile, server: Any, samples: Samples, y_float: np.ndarray,
                       code_float: np.ndarray, fused_codes: np.ndarray, threads: int | None) -> dict[str, Any]:
    """The ONNX device model run unfused: the codes every CPU should give (see parity.kernel_check)."""
    from edgekit.runtime import open_device_runner

    reference = open_device_runner(path, runtime="onnxruntime", threads=threads, code_quant=dev.code_quant, fused=False)
    codes, code_deq, y_ref = deployed_outputs(reference, server, samples.x)
    reference_metrics = parity_metrics(y_float, y_ref, code_float, code_deq, samples.y)
    return kernel_check(fused_codes, codes, dev.code_quant, reference_metrics)


def _wire(work: _Work, heldout_codes: np.ndarray, codec: str | None, encode_budget_ms: float | None
          ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """manifest["wire"] and its report section: codecs fitted on calibration codes, measured on held-out ones.

    The slowest target's CPU sets the encode budget: one codec serves every device of the bundle.
    """
    from edgekit.codecs import EncodeBudget, fit_codecs
    from edgekit.runtime import open_device_runner

    dev = work.devices[0]
    runner = open_device_runner(work.bundle / dev.path, runtime="onnxruntime" if dev.runtime == Runtime.ONNX else None,
                                code_quant=dev.code_quant)
    calib_codes = batched(runner.run, EVAL_BATCH)(work.calib)
    slowest = min(work.profiles.values(), key=lambda p: p.relative_cpu_speed)
    budget = EncodeBudget(slowest.relative_cpu_speed, device=slowest.name)  # EncodeBudget's default budget_ms
    if encode_budget_ms is not None:
        budget = replace(budget, budget_ms=encode_budget_ms)
    trained_prior = work.reencoder.ans_prior(work.wire_quant) if work.reencoder else None  # entropic re-encoder
    return fit_codecs(calib_codes, heldout_codes, out_dir=work.bundle / "wire", codec=codec, budget=budget,
                      trained_prior=trained_prior)


def _layer_errors(work: _Work, calib_method: str) -> dict[str, list[dict[str, Any]]]:
    from .layer_debug import onnx_layer_errors, tflite_layer_errors

    samples = work.eval.x[:64]
    errors: dict[str, list[dict[str, Any]]] = {}
    tflite = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.TFLITE]
    if tflite:
        errors["tflite"] = tflite_layer_errors(work.halves.device_keras, work.input_shape, work.halves.input_name,
                                               work.calib, tflite[0].tflite, samples)
    onnx = [work.profiles[d.target] for d in work.devices if d.runtime == Runtime.ONNX]
    if onnx:
        errors["onnx"] = onnx_layer_errors(work.halves.device_onnx, work.halves.input_name, work.calib, onnx[0].onnx,
                                           calib_method, samples)
    return errors


# --------------------------------------------------------------------------------------------- bundle

def _versions() -> dict[str, str | None]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def _staging(output: Path, force: bool) -> Iterator[Path]:
    """A temp dir beside ``output``, renamed onto it on success and deleted on failure."""
    if output.exists() and not force:
        raise UsageError(f"output {output} already exists", "pass --force to replace it, or choose another -o")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.{secrets.token_hex(6)}.tmp"
    staging.mkdir()  # not mkdtemp, whose 0700 would become the bundle's mode: mkdir honours the umask (0755)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.exists():
        old = output.with_name(f".{output.name}.old-{staging.name}")
        output.rename(old)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(output)


def _quant_dict(quant: tuple[float, int] | None) -> dict[str, Any] | None:
    return None if quant is None else {"scale": float(quant[0]), "zero_point": int(quant[1])}


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
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as scratch_dir, _staging(output, force) as staging:
        scratch = Path(scratch_dir)
        steps.step("loading and splitting the model")
        reencoder = hints_for(_opt(model))  # a model made by edgekit reencode: its record, wire scale, prior
        halves = _halves(_opt(model), split, _opt(device_model), _opt(server_model), scratch)
        plans = [(p, _runtimes(p, halves, runtime)) for p in profiles]
        for profile, runtimes in plans:
            _check_target(profile, halves, runtimes)
        if any(d is None for d in halves.code_shape):
            raise ConversionError(f"code {halves.code_name!r} has a dynamic shape {halves.code_shape}",
                                  "the code must have a fixed shape: give the model a fixed input size")
        pre = _preprocessing(preprocessing, halves, str(calib), _opt(eval))
        steps.step("reading calibration and evaluation data")
        calib_set = _samples(str(calib), halves, "calibration", pre, calib_samples, MIN_CALIB_SAMPLES, rng)
        if halves.verify is not None:
            halves.verify(calib_set.x[:32])
        eval_set = _samples(str(eval), halves, "eval", pre, eval_samples, 1, rng) if eval else calib_set
        label_names = _labels(labels, eval_set, halves)
        work = _Work(staging, scratch, halves, calib_set.x, eval_set, halves.static_input_shape(calib_set.x),
                     profiles={p.name: p for p in profiles}, wire_quant=reencoder and reencoder.wire_quant,
                     reencoder=reencoder)

        for profile, runtimes in plans:
            steps.step(f"calibrating and quantizing the device half for {profile.name} "
                       f"({', '.join(r.value for r in runtimes)}, {len(calib_set.x)} samples)")
            if Runtime.TFLITE in runtimes:
                dev = _tflite(work, profile)
                work.devices.append(dev)
                _compile(work, profile, dev.path)
            if Runtime.ONNX in runtimes:
                work.devices.append(_onnx(work, profile, calib_method))
            work.compiled.setdefault(profile.name, None)

        steps.step("exporting the server half")
        server_rel = f"server/server_{server_precision}.onnx"
        calib_codes = dequantize(_quantize_codes(halves.device_float(calib_set.x), work.wire_quant), *work.wire_quant)
        export_server_onnx(halves.server_onnx, staging / server_rel, server_precision, _onnx_input(halves.server_onnx),
                           calib_codes, calib_method)

        steps.step(f"measuring parity and latency on {len(eval_set.x)} samples")
        rows, extra, wire_inputs = _parity(work, staging / server_rel, latency_runs, threads, progress)
        steps.step(f"fitting wire codecs on {len(calib_set.x)} calibration codes")
        wire_section, wire_report = _wire(work, wire_inputs["heldout_codes"], codec, encode_budget_ms)

        worst = min(r["top1_agreement"] for r in rows)
        passed = worst >= min_agreement
        layer_errors = _layer_errors(work, calib_method) if (debug_layers or not passed) else None
        report = _report(work, rows, extra, wire_report, layer_errors, worst, passed, min_agreement,
                         eval is not None, str(eval or calib), server_rel, server_precision, Path(model or device_model))
        report["baseline"] = input_baseline(eval_set.x, pre)
        too_big = compare_with_frames(report["baseline"], wire_report)
        if too_big:
            report["warnings"].append(too_big)
        manifest = _manifest(work, pre, label_names, server_rel, server_precision, profiles, wire_section, report,
                             dict(model=model, device_model=device_model, server_model=server_model), command, seed,
                             dict(targets=list(targets), runtime=runtime, server_precision=server_precision,
                                  calib_method=calib_method, calib_samples=len(calib_set.x),
                                  eval_samples=len(eval_set.x), min_agreement=min_agreement,
                                  debug_layers=debug_layers, codec=codec, encode_budget_ms=encode_budget_ms))
        manifest["golden"] = write_golden(staging, calib_set.x, work.devices, server_rel, server_precision, threads)
        steps.step("writing the bundle")
        _write_reports(staging, report, manifest)
        steps.close()
    return ConvertResult(output, report, passed)


def _opt(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _quantize_codes(codes: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    """Float codes to int8 with the wire quantization, as the device half's output layer does."""
    return np.clip(np.round(codes / np.float32(quant[0])) + quant[1], -128, 127).astype(np.int8)


def _onnx_input(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def _onnx_output(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.output[0].name


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


def _report(work: _Work, rows: list[dict[str, Any]], extra: dict[str, Any], wire_report: dict[str, Any] | None,
            layer_errors: dict[str, Any] | None, worst: float, passed: bool, min_agreement: float, held_out: bool,
            eval_source: str, server_rel: str, precision: str, model_path: Path) -> dict[str, Any]:
    halves = work.halves
    code_bytes = int(np.prod(halves.code_shape))
    accuracy_float = rows[0]["accuracy_float"]
    layers_to_check: list[str] = []
    for runtime_rows in (layer_errors or {}).values():
        layers_to_check += [r["layer"] for r in runtime_rows[:3]]
    warnings = work.warnings + [f"{name}: {c['cpu_ops']} ops fall back to the CPU"
                                for name, c in work.compiled.items() if c and c.get("cpu_ops")]
    if not held_out:
        warnings.append("no --eval given: parity measured on the calibration samples, which are not held out")
    cpu = cpu_features()
    warnings += kernel_warnings(rows, cpu)
    return {
        "format": "edgekit-report", "version": FORMAT_VERSION,
        "model": model_path.name,
        "split": halves.split,
        "bundle_id": None,  # filled once the manifest hashes are known
        "passed": passed,
        "min_agreement": min_agreement,
        "worst_agreement": worst,
        "layers_to_check": layers_to_check,
        "eval": {"source": eval_source, "samples": int(len(work.eval.x)), "held_out": held_out,
                 "labels": work.eval.y is not None, "accuracy_float": accuracy_float},
        "code": {"name": halves.code_name, "shape": list(halves.code_shape), "bytes_per_sample": code_bytes,
                 "wire_quant": _quant_dict(work.wire_quant)},
        "float_sizes": extra["float_sizes"],
        "server": {"path": server_rel, "precision": precision, "bytes": (work.bundle / server_rel).stat().st_size},
        "models": rows,
        "targets": dict(work.compiled),
        "cpu": cpu,
        "wire": wire_report,
        "debug_layers": layer_errors,
        "warnings": warnings,
    }


def _manifest(work: _Work, pre: Preprocessing | None, labels: list[str] | None, server_rel: str, precision: str,
              profiles: list[TargetProfile], wire: dict[str, Any], report: dict[str, Any],
              sources: dict[str, Any], command: str | None, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    halves = work.halves
    source = sources["model"] or sources["device_model"]
    return {
        "format": "edgekit-bundle",
        "version": FORMAT_VERSION,
        "bundle_id": "0" * 64,  # replaced by write_manifest
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": Path(str(source)).stem, "source": _opt(sources["model"]),
                  "source_format": halves.source_format, "split": halves.split,
                  "device_source": _opt(sources["device_model"]), "server_source": _opt(sources["server_model"]),
                  **({"reencode": work.reencoder.metadata} if work.reencoder else {})},
        "input": {"name": halves.input_name, "shape": list(work.input_shape), "dtype": "float32",
                  "preprocessing": pre.to_dict() if pre else None},
        "code": {"name": halves.code_name, "shape": list(halves.code_shape), "dtype": "int8",
                 "wire_quant": _quant_dict(work.wire_quant), "bytes_per_sample": int(np.prod(halves.code_shape))},
        "output": {"name": halves.output_name, "shape": [d or 1 for d in halves.output_shape], "labels": labels},
        "device_models": [
            {"target": d.target, "runtime": d.runtime.value, "path": d.path, "input_dtype": d.input_dtype,
             "input_quant": _quant_dict(d.input_quant), "code_dtype": d.code_dtype, "code_quant": _quant_dict(d.code_quant)}
            for d in work.devices
        ],
        "server_model": {"path": server_rel, "precision": precision,
                         "input_name": _onnx_input(work.bundle / server_rel),
                         "output_name": _onnx_output(work.bundle / server_rel)},
        "targets": {p.name: {"profile": p.to_dict(), "artifacts": work.artifacts.get(p.name, []),
                             "compiler_report": work.compiled.get(p.name)} for p in profiles},
        "wire": wire,
        "files": {},
        "parity": {"passed": report["passed"], "min_agreement": report["min_agreement"],
                   "samples": report["eval"]["samples"], "worst_agreement": report["worst_agreement"]},
        "provenance": {"edgekit": edgekit.__version__, "libraries": _versions(),
                       "command": command, "seed": seed, "python": platform.python_version(),
                       "platform": platform.platform(), "options": options},
    }


def _write_reports(staging: Path, report: dict[str, Any], manifest: dict[str, Any]) -> None:
    """The bundle id depends only on the model files, so it is known before the reports are hashed."""
    from edgekit.bundle import bundle_id, file_entry

    model_files = {p.relative_to(staging).as_posix(): file_entry(p) for p in staging.rglob("*")
                   if p.is_file() and p.relative_to(staging).parts[0] in ("device", "server")}
    report["bundle_id"] = bundle_id(model_files)
    (staging / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (staging / "report.md").write_text(render_markdown(report))
    write_manifest(staging, manifest)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
