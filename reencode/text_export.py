"""Write a text re-encoder as the artifact convert reads, and run its ONNX halves.

    OUT/                         a copy of the sentence-transformers folder, unchanged
    OUT/edgekit_reencoder/
        encoder.onnx             embedding float32 [batch, D] ─► code uint8 [batch, P]
        decoder.onnx             code uint8 [batch, P] (+ valid_bytes int64 [1], nested) ─► embedding [batch, D]
        reencoder.json           format, version, method, payload_bytes, dims, prefixes, settings, teacher, validation
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit.converters.text_source import REENCODER_DIR as FOLDER
from edgekit.errors import UsageError

from .text_codes import TextCodec
from .text_onnx import save_halves

__all__ = ["FOLDER", "FORMAT", "write_artifact", "add_validation", "OnnxHalves", "read_record"]

FORMAT = "edgekit-text-reencoder"


def write_artifact(model_dir: Path, out: Path, codec: TextCodec, record: dict[str, Any], force: bool) -> Path:
    """Copy ``model_dir`` to ``out`` and add ``edgekit_reencoder/`` (the halves and ``reencoder.json``)."""
    if out.exists():
        if not force:
            raise UsageError(f"output {out} already exists", "pass --force to replace it, or choose another --out")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns(FOLDER))
    folder = out / FOLDER
    folder.mkdir()
    dims = codec.encoder[0].weight.shape[0]
    save_halves(codec, dims, folder)
    doc = {"format": FORMAT, "version": 1, "payload_bytes": codec.payload_bytes, "dims": dims,
           "edgekit": edgekit.__version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           **record}
    if codec.prefixes:
        doc["prefixes"] = list(codec.prefixes)
    (folder / "reencoder.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return folder


def add_validation(folder: Path, validation: dict[str, Any]) -> None:
    """Add the figures measured through the written halves to the folder's reencoder.json."""
    path = folder / "reencoder.json"
    doc = json.loads(path.read_text())
    doc["validation"] = validation
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_record(folder: str | Path) -> dict[str, Any]:
    """``reencoder.json`` of a re-encoded model folder (or of its ``edgekit_reencoder/``), checked for its format."""
    folder = Path(folder)
    path = folder / "reencoder.json" if (folder / "reencoder.json").is_file() else folder / FOLDER / "reencoder.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the re-encoder record {path}: {err}", "re-run edgekit reencode") from None
    if doc.get("format") != FORMAT or doc.get("version") != 1:
        raise UsageError(f"{path} is not an {FORMAT} version 1 record", "re-run edgekit reencode")
    return doc


class OnnxHalves:
    """encoder.onnx and decoder.onnx of an artifact folder in ONNX Runtime (one thread: they are tiny)."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.nested = len(self.decoder.get_inputs()) == 2
        self.payload_bytes = int(self.decoder.get_inputs()[0].shape[1])

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self.encoder.run(["code"], {"embedding": np.asarray(embeddings, np.float32)})[0]

    def decode(self, code: np.ndarray, valid_bytes: int | None = None) -> np.ndarray:
        """Decode codes; a nested decoder is told how many bytes were sent (the rest of ``code`` is ignored)."""
        feeds: dict[str, Any] = {"code": np.asarray(code, np.uint8)}
        if self.nested:
            feeds["valid_bytes"] = np.array([self.payload_bytes if valid_bytes is None else valid_bytes], np.int64)
        elif valid_bytes not in (None, self.payload_bytes):
            raise UsageError(f"this decoder takes whole {self.payload_bytes}-byte codes, not {valid_bytes}-byte prefixes",
                             "re-encode with --method nested for codes whose prefixes decode")
        return self.decoder.run(["embedding"], feeds)[0]
