"""int8 that means the same on every CPU: the ONNX scheme per profile, the fused-vs-reference kernel check, the
CPU features recorded with it, and calibration that streams batches."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgekit.converters import convert
from edgekit.converters.parity import kernel_warnings
from edgekit.converters.targets import PROFILE_DIR, IOType, load_target
from edgekit.cpu import cpu_features, describe_cpu, x86_without_vnni
from edgekit.errors import UsageError


def _profile(tmp_path, name, **onnx):
    data = json.loads((PROFILE_DIR / "cpu.json").read_text())
    data.update(name=name, runtimes=["onnx"])
    data["onnx"].update(onnx)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def schemes(digits_onnx, tmp_path_factory):
    """The digits ONNX model for the shipped cpu profile (U8U8), plain S8S8, and S8S8 with 7-bit weights
    (these two with every layer in int8, the input layer included)."""
    root = tmp_path_factory.mktemp("schemes")
    plain = dict(activation_type="int8", weight_type="int8", float_input_layers=False)  # every layer int8
    targets = ["cpu", _profile(root, "s8s8", **plain), _profile(root, "s8s8-7bit", **plain, reduce_range=True)]
    result = convert(model=digits_onnx.model_path, split="code", calib=digits_onnx.calib, eval=digits_onnx.test,
                     targets=targets, output=root / "bundle", latency_runs=0, min_agreement=0.0)
    return {m["target"]: m for m in result.report["models"]}, result


def test_shipped_onnx_profiles_use_the_exact_scheme():
    for name in ("cpu", "rpi"):
        onnx = load_target(name).onnx
        assert (onnx.activation_type, onnx.weight_type, onnx.reduce_range) == (IOType.UINT8, IOType.UINT8, False)


def test_cpu_profiles_keep_the_input_layers_float(tmp_path, digits_onnx):
    """cpu/rpi leave the model input unquantized: the nodes reading it stay float, the rest is QDQ."""
    import onnx

    from edgekit.converters.onnx_quant import quantize_static_qdq

    out = quantize_static_qdq(digits_onnx.model_path, tmp_path / "q.onnx", "input", np.load(digits_onnx.calib)["x"],
                              load_target("rpi").onnx, "minmax")
    graph = onnx.load(str(out)).graph
    readers = [n for n in graph.node if "input" in n.input]
    assert load_target("rpi").onnx.float_input_layers and readers
    assert all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in readers)
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)


def test_float_scheme_is_refused(tmp_path):
    with pytest.raises(UsageError, match="onnx.activation_type/weight_type float32 is not allowed"):
        load_target(_profile(tmp_path, "bad", activation_type="float32"))


def test_fused_kernels_match_the_reference_with_the_shipped_scheme(schemes):
    models, result = schemes
    for name in ("cpu", "s8s8-7bit"):
        ref = models[name]["reference_kernels"]
        assert ref["kernels_agree"] and ref["max_level_difference"] <= 1, (name, ref)
        assert models[name]["top1_agreement"] == pytest.approx(ref["top1_agreement"], abs=0.005)
    assert models["cpu"]["top1_agreement"] >= 0.99
    assert not any("fused int8 kernels" in w and w.startswith("cpu/") for w in result.report["warnings"])


def test_saturating_scheme_is_named_on_cpus_without_vnni(schemes):
    """S8S8 saturates in the fused kernels of x86 without VNNI (measured: 34 levels); elsewhere it is exact."""
    models, result = schemes
    ref = models["s8s8"]["reference_kernels"]
    report_md = (result.bundle_path / "report.md").read_text()
    if x86_without_vnni(cpu_features()):
        assert not ref["kernels_agree"] and ref["max_level_difference"] > 8
        assert models["s8s8"]["code_sqnr_db"] < ref["code_sqnr_db"] - 3
        warning = next(w for w in result.report["warnings"] if w.startswith("s8s8/onnx"))
        assert "fused int8 kernels saturate on this CPU (no VNNI" in warning
        assert "calibration settings cannot fix this" in warning and "onnx.reduce_range" in warning
        assert "| s8s8 |" in report_md and "| **no** |" in report_md
    else:
        assert ref["kernels_agree"]


def test_report_records_the_measuring_cpu(schemes):
    _, result = schemes
    cpu = result.report["cpu"]
    assert cpu == cpu_features() and cpu["arch"]
    assert f"- measured on: {describe_cpu(cpu)}" in (result.bundle_path / "report.md").read_text()
    assert json.loads((result.bundle_path / "report.json").read_text())["cpu"] == cpu


@pytest.mark.parametrize("text, arch, expected", [
    ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n", "x86_64",
     {"avx2": True, "avx512_vnni": False, "avx_vnni": False, "neon": False, "no_vnni": True}),
    ("model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_vnni\n", "x86_64",
     {"avx2": True, "avx512_vnni": True, "avx_vnni": False, "neon": False, "no_vnni": False}),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\nCPU part\t: 0xd0b\n", "aarch64",
     {"avx2": False, "avx512_vnni": False, "avx_vnni": False, "neon": True, "no_vnni": False}),
])
def test_cpu_features_from_cpuinfo(tmp_path, monkeypatch, text, arch, expected):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: arch)
    (tmp_path / "cpuinfo").write_text(text)
    features = cpu_features(tmp_path / "cpuinfo")
    assert features["source"] == "/proc/cpuinfo" and features["arch"] == arch
    assert {k: features[k] for k in ("avx2", "avx512_vnni", "avx_vnni", "neon")} == \
        {k: v for k, v in expected.items() if k != "no_vnni"}
    assert x86_without_vnni(features) is expected["no_vnni"]
    assert ("no VNNI" in describe_cpu(features)) is expected["no_vnni"]


def test_cpu_features_fall_back_to_platform(tmp_path):
    features = cpu_features(tmp_path / "missing")
    assert features["source"] == "platform" and features["avx2"] is None
    assert not x86_without_vnni(features) and "flags unknown" in describe_cpu(features)


def test_streamed_calibration_gives_the_one_pass_ranges(digits_onnx, tmp_path):
    """Batch by batch (last batch short) gives exactly the ranges of ORT's own one-pass MinMax calibration."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import load_tensors_data

    from edgekit.converters.onnx_quant import ArrayReader, calibrate

    x = np.load(digits_onnx.calib)["x"][:40]
    streamed = load_tensors_data(calibrate(digits_onnx.model_path, "input", x, "minmax", tmp_path / "ranges.json"))
    one_pass = create_calibrator(digits_onnx.model_path, None, str(tmp_path / "aug.onnx"), CalibrationMethod.MinMax)
    one_pass.collect_data(ArrayReader("input", x, batch=len(x)))
    expected = one_pass.compute_data()
    assert set(streamed.keys()) <= set(expected.keys()) and "code" in streamed.keys()
    for name in streamed.keys():
        assert np.allclose(streamed[name].range_value, expected[name].range_value), name


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_with_a_short_last_batch(digits_onnx, tmp_path, method):
    """40 samples = 2 batches of 16 + 8: ORT's one-pass histogram calibrators crash on that."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from edgekit.converters.onnx_quant import calibrate

    x = np.load(digits_onnx.calib)["x"][:40]
    ranges = load_tensors_data(calibrate(digits_onnx.model_path, "input", x, method, tmp_path / "ranges.json"))
    low, high = ranges["code"].range_value
    assert float(low) <= 0 < float(high)


def test_advice_never_recommends_the_scheme_the_run_used():
    """A U8U8 run whose kernels still disagree is told to look per layer, not to switch to U8U8."""
    row = {"target": "cpu", "runtime": "onnx", "code_sqnr_db": 20.0, "top1_agreement": 0.97,
           "reference_kernels": {"kernels_agree": False, "max_level_difference": 3, "code_sqnr_db": 30.0,
                                 "top1_agreement": 0.99}}
    u8u8 = load_target("cpu").onnx
    s8s8 = replace(u8u8, activation_type=IOType.INT8, weight_type=IOType.INT8)
    [after_u8u8] = kernel_warnings([row], cpu_features(), {"cpu": u8u8})
    assert "already used uint8 activations and weights" in after_u8u8 and "onnx.activation_type" not in after_u8u8
    [after_s8s8] = kernel_warnings([row], cpu_features(), {"cpu": s8s8})
    assert "onnx.activation_type and weight_type uint8" in after_s8s8


def test_the_failing_parity_line_repeats_the_reports_advice():
    """The one-line error of a failing convert gives the same scheme-aware advice as the report's warning."""
    from edgekit.converters.commands import _parity_fix

    row = {"target": "cpu", "runtime": "onnx", "code_sqnr_db": 20.0, "top1_agreement": 0.80,
           "reference_kernels": {"kernels_agree": False, "max_level_difference": 9, "code_sqnr_db": 30.0,
                                 "top1_agreement": 0.85}}
    warnings = kernel_warnings([row], cpu_features(), {"cpu": load_target("cpu").onnx})
    fix = _parity_fix({"models": [row], "warnings": warnings}, "minmax")
    assert "already used uint8 activations and weights" in fix and "onnx.activation_type" not in fix


def test_the_failing_parity_line_never_advises_the_calibration_method_the_run_used():
    from edgekit.converters.commands import _parity_fix

    report = {"models": [], "warnings": [], "layers_to_check": ["hardtanh_1"]}
    for used in ("minmax", "entropy", "percentile"):
        fix = _parity_fix(report, used)
        assert f"--calib-method {used}" not in fix and " or ".join(m for m in ("minmax", "entropy", "percentile")
                                                                     if m != used) in fix
