"""What the receiver answers for a text bundle, from the embeddings its server half decodes (``--task``).

::

    frame ─► dequantize ─► server half (decoder) ─► embedding ─┬─ similarity: pairs (seq 2k, 2k+1) ─► cosine
                                                               ├─ retrieve:   top-k of --index's documents
                                                               └─ classify:   top-k of --labelled's label centroids

The documents and the labelled texts are embedded at start by the bundle's float encoder
(``server/encoder_fp32.onnx`` through :mod:`edgekit.text`): the server never runs the device's int8 model,
and the device's decoded codes live in the float model's space. Retrieval and classification are the same
search, against documents or against the (normalized) mean embedding of each label's texts. Every task
answers each frame with an :class:`Answer` the receiver stores and publishes as it does an image result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgekit.errors import UsageError

__all__ = ["TextTaskConfig", "Answer", "VectorIndex", "pair_cosine", "open_text_tasks", "open_text_task"]

log = logging.getLogger(__name__)

EXACT_MAX_DOCS = 20_000  # above this, --search auto builds a faiss HNSW index instead of a numpy matrix product
EMBED_CHUNK = 256  # documents embedded per call (and per progress line)


@dataclass(frozen=True)
class TextTaskConfig:
    """``edgekit server run``'s text options: the task and the files it needs."""

    task: str | None = None  # similarity | retrieve | classify; a text bundle needs one
    index: Path | None = None  # retrieve: one document per line (its id: the line number)
    labelled: Path | None = None  # classify: LABEL<TAB>TEXT per line
    search: str = "auto"  # retrieve: exact (numpy) | hnsw (faiss) | auto (hnsw above EXACT_MAX_DOCS documents)


class Answer(NamedTuple):
    """One frame's answer, as a result row holds it."""

    index: int  # the pair id, the best document's line, the best label's index
    label: str
    score: float
    topk: list[tuple[str, float]]


def pair_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two decoded embeddings, in float64 and rounded as results are: the one the server stores
    and the one an in-process check computes."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return round(float(a @ b / denominator), 6) if denominator > 0 else 0.0


class SimilarityTask:
    """Pairs of frames: ``seq`` 2k and 2k + 1 of one device boot are the two texts of pair k."""

    def __init__(self, db: Path):
        from edgekit.server.text_store import PairStore

        self.pairs = PairStore(db)

    def answer(self, bundle_id: str, keys: list[tuple[str, int, int]], embeddings: np.ndarray) -> list[Answer]:
        """``keys``: (device, boot_id, seq) per frame. The frame that completes a pair answers its cosine; the
        first of a pair answers ``waiting`` (score 0, no top-k) and its embedding waits in the store."""
        return [self._one(bundle_id, key, embedding) for key, embedding in zip(keys, embeddings)]

    def _one(self, bundle_id: str, key: tuple[str, int, int], embedding: np.ndarray) -> Answer:
        device, boot_id, seq = key
        pair = seq // 2
        cosine = self.pairs.cosine(device, boot_id, pair)  # a re-delivery of a completed pair's frame
        if cosine is None:
            partner = self.pairs.half(device, boot_id, seq ^ 1)
            if partner is None:
                self.pairs.wait(device, boot_id, seq, embedding)
                return Answer(pair, f"pair {pair}: waiting", 0.0, [])
            first, second = (partner, embedding) if seq % 2 else (embedding, partner)
            cosine = pair_cosine(first, second)
            self.pairs.complete(device, boot_id, pair, bundle_id, cosine)
        return Answer(pair, f"pair {pair}", cosine, [(f"pair {pair}", cosine)])

    def close(self) -> None:
        self.pairs.close()


class VectorIndex:
    """Top-k inner products of unit vectors: a numpy matrix product (exact) or a faiss HNSW graph (for large
    corpora, approximate, ``pip install faiss-cpu``)."""

    def __init__(self, vectors: np.ndarray, search: str = "auto"):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.kind = ("hnsw" if len(vectors) > EXACT_MAX_DOCS else "exact") if search == "auto" else search
        self._faiss = _hnsw(self.vectors) if self.kind == "hnsw" else None

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (Q, min(k, N)), best first."""
        queries = np.ascontiguousarray(queries, np.float32)
        k = min(k, len(self.vectors))
        if self._faiss is not None:
            self._faiss.hnsw.efSearch = max(64, 2 * k)
            return self._faiss.search(queries, k)
        scores = queries @ self.vectors.T
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, ids, axis=1), ids


def _hnsw(vectors: np.ndarray):
    try:
        import faiss
    except ImportError:
        raise UsageError("a large retrieval index needs faiss", "pip install 'edgekit-split[server]' (faiss-cpu), "
                                                                "or pass --search exact") from None
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    return index


class NearestTask:
    """Retrieval (against documents) and classification (against label centroids): the top-k names."""

    def __init__(self, names: list[str], index: VectorIndex, topk: int):
        self.names, self.index, self.topk = names, index, topk

    def answer(self, bundle_id: str, keys: list[tuple[str, int, int]], embeddings: np.ndarray) -> list[Answer]:
        scores, ids = self.index.search(embeddings, self.topk)
        out = []
        for row_scores, row_ids in zip(scores, ids):
            topk = [(self.names[i], round(float(s), 6)) for s, i in zip(row_scores, row_ids) if i >= 0]
            out.append(Answer(int(row_ids[0]), topk[0][0], topk[0][1], topk))
        return out

    def close(self) -> None:
        pass


def open_text_tasks(cfg: TextTaskConfig, bundles, db: Path, topk: int) -> dict:
    """``{bundle_id: task}`` for the text bundles among ``bundles``; a ``--task`` with none of them is said once."""
    tasks = {b.bundle_id: open_text_task(cfg, b, db, topk) for b in bundles if "text" in b.manifest}
    if cfg.task is not None and not tasks:
        log.warning("--task %s is for text bundles, and none is served: ignored", cfg.task)
    return tasks


def open_text_task(cfg: TextTaskConfig, bundle, db: Path, topk: int):
    """The task for one text bundle (its float encoder embeds the documents or labelled texts now)."""
    if cfg.task is None:
        raise UsageError(f"bundle {bundle.bundle_id[:12]} is a text bundle: the server needs a task",
                         "pass --task similarity (pairs), --task retrieve --index DOCS.txt or "
                         "--task classify --labelled LABELLED.tsv")
    if cfg.task == "similarity":
        return SimilarityTask(db)
    if cfg.task == "retrieve":
        ids, texts = _documents(_required(cfg.index, "--task retrieve", "--index DOCS.txt (one document per line)"))
        index = VectorIndex(_embed(bundle, texts, f"documents of {cfg.index}"), cfg.search)
        log.info("retrieval index: %d documents, %s search", len(index), index.kind)
        return NearestTask(ids, index, topk)
    labels, centroids = _centroids(bundle, _required(cfg.labelled, "--task classify",
                                                     "--labelled LABELLED.tsv (LABEL<TAB>TEXT per line)"))
    return NearestTask(labels, VectorIndex(centroids, "exact"), topk)


def _required(path: Path | None, task: str, what: str) -> Path:
    if path is None:
        raise UsageError(f"{task} needs its texts", f"pass {what}")
    return path


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file; a one-line UsageError for a missing file or a non-UTF-8 line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}", "pass an existing UTF-8 text file") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append((number, line.decode("utf-8")))
        except UnicodeDecodeError:
            raise UsageError(f"{path} line {number} is not UTF-8", "re-encode the file as UTF-8 (iconv -t UTF-8)") \
                from None
    if not any(text.strip() for _, text in lines):
        raise UsageError(f"{path} holds no text", "give one text per line")
    return lines


def _documents(path: Path) -> tuple[list[str], list[str]]:
    """The documents of a one-per-line file and their ids (line numbers); empty lines are left out."""
    lines = _read_lines(path)
    kept = [(number, text) for number, text in lines if text.strip()]
    if len(kept) < len(lines):
        log.warning("--index %s: %d empty line(s) left out", path, len(lines) - len(kept))
    return [str(number) for number, _ in kept], [text for _, text in kept]


def _centroids(bundle, path: Path) -> tuple[list[str], np.ndarray]:
    """The labels of a ``LABEL<TAB>TEXT`` file and the normalized mean embedding of each label's texts."""
    labels, texts = [], []
    for number, line in _read_lines(path):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip() or not text.strip():
            raise UsageError(f"{path} line {number} is not LABEL<TAB>TEXT", "give one labelled text per line")
        labels.append(label.strip())
        texts.append(text)
    embeddings = _embed(bundle, texts, f"labelled texts of {path}")
    names = sorted(set(labels))
    means = np.stack([embeddings[[i for i, label in enumerate(labels) if label == name]].mean(axis=0)
                      for name in names])
    log.info("classes: %d labels from %d texts", len(names), len(texts))
    return names, means / np.linalg.norm(means, axis=1, keepdims=True)


def _embed(bundle, texts: list[str], what: str) -> np.ndarray:
    """Embed texts with the bundle's float encoder, logging progress on a long corpus."""
    from edgekit.runtime import open_device_runner
    from edgekit.text import Embedder, TextSpec, Tokenizer

    runner = open_device_runner(bundle.path / TextSpec.from_bundle(bundle).float_encoder, runtime="onnxruntime")
    encoder = Embedder(Tokenizer.from_bundle(bundle), runner.run)
    parts = []
    for start in range(0, len(texts), EMBED_CHUNK):
        parts.append(encoder.embed(texts[start:start + EMBED_CHUNK]))
        if len(texts) > EMBED_CHUNK:
            log.info("embedding the %s: %d/%d", what, min(start + EMBED_CHUNK, len(texts)), len(texts))
    return np.concatenate(parts).astype(np.float32)
