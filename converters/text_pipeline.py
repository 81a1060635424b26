"""``convert`` for sentence encoders: a sentence-transformers folder (or its ONNX export) → a text bundle.

    folder ──► float encoder (ids → pooled, normalized embedding) ──► server/encoder_fp32.onnx
           ──► batch-1 copy ──► int8: dynamic and static measured, the closer one kept (text_quant)
           ──► + int8 code (QuantizeLinear) or + edgekit_reencoder/encoder.onnx ──► device/<target>/device_int8.onnx
           ──► dequantized code ──► L2 normalize, or bytes ──► decoder.onnx ──► server/server_fp32.onnx
    parity ──► float vs deployed embeddings on held-out sentences: cosine, STS Spearman; latency
    wire, golden (sentences, ids, codes, outputs), tokenizer ──► manifest ──► the bundle

Text device halves are ONNX only: the export's dynamic sequence length and the int8 transformer run in
ONNX Runtime; TFLite is not made (report.json ``text.tflite`` says why). See docs/convert.md, Text encoders.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import UsageError
from edgekit.text import Embedder, Tokenizer, cosine
from edgekit.wire.spec import dequantize

from .bundle_writer import staged_bundle, write_reports
from .golden import write_golden
from .parity import latency_comparison
from .state import DeviceFile
from .targets import Runtime, load_target
from .text_data import TextData, read_text_data, spearman
from .text_export import append_code, export_encoder, fix_batch, server_model
from .text_manifest import ENCODER_REL, SERVER_REL, TOKENIZER_REL, render_text_report, text_manifest
from .text_quant import choose_quantization
from .text_source import TextSource, read_text_source

__all__ = ["convert_text", "TextRun", "TEXT_STEPS"]

log = logging.getLogger(__name__)
TEXT_STEPS = 5  # the step(...) calls of convert_text, for the progress bar
TFLITE_NOTE = ("not made: TFLite needs a fixed sequence length, so every text would run padded to it (litert-torch "
               "converts all-MiniLM-L6-v2 at 128 tokens exactly, but then takes about 10x the ONNX float time of a "
               "median 15-token sentence); the ONNX device half runs each text at its own length")


@dataclass
class TextRun:
    """What the steps of one text conversion share."""

    source: TextSource
    tokenizer: Tokenizer
    staging: Path
    scratch: Path
    calib: TextData
    eval: TextData
    threads: int | None

    def ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.tokenizer.encode(t).ids for t in texts]


def _runner(path: Path, threads: int | None, code_quant: tuple[float, int] | None = None) -> Any:
    from edgekit.runtime import open_device_runner

    return open_device_runner(path, runtime="onnxruntime", threads=threads, code_quant=code_quant)


def _embed_each(path: Path, ids: Sequence[np.ndarray]) -> np.ndarray:
    """Run a batch-1 model sentence by sentence on one thread, as the device does: float32 (N, D)."""
    runner = _runner(path, 1)
    return np.concatenate([runner.run(i) for i in ids])


def _read_data(calib: str | Path, eval_path: str | Path | None, calib_samples: int, eval_samples: int,
               seed: int) -> tuple[TextData, TextData]:
    rng = np.random.default_rng(seed)
    calib_data = read_text_data(calib, "calibration", calib_samples, rng)
    if eval_path is not None:
        return calib_data, read_text_data(eval_path, "eval", eval_samples, rng)
    if len(calib_data.sentences) < 8:
        raise UsageError(f"{calib} has {len(calib_data.sentences)} sentences, too few to hold some out",
                         "give --eval sentences, or at least 8 calibration sentences")
    return calib_data.split(0.25)


def _device_files(run: TextRun, targets: Sequence[str], int8: Path, code_quant: tuple[float, int],
                  code_dtype: str) -> list[DeviceFile]:
    """One ONNX device half per target (identical files: every ONNX target runs the same ORT model)."""
    files = []
    for name in dict.fromkeys(targets):
        profile = load_target(name)
        if Runtime.ONNX not in profile.runtimes:
            raise UsageError(f"target {profile.name} has no ONNX runtime, and text models convert to ONNX only",
                             "use a target with the onnx runtime, e.g. --target rpi or --target cpu")
        rel = f"device/{profile.name}/device_int8.onnx"
        (run.staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(int8, run.staging / rel)
        files.append(DeviceFile(profile.name, Runtime.ONNX, rel, "int64", None, code_dtype, code_quant))
    return files


def _reencoder(source: TextSource) -> dict[str, Any] | None:
    if source.reencoder is None:
        return None
    record_path = source.reencoder / "reencoder.json"
    missing = [n for n in ("encoder.onnx", "decoder.onnx", "reencoder.json") if not (source.reencoder / n).is_file()]
    if missing:
        raise UsageError(f"{source.reencoder} lacks {', '.join(missing)}", "re-run edgekit reencode on the model")
    record = json.loads(record_path.read_text())
    if record.get("format") != "edgekit-text-reencoder" or int(record.get("dims", -1)) != source.dims:
        raise UsageError(f"{record_path} is not a text re-encoder for {source.dims}-dimensional embeddings",
                         "re-run edgekit reencode on this model")
    return record


def _parity(run: TextRun, device: DeviceFile, reference: np.ndarray, int8_figures: dict[str, Any]) -> dict[str, Any]:
    """Float (``reference``) vs deployed (int8 encoder → code → wire quantization → server half) embeddings of
    the held-out sentences."""
    from edgekit.runtime import open_server_runner

    runner = _runner(run.staging / device.path, 1, device.code_quant)
    codes = np.concatenate([runner.run(i) for i in run.ids(run.eval.sentences)])
    deployed = open_server_runner(run.staging / SERVER_REL).run(dequantize(codes, *runner.code_quant))
    cos = cosine(reference, deployed)
    figures = {"sentences": len(codes), "data": run.eval.source, "int8_encoder": int8_figures,
               "cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6)}
    if run.eval.pairs:
        pair_cos = {name: cosine(e[0::2], e[1::2]) for name, e in (("float", reference), ("deployed", deployed))}
        figures.update({f"spearman_{name}": round(spearman(c, run.eval.scores), 6) for name, c in pair_cos.items()})
    return figures


def _halves(run: TextRun, targets: Sequence[str], reencoder: dict[str, Any] | None, step: Callable[[str], None]
            ) -> tuple[list[DeviceFile], dict[str, Any], Path, Path]:
    """Export, quantize both ways, keep the closer, add the code tail per target and write the server half.

    Returns the device files, the parity figures, and the batch-1 float and int8 encoders (for latency)."""
    source = run.source
    step(f"exporting the encoder ({source.pooling} pooling{', normalized' * source.normalize}) to ONNX")
    export_encoder(source, run.staging / ENCODER_REL, run.scratch)
    float1 = fix_batch(run.staging / ENCODER_REL, run.scratch / "encoder_fp32_batch1.onnx")
    step(f"quantizing to int8, dynamic and static, measured on {len(run.eval.sentences)} held-out sentences")
    float_embed = Embedder(run.tokenizer, _runner(run.staging / ENCODER_REL, run.threads).run).embed
    reference = float_embed(run.eval.sentences)
    method, int8, figures = choose_quantization(float1, run.scratch, run.ids(run.calib.sentences),
                                                run.ids(run.eval.sentences), reference, _embed_each)
    if reencoder is None:  # the embedding itself is the code: int8, zero point 0, covering the calibration set
        code_quant, code_dtype = (float(np.abs(float_embed(run.calib.sentences)).max()) / 127.0, 0), "int8"
    else:  # the re-encoder's bytes, sent as they are
        code_quant, code_dtype = (1.0, 0), "uint8"
    device_onnx = append_code(int8, run.scratch / "device_int8.onnx", code_quant[0],
                              source.reencoder / "encoder.onnx" if reencoder else None)
    devices = _device_files(run, targets, device_onnx, code_quant, code_dtype)
    server_model(run.staging / SERVER_REL, source.dims, source.reencoder / "decoder.onnx" if reencoder else None,
                 reencoder and int(reencoder["payload_bytes"]))
    step(f"measuring parity (and latency) of the deployed path on {len(run.eval.sentences)} held-out sentences")
    parity = {**_parity(run, devices[0], reference, figures), "quantization": method}
    return devices, parity, float1, int8


def convert_text(model: str | Path, calib: str | Path | None, eval: str | Path | None,  # noqa: A002 - CLI name
                 targets: Sequence[str], output: str | Path, force: bool = False, calib_samples: int = 500,
                 eval_samples: int = 1000, min_cosine: float = 0.98, latency_runs: int = 50,
                 threads: int | None = None, codec: str | None = None, encode_budget_ms: float | None = None,
                 seed: int = 0, command: str | None = None, step: Callable[[str], None] = log.info
                 ) -> tuple[Path, dict[str, Any], bool]:
    """Convert a sentence encoder folder into a text bundle; returns (bundle path, report, parity passed).

    ``step`` is told each long step as it starts (the CLI's progress lines)."""
    if calib is None:
        raise UsageError("no calibration sentences given",
                         "pass --calib sentences.txt (one per line) or an STS-B .csv (e.g. sts-train.csv)")
    source = read_text_source(model)
    calib_data, eval_data = _read_data(calib, eval, calib_samples, eval_samples, seed)
    tokenizer = Tokenizer.from_file(source.tokenizer, source.max_length, source.pad_id)
    reencoder = _reencoder(source)
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as scratch_dir, \
            staged_bundle(Path(output), force) as staging:
        run = TextRun(source, tokenizer, staging, Path(scratch_dir), calib_data, eval_data, threads)
        for folder in ("server", "text"):
            (staging / folder).mkdir()
        shutil.copyfile(source.tokenizer, staging / TOKENIZER_REL)
        devices, parity, float1, int8 = _halves(run, targets, reencoder, step)
        latency = _latency(run, float1, int8, latency_runs) if latency_runs else None
        step(f"fitting wire codecs on {len(calib_data.sentences)} calibration codes")
        wire, wire_report = _fit_wire(run, devices, targets, codec, encode_budget_ms)
        passed = parity["int8_encoder"][parity["quantization"]]["cosine_mean"] >= min_cosine
        step("writing golden vectors, reports and the manifest")
        golden = write_golden(staging, tokenizer.encode_batch(calib_data.sentences).ids, devices, SERVER_REL, "fp32",
                              threads, texts=calib_data.sentences)
        options = dict(model=str(model), calib=str(calib), eval=eval and str(eval), seed=seed, targets=list(targets),
                       command=command, calib_samples=len(calib_data.sentences), eval_samples=len(eval_data.sentences))
        manifest, report = text_manifest(source, devices, wire, wire_report, parity, latency, passed, min_cosine,
                                         reencoder, options)
        manifest["golden"] = golden
        report["text"]["tflite"] = TFLITE_NOTE
        write_reports(staging, report, manifest, render_text_report)
    return Path(output), report, passed


def _latency(run: TextRun, float1: Path, int8: Path, runs: int) -> dict[str, Any]:
    """Float vs int8 encoder, one thread each, same process, on the held-out sentence of median length."""
    ids = sorted(run.ids(run.eval.sentences), key=lambda i: i.shape[1])
    sample = ids[len(ids) // 2][0]
    result = latency_comparison(_runner(float1, 1), _runner(int8, 1), sample, runs)
    result.update({"tokens": int(sample.shape[0]), "threads": 1, "float_bytes": float1.stat().st_size,
                   "int8_bytes": int8.stat().st_size})
    return result


def _fit_wire(run: TextRun, devices: list[DeviceFile], targets: Sequence[str], codec: str | None,
              encode_budget_ms: float | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Wire codecs fitted on the calibration sentences' codes, measured on the held-out ones; the slowest
    target's CPU sets the encode budget (as for image bundles)."""
    from dataclasses import replace

    from edgekit.wire.codecs import EncodeBudget, fit_codecs

    runner = _runner(run.staging / devices[0].path, run.threads, devices[0].code_quant)
    calib_codes, heldout_codes = (np.concatenate([runner.run(i) for i in run.ids(data.sentences)])
                                  for data in (run.calib, run.eval))
    slowest = min((load_target(t) for t in targets), key=lambda p: p.relative_cpu_speed)
    budget = EncodeBudget(slowest.relative_cpu_speed, device=slowest.name)
    if encode_budget_ms is not None:
        budget = replace(budget, budget_ms=encode_budget_ms)
    return fit_codecs(calib_codes, heldout_codes, out_dir=run.staging / "wire", codec=codec, budget=budget)
