"""A site broker bridged to a central one: the Mosquitto ``connection`` block behind ``edgekit broker --bridge``.

::

    devices ─► site Mosquitto ══ bridge (one MQTT client, persistent session both ends) ══► central Mosquitto ─► receivers
               features, status, heartbeat ─── out, QoS 1 ──►
               ◄── in, QoS 1 ─── results, deadletter, acks
               ◄── in, QoS 0 ─── $receivers/+/status

The topics are the roles' own (edgekit.mqtt.secure_broker): what a device writes goes up, what the server role
writes comes down. The bridge keeps a persistent session on both brokers (``cleansession false``): while the
central broker is away the site broker queues the frames for the bridge (within its queue limits, and in its
persistence file across a site restart); while the bridge is away the central broker queues the receivers'
acks and results for it. Receiver-confirmed delivery (docs/device.md) covers whatever still goes missing.

The bridge speaks MQTT 3.1.1 on purpose: Mosquitto (2.0.11 here; reported up to 2.0.17) sends an MQTT 5
bridge CONNECT without a session expiry interval, so with ``bridge_protocol_version mqttv50`` the central
broker drops the bridge's session at every disconnect, and the acks published meanwhile with it
(eclipse-mosquitto/mosquitto#2424, #2793; tests/mqtt/test_bridge_delivery.py fails with it).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path

from edgekit.errors import UsageError
from edgekit.mqtt.secure_broker import DEVICE_WRITES, SERVER_WRITES
from edgekit.mqtt.topics import RECEIVER_STATUS_FILTER, TOPIC_ROOT, device_id_problem
from edgekit.mqtt.urls import BrokerUrl, parse_broker_url

__all__ = ["Bridge", "BRIDGE_PROTOCOLS", "resolve_bridge", "bridge_topics", "SYSTEM_CA_PATH"]

#: Where Debian and most distributions keep the trusted CAs (hashed): used when an mqtts:// bridge has no CA file.
SYSTEM_CA_PATH = "/etc/ssl/certs"
BRIDGE_PROTOCOLS = {"3.1.1": "mqttv311", "5": "mqttv50"}
REDACTED = "********"


def bridge_topics() -> list[str]:
    """The bridge's ``topic`` lines: every device's outputs up, the server role's answers down, QoS 1 (QoS 0
    messages stay QoS 0); and the receivers' statuses down, which devices read to time their re-sends."""
    return ([f"topic {TOPIC_ROOT}/+/{kind} out 1" for kind in DEVICE_WRITES]
            + [f"topic {TOPIC_ROOT}/+/{kind} in 1" for kind in SERVER_WRITES]
            + [f"topic {RECEIVER_STATUS_FILTER} in 0"])


@dataclass(frozen=True)
class Bridge:
    """One bridge connection from this (site) broker to a central broker, and how it logs in there."""

    remote: BrokerUrl  # host, port, TLS files, user name and password (checked by resolve_bridge)
    client_id: str  # its session on the central broker: one per site, stable across restarts
    protocol: str = "3.1.1"  # see the module docstring before choosing "5"
    clean_session: bool = False  # True only to show what a persistent session buys (tests)

    def config_text(self, redact: bool = False) -> str:
        """The ``connection`` block, to be the last part of the site broker's config (what follows a
        ``connection`` line belongs to that bridge). ``redact`` hides the password (for printing)."""
        flag = "true" if self.clean_session else "false"
        lines = [f"connection edgekit-bridge-{self.client_id}", f"address {self.remote.host}:{self.remote.port}",
                 f"remote_clientid {self.client_id}", f"bridge_protocol_version {BRIDGE_PROTOCOLS[self.protocol]}",
                 f"cleansession {flag}", f"local_cleansession {flag}", "try_private true",
                 "notifications true", "notifications_local_only true", "keepalive_interval 30", "restart_timeout 1 30"]
        lines += self._tls_lines() + self._login_lines(redact) + bridge_topics()
        return "\n".join(lines) + "\n"

    def _tls_lines(self) -> list[str]:
        security = self.remote.security
        if not security.tls:
            return []
        lines = [f"bridge_cafile {security.ca}" if security.ca else f"bridge_capath {SYSTEM_CA_PATH}"]
        if security.cert:
            lines += [f"bridge_certfile {security.cert}", f"bridge_keyfile {security.key or security.cert}"]
        if security.insecure:
            lines += ["bridge_insecure true"]
        return lines

    def _login_lines(self, redact: bool) -> list[str]:
        security = self.remote.security
        if not security.username:
            return []
        lines = [f"remote_username {security.username}"]
        if security.password:
            lines += [f"remote_password {REDACTED if redact else security.password}"]
        return lines

    @property
    def has_secret(self) -> bool:
        """Whether the block holds a password (then the config file is made readable by its owner only)."""
        return bool(self.remote.security.password)


def resolve_bridge(url: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                   username: str | None = None, password_file: str | None = None, client_id: str | None = None,
                   protocol: str = "3.1.1", tls_insecure: bool = False) -> Bridge:
    """``--bridge`` and its options, checked now: a bad URL, a TLS file that is missing or not PEM, a user
    name or client id that would break the config line are one-line :class:`UsageError` s."""
    from edgekit.mqtt.security import resolve_security

    fix = "give the central broker as --bridge mqtts://HOST:8883 (or mqtt://HOST:1883)"
    try:
        remote = parse_broker_url(url)
    except UsageError as err:
        raise UsageError(f"--bridge: {err.problem}", fix) from None
    if (ca or cert or key or tls_insecure) and not remote.security.tls:
        raise UsageError("--bridge-ca, --bridge-cert, --bridge-key and --bridge-tls-insecure need a TLS bridge",
                         f"give --bridge mqtts://{remote.host}:8883")
    for option, path in (("--bridge-ca", ca), ("--bridge-cert", cert), ("--bridge-key", key),
                         ("--bridge-password-file", password_file)):
        if path and not Path(path).expanduser().is_file():
            raise UsageError(f"{option}: no such file {path}", f"give the path of an existing file to {option}")
    try:
        security = resolve_security(remote.security, ca=ca, cert=cert, key=key, username=username,
                                    password_file=password_file, tls_insecure=tls_insecure)
    except UsageError as err:
        raise UsageError(f"--bridge: {err.problem}",
                         "give PEM files: --bridge-ca the central broker's CA, --bridge-cert/--bridge-key a matching "
                         "certificate and key (edgekit certs client NAME makes them)") from None
    remote = replace(remote, security=replace(security, ca=_absolute(security.ca), cert=_absolute(security.cert),
                                              key=_absolute(security.key)))
    client_id = client_id or f"edgekit-bridge-{socket.gethostname()}"
    for what, value in (("bridge client id", client_id), ("bridge user name", security.username)):
        problem = value is not None and device_id_problem(value)
        if problem:
            raise UsageError(f"bad {what} {value[:64]!r}: {problem}",
                             "use 1-64 letters, digits, '.', '_' and '-', e.g. site-a")
    if any(c.isspace() for c in remote.host + (security.password or "")):
        raise UsageError("--bridge: a space in the host name or password", "a Mosquitto config line cannot hold it")
    return Bridge(remote, client_id, protocol)


def _absolute(path: Path | None) -> Path | None:
    """Mosquitto runs in its own folder: the config names files by absolute path."""
    return path.expanduser().resolve() if path else None
