"""The re-encoder's record in the model file: method, settings, teacher hash, and (entropic) the learned prior.

convert reads it back with :func:`read_metadata` and copies it into the bundle manifest's ``model`` section,
so a bundle says how its re-encoder was made. Where it lives:

    .keras  an extra ``edgekit_reencode.json`` entry in the model's zip (Keras ignores entries it does not know)
    .onnx   ``metadata_props`` key ``edgekit.reencode`` (a JSON string)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

__all__ = ["METADATA_KEY", "KERAS_ENTRY", "read_metadata", "write_keras_metadata", "set_onnx_metadata"]

METADATA_KEY = "edgekit.reencode"
KERAS_ENTRY = "edgekit_reencode.json"


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
    """The record of a model made by ``edgekit reencode``, or None for any other model (or a SavedModel)."""
    path = Path(path)
    if path.suffix == ".keras" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if KERAS_ENTRY not in archive.namelist():
                return None
            return _parse(archive.read(KERAS_ENTRY), path)
    if path.suffix == ".onnx" and path.is_file():
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return _parse(prop.value, path)
    return None


def _parse(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise UsageError(f"the re-encoder record in {path} is not JSON ({err})", "re-run edgekit reencode") from None
    if not isinstance(doc, dict) or "method" not in doc:
        raise UsageError(f"the re-encoder record in {path} has no method", "re-run edgekit reencode")
    return doc
