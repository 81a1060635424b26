"""STS Benchmark pairs and the teacher's sentence embeddings: what the text re-encoders train and are judged on.

    ../shared/data/sts-b/sts-{train,dev,test}.csv ─► StsSplit (sentence pairs, gold 0-5 scores)
    sentence-transformers folder ─► embed(sentences) ─► float32 [N, D], L2-normalized (cached in a .npz if asked)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.converters.text_data import spearman  # noqa: F401 - the one Spearman, re-exported for the re-encoders
from edgekit.errors import UsageError

__all__ = ["StsSplit", "read_sts", "sts_folder", "spearman", "embed_sentences", "model_sha256"]


@dataclass(frozen=True)
class StsSplit:
    """One STS-B split: pairs of sentences, their gold similarity (0-5) and the source each pair came from
    (file and year, e.g. ``deft-forum-2014``: what a genre-held-out validation splits on)."""

    first: list[str]
    second: list[str]
    scores: np.ndarray
    groups: list[str] = field(default_factory=list)

    @property
    def sentences(self) -> list[str]:
        """Every distinct sentence of the split, in first-seen order (what gets embedded once)."""
        return list(dict.fromkeys(self.first + self.second))


def sts_folder(data: str | Path | None = None) -> Path:
    """The STS-B folder: ``data`` if given, else ``$EDGEKIT_DATA/sts-b`` (default ``../shared/data/sts-b``)."""
    return Path(data) if data is not None else Path(os.environ.get("EDGEKIT_DATA", "../shared/data")) / "sts-b"


def read_sts(folder: str | Path, split: str) -> StsSplit:
    """Read ``sts-<split>.csv``: tab-separated genre, file, year, id, score, sentence1, sentence2 (rows may carry
    extra trailing fields, which are ignored). Quotes are not special: the sentences contain bare ``"``."""
    path = Path(folder) / f"sts-{split}.csv"
    if not path.is_file():
        raise UsageError(f"no STS-B {split} split at {path}", "pass --data FOLDER holding sts-train/dev/test.csv")
    first, second, scores, groups = [], [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise UsageError(f"{path}:{number} has {len(fields)} tab-separated fields, not 7",
                             "pass the original STS-B files")
        scores.append(float(fields[4]))
        groups.append(f"{fields[1]}-{fields[2]}")
        first.append(fields[5])
        second.append(fields[6])
    return StsSplit(first, second, np.asarray(scores, np.float64), groups)


def model_sha256(model_dir: str | Path) -> str:
    """A hash of a model folder's weights and configuration (every file, by relative path), naming the teacher."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def embed_sentences(model_dir: str | Path, sentences: list[str], cache: str | Path | None = None,
                    batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The teacher's L2-normalized float32 embeddings of ``sentences`` (sentence-transformers, offline, CPU).

    With ``cache`` the result is kept in that .npz, keyed by the sentences, and reused when they match."""
    if cache is not None and Path(cache).is_file():
        stored = np.load(cache, allow_pickle=False)
        if list(stored["sentences"]) == list(sentences):
            return stored["embeddings"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(sentences, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=progress).astype(np.float32)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, sentences=np.asarray(sentences), embeddings=vectors)
    return vectors
