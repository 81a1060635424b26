"""A site broker bridged over TLS, with a user name and password, to a central ``edgekit broker --secure
--site-user site-a``: the central broker's ACL lets the bridge's identity carry the devices' outputs up and
the receivers' answers down (without ``--site-user`` the central broker drops what the bridge publishes)."""

from __future__ import annotations

import subprocess
import threading

from edgekit.mqtt.bridge import resolve_bridge
from edgekit.mqtt.client import make_client
from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker
from edgekit.mqtt.security import PASSWORD_ENV
from edgekit.mqtt.urls import resolve_broker
from support.running import wait_until

PASSWORDS = {"site-a": "pw-site-a", DEFAULT_SERVER_USER: "pw-server"}


class _Client:
    """A paho client subscribed to one filter, recording what it receives."""

    def __init__(self, url: str, client_id: str, topic_filter: str, **security):
        broker = resolve_broker(url, **security)
        self.messages: list[tuple[str, bytes]] = []
        subscribed = threading.Event()
        self.client = make_client(client_id, "3.1.1", security=broker.security)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), f"{client_id} could not subscribe to {topic_filter}"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_tls_bridge_logged_in_as_a_site_user_carries_outputs_up_and_answers_down(mosquitto_factory, collector,
                                                                                   tmp_path):
    setup = SecureBroker(tmp_path / "central", site_users=("site-a",))
    setup.prepare()
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(setup.passwd), user, password], check=True, capture_output=True)
    central = mosquitto_factory(secure=setup)
    (tmp_path / "site-a.pw").write_text(PASSWORDS["site-a"] + "\n")
    bridge = resolve_bridge(central.url, ca=str(setup.pki / "ca.crt"), username="site-a",
                            password_file=str(tmp_path / "site-a.pw"), client_id="site-a")
    site = mosquitto_factory(bridge=bridge)
    state = collector(site.url, "$SYS/broker/connection/site-a/state")
    assert wait_until(lambda: state.messages and state.messages[-1][1] == b"1", 30), "the bridge did not connect"
    server = _Client(central.url, DEFAULT_SERVER_USER, "edgekit/v1/+/features", ca=str(setup.pki / "ca.crt"),
                     username=DEFAULT_SERVER_USER,
                     environ={PASSWORD_ENV: PASSWORDS[DEFAULT_SERVER_USER]})
    device = _Client(site.url, "edgekit-device-cam-a", "edgekit/v1/cam-a/acks")
    try:
        device.publish("edgekit/v1/cam-a/features", b"a frame")
        assert wait_until(lambda: server.messages, 20), "the frame did not cross the bridge"
        server.publish("edgekit/v1/cam-a/acks", b"an ack")
        assert wait_until(lambda: device.messages, 20), "the ack did not cross the bridge"
    finally:
        server.close()
        device.close()
    assert server.messages == [("edgekit/v1/cam-a/features", b"a frame")]
    assert device.messages == [("edgekit/v1/cam-a/acks", b"an ack")]
