"""What TLS costs: the same load on a plain Mosquitto and on ``edgekit broker --secure``, in one process.

    python benchmarks/bench_security.py                              # 20 devices, 50 and 400 fps each, 5 s
    python benchmarks/bench_security.py --devices 10 --rates 20,200 --bundle build/demo/bundle

Reuses bench_load.py's fleet (one MQTT connection per simulated device, QoS 1, real frames) and a real
``edgekit server run``. The secure run gives every simulated device and the receiver its own client
certificate (``edgekit broker --secure --client-certs``, ACL on). For each per-device rate it prints
frames stored, end-to-end latency p50/p99 and the receiver's throughput for both runs, then the TLS/plain
ratios: throughput below 1 and latency above 1 are the cost of TLS on this machine. The receiver's
throughput only measures the receiver when the fleet offered more than it stored per second (``sent/s``
shows what the fleet, which shares the CPU, managed to offer); at a rate both runs keep up with, the
latency ratio is the cleaner figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_load import Fleet, build_bundle, device_codes, step_figures

from edgekit.mqtt.broker import MosquittoBroker
from edgekit.mqtt.certs import issue_client
from edgekit.demo.roles import count_results, start_server
from edgekit.mqtt.urls import resolve_broker
from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker


class CertFleet(Fleet):
    """The bench fleet with one client certificate per simulated device (the ACL confines each to its topics)."""

    pki: Path

    def security_for(self, device: str, broker):
        return resolve_broker(str(broker), ca=str(self.pki / "ca.crt"), cert=str(self.pki / "clients" / f"{device}.crt"),
                              key=str(self.pki / "clients" / f"{device}.key")).security


def run_load(broker: MosquittoBroker, fleet_class, server_extra: list[str], args, bundle_path, encoder, codes, quant,
             work: Path) -> list[dict]:
    """One receiver and one fleet on ``broker``; the figures of each rate step."""
    db = work / "results.sqlite"
    server = start_server([bundle_path], broker.url, db, work / "server.log", "--max-batch", str(args.max_batch),
                          "--client-id", DEFAULT_SERVER_USER, *server_extra)
    fleet = fleet_class(broker.url, args.devices, encoder, codes, quant, boot_base=10_000)
    figures = []
    try:
        for step, rate in enumerate(float(r) for r in args.rates.split(",")):
            before = count_results(db)
            sent = fleet.run(rate, args.seconds, step)
            deadline = time.monotonic() + 60
            while count_results(db) - before < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            lo = 10_000 + step * 1000
            figures.append({"rate": rate, "sent": sent, **step_figures(db, lo, lo + args.devices)})
    finally:
        fleet.close()
        server.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rates", default="50,400", help="per-device frames/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="publishing time per step")
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-bench-security-"))
    bundle_path = args.bundle or build_bundle(work)
    bundle, codes, quant = device_codes(bundle_path)
    from edgekit.wire.encoder import WireEncoder

    encoder = WireEncoder.from_bundle(bundle)
    setup = SecureBroker(work / "secure", client_certs=True)
    setup.prepare()
    for name in [DEFAULT_SERVER_USER, *(f"sim-{i:03d}" for i in range(args.devices))]:
        issue_client(setup.pki, name)
    CertFleet.pki = setup.pki
    server_tls = ["--ca", str(setup.pki / "ca.crt"), "--cert", str(setup.pki / "clients" / f"{DEFAULT_SERVER_USER}.crt"),
                  "--key", str(setup.pki / "clients" / f"{DEFAULT_SERVER_USER}.key")]
    args_common = (args, bundle_path, encoder, codes, quant)
    with MosquittoBroker(workdir=work / "plain-broker") as broker:
        (work / "plain").mkdir(exist_ok=True)
        plain = run_load(broker, Fleet, [], *args_common, work / "plain")
    with MosquittoBroker(workdir=work / "tls-broker", secure=setup) as broker:
        (work / "tls").mkdir(exist_ok=True)
        tls = run_load(broker, CertFleet, server_tls, *args_common, work / "tls")

    print(f"{args.devices} devices, {args.seconds:g} s per step, receiver max batch {args.max_batch}; work dir {work}")
    print(f"{'rate/dev':>8} {'run':>5} {'sent':>6} {'sent/s':>6} {'stored':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rx fr/s':>8}")
    for p, t in zip(plain, tls):
        for name, fig in (("plain", p), ("tls", t)):
            print(f"{fig['rate']:>8g} {name:>5} {fig['sent']:>6} {fig['sent'] / args.seconds:>6.0f} {fig['stored']:>6} "
                  f"{fig['p50_ms']:>8.1f} {fig['p99_ms']:>8.1f} {fig['throughput']:>8.0f}")
        print(f"{'':>8} {'ratio':>5} {'':>6} {'':>6} {'':>6} {t['p50_ms'] / p['p50_ms']:>8.2f} "
              f"{t['p99_ms'] / p['p99_ms']:>8.2f} {t['throughput'] / p['throughput']:>8.2f}   (tls / plain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
