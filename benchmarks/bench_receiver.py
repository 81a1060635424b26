"""Receiver throughput against its model's raw limit, on two real CIFAR-10 server halves (not a timed test).

    python benchmarks/bench_receiver.py                          # every half, 8,000 frames each
    python benchmarks/bench_receiver.py --halves plain --frames 4000 --profile build/bench_receiver/profiles --json

For each server half (benchmarks/receiver_bundles.py builds them once: the entropic re-encoder bundle's tail,
and the plain split of the same ResNet20 at ``stage2_block1_out``, sent raw and ans-coded: :data:`HALVES`),
in one run:

1. **Saturated receiver.** A real ``edgekit server run`` subscribes on a real Mosquitto and stops; a
   simulated fleet (``--devices`` paho clients, real frames encoded from the bundle's own device half on
   CIFAR-10 test images) then leaves ``--frames`` frames queued in the receiver's persistent session; the
   receiver starts again and drains them as fast as it can: MQTT, validation, decoding, batched inference,
   SQLite, results and acks published. Its throughput is frames stored / (last commit - first frame
   received), both taken from the results rows. The fleet publishes before, not during, the drain: in the
   field it runs on other machines, and here it would take the receiver's CPU. The receiver's CPU time
   (``/proc``) over the drain gives frames per CPU-second.
2. **Raw limit.** ONNX Runtime runs the same server half from dequantized codes in memory (no MQTT, no
   decoding, no store) in each of :data:`RAW_CONFIGS`, in this process: before the drain on full batches of
   ``--max-batch``, after it on the very batch sizes the receiver formed (read back from the rows). A
   config's limit is the mean of the two (the load of a shared machine drifts); ``ratio`` is the receiver's
   frames/s over the fastest config's. ``CPU ratio`` is the receiver's frames per CPU-second over ONNX
   Runtime's in that config: what the receiver costs beyond its model, whatever CPU other processes leave.

``--profile DIR`` samples the receiver with py-spy during the drain (``pip install py-spy``) and prints where
its time went, by thread and by function. ``--json`` prints one JSON document instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench_load import Fleet
from receiver_bundles import build_bundles
from edgekit.demo.roles import count_results, start_server
from edgekit.mqtt.broker import local_broker
from edgekit.mqtt.topics import topic

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: What is measured: name -> (bundle, codec the fleet sends). The plain split goes as examples/cifar10 sends it
#: (raw: its Ethos-U55 target's encode budget rules ans out; README: 8,209.9 B frames), and as ans frames, the
#: codec convert picks for a Raspberry Pi alone, whose decoding costs the receiver far more CPU.
HALVES = {"entropic": ("entropic", None), "plain": ("plain", "raw"), "plain-ans": ("plain", "ans")}


def device_codes(bundle_path: Path, images: Path, n: int = 64):
    """The bundle, real int8 codes of its device half on ``n`` test images, and their quantization."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.runtime import open_device_runner

    bundle = Bundle.load(bundle_path)
    model = bundle.device_model()
    runner = open_device_runner(model.path, code_quant=model.code_quant)
    with np.load(images) as data:
        x = data["x"][:n].astype(np.float32)
    return bundle, np.stack([runner.run(s[None])[0] for s in x]), runner.code_quant


def publish_backlog(fleet: Fleet, per_device: int, boot_base: int) -> int:
    """Every device publishes ``per_device`` frames as fast as the broker takes them (QoS 1, all acknowledged)."""
    sent = 0
    for seq in range(per_device):
        for i, (device, client) in enumerate(zip(fleet.devices, fleet.clients)):
            frame = fleet.encoder.encode(fleet.codes[(seq + i) % len(fleet.codes)], *fleet.quant, seq=seq,
                                         boot_id=boot_base + i, timestamp_ns=time.time_ns())
            fleet.waiting[i].add(client.publish(topic(device, "features"), frame, qos=1).mid)
            sent += 1
        for client in fleet.clients:
            client.loop(0)
    deadline = time.monotonic() + 120
    while any(fleet.waiting) and time.monotonic() < deadline:
        for client in fleet.clients:
            client.loop(0.001)
    return sent


class CpuSampler:
    """A process's CPU seconds (user + system, from /proc) sampled every ``period`` s against the wall clock."""

    def __init__(self, pid: int, period: float = 0.05):
        self.pid, self.period = pid, period
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return
            self.samples.append((time.time_ns(), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS))

    def between(self, start_ns: int, end_ns: int) -> float:
        """CPU seconds spent from ``start_ns`` to ``end_ns`` (nearest samples)."""
        self._stop.set()
        self._thread.join()
        times = np.array([t for t, _ in self.samples])
        cpu = np.array([c for _, c in self.samples])
        return float(np.interp(end_ns, times, cpu) - np.interp(start_ns, times, cpu))


def drain_figures(db: Path) -> dict:
    """Throughput, span and batch sizes of a drain, from the results rows."""
    con = sqlite3.connect(db, timeout=30)
    first, last, stored = con.execute("SELECT MIN(received_ns), MAX(done_ns), COUNT(*) FROM results").fetchone()
    sizes = dict(con.execute("SELECT batch_size, COUNT(*) FROM results GROUP BY batch_size").fetchall())
    con.close()
    batches = {size: round(rows / size) for size, rows in sizes.items()}
    return {"stored": stored, "first_ns": first, "last_ns": last, "span_s": (last - first) / 1e9,
            "fps": stored / ((last - first) / 1e9), "batches": batches,
            "mean_batch": stored / max(1, sum(batches.values()))}


#: ONNX Runtime settings the raw limit is measured with: (name, intra-op threads (0: all cores), spinning).
#: Its default spins idle threads, which a loaded machine punishes; the best of them is the limit.
RAW_CONFIGS = (("1 thread", 1, True), ("all cores", 0, True), ("all cores, no spin", 0, False))


def raw_limit(bundle, codes, quant, batches: dict[int, int], seconds: float = 3.0) -> dict[str, dict]:
    """ONNX Runtime alone on the server half, cycling through the receiver's batch sizes in a shuffled order,
    with each of :data:`RAW_CONFIGS`: frames/s and frames per CPU-second of this process."""
    from edgekit.runtime import open_server_runner
    from edgekit.wire.spec import dequantize

    order = [size for size, count in sorted(batches.items()) for _ in range(count)]
    np.random.default_rng(0).shuffle(order)
    inputs = {size: dequantize(np.resize(codes, (size, *codes.shape[1:])), *quant) for size in batches}
    figures = {}
    for name, threads, spin in RAW_CONFIGS:
        runner = open_server_runner(bundle.server_model.path, threads=threads or os.cpu_count(), spin=spin)
        for x in inputs.values():
            runner.run(x)
        done, i, start, cpu = 0, 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            size = order[i % len(order)]
            runner.run(inputs[size])
            done, i = done + size, i + 1
        figures[name] = {"fps": done / (time.perf_counter() - start), "fps_per_cpu_s": done / (time.process_time() - cpu)}
    return figures


def profile_summary(raw: Path, top: int = 12) -> dict:
    """Self time by thread and by function from py-spy's raw (collapsed) output."""
    threads, functions = Counter(), Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        threads[frames[0].split(": ", 1)[-1]] += n  # "thread (TID): NAME"
        leaf = frames[-1]
        functions[leaf.split(" (")[0] + " (" + leaf.rsplit("/", 1)[-1].rstrip(")") + ")"] += n
    share = lambda c: {k: round(v / total, 3) for k, v in c.most_common(top)}  # noqa: E731
    return {"samples": total, "threads": share(threads), "functions": share(functions)}


def measure_half(name: str, bundle_path: Path, codec: str | None, images: Path, broker, args, work: Path) -> dict:
    """One server half: the saturated drain through Mosquitto, then the raw limit on the same batch sizes."""
    from edgekit.wire.encoder import WireEncoder

    bundle, codes, quant = device_codes(bundle_path, images)
    encoder = WireEncoder.from_bundle(bundle, codec=codec)
    db = work / f"{name}.sqlite"
    for stale in (*work.glob(f"{name}.sqlite*"), *work.glob(f"{name}-*.log")):  # a log's old "ready" line
        stale.unlink()                                                            # would pass for this run's
    # --allow-failing-parity: the briefly trained halves miss convert's int8 agreement bar; speed is the same
    options = ["--client-id", f"bench-rx-{name}", "--max-batch", str(args.max_batch), "--summary-every", "60",
               "--allow-failing-parity", *(["--threads", str(args.threads)] if args.threads else [])]
    url = broker.url
    start_server([bundle_path], url, db, work / f"{name}-subscribe.log", *options).stop()  # its session queues
    raw_before = raw_limit(bundle, codes, quant, {args.max_batch: 1})
    fleet = Fleet(url, args.devices, encoder, codes, quant, boot_base=0)
    try:
        sent = publish_backlog(fleet, args.frames // args.devices, boot_base=1000)
    finally:
        fleet.close()
    server = start_server([bundle_path], url, db, work / f"{name}-drain.log", *options)
    cpu, broker_cpu = CpuSampler(server.process.pid), CpuSampler(broker.process.pid)
    spy = _start_profile(server.process.pid, args.profile, name)
    try:
        deadline = time.monotonic() + 300
        while count_results(db) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
        if spy is not None:
            spy.wait(60)
    fig = drain_figures(db)
    cpu_s = cpu.between(fig["first_ns"], fig["last_ns"])
    broker_cpu_s = broker_cpu.between(fig["first_ns"], fig["last_ns"])
    raw_after = raw_limit(bundle, codes, quant, fig["batches"])
    raw = {n: {k: (raw_before[n][k] + raw_after[n][k]) / 2 for k in raw_after[n]} for n in raw_after}
    best = max(raw, key=lambda n: raw[n]["fps"])
    out = {"half": name, "bundle": str(bundle_path), "codec": encoder.codec_name, "frame_bytes": len(encoder.encode(codes[0], *quant, seq=1,
           boot_id=1, timestamp_ns=0)), "sent": sent, **{k: v for k, v in fig.items() if not k.endswith("_ns")},
           "receiver_cpu_s": cpu_s, "broker_cpu_s": broker_cpu_s, "fps_per_cpu_s": fig["stored"] / cpu_s if cpu_s > 0 else float("nan"),
           "raw_before": raw_before, "raw_after": raw_after, "raw": raw, "raw_config": best,
           "raw_fps": raw[best]["fps"], "ratio": fig["fps"] / raw[best]["fps"],
           "cpu_ratio": fig["stored"] / cpu_s / raw[best]["fps_per_cpu_s"] if cpu_s > 0 else float("nan")}
    if spy is not None:
        out["profile"] = profile_summary(Path(args.profile) / f"{name}.txt")
    return out


def _start_profile(pid: int, folder: Path | None, name: str) -> subprocess.Popen | None:
    """py-spy sampling the receiver (all threads, native frames off) until it exits."""
    if folder is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--threads",
                             "--nonblocking", "-o", str(folder / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_table(results: list[dict], load: str) -> None:
    print(f"load average before: {load}")
    print(f"{'half':>9} {'codec':>5} {'frame B':>8} {'stored':>7} {'batch':>6} {'rx fr/s':>8} {'rx fr/CPU-s':>11} "
          f"{'raw fr/s':>9} {'raw config':>19} {'raw fr/CPU-s':>12} {'ratio':>6} {'CPU ratio':>9}")
    for r in results:
        name, raw = r["raw_config"], r["raw"][r["raw_config"]]
        print(f"{r['half']:>9} {r['codec']:>5} {r['frame_bytes']:>8} {r['stored']:>7} {r['mean_batch']:>6.1f} {r['fps']:>8.0f} "
              f"{r['fps_per_cpu_s']:>11.0f} {raw['fps']:>9.0f} {name:>19} {raw['fps_per_cpu_s']:>12.0f} "
              f"{r['ratio']:>6.2f} {r['cpu_ratio']:>9.2f}")
    for r in results:
        print(f"{r['half']}: receiver {r['receiver_cpu_s']:.1f} CPU-s, Mosquitto {r['broker_cpu_s']:.1f} CPU-s "
              f"over the {r['span_s']:.1f} s drain; raw ONNX Runtime fr/s before | after it: " + ", ".join(
            f"{n} {r['raw_before'][n]['fps']:.0f} | {r['raw_after'][n]['fps']:.0f}" for n in r["raw_before"]))
    for r in results:
        if "profile" in r:
            p = r["profile"]
            print(f"\n{r['half']}: py-spy, {p['samples']} samples; by thread: "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["threads"].items()))
            for fn, share in p["functions"].items():
                print(f"  {100 * share:5.1f}%  {fn}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench_receiver"))
    parser.add_argument("--data", help="shared data folder (default $EDGEKIT_DATA or ../shared/data)")
    parser.add_argument("--halves", default=",".join(HALVES),
                        help=f"what to measure, comma-separated (of {', '.join(HALVES)})")
    parser.add_argument("--frames", type=int, default=8000, help="frames queued for each drain")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="the receiver's --threads (default its own)")
    parser.add_argument("--profile", type=Path, default=None, help="sample the receiver with py-spy into DIR")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    args.work = args.work.resolve()  # Mosquitto reads its config by absolute path
    bundles = build_bundles(args.work, args.data)
    results = []
    shutil.rmtree(args.work / "broker", ignore_errors=True)  # no session left queued by an interrupted run
    with local_broker(workdir=args.work / "broker") as broker:
        for name in args.halves.split(","):
            bundle, codec = HALVES[name]
            results.append(measure_half(name, bundles[bundle], codec, args.work / "sets" / "test.npz", broker, args,
                                        args.work))
    if args.json:
        print(json.dumps({"load_average": load, "halves": results}, indent=2))
    else:
        print_table(results, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
