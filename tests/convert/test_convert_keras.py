"""Keras → rpi bundle end to end: files, manifest, wire quantization, parity, report, CLI."""

from __future__ import annotations

import json

import numpy as np

from edgekit.bundle.manifest import Bundle
from edgekit.runtime import open_device_runner, open_server_runner
from edgekit.wire.encoder import WireEncoder


def test_bundle_layout_and_manifest(rpi_bundle):
    b = Bundle.load(rpi_bundle.bundle_path)
    assert {(m.target, m.runtime) for m in b.device_models} == {("rpi", "tflite"), ("rpi", "onnx")}
    assert b.input.shape == (8, 8, 1) and b.input.name == "image"
    assert b.code.shape == (4, 4, 4) and b.code.dtype == "int8"
    assert b.output.labels == [f"digit-{i}" for i in range(10)]
    assert b.server_model.path.name == "server_fp32.onnx"
    for name in ("manifest.json", "report.md", "report.json"):
        assert (b.path / name).is_file()
    provenance = b.manifest["provenance"]
    assert provenance["command"] == "pytest" and provenance["libraries"]["onnxruntime"]
    assert b.manifest["targets"]["rpi"]["profile"]["name"] == "rpi"
    assert b.manifest["code"]["bytes_per_sample"] == 64


def test_tflite_and_onnx_send_the_same_wire_quantization(rpi_bundle, digits_keras):
    b = Bundle.load(rpi_bundle.bundle_path)
    wire = b.manifest["code"]["wire_quant"]
    x = np.load(digits_keras.test)["x"][:50]
    codes = {}
    for dev in b.device_models:
        runner = open_device_runner(dev.path, runtime="onnxruntime" if dev.runtime == "onnx" else None,
                                    code_quant=dev.code_quant)
        assert runner.code_quant == (wire["scale"], wire["zero_point"])
        codes[dev.runtime] = runner.run(x)
        assert codes[dev.runtime].dtype == np.int8
    # Two runtimes, one wire format: the codes differ at most by rounding on a few elements.
    diff = np.abs(codes["tflite"].astype(int) - codes["onnx"].astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.2


def test_deployed_path_matches_float_model(rpi_bundle, digits_keras):
    b = Bundle.load(rpi_bundle.bundle_path)
    data = np.load(digits_keras.test)
    dev = b.device_model(runtime="tflite")
    device, server = open_device_runner(dev.path), open_server_runner(b.server_model.path)
    scale, zero_point = device.code_quant
    y = server.run((device.run(data["x"]).astype(np.float32) - zero_point) * scale)
    y_float = digits_keras.model.predict(data["x"], verbose=0)
    assert np.mean(y.argmax(1) == y_float.argmax(1)) >= 0.97
    assert np.mean(y.argmax(1) == data["y"]) >= 0.85


def test_report_fields(rpi_bundle):
    report = json.loads((rpi_bundle.bundle_path / "report.json").read_text())
    assert report == json.loads(json.dumps(rpi_bundle.report))
    assert report["passed"] is rpi_bundle.passed is True
    assert report["bundle_id"] == Bundle.load(rpi_bundle.bundle_path).bundle_id
    for row in report["models"]:
        assert row["top1_agreement"] >= 0.99
        assert row["accuracy_float"] > 0.85 and abs(row["accuracy_drop_points"]) < 3
        assert row["code_sqnr_db"] > 20
        assert row["bytes"] > 0 and row["float_bytes"] > 0
        lat = row["latency"]
        assert lat["int8"]["median_ms"] > 0 and lat["int8"]["p95_ms"] >= lat["int8"]["median_ms"]
        assert lat["float_over_int8"] > 0
    md = (rpi_bundle.bundle_path / "report.md").read_text()
    assert "PASSED" in md and "device/rpi/device_int8.tflite" in md
    assert "## Target compilers" not in md  # CPU-only targets: no empty compiler section


def test_wire_section_is_filled_and_reported_per_codec(rpi_bundle):
    wire = Bundle.load(rpi_bundle.bundle_path).wire
    assert wire["default_codec"] in wire["codecs"]
    stats = rpi_bundle.report["wire"]["codecs"]
    assert set(stats) == {"raw", "zstd", "ans"}
    md = (rpi_bundle.bundle_path / "report.md").read_text()
    for name, row in stats.items():
        assert f"| {name} | {row['mean_frame_bytes']:.1f} |" in md
    assert "cross-entropy under the stored ans prior" in md


def test_report_prices_the_frames_the_agent_sends(rpi_bundle, digits_keras):
    """The agent sends version-2 frames: the report's bytes are theirs (not the 64-byte version-1 header)."""
    bundle = Bundle.load(rpi_bundle.bundle_path)
    report = rpi_bundle.report["wire"]
    assert report["frame_version"] == 2 and 17 <= report["header_bytes"] <= 20
    for row in report["codecs"].values():
        assert row["mean_frame_bytes"] <= row["mean_payload_bytes"] + 20
    encoder = WireEncoder.from_bundle(bundle)
    assert encoder.frame_version == 2
    golden = bundle.golden
    codes = golden.arrays[next(iter(golden.device.values()))]
    scale, zero = bundle.manifest["code"]["wire_quant"]["scale"], bundle.manifest["code"]["wire_quant"]["zero_point"]
    sent = np.mean([len(encoder.encode(c, scale, zero, seq=i, boot_id=1, timestamp_ns=0)) for i, c in enumerate(codes)])
    default = report["codecs"][report["default_codec"]]
    assert abs(sent - default["mean_frame_bytes"]) <= 0.25 * default["mean_frame_bytes"]  # other codes, same header


def test_cli_convert_json_and_inspect(run_cli, digits_keras, tmp_path):
    out = tmp_path / "b"
    code, stdout, stderr = run_cli("convert", digits_keras.model_path, "--split", "code", "--calib", digits_keras.calib,
                                   "--eval", digits_keras.test, "--target", "cpu", "--runtime", "tflite",
                                   "--latency-runs", "3", "-o", out, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["passed"] and [m["runtime"] for m in report["models"]] == ["tflite"]
    assert Bundle.load(out).manifest["provenance"]["command"].startswith("edgekit")
    code, stdout, _ = run_cli("inspect", out)
    assert code == 0 and "sha256 verified" in stdout and "cpu" in stdout
    code, stdout, _ = run_cli("inspect", out, "--json")
    assert json.loads(stdout)["bundle_id"] == report["bundle_id"]


def test_help_has_example(run_cli):
    for command in ("convert", "inspect"):
        code, stdout, _ = run_cli(command, "--help")
        assert code == 0 and "Example:" in stdout


def test_list_targets(run_cli):
    code, stdout, _ = run_cli("convert", "--calib", "x", "-o", "y", "--list-targets")
    assert code == 0
    for name in ("cpu", "rpi", "coral-edgetpu", "ethos-u55-128", "ethos-u65-256", "imx8mp"):
        assert name in stdout


def test_debug_layers_and_server_precisions(digits_keras, tmp_path):
    from edgekit.converters import convert

    result = convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib, eval=digits_keras.test,
                     targets=["rpi"], output=tmp_path / "dbg", debug_layers=True, server_precision="fp16",
                     latency_runs=0)
    layers = result.report["debug_layers"]
    assert layers["tflite"] and layers["onnx"]
    assert all(row["rmse_over_scale"] >= 0 for row in layers["tflite"])
    assert Bundle.load(result.bundle_path).server_model.precision == "fp16"
    assert result.report["models"][0]["top1_agreement"] >= 0.97
    int8 = convert(model=digits_keras.model_path, split="code", calib=digits_keras.calib, eval=digits_keras.test,
                   targets=["cpu"], runtime="onnx", output=tmp_path / "int8", server_precision="int8", latency_runs=0)
    assert (int8.bundle_path / "server" / "server_int8.onnx").is_file()
    assert int8.report["models"][0]["top1_agreement"] >= 0.95


def test_parity_failure_writes_a_failing_bundle(run_cli, digits_keras, tmp_path):
    # Calibrating on images 50x darker than the eval set clips the eval codes: parity must fail loudly.
    dark = tmp_path / "dark.npz"
    np.savez(dark, x=np.load(digits_keras.calib)["x"] * 0.02)
    out = tmp_path / "failing"
    code, _, stderr = run_cli("convert", digits_keras.model_path, "--split", "code", "--calib", dark,
                              "--eval", digits_keras.test, "--latency-runs", "0", "--runtime", "tflite", "-o", out)
    assert code == 3
    assert "below --min-agreement" in stderr and "look at layers" in stderr and "Traceback" not in stderr
    b = Bundle.load(out)
    assert b.manifest["parity"]["passed"] is False
    report = json.loads((out / "report.json").read_text())
    assert report["layers_to_check"] and report["debug_layers"]["tflite"]
    assert "FAILED" in (out / "report.md").read_text()
