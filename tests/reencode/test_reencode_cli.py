"""``edgekit reencode`` on the command line: it writes a model convert can cut, and every user mistake is
one line naming the problem and the fix, with a non-zero exit and no traceback."""

from __future__ import annotations

import pytest

from edgekit.reencode.metadata import read_metadata


def test_pca_from_the_command_line(run_cli, teacher, tmp_path):
    out = tmp_path / "pca.keras"
    code, stdout, _ = run_cli("reencode", teacher.path, "--split", "feat", "--method", "pca", "--channels", "6",
                              "--data", teacher.train, "-o", out)
    assert code == 0, stdout
    assert "pca re-encoder with 6 code channels" in stdout and str(out) in stdout
    assert read_metadata(out)["settings"]["channels"] == 6


@pytest.mark.parametrize("args, message", [
    (["--method", "distill"], "distill needs --channels K"),
    (["--method", "pca"], "pca needs exactly one of --channels K or --target-agreement A"),
    (["--method", "pca", "--channels", "4", "--target-agreement", "0.9"], "pca needs exactly one of"),
    (["--method", "pca", "--target-agreement", "1.5"], "--target-agreement 1.5 is not in (0, 1]"),
    (["--method", "pca", "--channels", "99"], "--channels 99 is outside 1..16"),
    (["--method", "pca", "--channels", "4", "--split", "fet"], "split 'fet' is not a layer of the model — nearest"),
    (["--method", "pca", "--channels", "4", "--split", "logits"], "split 'logits' is the model's input or output"),
    (["--method", "pca", "--channels", "4", "-o", "{tmp}/x.onnx"], "a Keras model re-encodes to a .keras file"),
    (["--method", "distill", "--channels", "4", "--resume"], "--resume given but there is no checkpoint"),
    (["--method", "pca", "--channels", "4", "--train-tail"], "--train-tail needs a trained re-encoder"),
    (["--method", "distill", "--channels", "4", "--train-tail"], "--train-tail fine-tunes the tail in the knowledge"),
    (["--method", "pca", "--channels", "4", "--data", "{tmp}/missing.npz"], "data {tmp}/missing.npz not found"),
    (["--method", "pca", "--channels", "4", "-o", "{tmp}/a-file/out.keras"], "cannot create the output folder"),
])
def test_mistakes_are_one_line_errors(run_cli, teacher, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    (tmp_path / "a-file").write_text("a file where -o wants a folder")
    defaults = {"--split": "feat", "--data": str(teacher.train), "-o": str(tmp_path / "out.keras")}
    code, stdout, stderr = run_cli("reencode", teacher.path, *args,
                                   *[a for key, value in defaults.items() if key not in args for a in (key, value)])
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert message.format(tmp=tmp_path) in stderr
    assert "Traceback" not in stderr + stdout


def test_onnx_models_take_pca_only(run_cli, onnx_teacher, tmp_path):
    code, _, stderr = run_cli("reencode", onnx_teacher.path, "--split", onnx_teacher.split, "--method", "distill",
                              "--channels", "4", "--data", onnx_teacher.data, "-o", tmp_path / "x.onnx")
    assert code == 2 and "an ONNX model takes --method pca with an .onnx output" in stderr


def test_existing_output_needs_force(run_cli, teacher, tmp_path):
    out = tmp_path / "exists.keras"
    out.write_bytes(b"")
    code, _, stderr = run_cli("reencode", teacher.path, "--split", "feat", "--method", "pca", "--channels", "4",
                              "--data", teacher.train, "-o", out)
    assert code == 2 and f"output {out} already exists" in stderr


def test_image_folder_data_with_preprocessing_options(run_cli, teacher, digits, tmp_path):
    from PIL import Image

    for i, (image, label) in enumerate(zip(digits.x_train[:40], digits.y_train[:40])):
        folder = tmp_path / "images" / f"digit-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).astype("uint8"), "L").save(folder / f"{i}.png")
    out = tmp_path / "pca.keras"
    code, stdout, stderr = run_cli("reencode", teacher.path, "--split", "feat", "--method", "pca", "--channels", "4",
                                   "--data", tmp_path / "images", "--scale", "0.00392156862745098", "-o", out)
    assert code == 0, stderr
    assert read_metadata(out)["settings"]["channels"] == 4
