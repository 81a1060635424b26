"""A local broker for development, tests and the demo: Mosquitto when installed, amqtt otherwise.

Mosquitto is the real broker. :class:`MosquittoBroker` writes its own config for a free loopback port, waits
until the broker accepts connections, keeps its log (shown when something fails) and always stops it in a
``finally``. :class:`AmqttBroker` is the pure-Python MQTT 3.1.1 fallback used when Mosquitto is absent.

Only click and the standard library are imported at module level: this module is a command module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import click

from edgekit.errors import UsageError
from edgekit.mqtt.bridge import BRIDGE_PROTOCOLS, Bridge, resolve_bridge
from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker

__all__ = ["find_mosquitto", "free_port", "MosquittoBroker", "AmqttBroker", "local_broker", "broker_command"]

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
INSTALL_HINT = "install Mosquitto (apt-get install mosquitto, brew install mosquitto) or pip install amqtt"


def find_mosquitto() -> str | None:
    """The Mosquitto binary: ``$EDGEKIT_MOSQUITTO``, then PATH, then the usual sbin folders (not on PATH)."""
    candidates = [os.environ.get("EDGEKIT_MOSQUITTO"), shutil.which("mosquitto"), *MOSQUITTO_PATHS]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    """A loopback port the OS says is free right now (bind to 0, as paho's own tests do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send ``sig`` and wait; SIGKILL after ``timeout`` (a process that ignores SIGTERM must still go)."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """True once something accepts TCP connections on host:port; False on timeout or if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class _BrokerProcess:
    """Shared life cycle of a broker subprocess: start, wait until it listens, stop in ``finally``."""

    protocol = "5"
    name = "broker"

    def __init__(self, port: int | None = None, workdir: str | Path | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix=f"edgekit-{self.name}-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> "_BrokerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir)
        if not wait_for_port(self.host, self.port, timeout, self.process):
            self.stop()
            raise RuntimeError(f"{self.name} did not start on {self.url}; its log:\n{self.log_text()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM lets Mosquitto save its persistence file; SIGKILL is a crash)."""
        if self.process is not None:
            stop_process(self.process, sig, timeout)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop and start again on the same port with the same config and persistence."""
        self.stop(sig)
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "_BrokerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.close()


class MosquittoBroker(_BrokerProcess):
    """A Mosquitto on a free loopback port with a generated config and persistence in its own folder.

    ``extra`` config lines are appended (e.g. ``max_packet_size 4096`` to test size limits); ``secure`` makes
    the listener TLS-only with passwords or client certificates and an ACL (edgekit.mqtt.secure_broker); ``bridge``
    connects it to a central broker (edgekit.mqtt.bridge). The queue limits are raised from Mosquitto's
    defaults (1000 queued, 20 in flight per client) so that a receiver outage of a few thousand frames is
    held, not dropped.
    """

    name = "mosquitto"

    def __init__(self, port: int | None = None, workdir: str | Path | None = None, host: str = "127.0.0.1",
                 extra: str = "", binary: str | None = None, secure: SecureBroker | None = None,
                 bridge: Bridge | None = None, max_queued_messages: int = 100_000, max_queued_bytes: int = 0):
        super().__init__(port, workdir, host)
        self.secure = secure
        self.bridge = bridge
        self.max_queued_messages, self.max_queued_bytes = max_queued_messages, max_queued_bytes
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise UsageError("Mosquitto is not installed", INSTALL_HINT)
        self.config_path = self.workdir / "mosquitto.conf"
        self.extra = extra

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.secure else 'mqtt'}://{self.host}:{self.port}"

    def _listener(self) -> str:
        if self.secure is None:
            return f"listener {self.port} {self.host}\nallow_anonymous true\n"
        self.secure.prepare()
        return self.secure.listener_config(self.port, self.host)

    def config_text(self, redact: bool = False) -> str:
        """The whole config; a bridge's block comes last (lines after ``connection`` belong to the bridge);
        ``redact`` hides its password (for ``--print-config``)."""
        bridge = self.bridge.config_text(redact) if self.bridge else ""
        return self._listener() + textwrap.dedent(f"""\
            persistence true
            persistence_location {self.workdir}/
            autosave_interval 1
            max_inflight_messages 1000
            max_queued_messages {self.max_queued_messages}
            max_queued_bytes {self.max_queued_bytes}
            set_tcp_nodelay true
            log_dest stdout
            log_type error
            log_type warning
            log_type notice
            log_type information
            connection_messages true
            """) + self._user_line() + self.extra + "\n" + bridge

    @staticmethod
    def _user_line() -> str:
        """Started as root, Mosquitto switches to user ``mosquitto`` and cannot write its persistence file in
        our folder; keep the current user instead."""
        return "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""

    def command(self) -> list[str]:
        self.config_path.touch()
        self.config_path.chmod(0o600)  # a bridge's password is in it: readable by its owner only
        self.config_path.write_text(self.config_text())
        return [self.binary, "-c", str(self.config_path)]


class AmqttBroker(_BrokerProcess):
    """The pure-Python fallback (amqtt, MQTT 3.1.1 only) in a subprocess of its own."""

    name = "amqtt"
    protocol = "3.1.1"

    def command(self) -> list[str]:
        script = textwrap.dedent(f"""\
            import asyncio, logging
            from amqtt.broker import Broker
            logging.basicConfig(level=logging.WARNING)
            config = {{"listeners": {{"default": {{"type": "tcp", "bind": "{self.host}:{self.port}"}}}},
                      "plugins": {{"amqtt.plugins.authentication.AnonymousAuthPlugin": {{"allow_anonymous": True}}}}}}
            async def main():
                broker = Broker(config)
                await broker.start()
                await asyncio.Event().wait()
            asyncio.run(main())
            """)
        return [sys.executable, "-c", script]


def local_broker(port: int | None = None, workdir: str | Path | None = None, extra: str = "",
                 host: str = "127.0.0.1") -> _BrokerProcess:
    """Mosquitto when installed, else amqtt when importable; a UsageError naming both otherwise."""
    if find_mosquitto():
        return MosquittoBroker(port, workdir, host, extra=extra)
    try:
        import amqtt  # noqa: F401
    except ImportError:
        raise UsageError("no MQTT broker available", INSTALL_HINT) from None
    return AmqttBroker(port, workdir, host)


def _secure_broker(port: int | None, host: str, workdir: str | None, client_certs: bool,
                   server_users: tuple[str, ...], site_users: tuple[str, ...], **config) -> MosquittoBroker:
    """``--secure``: Mosquitto only (amqtt has no ACL), in a kept folder (the PKI and passwords live there)."""
    if workdir is None:
        raise UsageError("--secure needs --dir", "give a folder that keeps the PKI, passwords and ACL, "
                                                 "e.g. --dir /srv/edgekit-broker")
    secure = SecureBroker(Path(workdir), client_certs=client_certs, server_users=server_users, site_users=site_users)
    port = 8883 if port is None else port
    broker = MosquittoBroker(port or None, workdir, host, secure=secure, **config)
    if not client_certs:
        click.echo(f"passwords: mosquitto_passwd {secure.passwd} <device-id>  (and {', '.join(server_users)} "
                   f"for the server role), then kill -HUP the broker to reload", err=True)
    click.echo(f"clients need --ca {secure.pki / 'ca.crt'}", err=True)
    return broker


def _plain_broker(port: int | None, host: str, workdir: str | None, force_amqtt: bool,
                  **config) -> _BrokerProcess:
    """Without ``--secure``: Mosquitto when installed, else amqtt, which has no bridge and no byte limit."""
    port = 1883 if port is None else port
    if find_mosquitto() and not force_amqtt:
        return MosquittoBroker(port or None, workdir, host, **config)
    if config["bridge"] is not None or config["max_queued_bytes"]:
        raise UsageError("--bridge and --max-queued-bytes need Mosquitto", "apt-get install mosquitto "
                         "(brew install mosquitto), and leave out --amqtt")
    return AmqttBroker(port or None, workdir, host) if force_amqtt else local_broker(port or None, workdir,
                                                                                     config["extra"], host)


def _bridge_options(fn):
    """``--bridge`` and how the bridge logs in to the central broker (docs/server.md, Site broker)."""
    options = [
        click.option("--bridge", "bridge_url", default=None,
                     help="Bridge this (site) broker to a central broker: mqtts://HOST:8883 or mqtt://HOST:1883. "
                          "Device outputs go up, receivers' results and acks come down (QoS 1, persistent)."),
        click.option("--bridge-ca", type=click.Path(dir_okay=False), default=None,
                     help="CA certificate (PEM) of the central broker (default: the system's CAs)."),
        click.option("--bridge-cert", type=click.Path(dir_okay=False), default=None,
                     help="Client certificate (PEM) the bridge presents to the central broker."),
        click.option("--bridge-key", type=click.Path(dir_okay=False), default=None,
                     help="Private key (PEM) of --bridge-cert (default: read from the --bridge-cert file)."),
        click.option("--bridge-username", default=None, help="User name on the central broker (or mqtts://USER@HOST)."),
        click.option("--bridge-password-file", type=click.Path(dir_okay=False), default=None,
                     help="File holding that user's password (or $EDGEKIT_MQTT_PASSWORD); it goes into the config "
                          "file, which is made readable by its owner only."),
        click.option("--bridge-client-id", default=None,
                     help="The bridge's client id (its session) on the central broker: one per site, never reused "
                          "by two sites [default: edgekit-bridge-<hostname>]."),
        click.option("--bridge-protocol", type=click.Choice(sorted(BRIDGE_PROTOCOLS)), default="3.1.1",
                     show_default=True,
                     help="MQTT version of the bridge; 5 loses the central session at every disconnect with "
                          "Mosquitto 2.0 (no session expiry is sent)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("broker")
@click.option("--port", type=int, default=None, help="Port to listen on (default 1883, 8883 with --secure; 0: any free).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; use it only with --secure).")
@click.option("--secure", is_flag=True,
              help="TLS only, no anonymous clients, per-device ACL (Mosquitto; needs --dir; see docs/security.md).")
@click.option("--client-certs", is_flag=True,
              help="With --secure: clients log in with certificates from edgekit certs instead of passwords.")
@click.option("--server-user", "server_users", multiple=True, default=(DEFAULT_SERVER_USER,), show_default=True,
              help="With --secure: a user name with the server role's rights; repeat it for each receiver of a "
                   "--group (the user name is the client id: receivers cannot share one).")
@click.option("--site-user", "site_users", multiple=True, default=(),
              help="With --secure: the user name a site broker's bridge logs in with (its --bridge-username); "
                   "it may publish every device's outputs and read their answers. Repeat it per site.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Folder for the config, log and persistence (default: a temporary folder).")
@click.option("--max-packet-size", type=int, default=0, help="Largest MQTT packet accepted, in bytes (0: no limit).")
@click.option("--max-queued-messages", type=click.IntRange(min=0), default=100_000, show_default=True,
              help="Messages queued per client (an offline receiver, a bridge whose central broker is away) "
                   "before the broker drops new ones (0: no limit).")
@click.option("--max-queued-bytes", type=click.IntRange(min=0), default=None,
              help="Bytes queued per client before the broker drops new messages (0: no limit) "
                   "[default: 256 MiB with --bridge, else no limit].")
@_bridge_options
@click.option("--print-config", is_flag=True, help="Print the Mosquitto config (password hidden) and exit, running nothing.")
@click.option("--amqtt", "force_amqtt", is_flag=True, help="Use the pure-Python amqtt broker even if Mosquitto exists.")
def broker_command(port: int | None, host: str, secure: bool, client_certs: bool, server_users: tuple[str, ...],
                   site_users: tuple[str, ...], workdir: str | None, max_packet_size: int, max_queued_messages: int, max_queued_bytes: int | None,
                   bridge_url: str | None, bridge_ca: str | None, bridge_cert: str | None, bridge_key: str | None,
                   bridge_username: str | None, bridge_password_file: str | None, bridge_client_id: str | None,
                   bridge_protocol: str, print_config: bool, force_amqtt: bool) -> None:
    """Run a local MQTT broker on 127.0.0.1 until Ctrl-C.

    Starts Mosquitto with a generated config (persistence on, queue limits raised for store-and-forward);
    falls back to the embedded pure-Python amqtt broker (MQTT 3.1.1) when Mosquitto is not installed.
    With --bridge it is a site broker bridged to a central one (docs/server.md, Site broker).

    \b
    Example:
      edgekit broker --port 1883
      edgekit broker --port 0 --dir /tmp/broker --max-packet-size 65536
      edgekit broker --secure --dir /srv/edgekit-broker --host 0.0.0.0   # then mosquitto_passwd its passwd file
      edgekit broker --secure --client-certs --dir /srv/edgekit-broker --host 0.0.0.0
      edgekit broker --secure --dir /srv/edgekit-broker --server-user rx-1 --server-user rx-2   # a group of two
      edgekit broker --secure --dir /srv/central --host 0.0.0.0 --site-user site-a   # the central broker
      edgekit broker --dir /srv/site-broker --host 0.0.0.0 --bridge mqtts://central.example:8883 \\
          --bridge-ca central-ca.crt --bridge-username site-a --bridge-password-file site-a.pw --print-config
    """
    bridge = None
    if bridge_url is not None:
        bridge = resolve_bridge(bridge_url, ca=bridge_ca, cert=bridge_cert, key=bridge_key, username=bridge_username,
                                password_file=bridge_password_file, client_id=bridge_client_id,
                                protocol=bridge_protocol)
    elif any((bridge_ca, bridge_cert, bridge_key, bridge_username, bridge_password_file, bridge_client_id)):
        raise UsageError("--bridge-* options without --bridge", "give the central broker with --bridge mqtts://HOST:8883")
    if print_config and workdir is None:
        raise UsageError("--print-config needs --dir", "give the folder the broker will keep its persistence in, "
                                                       "e.g. --dir /var/lib/edgekit-broker")
    if site_users and not (secure or client_certs):
        raise UsageError("--site-user needs --secure", "an open broker lets every client publish anyway")
    if max_queued_bytes is None:
        max_queued_bytes = 256 * 1024 * 1024 if bridge else 0
    config = dict(extra=f"max_packet_size {max_packet_size}" if max_packet_size else "", bridge=bridge,
                  max_queued_messages=max_queued_messages, max_queued_bytes=max_queued_bytes)
    if secure or client_certs:
        broker = _secure_broker(port, host, workdir, client_certs, server_users, site_users, **config)
    else:
        broker = _plain_broker(port, host, workdir, force_amqtt, **config)
    if print_config:
        click.echo(broker.config_text(redact=True), nl=False)
        return
    _run_until_stopped(broker)


def _run_until_stopped(broker: _BrokerProcess) -> None:
    """Run the broker until SIGINT or SIGTERM (then stop it), or fail with its log if it exits by itself."""
    stop = _stop_on_signals()
    with broker:
        click.echo(f"{broker.name} listening on {broker.url} (MQTT {broker.protocol}); log: {broker.log_path}")
        if getattr(broker, "bridge", None):
            click.echo(f"bridged to {broker.bridge.remote} as {broker.bridge.client_id}")
        while not stop.is_set() and broker.process.poll() is None:
            stop.wait(0.5)
        if not stop.is_set():
            raise click.ClickException(f"{broker.name} exited; its log:\n{broker.log_text()}")
        click.echo("stopping")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so that either leaves through ``with broker`` and stops the child.

    SIGTERM's default action would end this process at once and leave Mosquitto holding the port; and a
    job started with ``&`` from a script inherits SIGINT ignored, so SIGINT gets a handler explicitly.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
