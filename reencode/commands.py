"""``edgekit reencode``: a thin click layer over :func:`edgekit.reencode.reencode`.

Only click is imported at module level; TensorFlow and ONNX load inside the command body.
"""

from __future__ import annotations

import sys

import click

__all__ = ["reencode_command"]


@click.command("reencode")
@click.argument("model", type=click.Path())
@click.option("--split", required=True, help="Layer (Keras) or tensor (ONNX) whose output the re-encoder compresses.")
@click.option("--method", required=True, type=click.Choice(["pca", "distill", "entropic"]),
              help="pca: projection, no training (Keras, ONNX); distill / entropic: trained bottleneck (Keras).")
@click.option("--data", required=True, type=click.Path(), help="Training/calibration data: .npz, .npy or an image folder.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output model: .keras or .onnx.")
@click.option("--channels", type=click.IntRange(1), help="Code channels K.")
@click.option("--target-agreement", type=float, help="pca: the smallest K keeping this top-1 agreement on DATA.")
@click.option("--epochs", type=click.IntRange(0), default=10, show_default=True, help="Head-distillation epochs.")
@click.option("--kd-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Then epochs of distillation on the teacher's outputs (and labels, if DATA has them).")
@click.option("--train-tail", is_flag=True,
              help="Fine-tune the teacher's tail too in the --kd-epochs stage (labels + teacher's outputs).")
@click.option("--beta", type=click.FloatRange(0), default=0.0, show_default=True,
              help="entropic: rate weight (per bit per input pixel); larger = fewer bytes.")
@click.option("--downsample", is_flag=True, help="distill/entropic: stride-2 encoder (4x fewer code positions).")
@click.option("--hidden", type=click.IntRange(1), help="Hidden channels of encoder/decoder (default: the cut's).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue training from OUTPUT.ckpt.npz.")
@click.option("--max-samples", type=click.IntRange(2), help="Use at most this many samples of DATA.")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--image-size", help="Image folder preprocessing: HxW (default: the model input size).")
@click.option("--scale", type=float, help="Multiply pixel values by this (default 1/255).")
@click.option("--mean", help="Subtract after scaling, per channel: e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Divide after subtracting the mean, per channel.")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), help="Model input layout (default guessed).")
def reencode_command(model, split, method, data, output, channels, target_agreement, epochs, kd_epochs, train_tail, beta,
                     downsample, hidden, batch_size, learning_rate, seed, resume, max_samples, force, image_size,
                     scale, mean, std, layout):
    """Insert a re-encoder named `code` into MODEL at --split, ready for `edgekit convert --split code`.

    \b
    Example:
      edgekit reencode resnet20.keras --split stage1_block3_out --method pca --target-agreement 0.99 \\
          --data calib.npz -o resnet20-pca.keras
      edgekit reencode resnet20.keras --split stage1_block3_out --method entropic --channels 8 \\
          --downsample --beta 0.1 --epochs 10 --data train.npz -o resnet20-ent.keras
      edgekit convert resnet20-ent.keras --split code --calib calib.npz --eval test.npz -o bundles/r20
    """
    from edgekit.converters.commands import _floats, _size

    from .pipeline import reencode

    pre = {"size": _size(image_size), "scale": scale, "mean": _floats(mean), "std": _floats(std), "layout": layout}
    result = reencode(model=model, split=split, method=method, data=data, output=output, channels=channels,
                      target_agreement=target_agreement, epochs=epochs, kd_epochs=kd_epochs, beta=beta,
                      downsample=downsample, hidden=hidden, batch_size=batch_size, learning_rate=learning_rate,
                      seed=seed, resume=resume, train_tail=train_tail, preprocessing={k: v for k, v in pre.items() if v is not None} or None,
                      max_samples=max_samples, progress=sys.stderr.isatty(), echo=lambda line: click.echo(line, err=True),
                      force=force)
    settings = result.metadata["settings"]
    extra = "".join(f", {k} {settings[k]:.4g}" for k in ("explained_variance", "agreement_on_data") if k in settings)
    click.echo(f"{method} re-encoder with {settings['channels']} code channels{extra} written to {result.output} "
               f"(next: edgekit convert {result.output} --split code ...)")
