"""Bundle manifest: schema, sha256 verification, bundle id, typed accessors, `edgekit inspect`.

Bundles here are written with ``write_manifest`` around small real files, so these tests need no converter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bundle.manifest import Bundle, bundle_id, validate_manifest, write_manifest
from edgekit.bundle.commands import inspect_command
from edgekit.errors import BundleError
from edgekit.preprocess import Preprocessing


def _manifest() -> dict:
    quant = {"scale": 0.05, "zero_point": -128}
    return {
        "format": "edgekit-bundle", "version": 1, "bundle_id": "0" * 64, "created": "2025-01-01T00:00:00+00:00",
        "model": {"name": "m", "source": "m.keras", "source_format": "keras", "split": "code"},
        "input": {"name": "image", "shape": [28, 28, 1], "dtype": "float32",
                  "preprocessing": Preprocessing(size=(28, 28), color="grayscale").to_dict()},
        "code": {"name": "code", "shape": [7, 7, 4], "dtype": "int8", "wire_quant": quant, "bytes_per_sample": 196},
        "output": {"name": "probs", "shape": [10], "labels": [str(i) for i in range(10)]},
        "device_models": [
            {"target": "rpi", "runtime": "tflite", "path": "device/rpi/device_int8.tflite", "input_dtype": "int8",
             "input_quant": {"scale": 0.0039, "zero_point": -128}, "code_dtype": "int8", "code_quant": quant},
            {"target": "rpi", "runtime": "onnx", "path": "device/rpi/device_int8.onnx", "input_dtype": "float32",
             "input_quant": None, "code_dtype": "int8", "code_quant": quant},
            {"target": "coral-edgetpu", "runtime": "tflite", "path": "device/coral-edgetpu/device_int8.tflite",
             "input_dtype": "uint8", "input_quant": {"scale": 0.0039, "zero_point": 0}, "code_dtype": "uint8",
             "code_quant": {"scale": 0.05, "zero_point": 0}},
        ],
        "server_model": {"path": "server/server_fp32.onnx", "precision": "fp32", "input_name": "code",
                         "output_name": "probs"},
        "targets": {"rpi": {"profile": {"name": "rpi", "runtimes": ["tflite", "onnx"]}, "artifacts": [],
                            "compiler_report": None}},
        "wire": {"default_codec": "raw", "codecs": {"raw": {}}, "limits": {}},
        "files": {},
        "parity": {"passed": True, "min_agreement": 0.99, "samples": 100, "worst_agreement": 0.995},
        "provenance": {"edgekit": "0.1.0", "libraries": {"numpy": "2"}, "command": "edgekit convert ...", "seed": 0},
    }


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    for rel, data in {"device/rpi/device_int8.tflite": b"tflite-bytes", "device/rpi/device_int8.onnx": b"onnx",
                      "device/coral-edgetpu/device_int8.tflite": b"coral", "server/server_fp32.onnx": b"server",
                      "wire/zstd.dict": b"dict", "report.md": b"# report"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    write_manifest(root, _manifest())
    return root


def test_load_and_accessors(bundle_dir):
    b = Bundle.load(bundle_dir)
    assert b.path == bundle_dir and len(b.bundle_id) == 64
    assert b.input.shape == (28, 28, 1) and b.input.preprocessing.color == "grayscale"
    assert b.code.shape == (7, 7, 4) and b.code.dtype == "int8"
    assert b.output.labels[3] == "3"
    assert b.server_model.path == bundle_dir / "server/server_fp32.onnx" and b.server_model.precision == "fp32"
    assert b.wire["default_codec"] == "raw"
    assert len(b.manifest["files"]) == 6


def test_device_model_best_match(bundle_dir):
    b = Bundle.load(bundle_dir)
    assert (b.device_model().target, b.device_model().runtime) == ("rpi", "tflite")
    assert b.device_model(runtime="onnxruntime").path.name == "device_int8.onnx"
    assert b.device_model(runtime="litert").runtime == "tflite"
    coral = b.device_model("coral-edgetpu")
    assert coral.code_quant == (0.05, 0) and coral.code_dtype == "uint8" and coral.input_dtype == "uint8"
    with pytest.raises(BundleError, match="no device model for coral-edgetpu/onnx.*available: rpi/tflite"):
        b.device_model("coral-edgetpu", "onnx")


def test_bundle_id_depends_only_on_model_files(bundle_dir):
    files = Bundle.load(bundle_dir).manifest["files"]
    expected = bundle_id({k: v for k, v in files.items() if k.startswith(("device/", "server/"))})
    assert Bundle.load(bundle_dir).bundle_id == expected
    lines = "".join(f"{p}:{files[p]['sha256']}\n" for p in sorted(files) if p.startswith(("device/", "server/")))
    import hashlib

    assert expected == hashlib.sha256(lines.encode()).hexdigest()
    (bundle_dir / "report.md").write_text("edited")
    write_manifest(bundle_dir, json.loads((bundle_dir / "manifest.json").read_text()))
    assert Bundle.load(bundle_dir).bundle_id == expected  # reports do not change the id
    (bundle_dir / "server/server_fp32.onnx").write_bytes(b"other server")
    write_manifest(bundle_dir, json.loads((bundle_dir / "manifest.json").read_text()))
    assert Bundle.load(bundle_dir).bundle_id != expected


def test_tampered_file_is_refused(bundle_dir):
    (bundle_dir / "device/rpi/device_int8.tflite").write_bytes(b"tflite-bytEs")
    with pytest.raises(BundleError, match="device/rpi/device_int8.tflite does not match its sha256"):
        Bundle.load(bundle_dir)
    assert Bundle.load(bundle_dir, verify_hashes=False).code.shape == (7, 7, 4)


def test_missing_file_is_refused(bundle_dir):
    (bundle_dir / "wire/zstd.dict").unlink()
    with pytest.raises(BundleError, match="bundle file wire/zstd.dict is missing"):
        Bundle.load(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="manifest.json not found"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.load(tmp_path)


def test_forged_bundle_id_is_refused(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["bundle_id"] = "f" * 64
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle_id does not match"):
        Bundle.load(bundle_dir)


@pytest.mark.parametrize("path, value, field", [
    (("code", "dtype"), "float32", "code/dtype"),
    (("code", "wire_quant", "scale"), 0, "code/wire_quant/scale"),
    (("device_models", 0, "runtime"), "tensorrt", "device_models/0/runtime"),
    (("device_models", 0, "path"), "../etc/passwd", "device_models/0/path"),
    (("version",), 2, "version"),
    (("input", "preprocessing", "layout"), "nwhc", "input/preprocessing/layout"),
])
def test_schema_violations_name_the_field(path, value, field):
    manifest = _manifest()
    manifest["files"] = {"server/server_fp32.onnx": {"sha256": "a" * 64, "bytes": 1}}
    validate_manifest(manifest)
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BundleError, match=f"manifest field {field}"):
        validate_manifest(manifest)


def test_schema_is_valid_json_schema():
    import jsonschema

    from edgekit.bundle.manifest import SCHEMA_PATH

    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_inspect_prints_and_verifies(bundle_dir):
    result = CliRunner().invoke(inspect_command, [str(bundle_dir)])
    assert result.exit_code == 0, result.output
    assert "code       code (7, 7, 4) int8 = 196 B/sample" in result.output
    assert "6 files, all sha256 verified" in result.output
    as_json = CliRunner().invoke(inspect_command, [str(bundle_dir), "--json"])
    assert json.loads(as_json.output)["bundle_id"] == Bundle.load(bundle_dir).bundle_id
    (bundle_dir / "server/server_fp32.onnx").write_bytes(b"x")
    broken = CliRunner().invoke(inspect_command, [str(bundle_dir)])
    assert broken.exit_code != 0 and isinstance(broken.exception, BundleError)
