"""Cost of frame authentication against the plain run, measured in the same process (not a timed test).

    python benchmarks/bench_frame_auth.py                             # trains and converts the digits example
    python benchmarks/bench_frame_auth.py --bundle build/demo/bundle --devices 10 --rate 20 --saturate 200
    python benchmarks/bench_frame_auth.py --bundle build/demo/bundle --rounds 0   # the CPU table alone

Each mode runs bench_load's fleet (one MQTT connection per simulated device, real frames from the bundle's
device half) against a fresh Mosquitto and a real ``edgekit server run``, in two steps: a steady step
(``--rate`` frames/s per device) for end-to-end latency, and a saturating one (``--saturate``) for the
receiver's throughput. Rounds alternate the modes and their order (plain, mac, mac, plain, ...) so that
the machine's load drift hits both alike; the report gives per-round figures, the medians, and each mode's ratio to plain.

Modes: ``plain`` (no authentication), ``mac`` (every device has a key: frames carry the HMAC-SHA256 tag, the
receiver checks tags and the replay window and signs results; edgekit/auth/). A last table gives the
MAC's CPU cost per frame (sign on the device, verify on the receiver) beside the decoder's own. (The cost
of TLS is benchmarks/bench_security.py's, measured the same way.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_load import Fleet, build_bundle, device_codes, step_figures
from edgekit.mqtt.broker import local_broker
from edgekit.demo.roles import count_results, start_server

BOOT_BASE = 10_000


class SignedFleet(Fleet):
    """bench_load's fleet where each device signs its frames with its own key from ``keys``: the plain
    fleet's one encoder, given the device's sealer before each frame (so only the tag differs)."""

    def __init__(self, url: str, n: int, encoder, codes, quant, keys):
        from edgekit.auth.tags import seal

        super().__init__(url, n, encoder, codes, quant, BOOT_BASE)
        self._sealers = {device: seal(keys.add(device), device) for device in self.devices}

    def encoder_for(self, device: str):
        self.encoder.sealer = self._sealers[device]
        return self.encoder


def run_mode(mode: str, folder: Path, bundle_path: Path, bundle, codes, quant, args) -> dict:
    """One mode on a fresh broker, receiver and database: the steady and the saturating step's figures."""
    from edgekit.auth.keys import KeyStore
    from edgekit.wire.encoder import WireEncoder

    db = folder / "results.sqlite"
    with local_broker(workdir=folder / "broker") as broker:
        extra = []
        if mode == "mac":
            keys = KeyStore(folder / "keys", create=True)
            extra = ["--frame-keys", str(keys.folder)]
        server = start_server([bundle_path], broker.url, db, folder / "server.log", "--max-batch",
                              str(args.max_batch), "--client-id", "bench-rx", *extra)
        encoder = WireEncoder.from_bundle(bundle)
        fleet = (SignedFleet(broker.url, args.devices, encoder, codes, quant, keys) if mode == "mac" else
                 Fleet(broker.url, args.devices, encoder, codes, quant, BOOT_BASE))
        time.sleep(1.5)  # (every mode alike) the receiver re-reads its key store within a second of new keys
        figures = {}
        try:
            for step, (name, rate) in enumerate((("steady", args.rate), ("saturate", args.saturate))):
                before = count_results(db)
                sent = fleet.run(rate, args.seconds, step)
                deadline = time.monotonic() + 60
                while count_results(db) - before < sent and time.monotonic() < deadline:
                    time.sleep(0.05)
                lo = BOOT_BASE + step * 1000
                figures[name] = {**step_figures(db, lo, lo + args.devices), "sent": sent}
        finally:
            fleet.close()
            server.stop()
    return figures


def cpu_per_frame(bundle, codes, quant, n: int = 1000) -> dict[str, float]:
    """Microseconds per frame: encode plain / with its tag on the device; on the receiver, decode (untagged),
    the tag check, and signing the result message."""
    from edgekit.auth.tags import seal, sign_message, verify_frame
    from edgekit.wire.decoder import WireDecoder
    from edgekit.wire.encoder import WireEncoder

    key, device = bytes(32), "sim-000"
    plain, signed = WireEncoder.from_bundle(bundle), WireEncoder.from_bundle(bundle)
    signed.sealer = seal(key, device)
    decoder = WireDecoder([bundle])
    frames = [signed.encode(codes[i % len(codes)], *quant, seq=i, boot_id=1, timestamp_ns=i) for i in range(n)]
    untagged = [plain.encode(codes[i % len(codes)], *quant, seq=i, boot_id=1, timestamp_ns=i) for i in range(n)]
    result = {"seq": 0, "boot_id": 1, "device": device, "bundle_id": bundle.bundle_id[:16],
              "topk": [["7", 0.91], ["1", 0.05], ["9", 0.02]],
              "timings": {"capture_ns": 1, "received_ns": 2, "done_ns": 3, "queue_ms": 1.5, "infer_ms": 0.4,
                          "batch_size": 8}}  # the shape of edgekit.server.receiver's result message

    tasks = {
        "encode (plain)": lambda i: plain.encode(codes[i % len(codes)], *quant, seq=i, boot_id=1, timestamp_ns=i),
        "encode + tag": lambda i: signed.encode(codes[i % len(codes)], *quant, seq=i, boot_id=1, timestamp_ns=i),
        "decode": lambda i: decoder.decode(untagged[i]),
        "verify tag": lambda i: verify_frame(key, device, frames[i]),
        "sign result": lambda i: sign_message(key, device, "results", {**result, "seq": i}),
    }
    best = dict.fromkeys(tasks, float("inf"))
    for _ in range(5):  # interleaved passes, the best of each: the least disturbed by other load
        for name, fn in tasks.items():
            start = time.perf_counter()
            for i in range(n):
                fn(i)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: t / n * 1e6 for name, t in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="plain,mac", help="comma-separated; plain is the baseline")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="per-device frames/s of the steady step")
    parser.add_argument("--saturate", type=float, default=200.0, help="per-device frames/s of the saturating step")
    parser.add_argument("--seconds", type=float, default=4.0, help="publishing time per step")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all modes")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    modes = args.modes.split(",")
    if modes[0] != "plain":
        parser.error("--modes must start with plain (the baseline of the ratios)")

    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-bench-security-"))
    bundle_path = args.bundle or build_bundle(work)
    bundle, codes, quant = device_codes(bundle_path)
    print(f"{args.devices} devices; steady {args.rate:g} fps/device, saturating {args.saturate:g} fps/device, "
          f"{args.seconds:g} s per step, {args.rounds} rounds; work dir {work}")
    print(f"{'round':>5} {'mode':>6} {'steady p50 ms':>14} {'steady p99 ms':>14} {'sat. stored':>12} "
          f"{'sat. sent':>10} {'rx fr/s':>8}")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:  # no mode always runs first (or on a warm machine)
            fig = run_mode(mode, work / f"{mode}-{r}", bundle_path, bundle, codes, quant, args)
            runs[mode].append(fig)
            print(f"{r:>5} {mode:>6} {fig['steady']['p50_ms']:>14.1f} {fig['steady']['p99_ms']:>14.1f} "
                  f"{fig['saturate']['stored']:>12} {fig['saturate']['sent']:>10} "
                  f"{fig['saturate']['throughput']:>8.0f}", flush=True)

    if args.rounds:
        report(runs, modes, args.rounds)
    print("\nCPU per frame (this machine, one thread, best of 5 interleaved passes):")
    for name, us in cpu_per_frame(bundle, codes, quant).items():
        print(f"  {name:>15}: {us:8.1f} us")
    return 0


def report(runs: dict[str, list[dict]], modes: list[str], rounds: int) -> None:
    """The medians over the rounds, and each mode's ratio to plain."""
    def median(mode: str, step: str, key: str) -> float:
        return statistics.median(f[step][key] for f in runs[mode])

    print(f"\nmedians over {rounds} rounds, and the ratio to plain:")
    base = {k: median("plain", s, k) for s, k in (("steady", "p50_ms"), ("steady", "p99_ms"),
                                                   ("saturate", "throughput"))}
    for mode in modes:
        p50, p99, tp = median(mode, "steady", "p50_ms"), median(mode, "steady", "p99_ms"), \
            median(mode, "saturate", "throughput")
        print(f"  {mode:>6}: latency p50 {p50:.1f} ms (x{p50 / base['p50_ms']:.2f}), p99 {p99:.1f} ms "
              f"(x{p99 / base['p99_ms']:.2f}); receiver throughput {tp:.0f} frames/s (x{tp / base['throughput']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
