"""Load benchmark: N simulated devices against one receiver on loopback (not a timed test).

    python benchmarks/bench_load.py                     # 20 devices, rates 5..200 fps each
    python benchmarks/bench_load.py --devices 50 --rates 10,20,40 --seconds 5 --bundle build/demo/bundle

A fleet thread owns N paho clients (one MQTT connection per device, QoS 1, real frames encoded from the
bundle's own device half) and paces them; the receiver is a real ``edgekit server run`` subprocess on a
real Mosquitto. For each rate step it reports frames stored, lost, end-to-end latency (frame timestamp →
result committed) and the receiver's throughput; a step "keeps up" when the fleet offered at least 95 % of
the target rate, every frame was stored within ``--drain`` seconds of the last publish, and p99 latency
stayed under ``--max-p99`` ms (a growing backlog shows up there first). Finally the server half's raw batched ONNX Runtime throughput is
measured in the same run, and the receiver's best throughput is reported as a ratio of it (the cost of the
transport: MQTT, validation, decoding, SQLite, result publishing).

``--confirm`` measures the cost of receiver-confirmed delivery instead (docs/server.md, Delivery): one step
at the first ``--rates`` value, run against a receiver that sends no confirmations (``--ack-every-ms 0``,
the devices delete a frame on the broker's PUBACK) and then against a default one (the devices delete it
on the receiver's ack), reporting ack messages and bytes per frame, the devices' spool depth, throughput and
latency of both, and their ratios.

Before the load steps, **bytes on the wire**: the agent's own publisher (``device/publisher.py``, spool,
QoS 1, MQTT 5 properties and topic alias) sends ``--wire-frames`` real frames at ``--wire-fps`` through a
:class:`edgekit.mqtt.byte_meter.ByteMeter` relay, for frame versions 1 and 2 and MQTT 5 and 3.1.1; it reports the
mean frame, payload and header bytes and the TCP bytes per frame counted at the socket, device → broker
(PUBLISH packets) and broker → device (PUBACKs), after the connection is up (so CONNECT is not spread over
the frames). ``--wire-only`` stops there.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.mqtt.broker import local_broker
from edgekit.demo.roles import count_results, start_server
from edgekit.delivery.acks import parse_ack
from edgekit.mqtt.client import make_client, no_delay
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic


def build_bundle(work: Path) -> Path:
    """Train the digits example briefly and convert it (when no --bundle is given)."""
    from edgekit.converters import convert

    from edgekit.demo.example_model import train

    model, calib, test = train("digits", None, work / "model", epochs=10, seed=0)
    return convert(model=model, split="code", calib=calib, eval=test, targets=["rpi"], output=work / "bundle",
                   force=True, latency_runs=3).bundle_path


def device_codes(bundle_path: Path, n: int = 64):
    """Real int8 codes: the bundle's device half run on held-out inputs."""
    from edgekit.bundle.manifest import Bundle
    from edgekit.runtime import open_device_runner

    bundle = Bundle.load(bundle_path)
    model = bundle.device_model()
    runner = open_device_runner(model.path, code_quant=model.code_quant)
    x = np.random.default_rng(0).random((n, *runner.input_shape[1:]), dtype=np.float32)
    for test in (bundle_path.parent / "model" / "test.npz", bundle_path.parent / "test.npz"):  # demo, examples
        if test.exists():
            x = np.load(test)["x"][:n].astype(np.float32)
            break
    return bundle, np.stack([runner.run(s[None])[0] for s in x]), runner.code_quant


class Fleet:
    """N MQTT clients owned by one thread, publishing pre-encoded frames at a fixed per-device rate."""

    def __init__(self, url: str, n: int, encoder, codes, quant, boot_base: int):
        broker = parse_broker_url(url)
        self.devices = [f"sim-{i:03d}" for i in range(n)]
        self.encoder, self.codes, self.quant = encoder, codes, quant
        self.clients = []
        for device in self.devices:
            client = make_client(f"bench-{device}", "5", security=self.security_for(device, broker))
            client.connect(broker.host, broker.port)
            no_delay(client.socket())  # as the agent does: a PUBACK for an ack must not hold the next frame
            self.clients.append(client)
        for _ in range(50):
            for c in self.clients:
                c.loop(0)
        self.boot_base = boot_base
        self.confirm = False  # True: a frame leaves a device when a receiver's ack names it, not on PUBACK
        self.waiting: list[set] = [set() for _ in self.devices]  # each device's spool: seqs not yet deleted
        self.ack_messages = self.ack_bytes = 0
        self.depth_samples: list[int] = []
        for i, client in enumerate(self.clients):
            client.on_publish = lambda c, u, mid, rc, p, i=i: None if self.confirm else self.waiting[i].discard(mid)
            client.on_message = lambda c, u, m, i=i: self._on_ack(i, m.payload)
            client.subscribe(topic(self.devices[i], "acks"), qos=1)

    def _on_ack(self, i: int, payload: bytes) -> None:
        self.ack_messages += 1
        self.ack_bytes += len(payload)
        for first, last in (parse_ack(payload) or (0, []))[1]:
            self.waiting[i].difference_update(range(first, last + 1))

    def security_for(self, device: str, broker):
        """The device's TLS settings and credentials (bench_security.py gives each its own certificate)."""
        return broker.security

    def run(self, rate: float, seconds: float, step: int) -> int:
        """Publish for ``seconds`` at ``rate`` frames/s per device; frames sent."""
        period = 1.0 / rate
        start = time.monotonic()
        sent = 0
        seq = 0
        while time.monotonic() - start < seconds:
            due = start + seq * period
            while time.monotonic() < due:
                for c in self.clients:
                    c.loop(0)
            for i, (device, client) in enumerate(zip(self.devices, self.clients)):
                code = self.codes[(seq + i) % len(self.codes)]
                frame = self.encoder_for(device).encode(code, *self.quant, seq=seq, boot_id=self.boot_base + step * 1000 + i,
                                            timestamp_ns=time.time_ns())
                info = client.publish(topic(device, "features"), frame, qos=1)
                self.waiting[i].add(seq if self.confirm else info.mid)
                sent += 1
            self.depth_samples.append(sum(len(w) for w in self.waiting))
            seq += 1
        for _ in range(200):
            for c in self.clients:
                c.loop(0.001)
        return sent

    def encoder_for(self, device: str):
        """The encoder of one device (the same for all here; benchmarks/bench_frame_auth.py signs per device)."""
        return self.encoder

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop(0.01)


def wire_bytes(url: str, bundle, codes, quant, version: int, protocol: str, frames: int, fps: float,
               work: Path) -> dict:
    """One agent publisher sending ``frames`` frames at ``fps`` through a byte meter: sizes per frame."""
    from edgekit.mqtt.byte_meter import ByteMeter
    from edgekit.device.publisher import Publisher
    from edgekit.device.spool import Spool
    from edgekit.wire.frame_v1 import HEADER_SIZE
    from edgekit.wire.frame_v2 import split_v2
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(bundle, frame_version=version)
    meter = ByteMeter(parse_broker_url(url))
    spool = Spool(work / f"wire-v{version}-mqtt{protocol}.sqlite")
    device = f"wire-v{version}-{protocol.replace('.', '')}"
    pub = Publisher(spool, parse_broker_url(meter.url), device, protocol, boot_id=7)
    pub.start()
    try:
        if not pub.connected.wait(10):
            raise RuntimeError("the publisher did not connect through the byte meter")
        time.sleep(0.3)  # the retained online status goes out and is acknowledged
        up0, down0 = meter.snapshot()
        feature_topic, sizes, payloads = topic(device, "features"), [], []
        start = time.monotonic()
        for i in range(frames):
            time.sleep(max(0.0, start + i / fps - time.monotonic()))
            frame = encoder.encode(codes[i % len(codes)], *quant, seq=i, boot_id=7, timestamp_ns=time.time_ns())
            spool.put(feature_topic, frame)
            sizes.append(len(frame))
            payloads.append(len(frame) - HEADER_SIZE if version == 1 else split_v2(frame).payload_len)
        deadline = time.monotonic() + 30
        while (spool.depth or pub.inflight) and time.monotonic() < deadline:
            time.sleep(0.01)
        up1, down1 = meter.snapshot()
        achieved = frames / (time.monotonic() - start)
    finally:
        pub.stop()
        meter.close()
    frame, payload = float(np.mean(sizes)), float(np.mean(payloads))
    return {"version": version, "mqtt": protocol, "frame": frame, "payload": payload, "header": frame - payload,
            "tcp_up": (up1 - up0) / frames, "tcp_down": (down1 - down0) / frames, "fps": achieved,
            "acknowledged": pub.counters.acknowledged}


def print_wire_bytes(url: str, bundle, codes, quant, frames: int, fps: float, work: Path) -> None:
    """The bytes-on-the-wire table: versions 1 and 2 side by side, MQTT 5 and 3.1.1."""
    print(f"\nbytes on the wire: {frames} frames at {fps:g} frames/s through the agent's publisher (QoS 1), "
          "TCP bytes counted at the socket")
    print(f"{'frame v':>7} {'MQTT':>5} {'frame B':>8} {'payload B':>9} {'header B':>8} {'TCP up B':>8} "
          f"{'up-payload':>10} {'TCP down B':>10} {'fps':>6}")
    for version in (1, 2):
        for protocol in ("5", "3.1.1"):
            r = wire_bytes(url, bundle, codes, quant, version, protocol, frames, fps, work)
            print(f"{version:>7} {protocol:>5} {r['frame']:>8.1f} {r['payload']:>9.1f} {r['header']:>8.1f} "
                  f"{r['tcp_up']:>8.1f} {r['tcp_up'] - r['payload']:>10.1f} {r['tcp_down']:>10.1f} "
                  f"{r['fps']:>6.1f}", flush=True)
    print()


def step_figures(db: Path, boot_lo: int, boot_hi: int) -> dict:
    con = sqlite3.connect(db, timeout=30)
    rows = con.execute("SELECT done_ns - capture_ns, received_ns, done_ns FROM results WHERE boot_id BETWEEN ? AND ?",
                       (boot_lo, boot_hi)).fetchall()
    con.close()
    lat = np.array([r[0] for r in rows]) / 1e6
    span = (max(r[2] for r in rows) - min(r[1] for r in rows)) / 1e9 if rows else float("nan")
    return {"stored": len(rows), "p50_ms": float(np.percentile(lat, 50)) if rows else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if rows else float("nan"),
            "throughput": len(rows) / span if rows and span > 0 else float("nan")}


def raw_ort_throughput(bundle, codes, quant, batch: int, seconds: float = 3.0) -> float:
    """Frames/s of the server half alone: dequantized codes in batches of ``batch`` through ONNX Runtime."""
    from edgekit.runtime import open_server_runner
    from edgekit.wire.spec import dequantize

    runner = open_server_runner(bundle.server_model.path)
    x = dequantize(np.resize(codes, (batch, *codes.shape[1:])), *quant)
    runner.run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run(x)
        done += batch
    return done / (time.perf_counter() - start)


def confirm_cost(args, bundle_path: Path, encoder, codes, quant, work: Path) -> None:
    """The same step without and with receiver confirmations, in this process; their figures and ratios."""
    rate = float(args.rates.split(",")[0])
    figures = {}
    with local_broker(workdir=work / "broker") as broker:
        for step, (mode, ack_ms) in enumerate((("PUBACK", "0"), ("confirmed", "50"))):
            db = work / f"confirm-{step}.sqlite"
            db.unlink(missing_ok=True)
            server = start_server([bundle_path], broker.url, db, work / f"server-{step}.log", "--max-batch",
                                  str(args.max_batch), "--client-id", f"bench-rx-{step}", "--ack-every-ms", ack_ms)
            fleet = Fleet(broker.url, args.devices, encoder, codes, quant, boot_base=20_000 + step * 1000)
            fleet.confirm = mode == "confirmed"
            try:
                sent = fleet.run(rate, args.seconds, 0)
                deadline = time.monotonic() + 60
                while (count_results(db) < sent or any(fleet.waiting)) and time.monotonic() < deadline:
                    for c in fleet.clients:
                        c.loop(0.001)
            finally:
                fleet.close()
                server.stop()
            fig = step_figures(db, 0, 2**32)
            figures[mode] = {**fig, "sent": sent, "acks/frame": fleet.ack_messages / sent,
                             "ack B/frame": fleet.ack_bytes / sent, "left": sum(len(w) for w in fleet.waiting),
                             "depth/dev": float(np.mean(fleet.depth_samples)) / args.devices,
                             "max depth/dev": max(fleet.depth_samples) / args.devices}
    print(f"{args.devices} devices x {rate:g} fps for {args.seconds:g} s, frame deleted on:")
    names = ("sent", "stored", "left", "acks/frame", "ack B/frame", "depth/dev", "max depth/dev", "throughput",
             "p50_ms", "p99_ms")
    print(f"{'':>14}" + "".join(f"{n:>14}" for n in names))
    for mode, fig in figures.items():
        print(f"{mode:>14}" + "".join(f"{fig[n]:>14.2f}" for n in names))
    base, conf = figures["PUBACK"], figures["confirmed"]
    print(f"{'ratio':>14}" + "".join(f"{conf[n] / base[n]:>14.2f}" if base[n] else f"{'-':>14}" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rates", default="5,10,20,50,100,200", help="per-device frames/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per step")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds a step may take to store every frame")
    parser.add_argument("--max-p99", type=float, default=500.0, help="latency bound (ms) for a step to keep up")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--confirm", action="store_true", help="measure the cost of receiver confirmations")
    parser.add_argument("--wire-frames", type=int, default=500, help="frames per bytes-on-the-wire run (0: skip)")
    parser.add_argument("--wire-fps", type=float, default=100.0, help="frame rate of the bytes-on-the-wire runs")
    parser.add_argument("--wire-only", action="store_true", help="measure bytes on the wire, then stop")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    bundle_path = args.bundle or build_bundle(work)
    bundle, codes, quant = device_codes(bundle_path)
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(bundle)
    if args.confirm:
        confirm_cost(args, bundle_path, encoder, codes, quant, work)
        return 0
    db = work / "bench-results.sqlite"
    db.unlink(missing_ok=True)
    print(f"{args.devices} devices, frame {len(encoder.encode(codes[0], *quant, seq=0, boot_id=1, timestamp_ns=0))} "
          f"bytes, receiver max batch {args.max_batch}; work dir {work}")
    best_ok, best_tp, rows = None, 0.0, []
    with local_broker(workdir=work / "broker") as broker:
        if args.wire_frames:
            print_wire_bytes(broker.url, bundle, codes, quant, args.wire_frames, args.wire_fps, work)
        if args.wire_only:
            return 0
        print(f"{'rate/dev':>8} {'total/s':>8} {'sent':>7} {'stored':>7} {'lost':>5} {'kept up':>7} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'rx fr/s':>8}")
        server = start_server([bundle_path], broker.url, db, work / "server.log", "--max-batch", str(args.max_batch),
                              "--client-id", "bench-rx")
        fleet = Fleet(broker.url, args.devices, encoder, codes, quant, boot_base=10_000)
        try:
            for step, rate in enumerate(float(r) for r in args.rates.split(",")):
                before = count_results(db)
                sent = fleet.run(rate, args.seconds, step)
                deadline = time.monotonic() + args.drain
                while count_results(db) - before < sent and time.monotonic() < deadline:
                    time.sleep(0.05)
                kept_up = count_results(db) - before >= sent
                end = time.monotonic() + 60  # let a backlog finish before the next step (and count losses)
                while count_results(db) - before < sent and time.monotonic() < end:
                    time.sleep(0.1)
                lo = 10_000 + step * 1000
                fig = step_figures(db, lo, lo + args.devices)
                offered = sent >= 0.95 * rate * args.devices * args.seconds
                kept_up = kept_up and offered and fig["p99_ms"] <= args.max_p99
                lost = sent - fig["stored"]
                print(f"{rate:>8g} {rate * args.devices:>8g} {sent:>7} {fig['stored']:>7} {lost:>5} "
                      f"{'yes' if kept_up else 'no':>7} {fig['p50_ms']:>8.1f} {fig['p99_ms']:>8.1f} "
                      f"{fig['throughput']:>8.0f}", flush=True)
                best_tp = max(best_tp, fig["throughput"])
                rows.append((rate, lost, kept_up, fig))
                if lost == 0 and kept_up:
                    best_ok = (rate, fig)
                elif not kept_up:
                    break
        finally:
            fleet.close()
            server.stop()
    raw = raw_ort_throughput(bundle, codes, quant, args.max_batch)
    print()
    if best_ok:
        rate, fig = best_ok
        print(f"highest rate kept up with no loss: {rate:g} fps/device x {args.devices} = {rate * args.devices:g} "
              f"frames/s; latency p50 {fig['p50_ms']:.1f} ms, p99 {fig['p99_ms']:.1f} ms")
    else:
        print("no step kept up")
    print(f"receiver throughput (best step) {best_tp:.0f} frames/s; raw batched ORT (batch {args.max_batch}) "
          f"{raw:.0f} frames/s; ratio {best_tp / raw:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
