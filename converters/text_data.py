"""Sentences for calibrating and checking a text encoder: a text file (one sentence per line) or an STS
Benchmark file (tab-separated: genre, file, year, id, score, sentence1, sentence2, extra fields ignored).

STS pairs give the task metric as well: Spearman correlation of the cosine similarity of each pair's two
embeddings with the gold score, the figure sentence encoders are compared by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import UsageError

__all__ = ["TextData", "read_text_data", "spearman"]


@dataclass(frozen=True)
class TextData:
    """``sentences``; for STS files also ``scores`` (one per pair: sentences 2i and 2i+1)."""

    sentences: list[str]
    scores: np.ndarray | None
    source: str

    @property
    def pairs(self) -> bool:
        return self.scores is not None

    def split(self, fraction: float) -> tuple[TextData, TextData]:
        """(first part, held-out last ``fraction``), pairs kept whole."""
        step = 2 if self.pairs else 1
        cut = step * max(1, int(len(self.sentences) // step * (1 - fraction)))
        scores = self.scores
        return (TextData(self.sentences[:cut], None if scores is None else scores[: cut // 2], self.source),
                TextData(self.sentences[cut:], None if scores is None else scores[cut // 2 :], self.source))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})",
                         "save the sentences as UTF-8, one per line") from None


def _sts(path: Path, lines: list[str]) -> tuple[list[str], np.ndarray]:
    sentences, scores = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        try:
            score = float(fields[4])
        except (IndexError, ValueError):
            raise UsageError(f"{path} line {number} is not an STS Benchmark row (genre, file, year, id, score, "
                             "sentence1, sentence2, tab-separated)", "give an STS-B .csv, or a .txt file with one "
                             "sentence per line") from None
        if len(fields) < 7 or not fields[5].strip() or not fields[6].strip():
            raise UsageError(f"{path} line {number} lacks a sentence pair", "fix or drop the line")
        sentences += [fields[5], fields[6]]
        scores.append(score)
    return sentences, np.asarray(scores, np.float64)


def read_text_data(path: str | Path, role: str, limit: int, rng: np.random.Generator) -> TextData:
    """At most ``limit`` sentences (a random subset, pairs kept whole) of a .txt or STS .csv/.tsv file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{role} file {path} not found", "give a .txt file (one sentence per line) or an STS-B .csv")
    lines = _read_lines(path)
    if path.suffix in (".csv", ".tsv"):
        sentences, scores = _sts(path, lines)
        keep = np.sort(rng.permutation(len(scores))[: max(1, limit // 2)])
        return TextData([s for i in keep for s in sentences[2 * i : 2 * i + 2]], scores[keep], str(path))
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        raise UsageError(f"{role} file {path} holds no sentence", "give one sentence per line")
    keep = np.sort(rng.permutation(len(sentences))[:limit])
    return TextData([sentences[i] for i in keep], None, str(path))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays."""
    return float(np.corrcoef(_ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64)))[0, 1])
