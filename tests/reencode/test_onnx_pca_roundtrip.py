"""``reencode --method pca`` on an ONNX export, then ``convert --split code``: the round trip issue 18 found broken.

The model is the pretrained CIFAR-10 ResNet20 (examples/pytorch/resnet_cifar.py) with EfficientNet-Lite's forward
pattern: the batch size is read from the *input* (``n = x.size(0)``) and used after the cut (``view(n, -1)``),
exported by the TorchScript exporter with a dynamic batch. convert folds that Shape→Gather→Concat→Reshape chain
away (ONNX Runtime's reshape fusion); it cannot when the file carries value_info from ONNX shape inference
(the batch dimensions unnamed), and then refuses the cut ("tensors image cross the cut ... Shape node").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.converters import convert
from edgekit.reencode import reencode
from support.torch_models import resnet_cifar_example

CUT = "/layer1/layer1.2/Relu_1_output_0"


@pytest.fixture(scope="module")
def input_batch_model(tmp_path_factory, data_dir):
    """(ONNX path, .npz of 64 CIFAR-10 test images with labels) for the ResNet20 that reads its batch size from
    the input."""
    import torch
    import torch.nn.functional as F

    example = resnet_cifar_example()

    class InputBatchView(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            n, net = x.size(0), self.net
            out = net.layer3(net.layer2(net.layer1(F.relu(net.bn1(net.conv1(x))))))
            return net.linear(F.avg_pool2d(out, 8).view(n, -1))

    root = tmp_path_factory.mktemp("pca_roundtrip")
    path = root / "resnet20-input-batch.onnx"
    torch.onnx.export(InputBatchView(example.load_pretrained("resnet20", data_dir)), (torch.zeros(2, 3, 32, 32),),
                      str(path), dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    pixels, labels = example.cifar_test_images(64, data_dir)
    data = root / "images.npz"
    np.savez(data, x=example.normalize(pixels).transpose(0, 3, 1, 2).astype(np.float32), y=labels)
    return path, data


def test_pca_on_onnx_converts_at_code(input_batch_model, tmp_path):
    path, data = input_batch_model
    out = tmp_path / "pca.onnx"
    reencode(path, CUT, "pca", data, out, channels=4)
    result = convert(model=out, split="code", calib=data, targets=["cpu"], runtime="onnx", output=tmp_path / "bundle",
                     latency_runs=0, min_agreement=0.0)
    manifest = json.loads((result.bundle_path / "manifest.json").read_text())
    assert manifest["code"]["shape"] == [4, 32, 32]
    assert manifest["model"]["reencode"]["method"] == "pca"
    assert result.report["worst_agreement"] > 0.5  # K=4 of 16 channels: a real model, not a broken graph


def test_report_shows_the_original_models_accuracy(input_batch_model):
    """The report of a re-encoded model names the original (teacher) model's accuracy beside the re-encoded
    float one; the teacher is found beside the re-encoded model by its recorded name and SHA-256."""
    import onnxruntime as ort

    from edgekit.converters.report import render_markdown, summary_lines

    path, data = input_batch_model
    out = path.parent / "pca-k2.onnx"  # beside the teacher
    reencode(path, CUT, "pca", data, out, channels=2)
    result = convert(model=out, split="code", calib=data, eval=data, targets=["cpu"], runtime="onnx",
                     output=path.parent / "bundle-k2", force=True, latency_runs=0, min_agreement=0.0)
    with np.load(data) as arrays:
        x, y = arrays["x"], arrays["y"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = float(np.mean(session.run(None, {"image": x})[0].argmax(axis=1) == y))
    original = result.report["eval"]["original"]
    assert original["found"] and original["model"] == path.name
    assert original["accuracy"] == pytest.approx(expected)
    assert original["accuracy"] != result.report["eval"]["accuracy_float"]  # K=2: the re-encoder costs accuracy
    assert f"original model `{path.name}` {100 * expected:.2f}%" in render_markdown(result.report)
    assert any("original model" in line for line in summary_lines(result.report))
