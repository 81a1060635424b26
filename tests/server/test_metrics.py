"""Prometheus metrics (``--metrics-port``) scraped over HTTP during real runs, against the results database.

Real Mosquitto, a real bundle, ``edgekit server run`` and ``edgekit device run`` processes (and the in-process
roles where a test must read a device's endpoint after its run ends). Every count a dashboard shows is checked
against what the database holds or what the other side counted; docs/grafana-edgekit.json may name only metrics
that a real run serves.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgekit.demo.roles import count_results, start_device, start_server
from edgekit.device.commands import device_group
from edgekit.metrics import MetricsEndpoint
from edgekit.mqtt.broker import free_port
from edgekit.server.commands import server_group
from edgekit.server.stats import summarize
from support.running import RunningAgent, db_rows, start_receiver, wait_until
from test_receiver_counters import JUNK
from test_receiver_robustness import _publish

DOCS = Path(__file__).resolve().parents[2] / "docs"
FRAMES = 150


def scrape(url: str) -> dict:
    """Every sample of one scrape: ``name`` -> value, or ``(name, ((label, value), ...))`` -> value."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items()))) if sample.labels else sample.name] = sample.value
    return out


def scrape_or_none(url: str) -> dict | None:
    """:func:`scrape`, or None while the process has not opened its endpoint yet."""
    try:
        return scrape(url)
    except OSError:
        return None


def by_label(samples: dict, name: str, label: str) -> dict:
    return {dict(key[1])[label]: value for key, value in samples.items() if isinstance(key, tuple) and key[0] == name}


def dashboard_metrics() -> set[str]:
    """The metric names the Grafana dashboard's queries use."""
    dashboard = json.loads((DOCS / "grafana-edgekit.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return {name for expr in exprs for name in re.findall(r"\bedgekit_[a-z0-9_]+", expr)}


def test_server_and_device_metrics_match_the_database(bundle, stream, mosquitto, tmp_path):
    db, spool = tmp_path / "results.sqlite", tmp_path / "spool.sqlite"
    server_port, device_port = free_port(), free_port()
    server = start_server([bundle], mosquitto.url, db, tmp_path / "server.log", "--client-id", "rx-m",
                          "--metrics-port", str(server_port))
    device = None
    try:
        _publish(mosquitto.url, JUNK, "cam-junk")
        device = start_device(bundle, mosquitto.url, "cam-m", stream(FRAMES), spool, tmp_path / "device.log",
                              "--fps", "50", "--confirm-timeout", "60", "--metrics-port", str(device_port))
        device_url = f"http://127.0.0.1:{device_port}/metrics"
        assert wait_until(lambda: (scrape_or_none(device_url) or {}).get("edgekit_device_frames_captured_total", 0)
                          >= 10, 60), device.log_text()
        during = scrape(device_url)  # mid-run: streaming, connected
        assert during["edgekit_device_connected"] == 1 and during["edgekit_device_connects_total"] == 1
        assert 10 <= during["edgekit_device_frames_captured_total"] <= FRAMES
        stats = device.final_json()
        assert wait_until(lambda: count_results(db) == FRAMES, 60)

        server_url = f"http://127.0.0.1:{server_port}/metrics"
        assert wait_until(lambda: scrape(server_url)["edgekit_server_frames_confirmed_total"] == FRAMES, 10)
        assert wait_until(lambda: sum(summarize(db)["deadletters"].values()) == len(JUNK), 10)
        m = scrape(server_url)
    finally:
        for role in (server, device):
            if role is not None:
                role.stop(signal.SIGKILL)
    assert stats["captured"] == stats["confirmed"] == FRAMES and stats["resent"] == 0
    assert m["edgekit_server_frames_stored_total"] == count_results(db) == FRAMES
    assert m["edgekit_server_frames_valid_total"] == FRAMES and m["edgekit_server_frames_duplicate_total"] == 0
    assert m["edgekit_server_frames_received_total"] == FRAMES + len(JUNK)
    assert by_label(m, "edgekit_server_dead_letters_total", "reason") == summarize(db)["deadletters"]
    # bytes: what the device sent (no re-sends) is what was stored; the junk is the rest of what came in
    assert m["edgekit_server_stored_bytes_total"] == stats["bytes_sent"]
    assert m["edgekit_server_received_bytes_total"] == stats["bytes_sent"] + sum(map(len, JUNK))
    # batches: a batch of b frames has b rows carrying batch_size b
    ((frames, batches, latency_s),) = db_rows(db, "SELECT COUNT(*), SUM(1.0 / batch_size), "
                                                  "SUM(done_ns - capture_ns) / 1e9 FROM results")
    assert m["edgekit_server_batch_size_sum"] == frames
    assert m["edgekit_server_batch_size_count"] == m["edgekit_server_inference_seconds_count"] == round(batches)
    assert m["edgekit_server_e2e_latency_seconds_count"] == FRAMES
    assert m["edgekit_server_e2e_latency_seconds_sum"] == pytest.approx(latency_s, rel=1e-6)
    assert m["edgekit_server_decode_seconds_count"] == FRAMES + len(JUNK)  # the junk failed in the decoder
    assert m["edgekit_server_frames_missing_total"] == 0 and m["edgekit_server_queued_frames"] == 0
    assert m["edgekit_server_caught_up_seconds"] > 0  # nothing waits: caught up (the receiver status)
    assert m["edgekit_server_connected"] == 1 and m["edgekit_server_connects_total"] == 1
    served = {key if isinstance(key, str) else key[0] for key in {**m, **during}}
    assert dashboard_metrics() - served == set()


def test_frames_missing_and_a_device_after_its_run(bundle, stream, mosquitto, tmp_path):
    """A device's endpoint outlives its run (in-process): its final counts, against the receiver's and the
    database's; a hole made in its spool is reported missing in the receiver's metrics as in the database."""
    db, spool = tmp_path / "results.sqlite", tmp_path / "spool.sqlite"
    first = RunningAgent(bundle, mosquitto.url, spool, stream(60), confirm_timeout_s=60.0)  # no receiver yet
    endpoint = MetricsEndpoint("127.0.0.1", free_port(), first.agent.metrics.registry)
    first.start()
    assert wait_until(lambda: first.agent.spool.depth == 60 and first.agent.publisher.counters.acknowledged >= 60)
    boot_id = first.finish()["boot_id"]
    m = scrape(endpoint.url)  # the agent has stopped: its counts as it ended
    endpoint.close()
    assert (m["edgekit_device_frames_captured_total"], m["edgekit_device_frames_published_total"],
            m["edgekit_device_frames_confirmed_total"], m["edgekit_device_spool_frames"]) == (60, 60, 0, 60)
    assert m["edgekit_device_inference_seconds_count"] == 60
    with sqlite3.connect(spool) as con:  # frames lost on the device without a policy knowing: a real gap
        con.execute("DELETE FROM frames WHERE seq BETWEEN 20 AND 29")

    receiver = start_receiver(bundle, mosquitto.url, db, gap_grace_s=1.0)
    rx = MetricsEndpoint("127.0.0.1", free_port(), receiver.metrics.registry)
    again = RunningAgent(bundle, mosquitto.url, spool, stream(1), limit=0, confirm_timeout_s=60.0)  # drains the old boot
    dev = MetricsEndpoint("127.0.0.1", free_port(), again.agent.metrics.registry)
    try:
        again.start()
        assert wait_until(lambda: not again.thread.is_alive(), 60)
        final = again.finish()
        d = scrape(dev.url)
        assert wait_until(lambda: scrape(rx.url)["edgekit_server_frames_missing_total"] == 10, 20)
        r = scrape(rx.url)
    finally:
        receiver.stop()
        rx.close()
        dev.close()
    assert summarize(db)["devices"][0]["missing"] == 10 and count_results(db) == 50
    assert [s for (s,) in db_rows(db, "SELECT seq FROM results WHERE boot_id = ? ORDER BY seq", boot_id)] == \
        [*range(20), *range(30, 60)]
    assert r["edgekit_server_frames_stored_total"] == r["edgekit_server_frames_confirmed_total"] == 50
    assert (d["edgekit_device_frames_captured_total"], d["edgekit_device_frames_published_total"],
            d["edgekit_device_frames_confirmed_total"], d["edgekit_device_spool_frames"]) == (0, 50, 50, 0)
    assert d["edgekit_device_published_bytes_total"] == r["edgekit_server_received_bytes_total"] == \
        final["bytes_sent"]
    assert d["edgekit_device_results_total"] == d["edgekit_device_e2e_latency_seconds_count"] == final["results"] == 50
    assert d["edgekit_device_frames_resent_total"] == final["resent"] == 0
    assert d["edgekit_device_spool_bytes"] == 0 and d["edgekit_device_frames_dropped_total"] == 0


@pytest.fixture
def taken_port():
    """A loopback port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", [("server", "run", "--bundle", "missing-bundle"),
                                     ("device", "run", "--bundle", "missing-bundle", "--device-id", "cam-1",
                                      "--source", "missing.npz")])
def test_a_bad_metrics_port_is_a_one_line_error_before_anything_loads(cli_runner, taken_port, command):
    run = cli_runner(server_group, device_group)
    for port, says in ((taken_port, f"--metrics-port {taken_port}: 127.0.0.1:{taken_port} is already in use"),
                       (70000, "--metrics-port 70000 is not a TCP port"), (-1, "--metrics-port -1 is not a TCP port")):
        code, out, err = run(*command, "--metrics-port", port)
        assert code == 2 and out == ""
        assert err.startswith(f"error: {says}") and err.count("\n") == 1, err  # not the missing bundle: no loading
    code, _, err = run(*command, "--metrics-port", free_port(), "--metrics-host", "no-such-host.invalid")
    assert code == 2 and err.startswith("error: --metrics-host no-such-host.invalid: not an address") and \
        err.count("\n") == 1, err


def test_the_systemd_unit_passes_the_metrics_options_on(cli_runner, bundle, stream):
    run = cli_runner(device_group)
    args = ("device", "systemd-unit", "--bundle", bundle, "--broker", "mqtt://gw:1883", "--device-id", "cam-07",
            "--source", f"npz:{stream(4)}")
    code, unit, err = run(*args, "--metrics-port", "9109", "--metrics-host", "0.0.0.0")
    assert code == 0 and err == "", err
    assert "--metrics-port 9109 --metrics-host 0.0.0.0" in unit
    code, unit, err = run(*args, "--metrics-port", "70000")
    assert code == 2 and unit == "" and err.startswith("error: --metrics-port 70000 is not a TCP port"), err
