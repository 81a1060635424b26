"""The bundle: a directory whose ``manifest.json`` is the contract between convert, device and server.

    bundle/manifest.json ──► read checked (bundle.files) ──► manifest.sig verified (bundle.signing)
                         ──► JSON Schema (edgekit/bundle/schemas/manifest.schema.json)
                         ──► every listed file checked (path, regular file, size, sha256); no unlisted file
                         ──► bundle_id recomputed from device/ + server/
                         ──► Bundle: typed accessors (input, code, output, device_models, server_model, wire)

Loading fails with a one-line :class:`BundleError` rather than handing a device a model that differs from
the one the parity report measured. The format is documented field by field in ``docs/bundle.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from edgekit.bundle.files import (BESIDE_MANIFEST, CODEC_FILE_PARAMS, MANIFEST_NAME, SIGNATURE_NAME,
                                  check_bundle_path, check_listing, read_bundle_file)
from edgekit.bundle.signing import (SignatureStatus, TrustPolicy, check_signature, key_id, load_private_key,
                                    sign_manifest)
from edgekit.errors import BundleError
from edgekit.preprocess import Preprocessing


__all__ = [
    "MANIFEST_NAME",
    "FORMAT_VERSION",
    "Bundle",
    "InputSpec",
    "CodeSpec",
    "OutputSpec",
    "DeviceModel",
    "ServerModel",
    "Golden",
    "bundle_id",
    "file_entry",
    "sha256_file",
    "validate_manifest",
    "write_manifest",
    "sign_bundle",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"
# Runner runtime names (edgekit.runtime) → the manifest's runtime family.
_RUNTIME_FAMILY = {"tflite": "tflite", "litert": "tflite", "tflite-runtime": "tflite", "tensorflow": "tflite",
                   "onnx": "onnx", "onnxruntime": "onnx"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    preprocessing: Preprocessing | None


@dataclass(frozen=True)
class CodeSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class OutputSpec:
    name: str
    shape: tuple[int, ...]
    labels: list[str] | None


@dataclass(frozen=True)
class DeviceModel:
    """One runnable device half. ``code_quant`` is the model's own output (scale, zero_point), in
    ``code_dtype`` (uint8 for uint8-I/O targets; runners shift those to int8)."""

    target: str
    runtime: str
    path: Path
    code_quant: tuple[float, int]
    input_dtype: str
    code_dtype: str = "int8"


@dataclass(frozen=True)
class ServerModel:
    path: Path
    precision: str


@dataclass(frozen=True)
class Golden:
    """The bundle's golden vectors (``manifest["golden"]``, written by convert, checked by edgekit.selftest).

    ``device`` maps a device model's bundle-relative path to the array of the int8 codes it produced;
    ``server`` names the codes given to the server half, their quantization and its outputs.
    ``read`` returns the ``.npz`` bytes through the bundle's checked reader.
    """

    path: Path
    samples: int
    inputs: str
    device: dict[str, str]
    server: dict[str, Any]
    tolerance: dict[str, float]
    read: Callable[[], bytes] = field(repr=False, compare=False)

    @cached_property
    def arrays(self) -> dict[str, Any]:
        """Every array of the golden ``.npz`` (no pickles), read once per bundle load."""
        import numpy as np

        with np.load(io.BytesIO(self.read()), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest's ``files`` entry for one file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def bundle_id(files: dict[str, dict[str, Any]]) -> str:
    """sha256 of the sorted ``"<path>:<sha256>\\n"`` lines of the device and server model files.

    Derived from the halves only, so re-running parity or editing a report never changes the id, while
    any change to what the device or server executes does.
    """
    lines = [f"{path}:{entry['sha256']}\n" for path, entry in sorted(files.items())
             if path.startswith(("device/", "server/"))]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise BundleError naming the first field that breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        while error.context:  # descend into oneOf/anyOf to the field that is actually wrong
            error = jsonschema.exceptions.best_match(error.context)
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise BundleError(f"manifest field {where}: {error.message[:160]}",
                          "re-create the bundle with edgekit convert (see docs/bundle.md)")


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> Path:
    """Fill ``files`` and ``bundle_id`` from the files under ``root``, validate, write ``manifest.json``.

    Every file present except the manifest and its signature is listed, so ``Bundle.load`` can prove nothing was
    added, swapped or truncated on the way to the device.
    """
    root = Path(root)
    files = {
        path.relative_to(root).as_posix(): file_entry(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in BESIDE_MANIFEST
    }
    manifest = {**manifest, "files": files, "bundle_id": bundle_id(files)}
    validate_manifest(manifest)
    target = root / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, target)
    return target


class Bundle:
    """A loaded, verified bundle. Construct with :meth:`Bundle.load`."""

    def __init__(self, path: Path, manifest: dict[str, Any], signature: SignatureStatus | None = None):
        self.path = path
        self.manifest = manifest
        self.signature = signature

    @classmethod
    def load(cls, path: str | Path, verify_hashes: bool = True, trust: TrustPolicy | None = None) -> "Bundle":
        """Read ``path/manifest.json``, check its signature under ``trust`` (see :mod:`edgekit.bundle.signing`; a
        bad signature is refused even without, a missing one whenever ``trust`` is given), validate it, and verify
        every file and the bundle id. A signed bundle loaded without ``trust`` is logged as such (one WARNING):
        its signature was checked against the key it names itself, which anyone can make."""
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not os.path.lexists(manifest_path):
            raise BundleError(f"{root} is not a bundle: {MANIFEST_NAME} not found",
                              "pass the directory written by edgekit convert")
        manifest_bytes = read_bundle_file(root, MANIFEST_NAME)
        has_signature = os.path.lexists(root / SIGNATURE_NAME)
        signature = check_signature(manifest_bytes, read_bundle_file(root, SIGNATURE_NAME) if has_signature else None,
                                    trust)
        try:
            manifest = json.loads(manifest_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deep
            raise BundleError(f"cannot read {manifest_path}: {err}",
                              "re-create the bundle with edgekit convert") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{manifest_path} is not a JSON object", "re-create the bundle with edgekit convert")
        if manifest.get("version") not in (None, FORMAT_VERSION):
            raise BundleError(f"bundle format version {manifest.get('version')} is not supported (this edgekit reads "
                              f"version {FORMAT_VERSION})", "upgrade edgekit or re-convert the model")
        validate_manifest(manifest)
        bundle = cls(root, manifest, signature)
        if verify_hashes:
            bundle.verify()
        if signature is not None and not signature.trusted:  # after the checks: a refused bundle gets one line
            log.warning("bundle %s is signed by key %s, but the signature was not checked against a trusted key and "
                        "proves nothing: pass --trust-key with the signer's public key", root, signature.key_id)
        return bundle

    def verify(self) -> None:
        """Check every listed file (path, regular file, size, sha256), that nothing unlisted sits beside
        them, and that the bundle id matches the model files."""
        for rel, entry in self.manifest["files"].items():
            read_bundle_file(self.path, rel, entry, keep=False)
        check_listing(self.path, self.manifest["files"])
        for where, rel in self._named_files():
            check_bundle_path(rel, where)
            if rel not in self.manifest["files"]:
                raise BundleError(f"{where} {rel} is not listed in the manifest's files", "re-create the bundle")
        if bundle_id(self.manifest["files"]) != self.manifest["bundle_id"]:
            raise BundleError("bundle_id does not match the device and server model files",
                              "re-create the bundle with edgekit convert")

    def _named_files(self) -> list[tuple[str, Any]]:
        """(manifest field, path) of every file the manifest names outside ``files``: models, golden vectors,
        target artifacts and codec artifacts (the params :data:`CODEC_FILE_PARAMS` marks as files)."""
        m = self.manifest
        named = [(f"device_models/{i}/path", d["path"]) for i, d in enumerate(m["device_models"])]
        named.append(("server_model/path", m["server_model"]["path"]))
        named += [("golden/path", m["golden"]["path"])] if "golden" in m else []
        named += [("text/tokenizer", m["text"]["tokenizer"]),
                  ("text/float_encoder/path", m["text"]["float_encoder"]["path"])] if "text" in m else []
        named += [(f"targets/{target}/artifacts", rel)
                  for target, spec in m["targets"].items() for rel in spec.get("artifacts", [])]
        for name, params in m["wire"].get("codecs", {}).items():
            if isinstance(params, dict):
                named += [(f"wire/codecs/{name}/{key}", params[key])
                          for key in CODEC_FILE_PARAMS.get(name, ()) if params.get(key)]
        return named

    def read(self, rel: str) -> bytes:
        """The bytes of bundle file ``rel`` (a manifest path), checked again against its ``files`` entry."""
        check_bundle_path(rel)  # an absolute or '..' path is named as such, not as merely "not listed"
        entry = self.manifest["files"].get(rel)
        if entry is None:
            raise BundleError(f"{rel} is named by the manifest but not listed in its files",
                              "re-create the bundle with edgekit convert")
        return read_bundle_file(self.path, rel, entry)

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def input(self) -> InputSpec:
        spec = self.manifest["input"]
        pre = spec.get("preprocessing")
        return InputSpec(spec["name"], tuple(spec["shape"]), spec["dtype"],
                         Preprocessing.from_dict(pre) if pre else None)

    @property
    def code(self) -> CodeSpec:
        spec = self.manifest["code"]
        return CodeSpec(spec["name"], tuple(spec["shape"]), spec["dtype"])

    @property
    def output(self) -> OutputSpec:
        spec = self.manifest["output"]
        return OutputSpec(spec["name"], tuple(spec["shape"]), spec.get("labels"))

    @property
    def device_models(self) -> list[DeviceModel]:
        return [
            DeviceModel(
                target=m["target"],
                runtime=m["runtime"],
                path=self.path / m["path"],
                code_quant=(float(m["code_quant"]["scale"]), int(m["code_quant"]["zero_point"])),
                input_dtype=m["input_dtype"],
                code_dtype=m["code_dtype"],
            )
            for m in self.manifest["device_models"]
        ]

    def device_model(self, target: str | None = None, runtime: str | None = None) -> DeviceModel:
        """The device model for ``target``/``runtime`` (either may be None: first match, TFLite first).

        ``runtime`` accepts the manifest's families (``tflite``, ``onnx``) and the runner names of
        :mod:`edgekit.runtime` (``litert``, ``tflite-runtime``, ``tensorflow``, ``onnxruntime``).
        """
        family = _RUNTIME_FAMILY.get(runtime, runtime) if runtime else None
        models = sorted(self.device_models, key=lambda m: m.runtime != "tflite")
        matches = [m for m in models if (target is None or m.target == target) and (family is None or m.runtime == family)]
        if not matches:
            have = ", ".join(f"{m.target}/{m.runtime}" for m in self.device_models)
            wanted = "/".join(str(v) for v in (target or "any target", family or "any runtime"))
            raise BundleError(f"bundle has no device model for {wanted}", f"available: {have}")
        return matches[0]

    @property
    def server_model(self) -> ServerModel:
        spec = self.manifest["server_model"]
        return ServerModel(self.path / spec["path"], spec["precision"])

    @cached_property
    def golden(self) -> Golden | None:
        """The golden vectors, or None for bundles written before convert stored them."""
        spec = self.manifest.get("golden")
        if spec is None:
            return None
        return Golden(self.path / spec["path"], spec["samples"], spec["inputs"],
                      {d["path"]: d["codes"] for d in spec["device"]}, spec["server"], spec["tolerance"],
                      lambda: self.read(spec["path"]))

    @property
    def wire(self) -> dict[str, Any]:
        return self.manifest["wire"]

    @property
    def targets(self) -> list[str]:
        return list(self.manifest["targets"])


def sign_bundle(bundle: str | Path, private_key: str | Path) -> tuple[Path, str]:
    """Verify the bundle, then write ``manifest.sig`` for its manifest; returns (signature path, key id).

    A previous signature is removed first: re-signing is how a bundle gets a new signer or an edited manifest.
    """
    key = load_private_key(private_key)
    root = Path(bundle)
    (root / SIGNATURE_NAME).unlink(missing_ok=True)
    Bundle.load(root)  # never sign a bundle that would be refused anyway
    target = root / SIGNATURE_NAME
    tmp = target.with_name(SIGNATURE_NAME + ".tmp")
    tmp.write_bytes(sign_manifest(read_bundle_file(root, MANIFEST_NAME), key))
    os.replace(tmp, target)
    return target, key_id(key.public_key())
