"""edgekit.reencode: put a re-encoder into a trained model at a cut, so a split pays (``edgekit reencode``).

The result is the same model with a layer/tensor named ``code`` in the cut, ready for
``edgekit convert --split code``. Importing this package is cheap; TensorFlow/ONNX load when a method runs.

API (stable)::

    from edgekit.reencode import reencode
    result = reencode(model="teacher.keras", split="stage1_block3_out", method="pca" | "distill" | "entropic",
                      data="calib.npz" | ndarray (N, *input_shape) float32, output="out.keras" | "out.onnx",
                      channels=K,                  # or target_agreement=0.99 (pca only)
                      labels=None,                 # int labels for the KD stage (else taken from an npz 'y')
                      epochs=10, kd_epochs=0,      # stage 1 head distillation, stage 2 KD (distill/entropic)
                      beta=0.0,                    # entropic: weight of the rate (bits per input pixel)
                      downsample=False, hidden=None, batch_size=64, learning_rate=1e-3, seed=0,
                      resume=False,                # continue from OUT.ckpt.npz (same settings)
                      train_tail=False,            # also fine-tune the teacher's tail in the KD stage
                      preprocessing=None,          # image folders: dict(size=..., scale=..., mean=..., std=...)
                      max_samples=None, progress=False, echo=print, force=False)
    result.output, result.metadata, result.history  # Path, dict (stored in the model), per-epoch dicts

    from edgekit.reencode.metadata import read_metadata
    read_metadata("out.keras")   # the record: method, split, settings, teacher_sha256, prior (entropic)

Methods: ``pca`` (Keras and ONNX; no training, no labels), ``distill`` (Keras), ``entropic`` (Keras; the
learned prior becomes the bundle's ``ans`` prior at convert time). Details: ``docs/reencode.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["reencode", "ReencodeResult", "METHODS"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
