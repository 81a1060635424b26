"""Real PyTorch exports: the pretrained CIFAR-10 ResNet20 from examples/pytorch, both exporters, both batch kinds.

Exported once per session (``resnet_exports``); calibration (200) and held-out (300) images are disjoint real
CIFAR-10 test JPEGs, preprocessed by convert from image folders. The halves are cut at layer1's last block
output, which ``--list-splits`` lists; the device half's int8 codes are checked with ONNX Runtime's
optimized (fused) kernels and with the unfused QDQ reference (``ORT_DISABLE_ALL``).
"""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.converters import convert
from edgekit.errors import ConversionError, UsageError

REPO = Path(__file__).resolve().parents[2]
EXPORTS = ["torchscript-dynamic", "torchscript-static", "dynamo-dynamic", "dynamo-static"]
LAYER1_OUT = {"torchscript": "/layer1/layer1.2/Relu_1_output_0", "dynamo": "relu_6"}
PREPROCESSING = ["--image-size", "32x32", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                 "--layout", "nchw"]

pytestmark = pytest.mark.slow


def _example():
    spec = importlib.util.spec_from_file_location("resnet_cifar", REPO / "examples" / "pytorch" / "resnet_cifar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def resnet_exports(tmp_path_factory, data_dir) -> SimpleNamespace:
    """The four ONNX exports of the pretrained ResNet20 (the example's export_onnx), keyed like EXPORTS."""
    example = _example()
    model = example.load_pretrained("resnet20", data_dir)
    root = tmp_path_factory.mktemp("resnet_exports")
    paths = {}
    for name in EXPORTS:
        exporter, batch = name.split("-")
        paths[name] = example.export_onnx(model, root / f"resnet20-{name}.onnx", exporter, batch)
    return SimpleNamespace(example=example, paths=paths)


@pytest.fixture(scope="session")
def cifar_folders(tmp_path_factory, data_dir) -> SimpleNamespace:
    """Class folders of real CIFAR-10 test JPEGs: 20 per class for calibration, the next 30 for evaluation."""
    root = tmp_path_factory.mktemp("cifar")
    counts: dict[str, int] = {}
    with tarfile.open(data_dir / "cifar10" / "cifar10-test-jpeg.tar.gz") as tar:
        for member in tar:
            if not member.name.endswith(".jpg"):
                continue
            label = member.name.split("/")[-2]
            index = counts[label] = counts.get(label, 0) + 1
            if index > 50:
                if len(counts) == 10 and min(counts.values()) > 50:
                    break
                continue
            target = root / ("calib" if index <= 20 else "eval") / label / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return SimpleNamespace(calib=root / "calib", eval=root / "eval")


def _layer1_out(name: str) -> str:
    return LAYER1_OUT[name.split("-")[0]]


def test_exports_reproduce_the_keras_port(resnet_exports, cifar_folders, data_dir):
    example = resnet_exports.example
    pixels, _ = example.cifar_test_images(20, data_dir)
    x = example.normalize(pixels)
    reference = example.keras_logits("resnet20", x, data_dir)
    for name, path in resnet_exports.paths.items():
        logits = example.onnx_logits(path, x.transpose(0, 3, 1, 2).copy())
        assert np.abs(logits - reference).max() < 1e-4, name
        assert (logits.argmax(1) == reference.argmax(1)).all(), name


@pytest.mark.parametrize("name", EXPORTS)
def test_list_splits_shows_block_outputs_with_code_bytes(run_cli, resnet_exports, name):
    code, stdout, stderr = run_cli("convert", resnet_exports.paths[name], "--list-splits")
    assert code == 0, stderr
    row = next(line.split() for line in stdout.splitlines() if line.startswith(_layer1_out(name) + " "))
    assert row[1:] == ["Relu", "16x32x32", "65,536", "16,384"]
    code, stdout, _ = run_cli("convert", resnet_exports.paths[name], "--list-splits", "--json")
    points = json.loads(stdout)["split_points"]
    ops = {p["op"] for p in points}
    assert ops <= {"Conv", "Relu", "Add", "AveragePool", "Reshape"}, "no Shape/Constant/Slice/Pad tensors"
    assert len([p for p in points if p["op"] == "Relu"]) == 10  # the stem and the 9 block outputs
    assert {"name": _layer1_out(name), "op": "Relu", "shape": [16, 32, 32], "float32_bytes": 65536,
            "int8_bytes": 16384} in points


def test_list_splits_of_the_keras_port(run_cli, data_dir):
    code, stdout, stderr = run_cli("convert", data_dir / "pretrained" / "resnet-cifar10" / "resnet20.keras",
                                   "--list-splits", "--json")
    assert code == 0, stderr
    points = {p["name"]: p for p in json.loads(stdout)["split_points"]}
    assert points["stage1_block3_out"]["shape"] == [32, 32, 16] and points["pool"]["int8_bytes"] == 64
    assert "stage1_block3_conv1" not in points  # inside a block: the shortcut crosses it


def _device_codes(bundle: Path, x: np.ndarray, fused: bool) -> tuple[np.ndarray, dict]:
    """int8 codes of the bundle's ONNX device half, with ORT's optimized kernels or the unfused QDQ reference."""
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    device = next(d for d in manifest["device_models"] if d["runtime"] == "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    session = ort.InferenceSession(str(bundle / device["path"]), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    codes = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return codes, device["code_quant"]


@pytest.fixture(scope="session", params=EXPORTS)
def converted(request, resnet_exports, cifar_folders, tmp_path_factory) -> SimpleNamespace:
    """Each export converted for the cpu target (ONNX) at layer1's output, with the fused/unfused predictions."""
    from edgekit.converters.datasets import load_samples
    from edgekit.converters.split_onnx import onnx_runner
    from edgekit.preprocess import Preprocessing

    name = request.param
    out = tmp_path_factory.mktemp("resnet_bundles") / name
    result = convert(model=resnet_exports.paths[name], split=_layer1_out(name), calib=cifar_folders.calib,
                     eval=cifar_folders.eval, targets=["cpu"], runtime="onnx", output=out, latency_runs=0,
                     min_agreement=0.0, preprocessing=dict(size=(32, 32), mean=(0.485, 0.456, 0.406),
                                                           std=(0.229, 0.224, 0.225), layout="nchw"))
    pre = Preprocessing(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="nchw")
    x = load_samples(cifar_folders.eval, "image", "eval", pre).x
    server = onnx_runner(out / "server" / "server_fp32.onnx")
    reference = onnx_runner(resnet_exports.paths[name])(x).argmax(1)
    predictions, codes = {}, {}
    for fused in (True, False):
        codes[fused], quant = _device_codes(out, x, fused)
        floats = ((codes[fused].astype(np.float32) - quant["zero_point"]) * quant["scale"]).astype(np.float32)
        predictions[fused] = server(floats).argmax(1)
    return SimpleNamespace(name=name, result=result, reference=reference, predictions=predictions, codes=codes)


def test_export_converts_at_a_block_output(converted):
    report = converted.result.report
    assert report["code"]["shape"] == [16, 32, 32] and report["eval"]["samples"] == 300
    (row,) = report["models"]
    assert row["runtime"] == "onnx" and row["code_sqnr_db"] > 20
    # What the report measured is what the deployed path computes, with ORT's default (fused) kernels.
    assert row["top1_agreement"] == pytest.approx(np.mean(converted.predictions[True] == converted.reference))


def test_fused_and_unfused_kernels_agree(converted):
    """ORT's optimized int8 kernels compute the QDQ model's codes: rare rounding differences, no saturation drift.

    Measured here (x86 without VNNI): 1e-5 of the code values differ, by at most 3 levels; the saturation
    this guards against moves whole channels by up to 35 levels.
    """
    difference = np.abs(converted.codes[True].astype(np.int16) - converted.codes[False].astype(np.int16))
    assert np.mean(difference > 0) < 1e-3 and difference.max() <= 4, \
        f"fused int8 kernels drift from the QDQ reference: {np.mean(difference > 0):.2e} of values, max {difference.max()}"
    assert np.sum(converted.predictions[True] != converted.predictions[False]) <= 1


def test_acceptance_top1_agreement_at_least_99_percent(converted):
    assert np.mean(converted.predictions[False] == converted.reference) >= 0.99
    assert converted.result.report["worst_agreement"] >= 0.99


def test_cut_inside_a_block_names_the_skip_and_the_nearest_cuts(resnet_exports, cifar_folders, tmp_path):
    with pytest.raises(ConversionError, match=r"cannot split at 'relu_5': tensors relu_4 cross the cut .*Add node "
                       r".* reads 'relu_4' from before the cut \(a skip connection around it\).* nearest valid cuts "
                       r"are relu_4, add_2"):
        convert(model=resnet_exports.paths["dynamo-static"], split="relu_5", calib=cifar_folders.calib,
                output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_split_name_suggests_real_activations(resnet_exports, cifar_folders, tmp_path):
    with pytest.raises(UsageError) as err:
        convert(model=resnet_exports.paths["torchscript-dynamic"], split="/layer1/Relu", calib=cifar_folders.calib,
                output=tmp_path / "out")
    suggestions = err.value.fix.split("nearest valid names: ")[1].split(";")[0].split(", /")
    assert len(suggestions) == 5
    assert all(("(Relu " in s or "(Add " in s or "(Conv " in s) and "B int8)" in s for s in suggestions), suggestions
    assert "16x32x32, 16,384 B int8" in err.value.fix and "--list-splits" in err.value.fix


def _upsample_to_input(path: Path, batch: str) -> Path:
    """A small segmentation-style CNN whose head upsamples to the *input's* size (reads Shape(image))."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.head = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 4, 3, 2, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")

    torch.manual_seed(0)
    dynamic = {"dynamic_axes": {"image": {0: "batch"}}} if batch == "dynamic" else {}
    torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"],
                      output_names=["mask"], opset_version=17, **dynamic)
    return path


def test_shape_of_the_input_read_after_the_cut_is_explained(tmp_path, cifar_folders):
    from edgekit.converters.datasets import load_samples
    from edgekit.converters.split_onnx import split_onnx
    from edgekit.preprocess import Preprocessing

    model = _upsample_to_input(tmp_path / "dynamic.onnx", "dynamic")
    with pytest.raises(ConversionError, match=r"tensors image cross the cut .*reads the shape of the input 'image' "
                       r"\(Shape node '/Shape_1'\): run-time shape arithmetic the exporter wrote for a dynamic batch"
                       r".* — export with a fixed batch size"):
        convert(model=model, split="/Relu_1_output_0", calib=cifar_folders.calib, output=tmp_path / "out")
    # Exported with a fixed batch, the shape arithmetic folds away and the same name cuts; the batch-1 halves
    # run sample by sample and reproduce the source model on real images.
    static = _upsample_to_input(tmp_path / "static.onnx", "static")
    (tmp_path / "work").mkdir()
    halves = split_onnx(static, "/Relu_1_output_0", "onnx", tmp_path / "work")
    assert halves.code_shape == (4, 8, 8)
    x = load_samples(cifar_folders.eval, "image", "eval", Preprocessing(size=(32, 32), layout="nchw")).x[:20]
    assert halves.verify(x) < 1e-5


def test_list_splits_needs_a_model_and_no_calibration(run_cli, tmp_path):
    code, _, stderr = run_cli("convert", "--list-splits")
    assert code == 2 and stderr.strip().splitlines()[-1] == ("error: --list-splits needs a model — pass it: "
                                                             "edgekit convert MODEL --list-splits")
    code, _, stderr = run_cli("convert", tmp_path / "missing.onnx", "--list-splits")
    assert code == 2 and "not found" in stderr and "Traceback" not in stderr


def test_a_simplification_that_changes_outputs_stops_convert():
    from edgekit.converters.onnx_simplify import check_same_outputs

    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(16, 4)
    assert check_same_outputs(lambda v: v * 2, lambda v: v * 2 * (1 + 1e-7), x) < 1e-6
    with pytest.raises(ConversionError, match=r"the simplified, cut ONNX model differs from the source by 1.00e-02 "
                       r"\(relative\) on 16 calibration samples — .*--device-model/--server-model"):
        check_same_outputs(lambda v: v, lambda v: v * 1.01, x)
