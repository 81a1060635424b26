"""The bundle's own files: the staging folder it is written in, the wire codecs fitted on its codes, and its
report and manifest.

    staged_bundle ──► .<output>.<random>.tmp beside the output, renamed onto it only on success
         fit_wire ──► edgekit.wire.codecs.fit_codecs on calibration codes, measured on held-out ones ──► wire/
     build_report ──► report.{json,md} (parity rows, sizes, compiler reports, warnings)
   build_manifest ──► manifest.json (models, quantization, targets, provenance)
    write_reports ──► bundle id from the model files ──► report.{json,md} ──► manifest.json (every file hashed)

Writing into a staging folder means a failed conversion never leaves a half-written bundle at the output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import platform
import secrets
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import edgekit
from edgekit.bundle.manifest import FORMAT_VERSION, write_manifest
from edgekit.cpu import cpu_features
from edgekit.errors import UsageError
from edgekit.preprocess import Preprocessing

from .halves import batched
from .inputs import optional_str
from .parity import EVAL_BATCH, kernel_warnings
from .report import render_markdown
from .state import ConversionState
from .targets import Runtime, TargetProfile

__all__ = ["staged_bundle", "quantize_codes", "onnx_input", "fit_wire", "build_report", "build_manifest",
           "write_reports"]

_LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert",
              "ethos-u-vela", "numpy")


@contextlib.contextmanager
def staged_bundle(output: Path, force: bool) -> Iterator[Path]:
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


def quantize_codes(codes: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    """Float codes to int8 with the wire quantization, as the device half's output layer does."""
    return np.clip(np.round(codes / np.float32(quant[0])) + quant[1], -128, 127).astype(np.int8)


def onnx_input(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def _onnx_output(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.output[0].name


def fit_wire(work: ConversionState, heldout_codes: np.ndarray, codec: str | None, encode_budget_ms: float | None
             ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """manifest["wire"] and its report section: codecs fitted on calibration codes, measured on held-out ones.

    The slowest target's CPU sets the encode budget: one codec serves every device of the bundle.
    """
    from edgekit.wire.codecs import EncodeBudget, fit_codecs
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
                      trained_prior=trained_prior, levels=work.reencoder.levels if work.reencoder else None)


def _quant_dict(quant: tuple[float, int] | None) -> dict[str, Any] | None:
    return None if quant is None else {"scale": float(quant[0]), "zero_point": int(quant[1])}


def build_report(work: ConversionState, rows: list[dict[str, Any]], extra: dict[str, Any],
                 wire_report: dict[str, Any] | None, layer_errors: dict[str, Any] | None, worst: float, passed: bool,
                 min_agreement: float, held_out: bool, eval_source: str, server_rel: str, precision: str,
                 model_path: Path) -> dict[str, Any]:
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
    warnings += kernel_warnings(rows, cpu, {name: p.onnx for name, p in work.profiles.items()})
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


def build_manifest(work: ConversionState, pre: Preprocessing | None, labels: list[str] | None, server_rel: str,
                   precision: str, profiles: list[TargetProfile], wire: dict[str, Any], report: dict[str, Any],
                   sources: dict[str, Any], command: str | None, seed: int, options: dict[str, Any]
                   ) -> dict[str, Any]:
    halves = work.halves
    source = sources["model"] or sources["device_model"]
    return {
        "format": "edgekit-bundle",
        "version": FORMAT_VERSION,
        "bundle_id": "0" * 64,  # replaced by write_manifest
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": Path(str(source)).stem, "source": optional_str(sources["model"]),
                  "source_format": halves.source_format, "split": halves.split,
                  "device_source": optional_str(sources["device_model"]),
                  "server_source": optional_str(sources["server_model"]),
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
                         "input_name": onnx_input(work.bundle / server_rel),
                         "output_name": _onnx_output(work.bundle / server_rel)},
        "targets": {p.name: {"profile": p.to_dict(), "artifacts": work.artifacts.get(p.name, []),
                             "compiler_report": work.compiled.get(p.name)} for p in profiles},
        "wire": wire,
        "files": {},
        "parity": {"passed": report["passed"], "min_agreement": report["min_agreement"],
                   "samples": report["eval"]["samples"], "worst_agreement": report["worst_agreement"]},
        "provenance": {"edgekit": edgekit.__version__, "libraries": library_versions(),
                       "command": command, "seed": seed, "python": platform.python_version(),
                       "platform": platform.platform(), "options": options},
    }


def write_reports(staging: Path, report: dict[str, Any], manifest: dict[str, Any],
                  render: Callable[[dict[str, Any]], str] = render_markdown) -> None:
    """The bundle id depends only on the model files, so it is known before the reports are hashed.
    ``render`` makes report.md (text bundles have their own)."""
    from edgekit.bundle.manifest import bundle_id, file_entry

    model_files = {p.relative_to(staging).as_posix(): file_entry(p) for p in staging.rglob("*")
                   if p.is_file() and p.relative_to(staging).parts[0] in ("device", "server")}
    report["bundle_id"] = bundle_id(model_files)
    (staging / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (staging / "report.md").write_text(render(report))
    write_manifest(staging, manifest)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def library_versions(libraries: tuple[str, ...] = _LIBRARIES) -> dict[str, str | None]:
    """Installed versions of ``libraries`` (those not installed are left out), for the manifest's provenance."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
