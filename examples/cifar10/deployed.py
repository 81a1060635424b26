"""Top-1 and bytes of a converted bundle's deployed path, on real frames, as the device and server run it.

    x ──device runner (int8 TFLite)──► int8 code ──WireEncoder (bundle codec)──► frame bytes ─┐
    y ◄──top-1── server runner (ONNX) ◄── dequantize ◄── WireDecoder ◄──────────────────────────┘

The frame is built by edgekit's own encoder and parsed by its own decoder, so the bytes are those the link
carries (its header included) and the server sees exactly what the frame holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["evaluate_bundle"]


def evaluate_bundle(bundle_path: str | Path, x: np.ndarray, y: np.ndarray, target: str = "rpi",
                    batch: int = 500, level: int | None = None, runtime: str = "tflite") -> dict:
    """Deployed top-1 on ``(x, y)`` (x already preprocessed) and the frame sizes with the bundle's codec; a
    nested bundle's frames at rate ``level`` (its first channels, docs/wire-format.md, Levels) if given."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.runtime import open_device_runner, open_server_runner
    from edgekit.wire.decoder import WireDecoder
    from edgekit.wire.encoder import WireEncoder
    from edgekit.wire.frame_v1 import HEADER_SIZE
    from edgekit.wire.frame_v2 import frame_version_of, split_v2

    bundle = Bundle.load(bundle_path)
    model = bundle.device_model(target=target, runtime=runtime)
    device = open_device_runner(model.path, code_quant=model.code_quant)  # an ONNX half's lives in the manifest
    server = open_server_runner(bundle.server_model.path)
    encoder, decoder = WireEncoder.from_bundle(bundle), WireDecoder([bundle])
    sizes, payloads, predictions = [], [], []
    for start in range(0, len(x), batch):
        codes = device.run(x[start:start + batch])
        frames = [encoder.encode(code, *device.code_quant, seq=start + i, boot_id=1, timestamp_ns=0, level=level)
                  for i, code in enumerate(codes)]
        sizes += [len(f) for f in frames]
        payloads += [split_v2(f).payload_len if frame_version_of(f) == 2 else len(f) - HEADER_SIZE
                     for f in frames]  # the frame without its header
        received = np.stack([decoder.decode(f).dequantize() for f in frames])
        predictions.append(server.run(received).reshape(len(frames), -1).argmax(axis=1))
    sizes_arr = np.array(sizes)
    return {"codec": encoder.codec_name, "level": level, "top1": float(np.mean(np.concatenate(predictions) == y)),
            "mean_bytes": float(sizes_arr.mean()), "p95_bytes": float(np.percentile(sizes_arr, 95)),
            "mean_payload_bytes": float(np.mean(payloads)),
            "frames": len(sizes), "code_shape": list(bundle.code.shape), "bundle_id": bundle.bundle_id}
