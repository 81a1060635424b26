"""Topic names, device ids and packet sizes: what every client agrees on about ``edgekit/v1/<device>/<kind>``.

A device id is checked once, where it enters (CLI, topic), so a topic can never carry a wildcard or a
separator; :class:`TopicAliases` maps the features topic to an MQTT 5 alias within the broker's maximum.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgekit.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

TOPIC_ROOT = "edgekit/v1"
TOPIC_KINDS = ("features", "status", "heartbeat", "results", "deadletter", "acks")
#: The receivers' own topics, ``edgekit/v1/$receivers/<receiver>/status``: no device id holds a '$', so none of
#: them is a device's (edgekit/delivery/receiver_status.py).
RECEIVERS_ROOT = f"{TOPIC_ROOT}/$receivers"
RECEIVER_STATUS_FILTER = f"{RECEIVERS_ROOT}/+/status"
#: The largest heartbeat payload: the agent trims its drop list to fit, and receivers announce a Maximum
#: Packet Size that lets it through (a heartbeat the broker dropped would hide the device's drops).
HEARTBEAT_MAX_BYTES = 16 * 1024


_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]+")
MAX_DEVICE_ID = 64


def device_id_problem(device_id: str | None) -> str | None:
    """Why ``device_id`` is not a device id, or None when it is: the one rule of the agent and the receiver.

    A device id is one topic level and a file name (the spool): 1-64 letters, digits, ``._-``, not only dots.
    """
    if not device_id:
        return "empty"
    if len(device_id) > MAX_DEVICE_ID:
        return f"{len(device_id)} characters, above {MAX_DEVICE_ID}"
    if not _DEVICE_ID.fullmatch(device_id):
        return "characters other than letters, digits, '.', '_' and '-'"
    if not device_id.strip("."):
        return "only dots, a path name"
    return None


def printable_id(device_id: str | None) -> str:
    """``device_id`` safe for a log line or a message: ASCII-escaped and cut to its first 64 characters."""
    if device_id is None or len(device_id) <= MAX_DEVICE_ID:
        return ascii(device_id)
    return f"{ascii(device_id[:MAX_DEVICE_ID])}... ({len(device_id)} characters)"


def check_device_id(device_id: str) -> str:
    """``device_id`` if :func:`device_id_problem` finds nothing, else a one-line UsageError."""
    problem = device_id_problem(device_id)
    if problem is not None:
        raise UsageError(f"bad device id {printable_id(device_id)}: {problem}",
                         "use 1-64 letters, digits, '.', '_' or '-', e.g. cam-07")
    return device_id


def topic(device_id: str, kind: str) -> str:
    """``edgekit/v1/<device-id>/<kind>`` for one of :data:`TOPIC_KINDS`."""
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


def receiver_status_topic(receiver: str) -> str:
    """``edgekit/v1/$receivers/<receiver>/status``, where a receiver says how far behind it is."""
    return f"{RECEIVERS_ROOT}/{receiver}/status"


def features_filter(share_group: str | None = None) -> str:
    """The filter matching every device's features, as a ``$share/<group>/…`` when the load is split."""
    base = f"{TOPIC_ROOT}/+/features"
    return f"$share/{share_group}/{base}" if share_group else base


def device_of(topic_name: str) -> str | None:
    """The device id in ``edgekit/v1/<device-id>/<kind>``, or None for a foreign topic."""
    parts = topic_name.split("/")
    if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT and parts[2]:
        return parts[2]
    return None


def _varint_len(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def publish_packet_size(topic_name: str, payload_len: int, protocol: str, qos: int = 1,
                        properties: "Properties | None" = None) -> int:
    """Bytes on the wire of a PUBLISH, the quantity a broker's Maximum Packet Size bounds.

    MQTT 5 adds its property list: ``properties`` packed (length prefix included), or one 0 byte when empty.
    """
    props = (len(properties.pack()) if properties is not None else 1) if protocol == "5" else 0
    remaining = 2 + len(topic_name.encode()) + (2 if qos else 0) + props + payload_len
    return 1 + _varint_len(remaining) + remaining


def publish_properties(content_type: str, user_properties: list[tuple[str, str]]) -> "Properties":
    """MQTT 5 PUBLISH properties: a content type and user properties (e.g. a frame's, see edgekit.wire)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    props.UserProperty = list(user_properties)
    return props


class TopicAliases:
    """MQTT 5 topic aliases for one client's publishes: a topic's name travels once per connection, with its
    alias; later publishes send an empty name and the alias only (3 bytes of properties instead of ~27 of
    name). Aliases are numbered from 1 and never above the broker's Topic Alias Maximum (its CONNACK;
    Mosquitto's default is 10; 0 or absent: no alias). Loop thread only, like the client.
    """

    def __init__(self) -> None:
        self.maximum = 0
        self._aliases: dict[str, int] = {}  # topic -> alias, stable for the client's life
        self._named: set[str] = set()  # topics whose name went out with their alias on this connection

    def publish(self, client: "mqtt.Client", topic_name: str, payload: bytes, qos: int,
                properties: "Properties | None") -> "mqtt.MQTTMessageInfo":
        """``client.publish`` with the topic's alias (``properties`` is never modified). The topic counts as
        named only once paho has taken a publish that names it: one that raised named nothing."""
        name, props = self.apply(topic_name, properties)
        info = client.publish(name, payload, qos=qos, properties=props)
        if name and props is not properties:
            self._named.add(topic_name)
        return info

    def apply(self, topic_name: str, properties: "Properties | None") -> tuple[str, "Properties | None"]:
        """The topic name (empty once named on this connection) and properties to publish with."""
        alias = self._aliases.get(topic_name)
        if alias is None and len(self._aliases) < self.maximum:
            alias = self._aliases[topic_name] = len(self._aliases) + 1
        if alias is None or alias > self.maximum:
            return topic_name, properties
        return ("" if topic_name in self._named else topic_name), _with_alias(properties, alias)

    @staticmethod
    def largest_properties(properties: "Properties | None", maximum: int) -> "Properties | None":
        """The properties of a topic's first publish on a connection (name and alias) under the broker's
        ``maximum``: the largest packet, which a size limit must allow for. ``maximum`` is passed in (the
        CONNACK's) because a size limit may be asked before :meth:`reset` ran on the loop thread."""
        return _with_alias(properties, 1) if maximum else properties

    def reset(self, maximum: int, client: "mqtt.Client") -> None:
        """A new connection (call it from on_connect): the broker knows no alias any more.

        paho re-sends unacknowledged QoS 1 messages right after on_connect, exactly as first sent, and an
        alias-only one would name no topic on the new connection (MQTT 5 §3.3.2.3.4: a protocol error, the
        broker disconnects, paho re-sends it, ...). So each gets its topic name back, and loses its alias when
        the new maximum no longer allows it. paho keeps them in ``_out_messages``: no public API reaches them.
        """
        self.maximum = maximum
        self._named.clear()
        names = {alias: name for name, alias in self._aliases.items()}
        with client._out_message_mutex:
            for message in client._out_messages.values():
                alias = getattr(message.properties, "TopicAlias", None) if message.properties else None
                if alias is None:
                    continue
                if not message.topic:
                    message.topic = names[alias].encode()
                if alias > maximum:
                    message.properties = _with_alias(message.properties, None)


def _with_alias(properties: "Properties | None", alias: int | None) -> "Properties":
    """A copy of PUBLISH ``properties`` (content type, user properties) with Topic Alias ``alias`` (or none)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    for name in ("ContentType", "UserProperty"):
        if properties is not None and hasattr(properties, name):
            setattr(props, name, getattr(properties, name))
    if alias is not None:
        props.TopicAlias = alias
    return props
