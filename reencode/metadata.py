"""The re-encoder's record in the model file: method, settings, teacher hash, and (entropic) the learned prior.

convert reads it back with :func:`read_metadata` and copies it into the bundle manifest's ``model`` section,
so a bundle says how its re-encoder was made. Where it lives:

    .keras  an extra ``edgekit_reencode.json`` entry in the model's zip (Keras ignores entries it does not know)
    .onnx   ``metadata_props`` key ``edgekit.reencode`` (a JSON string)
    .pt2    an extra file ``edgekit_reencode.json`` of the ``torch.export`` archive (``torch.export.save``'s
            ``extra_files``), with ``code_node``: the program's node that outputs the code
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path
from typing import Any

import edgekit
from edgekit.bundle.manifest import sha256_file
from edgekit.errors import UsageError

__all__ = ["METADATA_KEY", "KERAS_ENTRY", "CODE_NAME", "make_record", "read_metadata", "write_keras_metadata", "set_onnx_metadata"]

METADATA_KEY = "edgekit.reencode"
#: The name of the code in every re-encoded model (Keras layer, ONNX tensor, the ONNX export of a .pt2):
#: ``edgekit convert --split code`` cuts there.
CODE_NAME = "code"
KERAS_ENTRY = "edgekit_reencode.json"


def make_record(method: str, teacher: Path, split: str, settings: dict[str, Any],
            prior: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata every re-encoded model carries."""
    record = {"method": method, "split": split, "code": CODE_NAME, "teacher": teacher.name,
              "teacher_sha256": sha256_file(teacher), "settings": settings, "edgekit": edgekit.__version__,
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if prior is not None:
        record["prior"] = prior
    return record


def write_keras_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Add the record to a saved ``.keras`` zip."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(KERAS_ENTRY, json.dumps(metadata, indent=1, sort_keys=True))


def set_onnx_metadata(model: Any, metadata: dict[str, Any]) -> None:
    """Set (replace) the record in an ``onnx.ModelProto``'s ``metadata_props``."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The record of a model made by ``edgekit reencode``, or None for any other model, a SavedModel, or a file
    that cannot be read (the model loader then reports that properly)."""
    path = Path(path)
    readers = {".keras": _keras_entry, ".pt2": _keras_entry, ".onnx": _onnx_prop}
    text = readers[path.suffix](path) if path.suffix in readers else None
    return None if text is None else _parse(text, path)


def _keras_entry(path: Path) -> bytes | None:
    """The record in a zip archive: a ``.keras`` file's top-level entry, a ``.pt2`` archive's ``extra/`` one."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n == KERAS_ENTRY or n.endswith(f"/extra/{KERAS_ENTRY}")),
                        None)
            return None if name is None else archive.read(name)
    except (OSError, zipfile.BadZipFile):
        return None


def _onnx_prop(path: Path) -> str | None:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):
        return None
    return next((prop.value for prop in model.metadata_props if prop.key == METADATA_KEY), None)


def _parse(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise UsageError(f"the re-encoder record in {path} is not JSON ({err})", "re-run edgekit reencode") from None
    if not isinstance(doc, dict) or "method" not in doc:
        raise UsageError(f"the re-encoder record in {path} has no method", "re-run edgekit reencode")
    return doc
