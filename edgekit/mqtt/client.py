"""The paho client: construction (VERSION2 callbacks, MQTT 5 or 3.1.1), protocol detection, TCP_NODELAY.

paho itself is imported lazily so that ``edgekit device --help`` stays cheap.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from edgekit.mqtt.security import (
    BrokerSecurity,
    apply_security,
    connect_failed,
    dropped_before_connack,
    refusal_error,
    socket_error,
)
from edgekit.mqtt.urls import BrokerUrl

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

PROTOCOLS = ("auto", "5", "3.1.1")
SESSION_EXPIRY_S = 7 * 24 * 3600  # a persistent MQTT 5 session outlives a week-long receiver outage
RECEIVE_MAXIMUM = 1024  # QoS 1 messages the broker may have in flight to us (MQTT 5); 3.1.1 uses the broker's


def paho_client():
    """paho's client module, imported on first use so that ``--help`` never loads it."""
    import paho.mqtt.client as mqtt

    return mqtt


def make_client(client_id: str, protocol: str, *, persistent: bool = False, manual_ack: bool = False,
                security: BrokerSecurity | None = None) -> "mqtt.Client":
    """A paho client with VERSION2 callbacks; ``persistent`` keeps the session (and its queue) across outages.

    ``security`` (TLS, certificates, user name and password) is applied before the client ever connects.
    """
    mqtt = paho_client()
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    clean = None if protocol == "5" else not persistent
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                         protocol=version, manual_ack=manual_ack)
    client.max_inflight_messages_set(0)  # our own windows bound what is in flight
    client.max_queued_messages_set(0)
    if security is not None:
        apply_security(client, security)
    return client


def connect_properties(protocol: str, persistent: bool, session_expiry_s: int = SESSION_EXPIRY_S,
                        max_incoming_packet: int | None = None):
    """MQTT 5 CONNECT properties; ``max_incoming_packet`` asks the broker to drop (not forward) anything
    larger, so an oversized publish never reaches this client's memory."""
    if protocol != "5":
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    if max_incoming_packet:
        props.MaximumPacketSize = max_incoming_packet
    return props


def detect_protocol(url: BrokerUrl, client_id: str, persistent: bool = False,
                    session_expiry_s: int = SESSION_EXPIRY_S, timeout: float = 5.0) -> str | None:
    """Ask the broker: ``"5"`` if it accepts an MQTT 5 CONNECT, else ``"3.1.1"``; None if it is unreachable.

    A failed TLS handshake raises :class:`BrokerRefusedError`; a credential refusal in an MQTT 5 CONNACK
    counts as speaking MQTT 5, and the real connection then reports it.

    The probe connects as the client it asks for: its client id, and a persistent session resumed, never
    started clean. A broker that makes user names the client ids (``use_username_as_clientid``, as
    ``edgekit broker --secure`` does) gives every connection with these credentials the client's id, so a
    clean probe there discarded the receiver's persistent session and the frames queued in it. The probe
    acknowledges nothing: what the broker sends it stays in the session for the client.
    """
    for protocol in ("5", "3.1.1"):
        outcome = _try_connect(url, protocol, timeout, client_id, persistent, session_expiry_s)
        if outcome is None:
            return None
        if outcome:
            return protocol
    return "3.1.1"


def _try_connect(url: BrokerUrl, protocol: str, timeout: float, client_id: str, persistent: bool,
                 session_expiry_s: int) -> bool | None:
    """True on CONNACK success, False when refused or dropped, None when nothing listens.

    Raises :class:`BrokerRefusedError` when the connection fails for a TLS reason (see edgekit.mqtt.security).
    """
    result: dict[str, bool] = {}
    errors: list[str] = []
    client = make_client(client_id, protocol, persistent=persistent, manual_ack=True, security=url.security)
    session = ({"clean_start": not persistent,
                "properties": connect_properties(protocol, persistent, session_expiry_s)} if protocol == "5" else {})
    client.on_connect = lambda c, u, flags, rc, props: result.update(
        connack=True, ok=not rc.is_failure or refusal_error(str(url), rc) is not None)
    client.on_disconnect = lambda c, u, flags, rc, props: result.setdefault("ok", False)
    client.on_log = lambda c, u, level, text: errors.append(text) if socket_error(level, text) else None
    try:
        client.connect(url.host, url.port, keepalive=10, **session)
    except OSError as err:
        refusal = connect_failed(str(url), url.host, url.port, url.security, err)
        if refusal is not None:
            raise refusal from None
        return None
    deadline = time.monotonic() + timeout
    try:
        while "ok" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != 0:
                result.setdefault("ok", False)
        if result.get("ok"):
            client.disconnect()
            client.loop(timeout=0.05)
        elif "connack" not in result:
            refusal = dropped_before_connack(str(url), url.host, url.port, url.security, (errors or [None])[-1])
            if refusal is not None:
                raise refusal
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    return result.get("ok", False)


def no_delay(sock) -> None:
    """Turn Nagle's algorithm off (paho leaves it on): a small PUBLISH or ack would otherwise wait for the
    previous one's TCP ACK, which the peer delays up to 40 ms. The broker's side: ``set_tcp_nodelay true``."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
