"""The honest baseline: the input as JPEG/WebP/PNG next to the frame bytes, and a warning when the split loses."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from edgekit.bundle.manifest import Bundle
from edgekit.converters.image_baseline import compare_with_frames, encode_image, input_baseline, input_pixels
from edgekit.errors import UsageError
from edgekit.demo.example_model import read_idx
from edgekit.preprocess import Preprocessing

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.fixture(scope="module")
def cifar_pixels(cifar_folder) -> list[np.ndarray]:
    """The real CIFAR-10 files' RGB pixels, in the order convert reads an image folder."""
    return [np.asarray(Image.open(f).convert("RGB")) for f in sorted(cifar_folder.rglob("*.jpg"))]


def test_encode_image_writes_real_files_of_each_format(cifar_pixels):
    image = cifar_pixels[0]
    for fmt, quality in (("jpeg", 75), ("jpeg", 90), ("webp", None), ("png", None)):
        data = encode_image(image, fmt, quality)
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == fmt.upper() and decoded.size == (32, 32)
            if fmt == "png":
                assert np.array_equal(np.asarray(decoded), image)  # lossless
    assert len(encode_image(image, "jpeg", 90)) > len(encode_image(image, "jpeg", 75))
    assert len(encode_image(image[..., :1], "png")) < len(encode_image(image, "png"))  # grayscale H×W×1
    with pytest.raises(UsageError, match="gif"):
        encode_image(image, "gif")
    with pytest.raises(UsageError, match="uint8"):
        encode_image(image.astype(np.float32), "png")


def test_pixels_are_recovered_exactly_at_the_model_input_size(cifar_folder):
    pre = Preprocessing(size=(24, 20), **IMAGENET, layout="nchw")
    files = sorted(cifar_folder.rglob("*.jpg"))[:8]
    x = np.stack([pre.apply_file(f) for f in files])
    pixels, how = input_pixels(x, pre)
    resized = [np.asarray(Image.open(f).convert("RGB").resize((20, 24), Image.BILINEAR)) for f in files]
    assert np.array_equal(pixels, np.stack(resized)) and "preprocessing" in how


def test_plain_pixel_arrays_get_a_baseline_and_other_arrays_say_why_not(data_dir):
    images = read_idx(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")[:50]
    pixels, how = input_pixels((images / 255.0).astype(np.float32)[..., None], None)
    assert np.array_equal(pixels[..., 0], images) and "1/255" in how
    pixels, _ = input_pixels(images.astype(np.float32)[:, None], None)  # 0..255 integers, NCHW
    assert np.array_equal(pixels[..., 0], images)
    baseline = input_baseline((images / 16.0).astype(np.float32)[..., None], None)  # an unknown scale
    assert baseline == {"available": False, "reason": baseline["reason"]} and "--scale" in baseline["reason"]
    wrong = Preprocessing(size=(28, 28), color="grayscale", scale=1.0)
    assert input_baseline((images / 255.0).astype(np.float32)[..., None] * 400, wrong)["available"] is False
    assert "not an image" in input_baseline(np.zeros((4, 16), np.float32), None)["reason"]
    assert input_baseline(np.zeros((60, 224, 224, 3), np.float32), None)["images"] == 49  # time bounded


def test_a_frame_smaller_than_the_image_is_not_warned_about(cifar_pixels):
    baseline = input_baseline(np.stack(cifar_pixels).astype(np.float32) / 255, None)
    jpeg = baseline["formats"]["jpeg_q75"]["mean_bytes"]
    wire = {"default_codec": "ans", "codecs": {"ans": {"mean_frame_bytes": jpeg / 4}}, "raw_code_bytes": 196,
            "float32_bytes": 784}
    assert compare_with_frames(baseline, wire) is None and "warning" not in baseline
    assert baseline["frame"] == {"codec": "ans", "mean_frame_bytes": jpeg / 4, "int8_code_bytes": 196,
                                 "float32_code_bytes": 784}
    assert baseline["frame_vs_smallest"] < 1


def test_npz_inputs_without_known_preprocessing_report_the_baseline_unavailable(rpi_bundle):
    baseline = rpi_bundle.report["baseline"]  # digits scaled by 1/16: not plain pixels
    assert baseline["available"] is False and "--scale" in baseline["reason"]
    assert "Unavailable:" in (rpi_bundle.bundle_path / "report.md").read_text()


@pytest.mark.slow
def test_convert_warns_when_the_split_sends_more_than_the_jpeg(cifar_folder, cifar_pixels, tmp_path, run_cli):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="rgb")
    code = layers.Conv2D(16, 3, padding="same", activation="relu", name="code")(inp)  # 16 KB of int8 per image
    out = layers.Dense(10, activation="softmax", name="probs")(layers.GlobalAveragePooling2D()(code))
    keras.Model(inp, out).save(tmp_path / "wide.keras")
    out_dir = tmp_path / "wide-bundle"
    code, stdout, stderr = run_cli("convert", tmp_path / "wide.keras", "--split", "code", "--calib", cifar_folder,
                                   "--eval", cifar_folder, "--mean", ",".join(map(str, IMAGENET["mean"])),
                                   "--std", ",".join(map(str, IMAGENET["std"])), "--target", "rpi",
                                   "--runtime", "tflite", "--latency-runs", "0", "--min-agreement", "0",
                                   "--encode-budget-ms", "50", "-o", out_dir)
    assert code == 0, stderr
    report = json.loads((out_dir / "report.json").read_text())
    baseline = report["baseline"]
    expected = np.mean([len(encode_image(p, "jpeg", 75)) for p in cifar_pixels])  # the original files' pixels
    assert baseline["available"] and baseline["images"] == len(cifar_pixels) == 40
    assert baseline["formats"]["jpeg_q75"]["mean_bytes"] == pytest.approx(expected)
    assert set(baseline["formats"]) == {"jpeg_q75", "jpeg_q90", "webp_q80", "png"}
    frame = baseline["frame"]
    assert frame["int8_code_bytes"] == 32 * 32 * 16 and frame["float32_code_bytes"] == 4 * 32 * 32 * 16
    assert frame["mean_frame_bytes"] > baseline["formats"][baseline["smallest_format"]]["mean_bytes"]
    warning = next(w for w in report["warnings"] if w.startswith("the split sends"))
    assert f"{baseline['frame_vs_smallest']:.1f}× the bytes of a" in warning and "edgekit reencode" in warning
    assert "WARNING: the split sends" in stdout and "input as an image (32×32×3" in stdout
    md = (out_dir / "report.md").read_text()
    assert "## Input baseline" in md and f"| input as JPEG q75 | {expected:.1f} |" in md
    # the codec choice: the target's CPU speed and the budget from the command line, recorded and shown
    wire, manifest = report["wire"], Bundle.load(out_dir).manifest
    assert wire["device"] == {"relative_cpu_speed": 0.25, "budget_ms": 50.0, "device": "rpi"}
    assert manifest["wire"]["codecs"]["zstd"]["level"] == wire["zstd"]["level"]
    assert manifest["provenance"]["options"]["encode_budget_ms"] == 50.0
    assert {c["status"] for c in wire["candidates"]} <= {"chosen", "kept", "rejected"}
    assert "wire: " in stdout and "(budget 50 ms)" in stdout and "| candidate |" in md


def test_encode_budget_must_be_positive(run_cli, tmp_path):
    code, _, stderr = run_cli("convert", tmp_path / "m.keras", "--split", "code", "--calib", tmp_path / "c.npz",
                              "--encode-budget-ms", "0", "-o", tmp_path / "b")
    assert code == 2 and "--encode-budget-ms" in stderr and "Traceback" not in stderr
