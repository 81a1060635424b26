"""The server half on a batch of frames, on a thread of its own: frames in, results out.

::

    worker: batch N+1 ─submit─► inference thread: dequantize ─► ONNX Runtime ─► top-k / text task ─► results
    worker: stores and publishes batch N meanwhile (SQLite, JSON, the link thread's outbox)

Why a thread of its own: ONNX Runtime releases the GIL while it runs, so the model can work on batch N+1 while
the worker stores batch N; one after the other, the model sat idle for every commit (docs/server.md,
Throughput). At most one batch waits behind the one running, so a receiver that cannot keep up leaves its
frames unacknowledged in the broker rather than in memory.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from edgekit.server.store import Result
from edgekit.server.text_tasks import Answer
from edgekit.wire.spec import dequantize

__all__ = ["Inference", "inference_threads", "top_labels"]


def inference_threads(cores: int | None = None) -> int:
    """ONNX Runtime's intra-op threads in a receiver: every core, with spinning off (``open_server_runner(...,
    spin=False)``).

    Spinning is what hurt: idle ONNX Runtime threads spun on the cores the receiver's own threads (MQTT,
    decoding, SQLite) need, and two spinning threads ran the model at half the speed of one. Without spinning,
    two threads on this 2-core machine drained 0.54-0.60 of the raw limit when idle against 0.43-0.52 with one,
    and made no consistent difference under load (docs/server.md, Throughput). ``--threads`` overrides it."""
    return max(1, cores or os.cpu_count() or 1)


class Inference:
    """Runs batches of frames through their bundles' server halves, one batch at a time, on its own thread.

    ``runners`` and ``tasks`` are keyed by bundle id (a text bundle's task turns embeddings into answers,
    server/text_tasks.py); ``metrics`` gets each batch's size and time."""

    def __init__(self, bundles, runners: dict, tasks: dict, topk: int, metrics):
        self.labels = {b.bundle_id: b.output.labels for b in bundles}
        self.runners, self.tasks, self.topk, self.metrics = runners, tasks, topk, metrics
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="receiver-inference")

    def submit(self, items: list) -> Future:
        """Start on a batch of frames (items with ``device``, ``frame`` and ``received_ns``); the future's
        result is :meth:`run`'s."""
        return self._pool.submit(self.run, items)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run(self, items: list) -> list[tuple[object, Result, float]]:
        """``(item, result, inference ms)`` for every item, in order, batched per bundle."""
        by_bundle: dict[str, list] = {}
        for item in items:
            by_bundle.setdefault(item.frame.bundle_id, []).append(item)
        results = []
        for bundle_id, group in by_bundle.items():
            results.extend(self._run_bundle(bundle_id, group))
        return results

    def _run_bundle(self, bundle_id: str, items: list) -> list[tuple[object, Result, float]]:
        frames = [item.frame for item in items]
        start = time.perf_counter()
        outputs = np.asarray(self.runners[bundle_id].run(_codes(frames))).reshape(len(items), -1)
        task = self.tasks.get(bundle_id)
        answers = (task.answer(bundle_id, [(i.device, int(f.boot_id), int(f.seq)) for i, f in zip(items, frames)],
                               outputs)
                   if task is not None else top_labels(outputs, self.labels[bundle_id], self.topk))
        infer_ms = (time.perf_counter() - start) * 1e3
        self.metrics.inferred(len(items), infer_ms / 1e3)
        done_ns = time.time_ns()
        return [(item, Result(item.device, int(f.boot_id), int(f.seq), bundle_id, *answer, int(f.timestamp_ns),
                              item.received_ns, done_ns, len(items)), infer_ms)
                for item, f, answer in zip(items, frames, answers)]


def _codes(frames: list) -> np.ndarray:
    """The batch's float32 codes: one dequantization for the whole batch when its frames share a scale and zero
    point (the usual case: the bundle's), frame by frame otherwise."""
    first = frames[0]
    if all(f.scale == first.scale and f.zero_point == first.zero_point for f in frames):
        return dequantize(np.stack([f.code for f in frames]), first.scale, first.zero_point)
    return np.stack([f.dequantize() for f in frames])


def top_labels(outputs: np.ndarray, labels: list[str] | None, topk: int) -> list[Answer]:
    """An image bundle's answers: the ``topk`` most probable labels of each row (one sort for the batch)."""
    probs = _as_probabilities(outputs)
    labels = labels or [str(i) for i in range(probs.shape[1])]
    order = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
    scores = np.take_along_axis(probs, order, axis=1).tolist()
    answers = []
    for row_order, row_scores in zip(order.tolist(), scores):
        best = [(labels[i], round(s, 6)) for i, s in zip(row_order, row_scores)]
        answers.append(Answer(row_order[0], best[0][0], best[0][1], best))
    return answers


def _as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Scores as probabilities: softmax unless each row already is a distribution."""
    outputs = outputs.astype(np.float64)
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
