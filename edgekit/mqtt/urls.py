"""Broker URLs: ``mqtt://``/``mqtts://`` parsed into a :class:`BrokerUrl` with its security options, and
redacted for logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from edgekit.errors import UsageError
from edgekit.mqtt.security import BrokerSecurity, resolve_security

if TYPE_CHECKING:  # pragma: no cover
    pass

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerUrl:
    """Where the broker listens and how to connect: ``mqtt[s]://[user@]host:port`` (see edgekit.mqtt.security)."""

    host: str
    port: int = DEFAULT_PORT
    security: BrokerSecurity = BrokerSecurity()

    def __str__(self) -> str:
        """The URL for logs: the password, if any, is shown as ``***``."""
        return f"{self.security.scheme}://{self.security.userinfo()}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]`` (a bare ``host[:port]`` means mqtt://).

    The user name and password of the URL are used (see :func:`edgekit.mqtt.security.resolve_security` for
    the safer places to keep a password); mqtts:// defaults to port 8883. One-line UsageError otherwise.
    """
    text = url.strip()
    if "://" not in text:
        text = "mqtt://" + text
    fix = "give the broker as mqtt://HOST:PORT or mqtts://HOST:PORT, e.g. mqtt://localhost:1883"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(f"bad broker URL {_redacted(url)!r}", fix) from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UsageError(f"unsupported broker scheme {parts.scheme!r} in {_redacted(url)!r} "
                         "(mqtt:// and mqtts:// are supported)", fix)
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise UsageError(f"bad broker URL {_redacted(url)!r}", fix)
    tls = parts.scheme == "mqtts"
    security = BrokerSecurity(tls=tls, username=unquote(parts.username) if parts.username else None,
                              password=unquote(parts.password) if parts.password is not None else None)
    return BrokerUrl(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), security)


def resolve_broker(url: str, **options: Any) -> BrokerUrl:
    """The ``--broker`` URL completed by the command's :func:`~edgekit.mqtt.security.security_options`."""
    broker = parse_broker_url(url)
    return replace(broker, security=resolve_security(broker.security, **options))


def _redacted(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (for error messages)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
