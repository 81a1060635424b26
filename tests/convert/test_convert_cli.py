"""``edgekit convert`` CLI behaviour: --list-targets alone, missing options as one line, histogram calibration
with any sample count and valid --json, progress lines on a stderr that is not a terminal."""

from __future__ import annotations

import json

import numpy as np

from edgekit.converters.targets import list_targets, load_target


def test_list_targets_needs_no_other_option(run_cli):
    code, stdout, stderr = run_cli("convert", "--list-targets")
    assert code == 0, stderr
    for name in list_targets():
        assert f"{name:15s} {load_target(name).description}" in stdout.splitlines()


def test_missing_calib_and_output_are_one_line_errors(run_cli, digits_onnx, tmp_path):
    code, _, stderr = run_cli("convert", digits_onnx.model_path, "--split", "code", "-o", tmp_path / "b")
    assert code == 2 and stderr.strip().splitlines()[-1] == (
        "error: no calibration data given — pass --calib calib.npz (or .npy, or an image folder)")
    code, _, stderr = run_cli("convert", digits_onnx.model_path, "--split", "code", "--calib", digits_onnx.calib)
    assert code == 2 and stderr.strip().splitlines()[-1] == "error: no output directory given — pass -o/--output DIR"
    assert "Traceback" not in stderr


def test_entropy_calibration_json_and_progress(run_cli, digits_onnx, tmp_path):
    """200 calibration samples (not a multiple of 16) with entropy: no crash, stdout is only the JSON report,
    and stderr (not a terminal here) has a progress line with the elapsed time per step."""
    x = np.load(digits_onnx.calib)["x"]
    assert len(x) % 16
    code, stdout, stderr = run_cli("convert", digits_onnx.model_path, "--split", "code", "--calib", digits_onnx.calib,
                                   "--eval", digits_onnx.test, "--target", "cpu", "--calib-method", "entropy",
                                   "--server-precision", "int8", "--latency-runs", "0", "-o", tmp_path / "b", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["passed"] and report["models"][0]["reference_kernels"]["kernels_agree"]
    lines = [line for line in stderr.splitlines() if line.startswith("convert: ")]
    steps = [line.split(" (")[0] for line in lines]
    assert "convert: fitting wire codecs on 200 calibration codes, measuring them on 300 held-out codes" in steps
    assert "convert: calibrating and quantizing the device half for cpu" in steps
    assert all(line.endswith(" s elapsed)") for line in lines[:-1]) and lines[-1].startswith("convert: done in ")
