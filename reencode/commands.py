"""``edgekit reencode``: a thin click layer over :func:`edgekit.reencode.reencode`.

Only click is imported at module level; TensorFlow and ONNX load inside the command body.
"""

from __future__ import annotations

import sys

import click

__all__ = ["reencode_command"]


@click.command("reencode")
@click.argument("model", type=click.Path())
@click.option("--split", help="Layer (Keras), tensor (ONNX) or node (PyTorch) whose output the re-encoder compresses "
              "(image models).")
@click.option("--method", required=True, type=click.Choice(["pca", "distill", "entropic", "itq", "pq", "nested", "whiten"]),
              help="pca: projection, no training (Keras, ONNX, PyTorch .pt2); distill / entropic: trained "
                   "bottleneck (Keras, PyTorch .pt2). "
                   "Text models: pca, itq, pq, whiten, distill, nested (docs/reencode.md).")
@click.option("--data", type=click.Path(), help="Training/calibration data: .npz, .npy or an image folder "
              "(text models: the STS-B folder, default $EDGEKIT_DATA/sts-b).")
@click.option("-o", "--output", "--out", "output", type=click.Path(),
              help="Output model: .keras, .onnx or .pt2, as MODEL (text models: a folder).")
@click.option("--bytes", "payload_bytes", type=click.IntRange(1), help="Text models: payload bytes per sentence.")
@click.option("--bits", type=click.Choice(["1", "2", "4", "8"]),
              help="Text models: bits per code value (1 = sign bits; default 2 for pca, distill, nested).")
@click.option("--prefixes", help="Text models, nested: payload prefixes (bytes) that decode, e.g. 8,12,16.")
@click.option("--cache", type=click.Path(), help="Text models: folder to keep the teacher's embeddings in.")
@click.option("--json", "as_json", is_flag=True, help="Text models: print the reencoder.json record.")
@click.option("--channels", type=click.IntRange(1), help="Code channels K.")
@click.option("--target-agreement", type=float, help="pca: the smallest K keeping this top-1 agreement on DATA.")
@click.option("--epochs", type=click.IntRange(0), help="Head-distillation epochs (default 10; text models: 20).")
@click.option("--kd-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Then epochs of distillation on the teacher's outputs (and labels, if DATA has them).")
@click.option("--train-tail", is_flag=True,
              help="Fine-tune the teacher's tail too in the --kd-epochs stage (labels + teacher's outputs).")
@click.option("--qat-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="entropic: then epochs of quantization-aware fine-tuning, so the int8 device half sends the "
                   "float model's symbols (docs/reencode.md).")
@click.option("--levels", help="entropic: a nested code whose first channels decode alone at each of these counts, "
              "e.g. 4,8,16,32 (one bundle, every link speed; the last is the code's channels).")
@click.option("--beta", type=click.FloatRange(0), default=0.0, show_default=True,
              help="entropic: rate weight (per bit per input pixel); larger = fewer bytes.")
@click.option("--downsample", is_flag=True, help="distill/entropic: stride-2 encoder (4x fewer code positions).")
@click.option("--hidden", type=click.IntRange(1), help="Hidden channels of encoder/decoder (default: the cut's).")
@click.option("--batch-size", type=click.IntRange(1), help="Default 64 (text models: 128 pairs).")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), help="Default 1e-3 (text models: 5e-4).")
@click.option("--seed", type=int)
@click.option("--resume", is_flag=True, help="Continue training from OUTPUT.ckpt.npz.")
@click.option("--max-samples", type=click.IntRange(2), help="Use at most this many samples of DATA (text: gold pairs).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--image-size", help="Image folder preprocessing: HxW (default: the model input size).")
@click.option("--scale", type=float, help="Multiply pixel values by this (default 1/255).")
@click.option("--mean", help="Subtract after scaling, per channel: e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Divide after subtracting the mean, per channel.")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), help="Model input layout (default guessed).")
def reencode_command(model, split, method, data, output, payload_bytes, bits, prefixes, cache, as_json, channels,
                     target_agreement, epochs, kd_epochs, train_tail, qat_epochs, levels, beta, downsample, hidden, batch_size,
                     learning_rate, seed, resume, max_samples, force, image_size, scale, mean, std, layout):
    """Insert a re-encoder named `code` into MODEL at --split, ready for `edgekit convert --split code`.

    \b
    Example:
      edgekit reencode resnet20.keras --split stage1_block3_out --method pca --target-agreement 0.99 \\
          --data calib.npz -o resnet20-pca.keras
      edgekit reencode resnet20.keras --split stage1_block3_out --method entropic --channels 8 \\
          --downsample --beta 0.1 --epochs 10 --data train.npz -o resnet20-ent.keras
      edgekit reencode resnet20.keras --split stage1_block3_out --method entropic --levels 2,4,8,16 \
          --downsample --beta 0.1 --data train.npz -o resnet20-ladder.keras    # one bundle, every link speed
      edgekit convert resnet20-ent.keras --split code --calib calib.npz --eval test.npz -o bundles/r20
      edgekit reencode MODEL_DIR --method distill --bytes 16 --out work/minilm-16   # a sentence-transformers folder
    """
    from edgekit.converters.commands import _floats, _size

    from .nested import parse_levels
    from .pipeline import reencode
    from .text_pipeline import is_text_model

    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if is_text_model(model):
        from .text_cli import run_text

        options = {**locals(), "bits": None if bits is None else int(bits), "progress": sys.stderr.isatty()}
        return run_text(model, method, output, payload_bytes, options, echo, as_json)
    _require_image_options(split, data, output, payload_bytes)
    epochs, batch_size = 10 if epochs is None else epochs, batch_size or 64
    learning_rate, seed = learning_rate or 1e-3, seed or 0
    pre = {"size": _size(image_size), "scale": scale, "mean": _floats(mean), "std": _floats(std), "layout": layout}
    result = reencode(model=model, split=split, method=method, data=data, output=output, channels=channels,
                      target_agreement=target_agreement, epochs=epochs, kd_epochs=kd_epochs, beta=beta,
                      downsample=downsample, hidden=hidden, batch_size=batch_size, learning_rate=learning_rate,
                      seed=seed, resume=resume, train_tail=train_tail, qat_epochs=qat_epochs,
                      levels=parse_levels(levels), preprocessing={k: v for k, v in pre.items() if v is not None} or None,
                      max_samples=max_samples, progress=sys.stderr.isatty(), echo=echo,
                      force=force)
    settings = result.metadata["settings"]
    extra = "".join(f", {k} {settings[k]:.4g}" for k in ("explained_variance", "agreement_on_data") if k in settings)
    click.echo(f"{method} re-encoder with {settings['channels']} code channels{extra} written to {result.output} "
               f"(next: edgekit convert {result.output} --split code ...)")


def _require_image_options(split, data, output, payload_bytes) -> None:
    """--split, --data and -o are required for an image model (a text model's folder needs none but -o)."""
    from edgekit.errors import UsageError

    missing = [flag for flag, value in (("--split", split), ("--data", data), ("-o", output)) if value is None]
    if missing:
        raise UsageError(f"an image model needs {', '.join(missing)}", "see edgekit reencode --help for examples")
    if payload_bytes is not None:
        raise UsageError("--bytes is for text models (a sentence-transformers folder)", "use --channels K")
