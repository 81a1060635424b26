"""``edgekit demo``: the whole pipeline on one machine, from nothing but Python.

::

    train (digits, no download) ─► convert (rpi bundle) ─► broker (Mosquitto, else amqtt)
        ─► edgekit server run ─┐
        ─► edgekit device run ─┴─► held-out set streamed ─► summary table (sent/received/lost, accuracy,
                                                                bytes/frame, end-to-end p50/p95)

Server and device run as real subprocesses of the CLI, exactly as a user would start them; the demo
watches the results database for its progress bar. Only click and the standard library are imported at
module level (this is a command module); :mod:`edgekit.demo.roles` starts the roles.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import click
from edgekit.demo.roles import count_results, start_device, start_server

from edgekit.errors import UsageError
from edgekit.mqtt.broker import local_broker


@click.command("demo")
@click.option("--dataset", type=click.Choice(["digits", "fashion-mnist"]), default="digits", show_default=True,
              help="digits needs no download; fashion-mnist reads the IDX files under --data.")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Folder holding fashion-mnist/ (default: $EDGEKIT_DATA or ../shared/data).")
@click.option("--work", type=click.Path(file_okay=False), default="build/demo", show_default=True,
              help="Folder for the model, bundle, logs, spool and results.")
@click.option("--epochs", type=int, default=None, help="Training epochs (default: the example's).")
@click.option("--frames", type=int, default=None, help="Stream only the first N held-out images.")
@click.option("--fps", type=float, default=100.0, show_default=True, help="Device frame rate (0: as fast as possible).")
@click.option("--broker", default=None, help="Use this broker instead of starting a local one.")
@click.option("--codec", default=None, help="Feature codec (default: the bundle's).")
@click.option("--secure", is_flag=True,
              help="Start edgekit broker --secure --client-certs: TLS, a certificate per role, the ACL.")
def demo_command(dataset, data, work, epochs, frames, fps, broker, codec, secure) -> None:
    """Train, convert, start a broker, a server and a device, stream the held-out set, print a summary.

    \b
    Example:
      edgekit demo
      edgekit demo --dataset fashion-mnist --data ../shared/data --frames 2000
      edgekit demo --secure --frames 200
    """
    import numpy as np
    from edgekit.converters import convert
    from edgekit.demo.example_model import train

    work_dir = Path(work).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"[1/4] training the {dataset} example model")
    model_path, calib, test = train(dataset, data, work_dir / "model", epochs, 0, verbose=0)
    click.echo("[2/4] converting it to a Raspberry Pi bundle")
    result = convert(model=model_path, split="code", calib=calib, eval=test, targets=["rpi"],
                     output=work_dir / "bundle", force=True, codec=codec, latency_runs=10)
    held_out = np.load(test)
    x, y = held_out["x"][:frames], held_out["y"][:frames]
    source = work_dir / "stream.npz"
    np.savez(source, x=x)
    float_acc = _float_accuracy(model_path, x, y)
    for stale in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "spool.sqlite"):
        (work_dir / stale).unlink(missing_ok=True)

    if secure and broker:
        raise UsageError("--secure starts its own broker", "drop --broker, or give the roles' TLS options yourself")
    tls: dict[str, list[str]] = {}
    local = None if broker else _secure_broker(work_dir / "broker", tls) if secure else \
        local_broker(workdir=work_dir / "broker")
    try:
        if local is not None:
            local.start()
            click.echo(f"[3/4] {local.name} broker on {local.url} (MQTT {local.protocol})")
        url = broker or local.url
        stats = _stream(result.bundle_path, url, source, len(x), fps, work_dir, tls)
    finally:
        if local is not None:
            local.close()
    click.echo(_summary_table(stats, work_dir / "results.sqlite", y, float_acc))


def _secure_broker(folder: Path, tls: dict[str, list[str]]):
    """A ``--secure --client-certs`` Mosquitto; fills ``tls`` with each role's --ca/--cert/--key options."""
    from edgekit.mqtt.broker import MosquittoBroker
    from edgekit.mqtt.certs import issue_client
    from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker

    setup = SecureBroker(folder, client_certs=True)
    setup.prepare()
    for role, name in (("server", DEFAULT_SERVER_USER), ("device", "demo-01")):
        cert, key = issue_client(setup.pki, name)
        tls[role] = ["--ca", str(setup.pki / "ca.crt"), "--cert", str(cert), "--key", str(key)]
    return MosquittoBroker(workdir=folder, secure=setup)


def _stream(bundle: Path, url: str, source: Path, total: int, fps: float, work_dir: Path,
            tls: dict[str, list[str]]) -> dict:
    """Run server + device subprocesses with a progress bar; the device's final counters."""
    from tqdm import tqdm

    from edgekit.mqtt.byte_meter import ByteMeter
    from edgekit.mqtt.urls import parse_broker_url

    db = work_dir / "results.sqlite"
    server = start_server([bundle], url, db, work_dir / "server.log", *tls.get("server", []))
    meter = ByteMeter(parse_broker_url(url))  # the device's TCP bytes, counted at its socket
    try:
        click.echo(f"[4/4] streaming {total} frames: server and device running (logs in {work_dir})")
        device = start_device(bundle, meter.url, "demo-01", source, work_dir / "spool.sqlite",
                              work_dir / "device.log", "--fps", str(fps), "--linger", "15", *tls.get("device", []))
        with tqdm(total=total, unit="frame", desc="results") as bar:
            done = 0
            while device.process.poll() is None or done < total:
                now = count_results(db)
                bar.update(now - done)
                done = now
                if device.process.poll() is not None and done < total:
                    time.sleep(1.0)
                    bar.update(count_results(db) - done)
                    break
                time.sleep(0.1)
        stats = device.final_json()
        stats["tcp_up"], stats["tcp_down"] = meter.snapshot()
        return stats
    finally:
        meter.close()
        server.stop()


def _float_accuracy(model_path: Path, x, y) -> float:
    import keras

    model = keras.saving.load_model(model_path)
    return float((model.predict(x, verbose=0, batch_size=256).argmax(axis=1) == y).mean())


def _summary_table(stats: dict, db: Path, y, float_acc: float) -> str:
    import numpy as np

    con = sqlite3.connect(db)
    rows = con.execute("SELECT seq, label_index, done_ns - capture_ns FROM results WHERE device = 'demo-01' "
                       "AND boot_id = ?", (stats["boot_id"],)).fetchall()
    dead = con.execute("SELECT COUNT(*) FROM deadletters").fetchone()[0]
    con.close()
    seqs = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    latency = np.array([r[2] / 1e6 for r in rows])
    split_acc = float((labels == y[seqs]).mean()) if len(rows) else float("nan")
    sent = stats["acknowledged"]
    p50, p95 = (np.percentile(latency, [50, 95]) if len(rows) else (float("nan"),) * 2)
    lines = [
        ("frames captured", f"{stats['captured']}"),
        ("frames sent (acknowledged by broker)", f"{sent}"),
        ("frames received (stored results)", f"{len(rows)}"),
        ("frames lost", f"{stats['captured'] - len(rows)}"),
        ("dead letters", f"{dead}"),
        ("accuracy, float model", f"{float_acc:.4f}"),
        ("accuracy, split pipeline (int8 + wire)", f"{split_acc:.4f}"),
        ("bytes per frame (header + payload)", f"{stats['bytes_sent'] / max(stats['sent'], 1):.1f}"),
        ("TCP bytes per frame, device -> broker (all)", f"{stats['tcp_up'] / max(stats['sent'], 1):.1f}"),
        ("end-to-end latency p50 (capture -> stored)", f"{p50:.1f} ms"),
        ("end-to-end latency p95", f"{p95:.1f} ms"),
        ("device-observed round trip p50 / p95", " / ".join(
            "n/a" if stats[k] is None else f"{stats[k]:.1f}" for k in ("e2e_p50_ms", "e2e_p95_ms")) + " ms"),
    ]
    width = max(len(k) for k, _ in lines)
    rule = "-" * (width + 14)
    return "\n".join([rule, *(f"{k:<{width}}  {v:>10}" for k, v in lines), rule])
