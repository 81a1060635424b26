"""The rate levels of a nested re-encoder, measured as deployed (issue 22): one row per level of the bundle.

    held-out int8 codes (the device half's) ─► frames at each level with the default codec (v2 header) ─► bytes
                                            └► channels past the level set to the zero point ─► dequantize ─►
                                               server half ─► top-1 (with labels) and agreement with all channels

The frames are the ones the agent sends at that level (docs/wire-format.md, Levels), so the report's bytes
and the wire's agree; the accuracy is the server's on exactly what it decodes from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.wire.spec import dequantize

from .halves import batched
from .parity import EVAL_BATCH
from .state import ConversionState

__all__ = ["level_rows", "MAX_FRAMES"]

MAX_FRAMES = 1000  # held-out codes encoded per level (sizes); the accuracy uses them all
_PLACEHOLDER_ID = "00" * 32


def level_rows(work: ConversionState, server_path: Path, codes: np.ndarray, wire: dict[str, Any],
               threads: int | None) -> list[dict[str, Any]]:
    """Per level of ``wire["levels"]``: channels, mean frame and payload bytes, top-1 agreement with the whole
    code's output and, with labels, top-1 accuracy."""
    from edgekit.runtime import open_server_runner
    from edgekit.wire.encoder import WireEncoder
    from edgekit.wire.frame_v2 import split_v2

    scale, zero_point = work.wire_quant
    encoder = WireEncoder(_PLACEHOLDER_ID, codes.shape[1:], wire, work.bundle, wire_quant=work.wire_quant)
    server = batched(open_server_runner(server_path, threads=threads).run, EVAL_BATCH)
    top = _top1(server(dequantize(codes, scale, zero_point)))
    labels = work.eval.y
    rows = []
    for level, channels in enumerate(wire["levels"]):
        frames = [encoder.encode(c, scale, zero_point, seq=i, boot_id=1, timestamp_ns=0, level=level)
                  for i, c in enumerate(codes[:MAX_FRAMES])]
        cut = codes.copy()
        cut[..., channels:] = zero_point
        predicted = _top1(server(dequantize(cut, scale, zero_point)))
        rows.append({"level": level, "channels": channels,
                     "mean_frame_bytes": float(np.mean([len(f) for f in frames])),
                     "mean_payload_bytes": float(np.mean([split_v2(f).payload_len for f in frames])),
                     "top1_agreement_with_all_channels": float(np.mean(predicted == top)),
                     "accuracy": float(np.mean(predicted == labels)) if labels is not None else None})
    return rows


def _top1(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1).argmax(axis=1)
