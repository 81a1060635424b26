"""MQTT helpers: broker URLs, topics, packet sizes, and the command modules staying light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit.errors import UsageError
from edgekit.mqtt.urls import BrokerUrl, parse_broker_url
from edgekit.mqtt.topics import check_device_id, device_of, features_filter, topic


@pytest.mark.parametrize("url, expected", [
    ("mqtt://pi-gw:1883", BrokerUrl("pi-gw", 1883)),
    ("mqtt://localhost", BrokerUrl("localhost", 1883)),
    ("127.0.0.1:1884", BrokerUrl("127.0.0.1", 1884)),
    ("mqtt://[::1]:1885", BrokerUrl("::1", 1885)),
])
def test_parse_broker_url(url, expected):
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://x:1883", "mqtt://x:notaport", "mqtt://", "mqtt://x:1883/path", "ws://x"])
def test_bad_broker_url_is_one_line_usage_error(url):
    with pytest.raises(UsageError) as info:
        parse_broker_url(url)
    assert "\n" not in str(info.value) and "mqtt://HOST:PORT" in str(info.value)


def test_topics_and_device_of():
    assert topic("cam-07", "features") == "edgekit/v1/cam-07/features"
    assert features_filter() == "edgekit/v1/+/features"
    assert features_filter("g1") == "$share/g1/edgekit/v1/+/features"
    assert device_of("edgekit/v1/cam-07/features") == "cam-07"
    assert device_of("other/v1/cam-07/features") is None
    with pytest.raises(ValueError):
        topic("cam-07", "nope")


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "x" * 65, "sp ace"])
def test_device_id_must_be_one_topic_level(bad):
    with pytest.raises(UsageError):
        check_device_id(bad)


def test_device_help_never_imports_heavy_modules():
    code = ("import sys; from edgekit.cli import main\n"
            "try: main(['device', 'run', '--help'])\n"
            "except SystemExit: pass\n"
            "import json; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'onnxruntime', 'paho', 'numpy', 'ai_edge_litert'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Example:" in out.stdout
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in heavy if m.split(".")[0] in ("tensorflow", "onnxruntime", "ai_edge_litert", "paho")]


def test_device_run_rejects_a_negative_fps(tmp_path):
    from click.testing import CliRunner
    from edgekit.device.commands import device_group

    done = CliRunner().invoke(device_group, ["run", "--bundle", str(tmp_path), "--device-id", "d1",
                                             "--source", "x.npz", "--fps", "-1"])
    assert done.exit_code == 2, done.output  # click's usage error, before any bundle is loaded
    assert "--fps" in done.output and "-1" in done.output
