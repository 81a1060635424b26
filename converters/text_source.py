"""Sentence-encoder sources: a sentence-transformers / Hugging Face model folder, or the same folder holding
its ONNX export instead of weights (docs/convert.md, Text encoders).

    folder/modules.json           Transformer (path), Pooling (1_Pooling/config.json: mean or CLS), Normalize?
    folder/<transformer path>/    config.json, tokenizer.json, model.safetensors | onnx/model.onnx | model.onnx
    folder/sentence_bert_config.json   max_seq_length: the truncation length
    folder/edgekit_reencoder/     encoder.onnx, decoder.onnx, reencoder.json (edgekit reencode, optional)

Everything is read locally: nothing is fetched, whatever the folder's config names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

__all__ = ["TextSource", "is_text_model", "read_text_source", "REENCODER_DIR"]

REENCODER_DIR = "edgekit_reencoder"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_ONNX_EXPORTS = ("onnx/model.onnx", "model.onnx")
_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True)
class TextSource:
    """What convert needs from a text model folder. ``onnx`` is set when the folder holds an ONNX export
    (used instead of exporting the weights); ``reencoder`` is the ``edgekit_reencoder/`` folder, if any."""

    folder: Path
    transformer: Path
    tokenizer: Path
    onnx: Path | None
    max_length: int
    lowercase: bool
    pad_id: int
    pooling: str
    normalize: bool
    dims: int
    reencoder: Path | None

    @property
    def name(self) -> str:
        return self.folder.resolve().name


def is_text_model(path: str | Path | None) -> bool:
    """A folder that looks like a sentence-transformers or Hugging Face text model (not a SavedModel)."""
    if path is None:
        return False
    folder = Path(path)
    return folder.is_dir() and ((folder / "modules.json").is_file() or (folder / "tokenizer.json").is_file())


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read the {what} {path}: {err}", "give an intact sentence-transformers folder") from None


def _modules(folder: Path) -> dict[str, str]:
    """Module type (last dotted name: Transformer, Pooling, Normalize) -> its path inside the folder."""
    if not (folder / "modules.json").is_file():
        return {"Transformer": ""}  # a plain Hugging Face folder: CLS-less mean pooling is decided below
    return {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in _json(folder / "modules.json", "modules.json")}


def _pooling(folder: Path, modules: dict[str, str]) -> tuple[str, int | None]:
    if "Pooling" not in modules:
        return "mean", None
    config = _json(folder / modules["Pooling"] / "config.json", "pooling config")
    modes = [mode for key, mode in _POOLING.items() if config.get(key)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _POOLING]
    if len(modes) != 1 or others:
        raise UsageError(f"{folder}: pooling {', '.join(others) or 'of several modes'} is not supported",
                         "convert models with mean or CLS pooling")
    return modes[0], config.get("word_embedding_dimension")


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def read_text_source(path: str | Path) -> TextSource:
    """Read a text model folder; UsageError (one line) naming what is missing."""
    folder = Path(path)
    modules = _modules(folder)
    if "Transformer" not in modules:
        raise UsageError(f"{folder}/modules.json names no Transformer module", "give a sentence-transformers folder")
    transformer = folder / modules["Transformer"]
    tokenizer = transformer / "tokenizer.json"
    if not tokenizer.is_file():
        raise UsageError(f"{folder} has no tokenizer.json",
                         "save the model with a fast tokenizer (model.save(folder) in sentence-transformers >= 2)")
    weights, onnx = _first(transformer, _WEIGHTS), _first(transformer, _ONNX_EXPORTS)
    if weights is None and onnx is None:
        raise UsageError(f"{folder} holds no model: none of {', '.join(_WEIGHTS + _ONNX_EXPORTS)}",
                         "give the folder sentence-transformers saved (model.save) or its ONNX export")
    config = _json(transformer / "config.json", "model config") if (transformer / "config.json").is_file() else {}
    pooling, dims = _pooling(folder, modules)
    st_config = folder / "sentence_bert_config.json"
    max_length = int(_json(st_config, "sentence-transformers config").get("max_seq_length") or 512
                     ) if st_config.is_file() else 512
    max_length = min(max_length, int(config.get("max_position_embeddings", max_length)))
    tok = _json(tokenizer, "tokenizer")
    normalizer = tok.get("normalizer") or {}
    pad = (tok.get("padding") or {}).get("pad_id")
    if pad is None:
        pad = next((t["id"] for t in tok.get("added_tokens", []) if t.get("content") in ("[PAD]", "<pad>")), 0)
    reencoder = folder / REENCODER_DIR
    return TextSource(folder=folder, transformer=transformer, tokenizer=tokenizer,
                      onnx=onnx if weights is None else None, max_length=max_length,
                      lowercase=bool(normalizer.get("lowercase", False)), pad_id=int(pad), pooling=pooling,
                      normalize="Normalize" in modules, dims=int(dims or config.get("hidden_size", 0)),
                      reencoder=reencoder if reencoder.is_dir() else None)
