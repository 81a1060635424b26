"""``edgekit convert``: a thin click layer over :func:`edgekit.converters.convert`.

Only click is imported at module level; TensorFlow and ONNX Runtime load inside the command body.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

__all__ = ["convert_command"]


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        height, width = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        height = width = 0
    if min(height, width) < 1:
        raise click.BadParameter(f"{text!r} is not HxW (e.g. 32x32)")
    return height, width


@click.command("convert")
@click.argument("model", required=False, type=click.Path(dir_okay=True))
@click.option("--split", help="Layer (Keras) or tensor (ONNX) name whose output is the code.")
@click.option("--device-model", type=click.Path(), help="Already-split device half (instead of MODEL + --split).")
@click.option("--server-model", type=click.Path(), help="Already-split server half.")
@click.option("--calib", type=click.Path(), help="Calibration data: .npz, .npy or an image folder; for a sentence "
              "encoder a .txt file (one sentence per line) or an STS-B .csv.")
@click.option("--eval", "eval_path", type=click.Path(), help="Held-out labelled data (.npz with x, y; or class folders); "
              "for a sentence encoder sentences as --calib (STS-B pairs add the Spearman check).")
@click.option("--target", "targets", multiple=True, help="Target profile (repeatable): cpu, rpi, coral-edgetpu, "
              "ethos-u55-128, ethos-u65-256, imx8mp, or a profile .json. Default: rpi.")
@click.option("--runtime", type=click.Choice(["tflite", "onnx"]), help="Produce only this device runtime.")
@click.option("-o", "--output", type=click.Path(), help="Bundle directory to write.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--image-size", help="Image folder preprocessing: HxW (default: the model input size).")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]), help="Image color mode (default from channels).")
@click.option("--scale", type=float, help="Multiply pixel values by this (default 1/255).")
@click.option("--mean", help="Subtract after scaling, per channel: e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Divide after subtracting the mean, per channel.")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), help="Model input layout (default guessed).")
@click.option("--labels", type=click.Path(), help="Text file with one class label per line.")
@click.option("--server-precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ONNX Runtime calibration method.")
@click.option("--calib-samples", type=click.IntRange(1), default=500, show_default=True,
              help="Use at most this many calibration samples.")
@click.option("--eval-samples", type=click.IntRange(1), default=1000, show_default=True,
              help="Use at most this many held-out samples.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="Fail (exit 3) when int8 top-1 agreement with the float model is lower.")
@click.option("--debug-layers", is_flag=True, help="Add per-layer quantization error to the report.")
@click.option("--latency-runs", type=click.IntRange(0), default=50, show_default=True,
              help="Timed batch-1 runs per device half (0 skips latency).")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for the runners.")
@click.option("--codec", help="Wire codec to make the default (passed to fit_codecs).")
@click.option("--encode-budget-ms", type=click.FloatRange(0, min_open=True),
              help="Per-frame encode time allowed on the device (host time scaled by the target's CPU speed); "
                   "slower codecs and zstd levels are not chosen. Default: 2.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the summary.")
@click.option("--list-targets", is_flag=True, help="List the target profiles and exit.")
@click.option("--list-splits", is_flag=True, help="List MODEL's valid cut points (name, shape, code bytes) and exit.")
def convert_command(model, split, device_model, server_model, calib, eval_path, targets, runtime, output, force,
                    image_size, color, scale, mean, std, layout, labels, server_precision, calib_method,
                    calib_samples, eval_samples, min_agreement, debug_layers, latency_runs, threads, codec,
                    encode_budget_ms, seed, as_json, list_targets, list_splits):
    """Convert a model with a re-encoder into a quantized device/server bundle with a parity report.

    Everything up to the code (--split) becomes the int8 device half (TFLite and/or ONNX per target), the
    rest the server half (ONNX). The deployed path is checked against the float model on held-out data.

    \b
    Example:
      edgekit convert model.keras --split code --calib calib.npz --eval test.npz \\
          --target rpi --target ethos-u55-128 --target coral-edgetpu -o bundles/fmnist-v1
      edgekit convert model.onnx --split /enc/Relu_output_0 --calib imgs/ --image-size 32x32 \\
          --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --target cpu -o bundles/cifar
      edgekit convert model.pt2 --list-splits       # a torch.export program (torch.export.save)
      edgekit convert all-MiniLM-L6-v2/ --calib ../shared/data/sts-b/sts-train.csv \\
          --eval ../shared/data/sts-b/sts-dev.csv -o bundles/minilm   # a sentence encoder folder
    """
    from edgekit.errors import ParityError

    from .report import summary_lines
    from .text_manifest import text_summary

    if list_targets:
        from .targets import list_targets as names, load_target

        for name in names():
            click.echo(f"{name:15s} {load_target(name).description}")
        return
    if list_splits:
        from .split_points import list_split_points, split_point_lines

        points = list_split_points(model)
        click.echo(json.dumps({"model": model, "split_points": [p.to_dict() for p in points]}, indent=2) if as_json
                   else "\n".join(split_point_lines(points, model)))
        return
    from .pipeline import convert

    pre = {"size": _size(image_size), "color": color, "scale": scale, "mean": _floats(mean), "std": _floats(std),
           "layout": layout}
    result = convert(
        model=model, split=split, calib=calib, eval=eval_path, targets=list(targets) or ["rpi"], output=output,
        force=force, device_model=device_model, server_model=server_model,
        preprocessing={k: v for k, v in pre.items() if v is not None} or None, labels=labels, runtime=runtime,
        server_precision=server_precision, calib_method=calib_method, calib_samples=calib_samples,
        eval_samples=eval_samples, min_agreement=min_agreement, debug_layers=debug_layers,
        latency_runs=latency_runs, threads=threads, codec=codec, encode_budget_ms=encode_budget_ms, seed=seed,
        command=shlex.join(["edgekit", *sys.argv[1:]]) if sys.argv else None, progress=True,
    )
    text = result.report.get("kind") == "text"
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
    else:
        click.echo(text_summary(result.report) if text else "\n".join(summary_lines(result.report)))
        click.echo(f"bundle written to {result.bundle_path} (report: {result.bundle_path / 'report.md'})")
    if not result.passed and text:
        raise ParityError(result.report["warnings"][0] + " (bundle written, marked failing)",
                          "try the other int8 quantization's figures in report.md, or more calibration sentences")
    if not result.passed:
        raise ParityError(
            f"top-1 agreement {result.report['worst_agreement']:.4f} is below --min-agreement {min_agreement} "
            f"(bundle written, marked failing)", _parity_fix(result.report, calib_method))


def _parity_fix(report: dict, calib_method: str) -> str:
    """Fused int8 kernels that disagree with the reference are a scheme problem, not a calibration one: the
    report's kernel warning says what to do, knowing the scheme the run already used; nor is the calibration
    method the run used advised again."""
    kernels = next((w for w in report["warnings"] if "fused int8 kernels" in w), None)
    if kernels is not None:
        return ("ONNX Runtime's fused int8 kernels differ from the reference on this CPU (see report.md): "
                + kernels.rsplit(" — ", 1)[-1])
    layers = ", ".join(report.get("layers_to_check") or []) or "see report.md"
    from .onnx_quant import CALIBRATION_METHODS

    others = " or ".join(m for m in CALIBRATION_METHODS if m != calib_method)
    return (f"look at layers {layers}; try more or more representative calibration data, --calib-method "
            f"{others}, or a split point after fewer layers")
