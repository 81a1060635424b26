"""The start-up self-test: does this machine compute what the bundle was validated to compute?

``edgekit convert`` stores golden vectors in the bundle (``golden/golden.npz``, see
:mod:`edgekit.converters.golden`): a few calibration inputs, the int8 codes each device model produced for
them and the server half's outputs for those codes. The agent and the receiver run the same inputs through
the runtime they really use and compare::

    golden inputs ──► DeviceRunner (LiteRT / tflite-runtime / TF / ORT) ──► int8 codes ─┐
                                                          golden codes ─► compare: level difference, fraction
    golden codes ──► dequantize ──► ServerRunner (ORT) ──► outputs ─────────────────────┐
                                                        golden outputs ─► compare: max |error|, top-1

A runtime that miscompiles (a wrong XNNPACK kernel on some CPU), a swapped model file or a broken install
then stops the process at start with a one-line :class:`SelfTestError` instead of streaming wrong codes.
The result, the runtime, its version and the CPU go into the device's status message and ``edgekit
inspect``. Imports no TensorFlow (runners pick LiteRT first) and no ONNX Runtime unless the model needs it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.cpu import cpu_features, describe_cpu
from edgekit.errors import EdgekitError, ParityError
from edgekit.text.golden import golden_token_mismatch

__all__ = ["SelfTest", "SelfTestError", "runtime_version", "device_selftest", "server_selftest",
           "bundle_selftests", "require_pass", "check_parity"]

log = logging.getLogger(__name__)

# Runner runtime name (edgekit.runtime) → distributions that may provide it, first found wins.
_DISTRIBUTIONS = {"litert": ("ai-edge-litert",), "tflite-runtime": ("tflite-runtime",),
                  "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64"),
                  "onnxruntime": ("onnxruntime", "onnxruntime-gpu")}

_this_cpu = functools.cache(cpu_features)  # /proc/cpuinfo read once per process, not once per self-test


class SelfTestError(EdgekitError):
    """This machine's runtime does not reproduce the bundle's golden vectors within tolerance."""

    exit_code = 4


@dataclass
class SelfTest:
    """One half checked on this machine. ``passed`` is None when the bundle has no golden vectors."""

    role: str  # "device" or "server"
    model: str  # bundle-relative path of the model file
    runtime: str
    runtime_version: str | None
    passed: bool | None
    detail: str  # one line: what was compared and how it came out
    metrics: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=_this_cpu)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = {True: "passed", False: "FAILED", None: "not run"}[self.passed]
        return (f"{self.role} self-test {verdict}: {self.model} on {self.runtime} {self.runtime_version or ''}"
                f" ({describe_cpu(self.cpu)}): {self.detail}")


def runtime_version(runtime: str) -> str | None:
    """The installed version of a runner's runtime (``litert``, ``onnxruntime``, ...), None when unknown."""
    for dist in _DISTRIBUTIONS.get(runtime, (runtime,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _relative(bundle: Any, path: Path) -> str:
    return Path(path).relative_to(bundle.path).as_posix()


def _fits(model_shape: tuple[int, ...], batch_shape: tuple[int, ...]) -> bool:
    """Whether a batch fits a model input (batch axis and dynamic dimensions, -1, aside)."""
    return len(model_shape) == len(batch_shape) and all(m in (-1, b) for m, b in zip(model_shape[1:], batch_shape[1:]))


def _timed_run(runner: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Run sample by sample (as the agent does); return the outputs and the median ms per sample."""
    runner.run(x[:1])  # warm-up: the first call allocates and packs weights
    outputs, times = [], []
    for i in range(len(x)):
        start = time.perf_counter()
        outputs.append(runner.run(x[i : i + 1]))
        times.append((time.perf_counter() - start) * 1e3)
    return np.concatenate(outputs), float(np.median(times))


def device_selftest(bundle: Any, runner: Any, model_path: Path) -> SelfTest:
    """Run the golden inputs through ``runner`` (the device model at ``model_path``) and compare codes.

    Passes when no element differs by more than ``code_max_level_diff`` int8 levels and at most
    ``code_max_fraction_diff`` of the elements differ at all.
    """
    rel = _relative(bundle, model_path)
    result = SelfTest("device", rel, runner.runtime, runtime_version(runner.runtime), None, "")
    golden = bundle.golden
    if golden is None:
        result.detail = "the bundle has no golden vectors (made by an older edgekit convert)"
        return result
    if rel not in golden.device:
        result.detail = f"the bundle has no golden codes for {rel}"
        return result
    arrays = golden.arrays
    if not _fits(runner.input_shape, arrays[golden.inputs].shape):
        result.passed = False
        result.detail = (f"the model takes {tuple(runner.input_shape[1:])} but the golden inputs are "
                         f"{arrays[golden.inputs].shape[1:]}")
        return result
    mismatch = golden_token_mismatch(bundle)  # text bundles: the tokenizer, before the model it feeds
    if mismatch is not None:
        result.passed, result.detail = False, mismatch
        return result
    codes, frame_ms = _timed_run(runner, arrays[golden.inputs])
    expected = arrays[golden.device[rel]]
    if codes.shape != expected.shape:
        result.passed = False
        result.detail = f"codes have shape {codes.shape[1:]} but the golden codes {expected.shape[1:]}"
        return result
    diff = np.abs(codes.astype(np.int16) - expected.astype(np.int16))
    max_diff, fraction = int(diff.max(initial=0)), float(np.mean(diff > 0))
    tol = golden.tolerance
    result.passed = max_diff <= tol["code_max_level_diff"] and fraction <= tol["code_max_fraction_diff"]
    result.metrics = {"samples": len(codes), "max_level_diff": max_diff, "fraction_diff": round(fraction, 6),
                      "frame_ms": round(frame_ms, 4)}
    result.detail = (f"{len(codes)} golden samples, codes differ in {100 * fraction:.2f}% of elements by at most "
                     f"{max_diff} levels (allowed: {tol['code_max_level_diff']} on {100 * tol['code_max_fraction_diff']:g}%); "
                     f"{frame_ms:.3f} ms per frame")
    return result


def server_selftest(bundle: Any, runner: Any) -> SelfTest:
    """Run the golden codes (dequantized as frames are) through the server half and compare outputs.

    Passes when no output differs by more than ``output_max_abs_error`` and the top-1 class is the golden
    one wherever the golden runner-up is more than twice that error behind (a closer call may flip within
    tolerance).
    """
    from edgekit.wire.spec import dequantize

    rel = _relative(bundle, runner.path)
    result = SelfTest("server", rel, "onnxruntime", runtime_version("onnxruntime"), None, "")
    golden = bundle.golden
    if golden is None:
        result.detail = "the bundle has no golden vectors (made by an older edgekit convert)"
        return result
    arrays = golden.arrays
    quant = golden.server["code_quant"]
    codes = dequantize(arrays[golden.server["codes"]], quant["scale"], quant["zero_point"])
    if not _fits(runner.input_shape, codes.shape):
        result.passed = False
        result.detail = f"the model takes {tuple(runner.input_shape[1:])} but the golden codes are {codes.shape[1:]}"
        return result
    start = time.perf_counter()
    outputs = runner.run(codes)
    batch_ms = (time.perf_counter() - start) * 1e3
    expected = arrays[golden.server["outputs"]].astype(np.float64)
    outputs = np.asarray(outputs, np.float64).reshape(expected.shape)
    tol = float(golden.tolerance["output_max_abs_error"])
    max_error = float(np.max(np.abs(outputs - expected), initial=0.0))
    flat = expected.reshape(len(expected), -1)
    decisive = np.zeros(len(flat), bool)
    if flat.shape[1] > 1:
        runner_up, top = np.sort(flat, axis=1)[:, -2:].T
        decisive = top - runner_up > 2 * tol
    flips = int(np.sum(decisive & (flat.argmax(1) != outputs.reshape(len(outputs), -1).argmax(1))))
    result.passed = max_error <= tol and flips == 0
    result.metrics = {"samples": len(expected), "max_abs_error": max_error, "top1_changed": flips,
                      "batch_ms": round(batch_ms, 4)}
    result.detail = (f"{len(expected)} golden codes, max |output error| {max_error:.3g} (allowed {tol:.3g}), "
                     f"top-1 changed on {flips}")
    return result


def bundle_selftests(bundle: Any) -> list[SelfTest]:
    """Every device model and the server half of ``bundle`` checked on this machine (``edgekit inspect``).

    A half whose runtime is not installed here is reported as not run, not as an error.
    """
    from edgekit.runtime import open_device_runner, open_server_runner

    results = []
    for model in bundle.device_models:
        runtime = "onnxruntime" if model.runtime == "onnx" else None
        try:
            runner = open_device_runner(model.path, runtime=runtime, code_quant=model.code_quant)
        except EdgekitError as err:
            results.append(SelfTest("device", _relative(bundle, model.path), runtime or model.runtime, None, None,
                                    f"not run here: {err}"))
            continue
        results.append(device_selftest(bundle, runner, model.path))
    try:
        results.append(server_selftest(bundle, open_server_runner(bundle.server_model.path)))
    except EdgekitError as err:
        results.append(SelfTest("server", _relative(bundle, bundle.server_model.path), "onnxruntime", None, None,
                                f"not run here: {err}"))
    return results


def require_pass(result: SelfTest) -> SelfTest:
    """Stop the process on a failed self-test; warn when there was nothing to test. Returns ``result``."""
    if result.passed is False:
        raise SelfTestError(
            f"{result.role} self-test failed: {result.model} on {result.runtime} {result.runtime_version} "
            f"does not reproduce the bundle's golden vectors ({result.detail})",
            "this machine computes something other than what the bundle was validated for: try another "
            "runtime or version (--runtime), check the model files, or re-convert (docs/device.md, Self-test)")
    if result.passed is None:
        log.warning("%s: %s; not checked on this machine — re-convert with a current edgekit to get a self-test",
                    result.role, result.detail)
    else:
        log.info("%s", result.line())
    return result


def check_parity(bundle: Any, allow_failing: bool) -> bool:
    """Refuse a bundle whose convert-time parity check failed, unless allowed (then warn).

    Returns True when the bundle is failing but allowed, so the caller can mark it in its status.
    """
    parity = bundle.manifest["parity"]
    if parity["passed"]:
        return False
    worst = parity.get("worst_agreement")
    what = (f"bundle {bundle.bundle_id[:12]} failed its parity check at convert time"
            + (f" (top-1 agreement {100 * worst:.2f}% < {100 * parity['min_agreement']:.2f}%)" if worst is not None
               else ""))
    if not allow_failing:
        raise ParityError(what, "re-convert it until parity passes, or pass --allow-failing-parity to run it anyway")
    log.warning("%s; running it anyway because of --allow-failing-parity", what)
    return True
