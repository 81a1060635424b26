"""Confirm a benchmark point end to end: Mosquitto, ``edgekit server run`` and ``edgekit device run``.

    test images (npz) ──► device agent (int8 TFLite, codec, frame, spool) ──MQTT──► Mosquitto
        ──► receiver (decode, ONNX server half) ──► results.sqlite ──► top-1, bytes per frame

The roles are started with the helpers ``edgekit demo`` and the pipeline tests use, as real subprocesses;
the figures come from the results database and the agent's own byte counter, to be compared with the
in-process measurement of the same images (:func:`deployed.evaluate_bundle`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

__all__ = ["confirm_through_mosquitto"]


def confirm_through_mosquitto(bundle: Path, x: np.ndarray, y: np.ndarray, work: Path, timeout: float = 600.0,
                              level: int | None = None) -> dict:
    """Stream ``x`` (preprocessed) through a local Mosquitto; top-1 from the stored results, bytes from the agent.
    A nested bundle's point is sent at its rate ``level`` (``--level``: the agent's ladder would follow the link)."""
    from edgekit.mqtt.broker import MosquittoBroker
    from edgekit.demo.roles import count_results, start_device, start_server

    work = work.resolve()  # the broker and the roles run in their own working directories
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "spool.sqlite"):
        (work / stale).unlink(missing_ok=True)
    source, db = work / "stream.npz", work / "results.sqlite"
    np.savez(source, x=x)
    broker = MosquittoBroker(workdir=work / "broker").start()
    try:
        # convert's 99% agreement bar is for shipping; the benchmark measures whatever each point deploys
        server = start_server([bundle], broker.url, db, work / "server.log", "--allow-failing-parity")
        try:
            device = start_device(bundle, broker.url, "bench-01", source, work / "spool.sqlite", work / "device.log",
                                  "--fps", "0", "--linger", "30", "--allow-failing-parity",
                                  *(["--level", str(level)] if level is not None else []))
            stats = device.final_json(timeout)
            deadline = time.monotonic() + 60
            while count_results(db) < len(x) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            server.stop()
    finally:
        broker.close()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT seq, label_index FROM results WHERE device = 'bench-01' AND boot_id = ?",
                       (stats["boot_id"],)).fetchall()
    con.close()
    seqs = np.array([r[0] for r in rows], np.int64)
    labels = np.array([r[1] for r in rows], np.int64)
    return {"frames": len(x), "received": len(rows),
            "top1": float(np.sum(labels == y[seqs]) / len(x)),
            "mean_bytes": stats["bytes_sent"] / max(stats["sent"], 1)}
