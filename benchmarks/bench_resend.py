"""Re-sends when the receiver falls behind: real agents, a real receiver the OS runs part of the time, Mosquitto.

    python benchmarks/bench_resend.py [--devices 6] [--fps 100] [--frames 1500] [--duty 0.35]
                                      [--timeouts 5,60] [--bundle DIR]

Each step starts ``--devices`` agents (``edgekit device run``) streaming ``--frames`` frames each at ``--fps``
into one receiver (``edgekit server run``) that runs only ``--duty`` of the time (SIGSTOP/SIGCONT every 100 ms,
as a receiver on a saturated host gets the CPU), so confirmations fall seconds behind; the receiver says so in
its status (docs/server.md, Receiver status), and the agents should then wait. Per ``--confirm-timeout`` it
prints the frames stored, the re-sends the agents made, the duplicate deliveries the receiver stored no row
for, the p95 capture → stored latency and the time to store everything, and each as a ratio to the last
timeout's step in this same run (60 s: the timeout under which the issue measured no re-send at all).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench_load import build_bundle
from edgekit.demo.roles import count_results, start_device, start_server
from edgekit.mqtt.broker import local_broker
from edgekit.server.stats import summarize


def throttle(pid: int, duty: float, stop: threading.Event, period_s: float = 0.1) -> None:
    """Let process ``pid`` run ``duty`` of every ``period_s`` until ``stop`` is set (then leave it running)."""
    try:
        while not stop.is_set():
            signal_send(pid, signal.SIGSTOP)
            time.sleep(period_s * (1 - duty))
            signal_send(pid, signal.SIGCONT)
            time.sleep(period_s * duty)
    finally:
        signal_send(pid, signal.SIGCONT)


def signal_send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_step(args, url: str, bundle: Path, source: Path, work: Path, timeout_s: float) -> dict:
    step = work / f"timeout-{timeout_s:g}"
    db = step / "results.sqlite"
    server = start_server([bundle], url, db, step / "server.log", "--client-id", f"rx-{timeout_s:g}")
    stop = threading.Event()
    throttler = threading.Thread(target=throttle, args=(server.process.pid, args.duty, stop), daemon=True)
    throttler.start()
    devices = [start_device(bundle, url, f"dev-{timeout_s:g}-{i}", source, step / f"spool{i}.sqlite",
                            step / f"device{i}.log", "--fps", str(args.fps), "--confirm-timeout", str(timeout_s),
                            "--linger", "600")
               for i in range(args.devices)]
    started = time.monotonic()
    total = args.devices * args.frames
    try:
        finals = [d.final_json(timeout=1800) for d in devices]
        took = time.monotonic() - started
    finally:
        stop.set()
        throttler.join(5)
        for d in devices:
            d.stop()
        server.stop()
    summary = summarize(db)
    counters = next(iter(summary["receivers"].values()), {})
    return {"timeout": timeout_s, "frames": total, "stored": count_results(db),
            "resent": sum(f["resent"] for f in finals), "duplicates": counters.get("duplicates", 0),
            "p95_ms": summary["p95_ms"], "seconds": took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--fps", type=float, default=100.0, help="frames/s per device")
    parser.add_argument("--frames", type=int, default=1500, help="frames per device")
    parser.add_argument("--duty", type=float, default=0.35, help="share of the time the receiver may run")
    parser.add_argument("--timeouts", default="5,60", help="agents' --confirm-timeout per step (s); the last is "
                        "the baseline of the ratios")
    parser.add_argument("--bundle", type=Path, default=None, help="a bundle (default: train and convert digits)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-bench-resend-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or build_bundle(work)
    x = np.load(bundle.parent / "model" / "test.npz")["x"]
    source = work / "frames.npz"
    np.savez(source, x=np.resize(x, (args.frames, *x.shape[1:])))
    print(f"{args.devices} agents x {args.frames} frames at {args.fps:g} frames/s; the receiver runs "
          f"{args.duty:.0%} of the time; work dir {work}", flush=True)
    rows = []
    with local_broker(workdir=work / "broker") as broker:
        for timeout_s in (float(t) for t in args.timeouts.split(",")):
            rows.append(run_step(args, broker.url, bundle, source, work, timeout_s))
            r = rows[-1]
            print(f"  --confirm-timeout {r['timeout']:g}: stored {r['stored']}/{r['frames']}, re-sends {r['resent']},"
                  f" duplicate deliveries {r['duplicates']}, p95 {r['p95_ms']:.0f} ms, {r['seconds']:.1f} s",
                  flush=True)
    base = rows[-1]
    print(f"\nratios to --confirm-timeout {base['timeout']:g} (same run):")
    for r in rows[:-1]:
        print(f"  {r['timeout']:g} s: re-sends {r['resent']} vs {base['resent']}, duplicates {r['duplicates']} vs "
              f"{base['duplicates']}, p95 x{r['p95_ms'] / max(base['p95_ms'], 1e-9):.2f}, "
              f"time x{r['seconds'] / base['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
