"""PyTorch → int8 TFLite through litert-torch: a ``.pt2`` converts for the Pi and the Ethos-U like a Keras model.

A small CNN is trained on the digits for a second and saved with ``torch.export.save``. Its device half is cut
at the same node as the ONNX path, quantized with pt2e on the calibration samples, converted by litert-torch,
run by ai-edge-litert in the parity check and compiled by Vela; the server half stays ONNX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from support.torch_models import digits_net, nchw, residual_bn_net, save_digits_programs, save_program, train

from edgekit.bundle.manifest import Bundle
from edgekit.converters import convert
from edgekit.converters.targets import PROFILE_DIR


@pytest.fixture(scope="module")
def digits_pt2(tmp_path_factory, digits) -> SimpleNamespace:
    """The trained net as model.pt2 (3-channel input, so the NCHW → NHWC transposes are real; a dropout before
    the classifier), and its halves."""
    import torch

    torch.manual_seed(0)
    rgb = SimpleNamespace(x_train=np.repeat(digits.x_train, 3, -1), y_train=digits.y_train,
                          x_test=np.repeat(digits.x_test, 3, -1), y_test=digits.y_test)
    net = digits_net(torch)
    net.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
    net.classifier = torch.nn.Sequential(torch.nn.Dropout(0.1), net.classifier)  # impure to torch.fx, past the cut
    return save_digits_programs(torch, train(torch, net, rgb), rgb, tmp_path_factory.mktemp("digits_pt2_tflite"))


@pytest.fixture(scope="module")
def converted(digits_pt2, tmp_path_factory):
    """relu_1 (after the encoder) is the 4 x 8 x 8 code, as --list-splits names it on the ONNX export."""
    out = tmp_path_factory.mktemp("pt2_tflite") / "b"
    return convert(model=digits_pt2.model, split="relu_1", calib=digits_pt2.calib, eval=digits_pt2.test,
                   targets=["rpi", "ethos-u55-128"], output=out, latency_runs=2)


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def test_rpi_and_ethos_get_int8_tflite_device_halves(converted, digits_pt2):
    assert digits_pt2.accuracy > 0.9  # a real classifier
    bundle = Bundle.load(converted.bundle_path)
    assert bundle.manifest["model"]["source_format"] == "pytorch"
    runtimes = {(d.target, d.runtime) for d in bundle.device_models}
    assert runtimes == {("rpi", "tflite"), ("rpi", "onnx"), ("ethos-u55-128", "tflite")}
    assert bundle.server_model.path.suffix == ".onnx"  # the server half stays ONNX
    for target in ("rpi", "ethos-u55-128"):
        dev = bundle.device_model(target, "tflite")
        assert dev.input_dtype == "int8" and dev.code_dtype == "int8"
        interpreter = _interpreter(bundle.path / dev.path)
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        assert list(inp["shape"]) == [1, 3, 8, 8] and list(out["shape"]) == [1, 4, 8, 8]  # NCHW, as the ONNX half
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert "CONV_2D" in ops and "DEQUANTIZE" not in ops and "FULLY_CONNECTED" not in ops  # the device half only
        weights = [t for t in interpreter.get_tensor_details() if len(t["shape"]) == 4
                   and t["quantization_parameters"]["scales"].size == 16]
        assert weights and all(np.dtype(t["dtype"]) == np.int8 for t in weights)  # per-channel int8 weights
    wire = bundle.manifest["code"]["wire_quant"]
    tflite = next(d for d in bundle.device_models if d.runtime == "tflite")
    assert tflite.code_quant == pytest.approx((wire["scale"], wire["zero_point"]))  # the code sets the wire


def test_tflite_device_half_runs_and_passes_parity(converted, digits_pt2):
    rows = {(r["target"], r["runtime"]): r for r in converted.report["models"]}
    assert converted.passed, rows
    assert rows[("ethos-u55-128", "tflite")]["top1_agreement"] >= 0.99
    assert rows[("rpi", "tflite")]["top1_agreement"] >= 0.99
    from edgekit.runtime import open_device_runner

    bundle = Bundle.load(converted.bundle_path)
    runner = open_device_runner(bundle.device_model("ethos-u55-128").path)
    codes = runner.run(np.load(digits_pt2.calib)["x"][:3])
    assert codes.dtype == np.int8 and codes.shape[-3:] == (4, 8, 8) and codes.max() > codes.min()


def test_vela_places_the_pytorch_half_on_the_npu(converted):
    report = converted.report["targets"]["ethos-u55-128"]
    assert report["compiler"] == "vela" and report["all_on_npu"], report["cpu_operations"]
    assert report["npu_ops"] >= 2 and report["cpu_ops"] == 0
    bundle = Bundle.load(converted.bundle_path)
    assert (bundle.path / bundle.manifest["targets"]["ethos-u55-128"]["artifacts"][0]).stat().st_size > 0


def test_profile_io_types_and_per_tensor_weights(digits_pt2, tmp_path):
    """Pre-split halves for coral (uint8 I/O), imx8mp (per-tensor weights) and a board with float32 input."""
    board = {**json.loads((PROFILE_DIR / "rpi.json").read_text()), "name": "float-in", "runtimes": ["tflite"]}
    board["tflite"] = {**board["tflite"], "input_type": "float32"}
    (tmp_path / "float-in.json").write_text(json.dumps(board))
    result = convert(device_model=digits_pt2.root / "device.pt2", server_model=digits_pt2.root / "server.pt2",
                     calib=digits_pt2.calib, eval=digits_pt2.test,
                     targets=["coral-edgetpu", "imx8mp", str(tmp_path / "float-in.json")], output=tmp_path / "b",
                     latency_runs=0)
    assert result.passed, result.report["models"]
    bundle = Bundle.load(result.bundle_path)
    floating = bundle.device_model("float-in")
    assert floating.input_dtype == "float32" and floating.code_dtype == "int8"
    ops = [op["op_name"] for op in _interpreter(floating.path)._get_ops_details()]
    assert ops[0] == "QUANTIZE" and ops.count("QUANTIZE") == 1
    coral = bundle.device_model("coral-edgetpu")
    assert coral.input_dtype == "uint8" and coral.code_dtype == "uint8"
    wire = bundle.manifest["code"]["wire_quant"]
    assert coral.code_quant == pytest.approx((wire["scale"], wire["zero_point"] + 128))
    assert result.report["targets"]["coral-edgetpu"]["all_on_tpu"], result.report["targets"]["coral-edgetpu"]
    interpreter = _interpreter(bundle.path / bundle.device_model("imx8mp").path)
    scales = [t["quantization_parameters"]["scales"].size for t in interpreter.get_tensor_details()
              if len(t["shape"]) == 4 and np.dtype(t["dtype"]) == np.int8 and t["shape"][0] == 16]
    assert scales and all(s == 1 for s in scales)


def test_entropic_program_keeps_its_integer_code_on_the_npu(digits, tmp_path):
    """An entropic .pt2 (edgekit reencode): the code node clamp(round(y)) becomes int8 at scale 1, zero point 0,
    so the TFLite half outputs the trained integers, fully int8 for Vela, on the wire as they are."""
    import torch

    from edgekit.reencode import reencode

    torch.manual_seed(0)
    teacher = save_program(torch, train(torch, digits_net(torch), digits, epochs=10),
                           torch.from_numpy(nchw(digits.x_train[:2])), tmp_path / "teacher.pt2")
    np.savez(tmp_path / "train.npz", x=nchw(digits.x_train), y=digits.y_train)
    np.savez(tmp_path / "test.npz", x=nchw(digits.x_test[:300]), y=digits.y_test[:300])
    program = reencode(teacher, "relu_1", "entropic", tmp_path / "train.npz", tmp_path / "e.pt2", channels=2,
                       epochs=4, downsample=True, learning_rate=3e-3).output
    result = convert(model=program, split="code", calib=tmp_path / "train.npz", eval=tmp_path / "test.npz",
                     targets=["rpi", "ethos-u55-128"], output=tmp_path / "b", latency_runs=0, min_agreement=0.0)
    bundle = Bundle.load(result.bundle_path)
    assert bundle.manifest["code"]["wire_quant"] == {"scale": 1.0, "zero_point": 0}
    dev = bundle.device_model("ethos-u55-128", "tflite")
    assert dev.code_quant == (1.0, 0)
    assert result.report["targets"]["ethos-u55-128"]["all_on_npu"], result.report["targets"]["ethos-u55-128"]
    from edgekit.runtime import open_device_runner

    x = np.load(tmp_path / "test.npz")["x"][:50]
    with torch.no_grad():  # the program's own integer code: the output of its recorded code node
        full = torch.export.load(str(program)).module()
        node = next(n for n in full.graph.nodes if n.name == bundle.manifest["model"]["reencode"]["code_node"])
        next(n for n in full.graph.nodes if n.op == "output").args = ((node,),)
        full.recompile()
        expected = full(torch.from_numpy(x)).numpy()
    codes = open_device_runner(dev.path).run(x).astype(np.float32)
    assert codes.shape == expected.shape and np.ptp(expected) > 0
    assert np.mean(codes == expected) > 0.9 and np.max(np.abs(codes - expected)) <= 4


def test_a_split_renamed_by_the_exporters_decomposition_keeps_batch_norm_folded(tmp_path):
    """Batch norms decompose into adds in the ONNX export, so the residual add after them is ``add_N`` there but
    ``add`` in the program: the cut is traced back to the program's node, where pt2e folds each batch norm into
    its conv (cut in the decomposed graph, they stayed float and an Ethos-U target was refused)."""
    import torch

    from edgekit.converters.split_points import list_split_points

    torch.manual_seed(0)
    net = residual_bn_net(torch)
    for bn in (net.stem[1], net.block[1]):  # running statistics that matter, as after training
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).random((64, 3, 8, 8), np.float32)
    save_program(torch, net.eval(), torch.from_numpy(x[:2]), tmp_path / "residual.pt2")
    np.savez(tmp_path / "calib.npz", x=x)
    split = next(p.name for p in list_split_points(tmp_path / "residual.pt2") if p.name.startswith("add"))
    assert split != "add"  # renamed by the decomposition
    result = convert(model=tmp_path / "residual.pt2", split=split, calib=tmp_path / "calib.npz",
                     targets=["ethos-u55-128"], output=tmp_path / "b", latency_runs=0, min_agreement=0.0)
    assert result.report["targets"]["ethos-u55-128"]["all_on_npu"], result.report["targets"]["ethos-u55-128"]
    ops = [op["op_name"] for op in _interpreter(result.bundle_path / "device/ethos-u55-128/device_int8.tflite")
           ._get_ops_details()]
    assert ops.count("CONV_2D") == 2 and "MUL" not in ops and "SUB" not in ops


def test_relu6_code_is_quantized_over_its_clamped_range(tmp_path):
    """conv → batch norm → ReLU6 (EfficientNet-Lite's block): the code is quantized over [0, 6], not over the
    convolution's far wider range (which left EfficientNet-Lite2's TFLite half at 14% agreement)."""
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    net[1].running_var.fill_(0.001)  # pre-activations up to ±28: most of the range is clamped away
    net.eval()
    x = np.random.default_rng(0).random((64, 3, 8, 8), np.float32)
    with torch.no_grad():
        assert float(net[:2](torch.from_numpy(x)).abs().max()) > 20
    save_program(torch, net, torch.from_numpy(x[:2]), tmp_path / "relu6.pt2")
    np.savez(tmp_path / "calib.npz", x=x)
    result = convert(model=tmp_path / "relu6.pt2", split="hardtanh", calib=tmp_path / "calib.npz",
                     targets=["ethos-u55-128"], output=tmp_path / "b", latency_runs=0, min_agreement=0.0)
    scale, zero_point = Bundle.load(result.bundle_path).device_model("ethos-u55-128").code_quant
    assert scale <= 6.01 / 255 and zero_point == -128
    assert result.report["models"][0]["code_sqnr_db"] > 35


def test_missing_litert_torch_is_one_line(digits_pt2, tmp_path):
    """A sitecustomize blocks the import as a missing package does: convert stops before any work, exit 2."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'litert_torch' or name.startswith('litert_torch.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(digits_pt2.model), "--split", "relu_1",
                           "--calib", str(digits_pt2.calib), "--target", "ethos-u55-128", "-o", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("convert: ")]  # progress lines
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "litert-torch" in errors[0] and "pip install" in errors[0] and "--runtime onnx" in errors[0]
    assert not (tmp_path / "b").exists()
