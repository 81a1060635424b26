"""``edgekit server run`` and ``edgekit server stats``. Imports only click here; the rest inside the commands."""

from __future__ import annotations

import click

from edgekit.bundle.commands import trust_options, trust_policy
from edgekit.metrics import metrics_options
from edgekit.mqtt.security import security_options

__all__ = ["server_group"]


@click.group("server")
def server_group() -> None:
    """Server side: receive frames from all devices, run the server half, store and publish results."""


@server_group.command("run")
@click.option("--bundle", "bundles", required=True, multiple=True, type=click.Path(),
              help="Bundle folder; repeat to serve several model versions at once (routed by bundle id).")
@click.option("--broker", default="mqtt://localhost:1883", show_default=True,
              help="Broker URL mqtt://HOST:PORT or mqtts://[USER@]HOST:PORT (TLS; see docs/security.md).")
@security_options
@click.option("--db", default="results.sqlite", show_default=True, type=click.Path(dir_okay=False),
              help="Results database: a SQLite file (shared safely by receivers on this machine) or a "
                   "postgresql://USER@HOST:PORT/DBNAME URL (receivers on many machines; ?statement_timeout=SECONDS, "
                   "default 30, bounds a hanging statement; docs/server.md, PostgreSQL).")
@click.option("--group", default=None,
              help="Share the load with the other receivers of this group ($share/GROUP/..., MQTT 5). "
                   "See docs/server.md for the broker-restart caveat.")
@click.option("--client-id", default=None,
              help="MQTT client id; the persistent session is keyed by it. Give each receiver its own "
                   "(default: edgekit-server-<hostname>).")
@click.option("--max-batch", type=int, default=32, show_default=True, help="Largest micro-batch.")
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True,
              help="Longest a frame waits for its batch to fill.")
@click.option("--threads", type=int, default=None,
              help="ONNX Runtime threads (default: every core, spinning off; docs/server.md, Throughput).")
@click.option("--topk", type=int, default=3, show_default=True, help="Labels per result.")
@click.option("--mqtt", "protocol", type=click.Choice(["auto", "5", "3.1.1"]), default="auto", show_default=True,
              help="MQTT version (auto: 5 when the broker speaks it).")
@click.option("--summary-every", type=float, default=10.0, show_default=True, help="Seconds between summary lines.")
@click.option("--allow-failing-parity", is_flag=True,
              help="Serve a bundle that failed its parity check at convert time (warned at start).")
@click.option("--ack-every-ms", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Longest a stored frame's confirmation to its device waits, to batch them (0: none, only for "
                   "benchmarks: devices then keep re-sending). See docs/server.md, Delivery.")
@click.option("--gap-grace", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds before a hole in a device's frames (neither stored nor dropped by it) is reported "
                   "missing.")
@click.option("--session-expiry", type=click.IntRange(min=1), default=None,
              help="Seconds the broker keeps this receiver's session after it is gone (default: 7 days; 10 in "
                   "a --group, so its devices re-send what a dead member held). See docs/server.md, Delivery.")
@click.option("--frame-keys", "keys", type=click.Path(file_okay=False), default=None,
              help="Key store folder (edgekit keys add): check frame tags and the replay window, sign results.")
@click.option("--require-auth", is_flag=True,
              help="Dead-letter every frame without a valid tag (also from devices that have no key).")
@click.option("--deadletter-rate", type=float, default=1.0, show_default=True,
              help="Dead letters stored and published per second per device (all are counted).")
@click.option("--deadletter-keep", type=int, default=10_000, show_default=True,
              help="Newest dead-letter samples kept in the database.")
@click.option("--deadletter-keep-days", type=float, default=7.0, show_default=True,
              help="Dead-letter samples older than this are deleted.")
@click.option("--task", type=click.Choice(["similarity", "retrieve", "classify"]), default=None,
              help="Text bundles: what to answer. similarity: cosine of pairs (frames 2k and 2k+1 of a device, "
                   "from its --source pairs.tsv); retrieve: top-k of --index; classify: top-k of --labelled's "
                   "labels. See docs/server.md, Text bundles.")
@click.option("--index", "index", type=click.Path(dir_okay=False), default=None,
              help="--task retrieve: the documents, one per line (a result names them by line number).")
@click.option("--labelled", type=click.Path(dir_okay=False), default=None,
              help="--task classify: LABEL<TAB>TEXT per line; a frame gets the label of the nearest mean.")
@click.option("--search", type=click.Choice(["auto", "exact", "hnsw"]), default="auto", show_default=True,
              help="--task retrieve: exact (numpy), hnsw (faiss, approximate), auto: hnsw above 20,000 documents.")
@metrics_options
@click.option("--json", "json_logs", is_flag=True, help="Machine-readable logs: one JSON object per line.")
@trust_options
def run_command(bundles, broker, db, group, client_id, max_batch, max_wait_ms, threads, topk, protocol,
                summary_every, allow_failing_parity, ack_every_ms, gap_grace, session_expiry, keys, require_auth,
                deadletter_rate, deadletter_keep, deadletter_keep_days, task, index, labelled, search, metrics_port,
                metrics_host, json_logs, trust_keys, require_signature, **security) -> None:
    """Receive frames from every device, micro-batch them through ONNX Runtime, store and publish results.

    Invalid frames go to edgekit/v1/<device>/deadletter with the reason. Results are idempotent: keyed by
    (device, boot_id, seq), so re-deliveries never create a second row. Frames are acknowledged only once
    their result is stored, and the session is persistent: a restart loses nothing. At start each bundle's
    server half must reproduce its golden outputs (exit 4 otherwise), and a bundle that failed parity at
    convert time is refused (exit 3) unless --allow-failing-parity.

    \b
    Example:
      edgekit server run --bundle bundles/fmnist-v1 --broker mqtt://localhost:1883 --db results.sqlite
      PGPASSWORD=... edgekit server run --bundle bundles/fmnist-v1 --db postgresql://edgekit@db:5432/results
      edgekit server run --bundle bundles/v1 --bundle bundles/v2 --group rx --client-id rx-2 --json
      EDGEKIT_MQTT_PASSWORD=... edgekit server run --bundle bundles/fmnist-v1 \\
          --broker mqtts://edgekit-server@gw:8883 --ca pki/ca.crt
      edgekit server run --bundle bundles/fmnist-v1 --frame-keys /etc/edgekit/keys --require-auth
      edgekit server run --bundle bundles/fmnist-v1 --metrics-port 9108 --metrics-host 0.0.0.0
      edgekit server run --bundle bundles/minilm --task similarity
      edgekit server run --bundle bundles/minilm --task retrieve --index docs.txt --topk 10
    """
    import math
    import signal
    import threading
    from pathlib import Path

    from edgekit.errors import UsageError
    from edgekit.logs import setup_run_logging
    from edgekit.metrics import MetricsEndpoint
    from edgekit.mqtt.urls import resolve_broker
    from edgekit.server.deadletters import SampleRate
    from edgekit.server.receiver import Receiver, ReceiverConfig
    from edgekit.server.store import Retention
    from edgekit.server.text_tasks import TextTaskConfig

    setup_run_logging(json_logs)
    if max_batch < 1 or max_wait_ms < 0:
        raise UsageError("--max-batch must be >= 1 and --max-wait-ms >= 0", "e.g. --max-batch 32 --max-wait-ms 5")
    if deadletter_rate < 0 or deadletter_keep < 0 or deadletter_keep_days < 0:
        raise UsageError("--deadletter-rate, --deadletter-keep and --deadletter-keep-days must be >= 0",
                         "e.g. --deadletter-rate 10 --deadletter-keep 10000 --deadletter-keep-days 7")
    cfg = ReceiverConfig(bundles=[Path(b) for b in bundles], broker=resolve_broker(broker, **security), db=db,
                         group=group, client_id=client_id, protocol=protocol,
                         max_batch=max_batch, max_wait_s=max_wait_ms / 1e3, threads=threads, topk=topk,
                         summary_every_s=summary_every, allow_failing_parity=allow_failing_parity,
                         ack_every_s=ack_every_ms / 1e3, gap_grace_s=gap_grace, session_expiry_s=session_expiry,
                         trust=trust_policy(trust_keys, require_signature),
                         keys=Path(keys) if keys else None, require_auth=require_auth,
                         deadletter_rate=SampleRate(deadletter_rate, burst=math.ceil(20 * deadletter_rate)),
                         deadletter_retention=Retention(deadletter_keep, deadletter_keep_days * 86400),
                         text=TextTaskConfig(task, Path(index) if index else None,
                                             Path(labelled) if labelled else None, search))
    metrics = MetricsEndpoint(metrics_host, metrics_port)  # before the slow loading: a taken port fails at once
    receiver = Receiver(cfg, metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        receiver.serve(stop)
    finally:
        metrics.close()


@server_group.command("stats")
@click.option("--db", default="results.sqlite", show_default=True, type=click.Path(dir_okay=False),
              help="Results database given to edgekit server run: a SQLite file or a postgresql:// URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def stats_command(db: str, as_json: bool) -> None:
    """Show results per device, end-to-end latency percentiles, dead letters and receiver counters.

    \b
    Example:
      edgekit server stats --db results.sqlite
      edgekit server stats --db results.sqlite --json | jq .p95_ms
      edgekit server stats --db postgresql://edgekit@db:5432/results
    """
    from edgekit.logs import strict_json
    from edgekit.server.stats import format_table, summarize

    summary = summarize(db)  # a database it cannot read is a one-line UsageError
    click.echo(strict_json(summary, indent=2) if as_json else format_table(summary))  # no results yet: null
