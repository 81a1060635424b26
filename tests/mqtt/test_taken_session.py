"""A client that logs in with credentials never stops because another connection took its client id (issue 20).

On a broker that does not bind client ids to user names, any client that can connect can ask for ours: the
link logs one line and retries slowly instead of exiting. Without credentials it still stops with one line
(tests/server/test_receiver_faults_identity.py): there, a second copy of the role is the usual cause.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from edgekit.mqtt.client import make_client
from edgekit.mqtt.client_loop import TAKEN_OVER_AFTER, ClientLoop
from edgekit.mqtt.topics import topic
from edgekit.mqtt.urls import parse_broker_url
from support.running import wait_until

TAKEN = "another process is connected as client id"


def _take_session(url, client_id: str) -> None:
    """Connect anonymously with ``client_id`` (the broker closes its owner's connection), then leave."""
    accepted = threading.Event()
    thief = make_client(client_id, "5")
    thief.on_connect = lambda c, u, f, rc, props: None if rc.is_failure else accepted.set()
    thief.connect(url.host, url.port)
    thief.loop_start()
    try:
        assert accepted.wait(5)
    finally:
        thief.disconnect()
        thief.loop_stop()


def test_a_client_with_a_user_name_keeps_running_when_another_takes_its_client_id(mosquitto, collector, caplog):
    """This Mosquitto accepts any user name and binds none to a client id, as a broker set up without
    ``use_username_as_clientid`` does: the taker cannot be told from a second copy of us."""
    url = parse_broker_url(mosquitto.url)
    logged_in = replace(url, security=replace(url.security, username="cam-a"))
    link = ClientLoop(logged_in, "edgekit-device-cam-a", "5")
    link.refused_retry_s = 0.3  # the slow retry after a taken session, shortened for the test
    received = collector(mosquitto.url, topic("cam-a", "status"))
    link.start()
    try:
        with caplog.at_level(logging.ERROR, logger="edgekit.mqtt"):
            for _ in range(TAKEN_OVER_AFTER + 2):  # short sessions in a row: recognised as taken over
                assert wait_until(link.connected.is_set, 10), link.fatal_error
                _take_session(url, link.client_id)
            assert wait_until(link.connected.is_set, 10), link.fatal_error  # back once the other left
        assert link.alive and link.fatal_error is None
        link.send(topic("cam-a", "status"), b"still here", qos=1)
        assert received.wait_for(1, 10) == [(topic("cam-a", "status"), b"still here", False)]
    finally:
        link.stop()
    taken = [r.getMessage() for r in caplog.records if TAKEN in r.getMessage()]
    assert len(taken) == 1 and "retrying every" in taken[0] and "\n" not in taken[0], taken
