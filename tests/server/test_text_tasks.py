"""The text tasks' own logic on real SQLite, PostgreSQL and faiss: pairs completed in any order, across batches and
a receiver restart, each once; the exact and the HNSW search; one-line errors for missing or bad task files.
(The tasks with a real text bundle, through Mosquitto: tests/pipeline/test_text_e2e.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.server.text_tasks import (SimilarityTask, TextTaskConfig, VectorIndex, open_text_task, open_text_tasks,
                                      pair_cosine)
from support.running import db_rows


def _unit(rng, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pairs_complete_in_any_order_across_batches_and_a_restart(results_db):
    """On each results back end (SQLite and a real PostgreSQL)."""
    rng = np.random.default_rng(0)
    db = results_db
    embeddings = _unit(rng, 12, 16)  # 6 pairs of one boot: seq 2k and 2k+1
    order = [int(i) for i in rng.permutation(12)]
    batches = [order[:5], order[5:9], order[9:]]
    answers = {}
    for n, batch in enumerate(batches):
        task = SimilarityTask(db)  # a new receiver for each batch: what waits must be in the database
        keys = [("kiosk-1", 7, seq) for seq in batch]
        for seq, answer in zip(batch, task.answer("b" * 64, keys, embeddings[batch])):
            answers[seq] = answer
        if n == 1:  # a re-delivered frame: its pair's cosine once the partner is in, else it waits again
            seq = batch[0]
            (again,) = task.answer("b" * 64, keys[:1], embeddings[[seq]])
            partner_in = order.index(seq ^ 1) < 9
            assert again.score == (pair_cosine(embeddings[seq & ~1], embeddings[seq | 1]) if partner_in else 0.0)
        task.close()
    expected = {k: pair_cosine(embeddings[2 * k], embeddings[2 * k + 1]) for k in range(6)}
    stored = dict(db_rows(db, "SELECT pair, cosine FROM text_pairs WHERE device = 'kiosk-1' AND boot_id = 7"))
    assert stored == expected
    assert db_rows(db, "SELECT COUNT(*) FROM text_halves") == [(0,)]  # every half forgotten once paired
    for seq, answer in answers.items():
        pair, second = seq // 2, order.index(seq) > order.index(seq ^ 1)
        assert answer.index == pair
        if second:
            assert (answer.label, answer.score, answer.topk) == (f"pair {pair}", expected[pair],
                                                                 [(f"pair {pair}", expected[pair])])
        else:
            assert (answer.label, answer.score, answer.topk) == (f"pair {pair}: waiting", 0.0, [])


def test_pair_cosine_is_the_cosine_and_symmetric():
    a, b = np.array([3.0, 4.0, 0.0]), np.array([4.0, 3.0, 0.0])
    assert pair_cosine(a, b) == pair_cosine(b, a) == 0.96
    assert pair_cosine(a, -2 * a) == -1.0
    assert pair_cosine(a, np.zeros(3)) == 0.0


def test_exact_search_is_the_true_top_k_and_hnsw_agrees_with_it():
    rng = np.random.default_rng(1)
    docs, queries = _unit(rng, 3000, 32), _unit(rng, 50, 32)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    exact = VectorIndex(docs, "exact")
    scores, ids = exact.search(queries, 10)
    assert exact.kind == "exact" and np.array_equal(ids, truth)
    assert np.allclose(scores, np.take_along_axis(queries @ docs.T, truth, axis=1), atol=1e-6)
    hnsw = VectorIndex(docs, "hnsw")
    h_scores, h_ids = hnsw.search(queries, 10)
    recall = np.mean([len(set(h) & set(t)) / 10 for h, t in zip(h_ids, truth)])
    assert hnsw.kind == "hnsw" and recall >= 0.9, recall
    assert np.all(np.diff(h_scores, axis=1) <= 1e-6)  # best first
    small = VectorIndex(docs[:5], "auto")
    assert small.kind == "exact" and small.search(queries, 10)[1].shape == (50, 5)  # k above N: all of them


def test_a_text_bundle_without_a_task_or_its_file_is_one_line(tmp_path):
    bundle = SimpleNamespace(bundle_id="ab" * 32, path=tmp_path)
    with pytest.raises(UsageError, match="text bundle: the server needs a task") as err:
        open_text_task(TextTaskConfig(), bundle, tmp_path / "r.sqlite", 3)
    assert "--task similarity" in err.value.fix
    with pytest.raises(UsageError, match="--task retrieve needs its texts"):
        open_text_task(TextTaskConfig("retrieve"), bundle, tmp_path / "r.sqlite", 3)
    bad = tmp_path / "docs.txt"
    bad.write_bytes(b"fine\n\xff\xfe\n")
    with pytest.raises(UsageError, match="docs.txt line 2 is not UTF-8"):
        open_text_task(TextTaskConfig("retrieve", index=bad), bundle, tmp_path / "r.sqlite", 3)
    labelled = tmp_path / "labels.tsv"
    labelled.write_text("sport\ta match\nno label here\n")
    with pytest.raises(UsageError, match="labels.tsv line 2 is not LABEL<TAB>TEXT"):
        open_text_task(TextTaskConfig("classify", labelled=labelled), bundle, tmp_path / "r.sqlite", 3)
    with pytest.raises(UsageError, match="cannot read"):
        open_text_task(TextTaskConfig("retrieve", index=Path(tmp_path / "none.txt")), bundle, tmp_path / "r.sqlite", 3)


def test_a_task_for_image_bundles_only_is_said_and_ignored(tmp_path, caplog):
    image_bundle = SimpleNamespace(bundle_id="cd" * 32, path=tmp_path, manifest={"model": {}})
    assert open_text_tasks(TextTaskConfig("similarity"), [image_bundle], tmp_path / "r.sqlite", 3) == {}
    assert "--task similarity is for text bundles, and none is served: ignored" in caplog.text
