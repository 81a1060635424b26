"""How a client proves who it is and checks who it talks to: TLS, client certificates, user names, passwords.

One place for every role (agent, receiver, demo, the protocol probe)::

    --broker mqtts://cam-07@gw:8883 ─┐
    --ca / --cert / --key            ├─► resolve_security() ─► BrokerSecurity ─► apply_security(paho client)
    --password-file / $EDGEKIT_MQTT_PASSWORD ┘   (files read and checked at start)    tls_set_context + username_pw_set

and one place that turns what goes wrong into a line a user can act on (:func:`refusal_error`,
:func:`connect_failed`, :func:`dropped_before_connack`): a TLS/plaintext mismatch, an unknown CA, a refused
client certificate and a CONNACK "Bad user name or password"/"Not authorized" each name their cause and
fix instead of looking like an unreachable broker retried forever.

Passwords never come from an option (a command line is visible to every user in ``ps``); one in the broker
URL is used but warned about, and :class:`BrokerSecurity` never prints it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from edgekit.errors import BrokerRefusedError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

__all__ = ["PASSWORD_ENV", "BrokerSecurity", "security_options", "security_args", "resolve_security", "tls_context",
           "apply_security", "refusal_error", "tls_error", "connect_failed", "socket_error", "dropped_before_connack", "speaks_mqtt",
           "speaks_tls"]

log = logging.getLogger(__name__)

PASSWORD_ENV = "EDGEKIT_MQTT_PASSWORD"
# CONNACK reasons that retrying cannot fix (paho maps the MQTT 3.1.1 return codes 2, 4, 5 onto these).
CREDENTIAL_REFUSALS = {133: "client identifier not valid", 134: "bad user name or password",
                       135: "not authorized", 138: "banned", 140: "bad authentication method"}
_CREDENTIALS_FIX = (f"check the user name and --password-file/${PASSWORD_ENV} (or --cert/--key), and that the "
                    "broker has this client in its password file and ACL (docs/security.md)")

_CERT_FIX = ("use --cert/--key issued by the broker's CA (edgekit certs client NAME); a revoked or expired "
             "certificate needs a new one")


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS settings and credentials of one broker connection; ``str()`` and ``repr()`` never show the password."""

    tls: bool = False
    ca: Path | None = None  # None: the system's trusted CAs
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False  # skip the host name check (the chain is still verified)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def userinfo(self) -> str:
        """``user@`` or ``user:***@`` for a logged URL; empty without a user name."""
        if not self.username:
            return ""
        return f"{self.username}:***@" if self.password else f"{self.username}@"


def security_options(fn: Callable) -> Callable:
    """The broker options shared by every command that connects (``device run``, ``server run``, ``demo``)."""
    options = [
        click.option("--ca", type=click.Path(dir_okay=False), default=None,
                     help="CA certificate (PEM) that signed the broker's certificate (mqtts://; default: the "
                          "system's CAs)."),
        click.option("--cert", type=click.Path(dir_okay=False), default=None,
                     help="Client certificate (PEM) for brokers that authenticate clients by certificate."),
        click.option("--key", type=click.Path(dir_okay=False), default=None,
                     help="Private key (PEM) of --cert (default: read from the --cert file)."),
        click.option("--username", default=None, help="MQTT user name (or give it in the URL: mqtts://USER@HOST)."),
        click.option("--password-file", type=click.Path(dir_okay=False), default=None,
                     help=f"File holding the MQTT password (or set ${PASSWORD_ENV}; never on the command line)."),
        click.option("--tls-insecure", is_flag=True,
                     help="Do not check the broker's host name against its certificate (tests only; warned)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def security_args(options: dict[str, Any]) -> tuple[str, ...]:
    """The given :func:`security_options` as arguments again, file paths made absolute (for a unit file)."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value:
            args += [flag, value if name == "username" else str(Path(value).expanduser().resolve())]
    return tuple(args)


def resolve_security(base: BrokerSecurity, *, ca: str | None = None, cert: str | None = None,
                     key: str | None = None, username: str | None = None, password_file: str | None = None,
                     tls_insecure: bool = False, environ: dict[str, str] | None = None) -> BrokerSecurity:
    """The URL's security (scheme, user, password) completed by the command's options, checked now.

    The password comes from ``--password-file``, else ``$EDGEKIT_MQTT_PASSWORD``, else the URL. The TLS
    files are loaded once here so that a wrong path or a key that does not match its certificate is a
    usage error at start, not a reconnect loop.
    """
    environ = os.environ if environ is None else environ
    if (ca or cert or key or tls_insecure) and not base.tls:
        raise UsageError("--ca, --cert, --key and --tls-insecure need a TLS broker URL",
                         "give the broker as mqtts://HOST:8883")
    if key and not cert:
        raise UsageError("--key given without --cert", "pass the client certificate with --cert")
    password = base.password
    if password_file:
        password = _read_password(Path(password_file))
    elif environ.get(PASSWORD_ENV):
        password = environ[PASSWORD_ENV]
    elif password:
        log.warning("the broker password is in the URL, which every user sees in ps; use --password-file or "
                    "$%s", PASSWORD_ENV)
    security = replace(base, ca=_path(ca), cert=_path(cert), key=_path(key), insecure=tls_insecure,
                       username=username or base.username, password=password)
    if security.password and not security.username:
        raise UsageError("a broker password without a user name", "give --username or mqtts://USER@HOST")
    if security.tls:
        tls_context(security)  # fail now on a bad file
        if security.insecure:
            log.warning("--tls-insecure: the broker's host name is NOT checked against its certificate; anyone "
                        "holding a certificate from this CA can impersonate the broker")
    elif security.password:
        log.warning("the broker password goes over plaintext mqtt://: anyone on the network can read it; "
                    "use mqtts://")
    return security


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _read_password(path: Path) -> str:
    """The first line of the file, without its newline (so ``echo secret > file`` works)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"cannot read the password file {path}: {err.strerror}",
                         "give a readable file holding the password on its first line") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise UsageError(f"the password file {path} is empty", "write the password on its first line")
    return password


def tls_context(security: BrokerSecurity) -> ssl.SSLContext:
    """The client's TLS context: verify the broker's chain always, its host name unless ``insecure``."""
    try:
        context = ssl.create_default_context(cafile=str(security.ca) if security.ca else None)
        if security.cert:
            context.load_cert_chain(str(security.cert), str(security.key) if security.key else None)
    except FileNotFoundError as err:
        raise UsageError(f"TLS file not found: {err.filename}", "check the --ca/--cert/--key paths") from None
    except (ssl.SSLError, OSError) as err:
        raise UsageError(f"cannot load the TLS files ({err})",
                         "give PEM files: --ca the CA certificate, --cert/--key a matching certificate and key "
                         "(edgekit certs makes them)") from None
    if security.insecure:
        context.check_hostname = False
    return context


def apply_security(client: "mqtt.Client", security: BrokerSecurity) -> None:
    """Configure a fresh paho client: TLS first (paho wants it before connect), then the user name."""
    if security.tls:
        client.tls_set_context(tls_context(security))
        if security.insecure:
            client.tls_insecure_set(True)
    if security.username:
        client.username_pw_set(security.username, security.password)


def refusal_error(where: str, reason_code: Any) -> BrokerRefusedError | None:
    """A CONNACK refusal that retrying cannot fix, as one error; None for others (server busy, ...)."""
    value = getattr(reason_code, "value", reason_code)
    if value not in CREDENTIAL_REFUSALS:
        return None
    return BrokerRefusedError(f"broker {where} refused the connection: {CREDENTIAL_REFUSALS[value]}",
                              _CREDENTIALS_FIX)


def tls_error(where: str, err: ssl.SSLError | str) -> BrokerRefusedError:
    """Name the cause of a failed TLS handshake (or of a connection the broker closed with a TLS alert)."""
    text = str(err)
    upper = text.upper()
    verify_failed = isinstance(err, ssl.SSLCertVerificationError)
    if verify_failed and "MISMATCH" in upper:
        return BrokerRefusedError(f"the certificate of broker {where} is not valid for that host name ({text})",
                                  "connect with a name the certificate lists, or re-issue it with "
                                  "edgekit certs init --name HOST (--tls-insecure skips the check: tests only)")
    if verify_failed:
        return BrokerRefusedError(f"the certificate of broker {where} is not signed by a trusted CA ({text})",
                                  "pass --ca with the CA certificate that signed the broker's certificate")
    if any(s in upper for s in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                                "UNEXPECTED EOF", "HTTP_REQUEST")):
        return BrokerRefusedError(f"broker {where} does not speak TLS ({text})",
                                  "use mqtt:// for a plaintext port, or the broker's TLS port (usually 8883)")
    if any(s in upper for s in ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED",
                                "ALERT_CERTIFICATE_UNKNOWN", "CERTIFICATE_REVOKED", "CERTIFICATE_EXPIRED")):
        return BrokerRefusedError(f"broker {where} refused this client's certificate ({text})", _CERT_FIX)
    return BrokerRefusedError(f"TLS with broker {where} failed ({text})", "check --ca, --cert and --key")


def connect_failed(where: str, host: str, port: int, security: BrokerSecurity,
                   err: OSError) -> BrokerRefusedError | None:
    """Why ``connect()`` failed, when it is a setup mistake (TLS) rather than a broker that is not up yet.

    A plaintext broker resets a TLS ClientHello without a TLS error, so a reset TLS connection probes the
    port for plaintext MQTT.
    """
    if isinstance(err, ssl.SSLError):
        return tls_error(where, err)
    if security.tls and isinstance(err, (ConnectionResetError, ConnectionAbortedError)) and speaks_mqtt(host, port):
        return BrokerRefusedError(f"broker {where} does not speak TLS on that port (it answers plaintext MQTT)",
                                  f"use mqtt://{host}:{port}, or the broker's TLS port (usually 8883)")
    return None


def socket_error(level: int, text: str) -> bool:
    """Whether a paho log line reports a failed socket read or write (where a broker's TLS alert shows)."""
    return level == 8 and " on socket" in text  # 8: paho's MQTT_LOG_ERR


def dropped_before_connack(where: str, host: str, port: int, security: BrokerSecurity,
                           last_error: str | None) -> BrokerRefusedError | None:
    """Why the broker closed a connection before its CONNACK, when it is a setup mistake; None otherwise.

    A plaintext CONNECT on a TLS port is answered by a silent close, so the port is probed with a TLS
    handshake; a TLS client whose certificate the broker rejects (TLS 1.3 reports that after the
    handshake) sees paho log the broker's alert, passed here as ``last_error``.
    """
    if security.tls:
        if last_error and "EOF occurred in violation of protocol" in last_error:  # closed without an alert
            return BrokerRefusedError(f"broker {where} closed the TLS connection before answering: it probably "
                                      "refused this client's certificate (or wants one)", _CERT_FIX)
        return tls_error(where, last_error) if last_error and "SSL" in last_error else None
    if speaks_tls(host, port):
        return BrokerRefusedError(f"broker {where} closed the plaintext connection: that port speaks TLS",
                                  f"use mqtts://{host}:{port} (with --ca when the broker's CA is private)")
    return None


# An MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 10 s, client id "edgekit-probe".
_PROBE_CONNECT = bytes([0x10, 25, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 13]) + b"edgekit-probe"


def speaks_mqtt(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``host:port`` answers a plaintext MQTT CONNECT with a CONNACK (accepted or not)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PROBE_CONNECT)
            return sock.recv(1) == b"\x20"
    except OSError:
        return False


def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``host:port`` completes (or alerts in) a TLS handshake, whatever its certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return True
    except ssl.SSLError as err:
        return "ALERT" in str(err).upper()  # it answered in TLS, if only to refuse us
    except OSError:
        return False
