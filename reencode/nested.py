"""Nested (Matryoshka-style) entropic codes: one encoder and one decoder for several rates (issue 22).

A nested code is trained so that its first c channels decode on their own, for each c in ``levels``
(``edgekit reencode --method entropic --levels 4,8,16,32``): every training sample keeps the channels of a
level drawn at random, the others set to 0 (what the wire's decoder fills them with, the zero point), and
the rate counts only the channels kept (trained.py, ``Objective._nested``). The top level is drawn for half
the samples, the others share the rest equally: the top level is what an open link sends and the one held
to the teacher's accuracy, and with uniform draws it saw only 1/L of the training (CIFAR-10, levels
1,2,4,8: 3.2 points below the teacher, docs/results.md). The bundle lists the
levels (``wire.levels``), the agent picks one per frame from its uplink (device/uplink.py), and the server
decodes any of them with the one server half::

    levels "4,8,16,32" ─► parse_levels (ascending, last = the code's channels)
    training batch     ─► keras_nest: per sample a level, a 0/1 mask over channels ─► decoder, rate
    after training     ─► level_summary: bits and top-1 agreement with the teacher per level (the record)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgekit.errors import UsageError

__all__ = ["parse_levels", "check_levels", "keras_nest", "level_odds", "level_summary", "SUMMARY_SAMPLES"]

SUMMARY_SAMPLES = 1000  # training samples the per-level record is measured on


def parse_levels(text: str | None) -> list[int] | None:
    """``"4,8,16,32"`` -> [4, 8, 16, 32] (None: not nested); a usage error for anything else."""
    if text is None:
        return None
    try:
        levels = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise UsageError(f"--levels {text!r} is not a list of channel counts", "write e.g. --levels 4,8,16,32") from None
    return levels


def check_levels(levels: list[int] | None, channels: int | None, method: str) -> tuple[list[int], int | None]:
    """(levels, the code's channels): ascending counts ≥ 1, the last = ``--channels`` (or giving it)."""
    if not levels:
        return [], channels
    if method != "entropic":
        raise UsageError(f"--levels nests an entropic code; {method} is not one", "use --method entropic")
    if len(levels) < 2 or any(b <= a for a, b in zip(levels, levels[1:])) or levels[0] < 1 or len(levels) > 256:
        raise UsageError(f"--levels {','.join(map(str, levels))}: need 2 to 256 ascending channel counts from 1",
                         "write e.g. --levels 4,8,16,32")
    if channels is not None and channels != levels[-1]:
        raise UsageError(f"--levels ends at {levels[-1]} channels but --channels is {channels}",
                         "drop --channels (the last level is the code's channels) or make them agree")
    return levels, levels[-1]


def keras_nest(levels: list[int], seed: int) -> tuple[Callable[[Any], tuple[Any, Any]], list[Any]]:
    """The training mask of a Keras nested code, and the variables to checkpoint (its random generator)."""
    import keras

    generator = keras.random.SeedGenerator(seed + 1)  # its own stream: the code's noise keeps the seed's
    counts = np.asarray(levels, np.int32)
    bounds = np.cumsum(level_odds(len(levels)))[:-1].astype(np.float32)  # level i: bounds[i-1] <= u < bounds[i]
    ops = keras.ops

    def nest(code):
        channels = code.shape[-1]
        draw = keras.random.uniform((ops.shape(code)[0], 1), seed=generator)
        pick = ops.sum(ops.cast(draw >= ops.convert_to_tensor(bounds)[None, :], "int32"), axis=1)
        kept = ops.take(ops.convert_to_tensor(counts), pick)
        keep = ops.cast(ops.arange(channels)[None, :] < kept[:, None], code.dtype)
        keep = ops.reshape(keep, (-1, *([1] * (len(code.shape) - 2)), channels))
        return code * keep, keep

    return nest, [generator.state]


def level_odds(count: int) -> np.ndarray:
    """How often training draws each level: half the samples the top one, the rest equally (see above)."""
    odds = np.full(count, 0.5 / (count - 1))
    odds[-1] = 0.5
    return odds


def level_summary(code: np.ndarray, levels: list[int], rebuild: Callable[[np.ndarray], np.ndarray],
                  bits: Callable[[np.ndarray, np.ndarray], np.ndarray], teacher_out: np.ndarray) -> list[dict]:
    """Per level, on the integer ``code`` (channels last) of some samples: mean bits per sample of the channels
    it sends under the learned prior, and the top-1 agreement of ``rebuild`` (decoder and tail) with the
    teacher's outputs when the other channels are 0."""
    teacher_top1 = teacher_out.reshape(len(teacher_out), -1).argmax(axis=1)
    rows = []
    for channels in levels:
        keep = (np.arange(code.shape[-1]) < channels).astype(np.float32)
        out = rebuild(code * keep)
        rows.append({"channels": channels, "bits": float(np.mean(bits(code, keep))),
                     "agreement": float(np.mean(out.reshape(len(out), -1).argmax(axis=1) == teacher_top1))})
    return rows
