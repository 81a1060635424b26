"""The text bundle's manifest and its report (docs/bundle.md, Text bundles; docs/convert.md, Text encoders)."""

from __future__ import annotations

import datetime as dt
import platform
from typing import Any, TYPE_CHECKING

import edgekit
from edgekit.bundle.manifest import FORMAT_VERSION
from edgekit.text import TEXT_VERSION

from .bundle_writer import library_versions
from .targets import load_target
from .text_export import CODE, EMBEDDING, INPUT_IDS

if TYPE_CHECKING:
    from .state import DeviceFile
    from .text_source import TextSource

__all__ = ["text_manifest", "render_text_report", "text_summary", "ENCODER_REL", "SERVER_REL", "TOKENIZER_REL"]

# Where a text bundle keeps what it adds to an image bundle's layout (docs/bundle.md, Text bundles).
ENCODER_REL, SERVER_REL, TOKENIZER_REL = "server/encoder_fp32.onnx", "server/server_fp32.onnx", "text/tokenizer.json"

_LIBRARIES = ("onnx", "onnxruntime", "tokenizers", "torch", "transformers", "sentence-transformers", "numpy")


def _quant(quant: tuple[float, int]) -> dict[str, Any]:
    return {"scale": float(quant[0]), "zero_point": int(quant[1])}


def text_manifest(source: TextSource, devices: list[DeviceFile], wire: dict[str, Any], wire_report: dict[str, Any] | None,
                  parity: dict[str, Any], latency: dict[str, Any] | None, passed: bool, min_cosine: float,
                  reencoder: dict[str, Any] | None, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest without files, golden and bundle id; report.json)."""
    first = devices[0]
    code_size = int(reencoder["payload_bytes"]) if reencoder else source.dims
    wire_quant = (first.code_quant[0], first.code_quant[1] - 128 if first.code_dtype == "uint8" else first.code_quant[1])
    quantization = {"method": parity["quantization"], "chosen_by": "higher mean cosine with the float encoder on "
                    "the held-out sentences", "candidates": parity["int8_encoder"]}
    text = {"version": TEXT_VERSION, "tokenizer": TOKENIZER_REL, "max_length": source.max_length,
            "lowercase": source.lowercase, "pad_id": source.pad_id, "pooling": source.pooling,
            "normalize": source.normalize, "dims": source.dims,
            "float_encoder": {"path": ENCODER_REL, "input_name": INPUT_IDS, "output_name": EMBEDDING},
            "quantization": quantization,
            "reencoder": {k: v for k, v in reencoder.items() if k != "format"} if reencoder else None,
            "parity": {k: v for k, v in parity.items() if k not in ("int8_encoder", "quantization")}}
    chosen = parity["int8_encoder"][parity["quantization"]]
    manifest = {
        "format": "edgekit-bundle", "version": FORMAT_VERSION, "bundle_id": "0" * 64,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": source.name, "source": str(source.folder),
                  "source_format": "onnx" if source.onnx else "sentence-transformers", "split": EMBEDDING,
                  "device_source": None, "server_source": None},
        "input": {"name": INPUT_IDS, "shape": [source.max_length], "dtype": "int64", "preprocessing": None},
        "code": {"name": CODE, "shape": [code_size], "dtype": "int8", "wire_quant": _quant(wire_quant),
                 "bytes_per_sample": code_size},
        "output": {"name": EMBEDDING, "shape": [source.dims], "labels": None},
        "device_models": [{"target": d.target, "runtime": d.runtime.value, "path": d.path, "input_dtype": "int64",
                           "input_quant": None, "code_dtype": d.code_dtype, "code_quant": _quant(d.code_quant)}
                          for d in devices],
        "server_model": {"path": SERVER_REL, "precision": "fp32", "input_name": CODE, "output_name": EMBEDDING},
        "targets": {d.target: {"profile": load_target(d.target).to_dict(), "artifacts": [], "compiler_report": None}
                    for d in devices},
        "wire": wire, "files": {}, "text": text,
        "parity": {"passed": passed, "metric": "mean_cosine", "min_agreement": min_cosine,
                   "samples": parity["sentences"], "worst_agreement": chosen["cosine_mean"]},
        "provenance": {"edgekit": edgekit.__version__, "libraries": library_versions(_LIBRARIES), "command": options["command"],
                       "seed": options["seed"], "python": platform.python_version(), "platform": platform.platform(),
                       "options": {k: v for k, v in options.items() if k != "command"}},
    }
    report = {"model": str(source.folder), "kind": "text", "passed": passed, "min_cosine": min_cosine,
              "text": {**text, "quantization": quantization, "latency": latency}, "wire": wire_report,
              "warnings": [] if passed else [f"int8 encoder mean cosine {chosen['cosine_mean']:.4f} < {min_cosine}"]}
    return manifest, report


def text_summary(report: dict[str, Any]) -> str:
    """What ``edgekit convert`` prints for a text bundle: report.md's lines."""
    return render_text_report(report).rstrip("\n")


def render_text_report(report: dict[str, Any]) -> str:
    """report.md of a text bundle."""
    text, parity = report["text"], report["text"]["parity"]
    lines = [f"# Text bundle: {report['model']}", "",
             f"Parity {'passed' if report['passed'] else 'FAILED'} (bar: int8 encoder mean cosine >= "
             f"{report['min_cosine']}) on {parity['sentences']} held-out sentences of {parity['data']}.", "",
             "| int8 quantization | mean cosine | min cosine | bytes |", "|---|---|---|---|"]
    lines += [f"| {m}{' (chosen)' * (m == text['quantization']['method'])} | {f['cosine_mean']:.4f} | "
              f"{f['cosine_min']:.4f} | {f['bytes']:,} |" for m, f in text["quantization"]["candidates"].items()]
    lines += ["", f"Deployed (int8 encoder, code, server half) vs float: mean cosine {parity['cosine_mean']:.4f}, "
              f"min {parity['cosine_min']:.4f}."]
    if "spearman_float" in parity:
        lines.append(f"STS Spearman: float {parity['spearman_float']:.4f}, deployed {parity['spearman_deployed']:.4f}.")
    if text.get("latency"):
        lat = text["latency"]
        lines.append(f"Device half latency ({lat['tokens']} tokens, 1 thread): float {lat['float']['median_ms']} ms, "
                     f"int8 {lat['int8']['median_ms']} ms ({lat['float_over_int8']}x).")
    lines += ["", f"TFLite: {text['tflite']}", *[f"- WARNING: {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"
