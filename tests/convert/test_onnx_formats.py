"""The ONNX device half in the format fastest on this CPU, said in one report line; the per-layer analysis that
streams (same SQNRs as ONNX Runtime's all-in-memory qdq_loss_debug) and names the layer that loses accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit.converters import convert
from edgekit.converters.report import format_lines, render_markdown, summary_lines
from edgekit.converters.split_onnx import onnx_runner
from edgekit.converters.targets import load_target


@pytest.fixture(scope="module")
def timed(digits_onnx, tmp_path_factory):
    return convert(model=digits_onnx.model_path, split="code", calib=digits_onnx.calib, eval=digits_onnx.test,
                   targets=["cpu"], runtime="onnx", output=tmp_path_factory.mktemp("formats") / "bundle",
                   latency_runs=5, min_agreement=0.0)


def test_the_fastest_format_ships_and_the_report_says_so(timed):
    (row,) = timed.report["models"]
    chosen = row["format"]
    ms = chosen["median_ms"]
    assert set(ms) == {"qdq", "qoperator", "float"} and chosen["runs"] == 5
    assert chosen["format"] == min(ms, key=ms.__getitem__)  # --min-agreement 0: the fastest keeps it
    assert list(chosen["agreement_on_calibration"]) == [chosen["format"]]  # scored fastest first, until one keeps it
    model = onnx.load(str(timed.bundle_path / row["path"]))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8  # the wire code, any format
    ops = {n.op_type for n in model.graph.node}
    assert {"qdq": "DequantizeLinear" in ops, "qoperator": "QLinearConv" in ops,
            "float": ops & {"QLinearConv", "DequantizeLinear"} == set()}[chosen["format"]]
    assert row["top1_agreement"] >= 0.95
    assert (row["reference_kernels"] is None) == (chosen["format"] != "qdq")
    (line,) = format_lines(timed.report)
    assert line.startswith("cpu/onnx: ships ") and f"{ms[chosen['format']]:.2f} ms" in line
    assert any("ships" in s for s in summary_lines(timed.report)) and line in render_markdown(timed.report)


def test_without_timing_the_device_half_is_qdq(rpi_onnx_bundle):
    (row,) = rpi_onnx_bundle.report["models"]
    assert row["format"] is None and row["reference_kernels"] is not None


@pytest.fixture(scope="module")
def rpi_onnx_bundle(digits_onnx, tmp_path_factory):
    return convert(model=digits_onnx.model_path, split="code", calib=digits_onnx.calib, eval=digits_onnx.test,
                   targets=["rpi"], runtime="onnx", output=tmp_path_factory.mktemp("qdq") / "bundle",
                   latency_runs=0, min_agreement=0.0)


def test_streamed_layer_errors_equal_ort_qdq_loss_debug(digits_onnx, tmp_path):
    """Streaming in batches of 4 gives ORT's SQNRs (computed on all samples at once), ranked by the dB each
    tensor loses against its inputs."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    from edgekit.converters.layer_debug import onnx_layer_errors
    from edgekit.converters.onnx_quant import ArrayReader, quantize_static_qdq

    calib = np.load(digits_onnx.calib)["x"]
    samples = np.load(digits_onnx.test)["x"][:30]
    options = load_target("cpu").onnx
    rows = onnx_layer_errors(digits_onnx.model_path, "input", calib, options, "minmax", samples, top=100)
    qdq = quantize_static_qdq(digits_onnx.model_path, tmp_path / "qdq.onnx", "input", calib, options, "minmax")
    modify_model_output_intermediate_tensors(str(digits_onnx.model_path), str(tmp_path / "f.onnx"))
    modify_model_output_intermediate_tensors(str(qdq), str(tmp_path / "q.onnx"))
    expected = compute_activation_error(create_activation_matching(
        collect_activations(str(tmp_path / "q.onnx"), ArrayReader("input", samples, 30)),
        collect_activations(str(tmp_path / "f.onnx"), ArrayReader("input", samples, 30))))
    assert {r["layer"] for r in rows} == {name for name, e in expected.items() if "xmodel_err" in e}
    for row in rows:
        assert row["sqnr_db"] == pytest.approx(expected[row["layer"]]["xmodel_err"], abs=0.01)
    assert [r["drop_db"] for r in rows] == sorted((r["drop_db"] for r in rows), reverse=True)


def test_when_no_format_keeps_the_agreement_the_most_faithful_ships(digits_onnx, tmp_path):
    """Every format is scored on calibration samples (real runs of each file) and the best one ships."""
    from edgekit.converters.onnx_quant import agreement_scorer, device_format, quantize_device_onnx, range_quant
    from edgekit.converters.split_onnx import split_onnx

    halves = split_onnx(digits_onnx.model_path, "code", "onnx", tmp_path)
    x = np.load(digits_onnx.calib)["x"][:100]
    quant = range_quant(halves.device_float(x))
    accept = agreement_scorer(x, halves.reference(x), onnx_runner(halves.server_onnx), quant)
    out = quantize_device_onnx(halves.device_onnx, tmp_path / "device.onnx", "input", x, quant, load_target("cpu").onnx,
                               timing_runs=3, accept=accept, min_agreement=1.01)
    chosen = device_format(out)
    scores = chosen["agreement_on_calibration"]
    assert set(scores) == {"qdq", "qoperator", "float"} and chosen["format"] == max(scores, key=scores.__getitem__)
    assert scores["float"] >= 0.95  # only the code is quantized: it must keep nearly every prediction
