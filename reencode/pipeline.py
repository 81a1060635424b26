"""``reencode``: a trained model + a cut + data → the same model with a re-encoder whose code layer is ``code``.

    MODEL (.keras) ─► cut at --split ─► features of DATA ─► pca | distill | entropic ─► OUT.keras
    MODEL (.onnx)  ─► pca only: projection nodes inserted at the cut tensor          ─► OUT.onnx
    MODEL (.pt2)   ─► cut at the --split node ─► features of DATA ─► pca | distill | entropic (PyTorch) ─► OUT.pt2
    all: metadata (method, settings, teacher sha256, learned prior) in the model file, see metadata.py
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocessing

from .trained import TrainOptions
from .inputs import load_inputs
from .metadata import make_record, write_keras_metadata
from .nested import check_levels

__all__ = ["reencode", "ReencodeResult", "METHODS"]

METHODS = ("pca", "distill", "entropic")


@dataclass
class ReencodeResult:
    """The written model, the record stored in it, and the per-epoch training history."""

    output: Path
    metadata: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def reencode(model: str | Path, split: str, method: str, data: str | Path | np.ndarray, output: str | Path,
             channels: int | None = None, target_agreement: float | None = None, labels: np.ndarray | None = None,
             epochs: int = 10, kd_epochs: int = 0, beta: float = 0.0, downsample: bool = False,
             hidden: int | None = None, batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 0,
             resume: bool = False, train_tail: bool = False, qat_epochs: int = 0, levels: list[int] | None = None,
             preprocessing: Preprocessing | dict[str, Any] | None = None,
             max_samples: int | None = None, progress: bool = False,
             echo: Callable[[str], None] | None = None, force: bool = False) -> ReencodeResult:
    """Insert a re-encoder into ``model`` at ``split``; see ``docs/reencode.md`` and the package docstring."""
    from edgekit.converters.sources import SourceFormat, detect_format

    output = Path(output)
    levels, channels = check_levels(levels, channels, method)  # a nested code (nested.py)
    _check_options(method, channels, target_agreement, output, force, resume, train_tail, kd_epochs)
    _check_qat(method, qat_epochs)
    fmt = detect_format(model)
    _make_output_folder(output)
    if fmt == SourceFormat.SAVEDMODEL:
        raise UsageError(f"{model} is a SavedModel, whose layers edgekit cannot cut into",
                         "pass the .keras model (or export an .onnx for --method pca)")
    if fmt == SourceFormat.ONNX:
        if method != "pca" or output.suffix != ".onnx":
            raise UsageError(f"an ONNX model takes --method pca with an .onnx output, not {method} → {output.suffix}",
                             "use --method pca -o OUT.onnx, or pass the Keras model for distill/entropic")
        from .onnx_pca import pca_onnx

        return ReencodeResult(*pca_onnx(Path(model), split, data, output, channels, target_agreement,
                                        preprocessing, max_samples))
    options = TrainOptions(channels=channels or 0, epochs=epochs, kd_epochs=kd_epochs, beta=beta,
                           downsample=downsample, hidden=hidden, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed, train_tail=train_tail, qat_epochs=qat_epochs,
                           levels=levels)
    if fmt == SourceFormat.PYTORCH:
        if output.suffix != ".pt2":
            raise UsageError(f"a PyTorch program re-encodes to a .pt2 program, not {output.name}", "use -o OUT.pt2")
        if levels:
            raise UsageError("nested codes (--levels) are trained for Keras models only so far",
                             "pass the Keras model, or drop --levels")
        from .torch_methods import pca_torch, trained_torch

        if method == "pca":
            return ReencodeResult(*pca_torch(Path(model), split, data, output, channels, target_agreement,
                                             preprocessing, max_samples))
        return ReencodeResult(*trained_torch(Path(model), split, method, data, output, options, labels, resume,
                                             preprocessing, max_samples, progress, echo))
    if output.suffix != ".keras":
        raise UsageError(f"a Keras model re-encodes to a .keras file, not {output.name}", "use -o OUT.keras")
    return _reencode_keras(Path(model), split, method, data, output, channels, target_agreement, labels, options,
                           resume, preprocessing, max_samples, progress, echo)


def _make_output_folder(output: Path) -> None:
    """Create the output's folder before any work: training checkpoints into it after the first epoch."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output folder {output.parent}: {err.strerror}",
                         "choose another -o") from None


def _check_qat(method: str, qat_epochs: int) -> None:
    """Quantization-aware fine-tuning (qat.py) acts on the rounding of an entropic code: the others have none."""
    if qat_epochs and method != "entropic":
        raise UsageError(f"--qat-epochs fine-tunes an entropic code's rounding; {method} has no rounded code",
                         "use --method entropic, or drop --qat-epochs")


def _check_options(method: str, channels: int | None, target: float | None, output: Path, force: bool,
                   resume: bool, train_tail: bool, kd_epochs: int) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}", f"choose one of {', '.join(METHODS)}")
    if (channels is None) == (target is None) and method == "pca":
        raise UsageError("pca needs exactly one of --channels K or --target-agreement A",
                         "pass --channels 8, or --target-agreement 0.99")
    if method != "pca" and (channels is None or target is not None):
        raise UsageError(f"{method} needs --channels K (--target-agreement is for pca)", "pass --channels 8")
    if train_tail and method == "pca":
        raise UsageError("--train-tail needs a trained re-encoder; pca does not train",
                         "use --method distill or entropic with --kd-epochs N --train-tail")
    if train_tail and method != "pca" and not kd_epochs:
        raise UsageError("--train-tail fine-tunes the tail in the knowledge-distillation stage, but --kd-epochs is 0",
                         "pass --kd-epochs N (e.g. 2) with --train-tail")
    if channels is not None and channels < 1:
        raise UsageError(f"--channels {channels} must be at least 1", "pass a positive K")
    if target is not None and not 0 < target <= 1:
        raise UsageError(f"--target-agreement {target} is not in (0, 1]", "pass e.g. 0.99")
    if output.exists() and not (force or resume):
        raise UsageError(f"output {output} already exists", "pass --force to replace it, or choose another -o")


def _reencode_keras(model_path: Path, split: str, method: str, data: Any, output: Path, channels: int | None,
                    target: float | None, labels: np.ndarray | None, options: TrainOptions, resume: bool,
                    preprocessing: Any, max_samples: int | None, progress: bool,
                    echo: Callable[[str], None] | None) -> ReencodeResult:
    from edgekit.converters.sources import load_keras

    from .keras_graph import cut_teacher
    from .keras_methods import pca_keras, trained_keras

    cut = cut_teacher(load_keras(model_path), split)
    x, y = load_inputs(data, cut.input_name, tuple(cut.teacher.inputs[0].shape[1:]), preprocessing, max_samples,
                       options.seed)
    if labels is not None:
        y = np.asarray(labels, np.int64)
    if method == "pca":
        result = pca_keras(cut, x, channels, target)
    else:
        result = trained_keras(cut, x, y, method, options, output, resume, progress, echo)
    record = make_record(method, model_path, split, result.settings, result.prior)
    result.model.save(output)
    write_keras_metadata(output, record)
    return ReencodeResult(output, record, result.history)
