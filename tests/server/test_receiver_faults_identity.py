"""One client id, one process: a second receiver or agent with the same identity stops one of the two with
one line and a non-zero exit, instead of both taking the MQTT session from each other forever."""

from __future__ import annotations

import json
import signal
import time

import pytest

from edgekit.demo.roles import RoleProcess, start_device, start_server
from edgekit.mqtt.client_loop import TAKEN_OVER_AFTER
from edgekit.mqtt.urls import parse_broker_url
from edgekit.mqtt.topics import topic
from edgekit.server.receiver import Receiver, ReceiverConfig
from support.running import wait_until

TAKEN_OVER = "another process is connected as client id"


@pytest.fixture
def processes():
    """Roles started by a test; killed after it, their logs printed."""
    started: list[RoleProcess] = []
    yield started
    for role in started:
        role.stop(signal.SIGKILL)
        print(f"\n---- {' '.join(role.args[:2])} log ----\n{role.log_text()[-3000:]}")


def _stopped_and_survivor(first: RoleProcess, second: RoleProcess, timeout: float = 30.0):
    """Wait until one of the two has exited; (the one that exited, the other)."""
    assert wait_until(lambda: first.process.poll() is not None or second.process.poll() is not None, timeout)
    return (first, second) if first.process.poll() is not None else (second, first)


def _assert_one_line_error(role: RoleProcess, client_id: str) -> None:
    log = role.log_text()
    assert role.process.returncode == 2
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if TAKEN_OVER in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and repr(client_id) in errors[0], log


def _connects(broker_log: str, client_id: str) -> int:
    return sum(1 for line in broker_log.splitlines() if "New client connected" in line and f" as {client_id} " in line)


def test_two_receivers_with_one_client_id_one_stops_with_one_line(bundle, mosquitto, processes, tmp_path):
    for i in range(2):
        processes.append(start_server([bundle], mosquitto.url, tmp_path / "r.sqlite", tmp_path / f"rx{i}.log",
                                      "--client-id", "rx-dup"))
    stopped, survivor = _stopped_and_survivor(*processes)
    _assert_one_line_error(stopped, "rx-dup")
    time.sleep(2.0)
    assert survivor.process.poll() is None
    assert _connects(mosquitto.log_text(), "rx-dup") <= 2 * TAKEN_OVER_AFTER + 2  # not hundreds


def test_two_agents_with_one_device_id_one_stops_with_one_line(bundle, stream, mosquitto, processes, collector,
                                                              tmp_path):
    for i in range(2):
        processes.append(start_device(bundle, mosquitto.url, "cam-dup", stream(50), tmp_path / f"spool{i}.sqlite",
                                      tmp_path / f"agent{i}.log", "--fps", "20", "--loop"))
        if i == 0:
            processes[0].wait_for_log("ready: subscribed")
    stopped, survivor = _stopped_and_survivor(*processes, timeout=60.0)
    _assert_one_line_error(stopped, "edgekit-device-cam-dup")
    time.sleep(2.0)
    assert survivor.process.poll() is None
    assert _connects(mosquitto.log_text(), "edgekit-device-cam-dup") <= 2 * TAKEN_OVER_AFTER + 2
    # the retained status is the survivor's "online", though the pushed-out agent's will came after it
    (_, payload, retained), = collector(mosquitto.url, topic("cam-dup", "status")).wait_for(1)
    assert retained and json.loads(payload)["state"] == "online", payload


def test_mqtt311_reconnect_loop_is_recognised_as_a_taken_over_client_id(bundle, mosquitto, tmp_path):
    """MQTT 3.1.1 has no reason code: the broker just closes the older connection, every time."""
    cfg = ReceiverConfig(bundles=[bundle], broker=parse_broker_url(mosquitto.url), db=tmp_path / "r.sqlite",
                         client_id="rx-311", protocol="3.1.1")
    first, second = Receiver(cfg).start(), Receiver(cfg).start()
    try:
        assert wait_until(lambda: bool(first.link.fatal or second.link.fatal), 30)
        stopped, survivor = (first, second) if first.link.fatal else (second, first)
        assert "closed our last" in stopped.link.fatal and TAKEN_OVER in stopped.link.fatal
        assert wait_until(lambda: not stopped.link.alive, 5)
        connects = survivor.link.connects
        time.sleep(2.0)
        assert survivor.link.connected.is_set() and survivor.link.connects == connects and not survivor.link.fatal
    finally:
        first.stop()
        second.stop()
