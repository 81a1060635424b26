"""TLS, credentials and the ACL against a real Mosquitto set up by ``edgekit broker --secure``.

One PKI and one password file per module (certificate generation is the slow part); brokers are started
from them: passwords over TLS, client certificates over TLS, and a plaintext one for the mismatch cases.
Every refusal must be one clear error that stops the link, never a silent retry loop. The broker makes each
user name its client's id: no device can push another off by asking for its client id (issue 20).
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgekit.mqtt.broker import MosquittoBroker, find_mosquitto
from edgekit.mqtt.certs import init_pki, issue_client, revoke_client
from edgekit.errors import UsageError
from edgekit.device.publisher import Publisher
from edgekit.device.spool import Spool
from edgekit.mqtt.client_loop import TAKEN_OVER_AFTER, ClientLoop
from edgekit.mqtt.client import make_client
from edgekit.mqtt.urls import parse_broker_url, resolve_broker
from edgekit.mqtt.topics import RECEIVER_STATUS_FILTER, features_filter, receiver_status_topic, topic
from edgekit.mqtt.security import PASSWORD_ENV, BrokerSecurity
from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker, acl_text
from edgekit.server.status import receiver_name
from support.running import wait_until

PASSWORDS = {"cam-a": "pw-a", "cam-b": "pw-b", DEFAULT_SERVER_USER: "pw-server", "rx-1": "pw-rx-1", "rx-2": "pw-rx-2"}


def _passwd(setup: SecureBroker, user: str, password: str | None) -> None:
    """Add (or with None, delete) a user with Mosquitto's own tool (-b: test passwords only)."""
    args = ["-b", str(setup.passwd), user, password] if password else ["-D", str(setup.passwd), user]
    subprocess.run(["mosquitto_passwd", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> Path:
    """A broker folder with its PKI, a client certificate and a password per user, and a foreign CA."""
    if find_mosquitto() is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("Mosquitto is not installed: apt-get install mosquitto")
    folder = tmp_path_factory.mktemp("secure-broker")
    setup = SecureBroker(folder)
    setup.prepare()
    for user, password in PASSWORDS.items():
        _passwd(setup, user, password)
        issue_client(setup.pki, user)
    init_pki(folder / "other-ca")
    issue_client(folder / "other-ca", "cam-a")
    return folder


def _start(folder: Path, workdir: Path, client_certs: bool = False, host: str = "127.0.0.1") -> MosquittoBroker:
    """A Mosquitto on ``folder``'s PKI, password file and ACL, with its own persistence folder."""
    broker = MosquittoBroker(workdir=workdir, host=host, secure=SecureBroker(folder, client_certs=client_certs))
    return broker.start()


@pytest.fixture(scope="module")
def brokers(pki_dir, tmp_path_factory):
    """Three brokers for the module: ``password`` and ``certs`` (TLS) and ``plain`` (no TLS)."""
    started = {"password": _start(pki_dir, tmp_path_factory.mktemp("pw")),
               "certs": _start(pki_dir, tmp_path_factory.mktemp("certs"), client_certs=True),
               "plain": MosquittoBroker(workdir=tmp_path_factory.mktemp("plain")).start()}
    yield started
    for broker in started.values():
        broker.close()


def _security(pki: Path, user: str | None = None, mode: str = "password", **overrides) -> dict:
    """Options for :func:`resolve_broker`, as the CLI passes them."""
    opts: dict = {"ca": str(pki / "ca.crt"), "environ": {}}
    if user and mode == "password":
        opts["environ"] = {PASSWORD_ENV: PASSWORDS[user]}
        opts["username"] = user
    elif user:
        opts["cert"], opts["key"] = str(pki / "clients" / f"{user}.crt"), str(pki / "clients" / f"{user}.key")
    opts.update(overrides)
    return opts


def _url(broker: MosquittoBroker, scheme: str = "mqtts") -> str:
    return f"{scheme}://{broker.host}:{broker.port}"


def _link_outcome(url, protocol: str = "auto", timeout: float = 10.0) -> ClientLoop:
    """Start a link, wait until it has connected or stopped, stop it; the caller checks ``connects``/``fatal_error``."""
    link = ClientLoop(url, f"probe-{time.monotonic_ns()}", protocol)
    link.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and link.alive and not link.connected.is_set():
        time.sleep(0.02)
    link.stop()
    return link


# ---- refusals: one clear error each, the link stops ---------------------------------------------------------
REFUSALS = {
    "no credentials": ("password", "mqtts", {}, "refused the connection: not authorized"),
    "wrong password": ("password", "mqtts", {"username": "cam-a", "environ": {PASSWORD_ENV: "nope"}},
                       "refused the connection: not authorized"),
    "unknown CA": ("password", "mqtts", {"ca": None}, "not signed by a trusted CA"),
    "certificate from another CA": ("certs", "mqtts", {"other_ca": True}, "refused this client's certificate"),
    "no client certificate": ("certs", "mqtts", {}, "certificate"),
    "plaintext client on the TLS port": ("password", "mqtt", {"ca": None}, "that port speaks TLS"),
    "TLS client on a plaintext port": ("plain", "mqtts", {}, "does not speak TLS"),
}


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_is_one_clear_error_and_the_link_stops(case, protocol, brokers, pki_dir, caplog):
    which, scheme, overrides, expected = REFUSALS[case]
    overrides = dict(overrides)
    pki = pki_dir / "other-ca" if overrides.pop("other_ca", False) else pki_dir / "pki"
    opts = {**_security(pki), **overrides}
    if pki != pki_dir / "pki":
        opts.update(ca=str(pki_dir / "pki" / "ca.crt"), cert=str(pki / "clients/cam-a.crt"),
                    key=str(pki / "clients/cam-a.key"))
    if scheme == "mqtt":
        opts = {"environ": {}}
    with caplog.at_level(logging.ERROR, logger="edgekit.mqtt"):
        link = _link_outcome(resolve_broker(_url(brokers[which], scheme), **opts), protocol)
    assert not link.alive and link.connects == 0
    assert expected in str(link.fatal_error) and " — " in str(link.fatal_error), link.fatal_error
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]


def test_host_name_is_checked_unless_tls_insecure_which_warns(pki_dir, tmp_path, caplog):
    broker = _start(pki_dir, tmp_path, host="127.0.0.2")  # its certificate names 127.0.0.1, not .2
    try:
        opts = _security(pki_dir / "pki", "cam-a")
        link = _link_outcome(resolve_broker(_url(broker), **opts))
        assert "not valid for that host name" in str(link.fatal_error)
        with caplog.at_level(logging.WARNING):
            url = resolve_broker(_url(broker), **opts, tls_insecure=True)
            assert _link_outcome(url).connects == 1
        assert sum(r.getMessage().startswith("--tls-insecure") for r in caplog.records) == 1
    finally:
        broker.close()


@pytest.mark.parametrize("mode", ["password", "certs"])
def test_a_provisioned_client_connects(mode, brokers, pki_dir):
    url = resolve_broker(_url(brokers[mode]), **_security(pki_dir / "pki", "cam-a", mode))
    assert _link_outcome(url).connects == 1


# ---- the ACL, tried with real clients -------------------------------------------------------------------------
class Client:
    """A paho client on its own network thread that records messages and the broker's acks."""

    def __init__(self, url, name: str, client_id: str | None = None):
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, object] = {}
        self.granted: list = []
        self._event = threading.Event()
        self.accepted = threading.Event()  # the broker's CONNACK was a success
        self.client = make_client(client_id or f"acl-{name}-{time.monotonic_ns()}", "5", security=url.security)
        self.client.on_connect = lambda c, u, f, rc, props: None if rc.is_failure else self.accepted.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_publish = lambda c, u, mid, rc, props: self._ack(mid, rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: (self.granted.extend(rcs), self._event.set())
        self.client.connect(url.host, url.port)
        self.client.loop_start()

    def _ack(self, mid, rc) -> None:
        self.acks[mid] = rc
        self._event.set()

    def subscribe(self, flt: str):
        self._event.clear()
        self.client.subscribe(flt, qos=1)
        assert self._event.wait(5)
        return self.granted.pop()

    def publish(self, name: str, payload: bytes):
        self._event.clear()
        mid = self.client.publish(name, payload, qos=1).mid
        assert self._event.wait(5)
        return self.acks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_acl_has_the_server_read_all_outputs_and_devices_only_their_own_topics():
    text = acl_text()
    assert "pattern write edgekit/v1/%u/features" in text and "pattern read edgekit/v1/%u/#" in text
    assert f"user {DEFAULT_SERVER_USER}\ntopic read edgekit/v1/+/features" in text
    group = acl_text(("rx-1", "rx-2"))
    assert "user rx-1\ntopic read edgekit/v1/+/features" in group and "user rx-2\ntopic read" in group
    assert DEFAULT_SERVER_USER not in group
    assert "topic write edgekit/v1/$receivers/rx-1/status\n\n" in group  # each receiver its own status only
    assert group.count("$receivers/+/status") == 1  # read: by every client


@pytest.mark.parametrize("users, message", [(("rx 1\ntopic readwrite #",), "bad server user name"),
                                            ((), "no server user name")])
def test_a_server_user_name_that_is_not_an_acl_name_is_a_usage_error(users, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        SecureBroker(tmp_path, server_users=users)


@pytest.mark.parametrize("client_certs", [False, True])
def test_the_broker_makes_each_user_name_its_clients_id(client_certs, tmp_path):
    config = SecureBroker(tmp_path, client_certs=client_certs).listener_config(8883, "127.0.0.1")
    assert "use_username_as_clientid true" in config.splitlines()


@pytest.mark.parametrize("mode", ["password", "certs"])
def test_a_device_asking_for_another_devices_client_id_cannot_disconnect_it(mode, brokers, pki_dir, tmp_path):
    """Issue 20: cam-b connecting a few times with agent cam-a's client id pushed cam-a out until it exited 2.
    The broker gives cam-b its own user name as client id instead: cam-a never even reconnects."""
    pki, url = pki_dir / "pki", _url(brokers[mode])
    server = Client(resolve_broker(url, **_security(pki, DEFAULT_SERVER_USER, mode)), "server")
    agent = Publisher(Spool(tmp_path / "spool.sqlite"), resolve_broker(url, **_security(pki, "cam-a", mode)),
                      "cam-a", "auto")
    agent.start()
    try:
        assert agent.connected.wait(10) and not server.subscribe(topic("cam-a", "features")).is_failure
        for _ in range(TAKEN_OVER_AFTER + 2):
            assert wait_until(agent.connected.is_set, 10)  # each time, a connected agent to push out
            thief = Client(resolve_broker(url, **_security(pki, "cam-b", mode)), "thief", agent.client_id)
            assert thief.accepted.wait(5)  # logged in as cam-b, which is the id it got
            thief.close()
        agent.spool.put(topic("cam-a", "features"), b"still publishing")
        assert wait_until(lambda: server.messages == [(topic("cam-a", "features"), b"still publishing")], 10)
        assert agent.alive and agent.fatal_error is None and agent.connects == 1
    finally:
        agent.stop()
        agent.spool.close()
        server.close()


class _Recorder(ClientLoop):
    """A receiver's link reduced to what the broker decides: a persistent session that records topics."""

    def __init__(self, url, client_id: str, subscription: str = features_filter()):
        super().__init__(url, client_id, "auto", persistent=True, subscriptions=(subscription,))
        self.topics: list[str] = []

    def on_message(self, message) -> None:
        self.topics.append(message.topic)


def _publish_features(client: "Client", device: str, count: int) -> None:
    for i in range(count):
        assert not client.publish(topic(device, "features"), b"frame %d" % i).is_failure


def test_a_receiver_restarted_gets_what_was_queued_for_it_although_the_broker_binds_its_client_id(brokers,
                                                                                                 pki_dir):
    """The protocol probe logs in with the receiver's credentials, so the broker gives it the receiver's client
    id: it must resume the receiver's persistent session, not start it clean (which dropped the queue)."""
    pki, url = pki_dir / "pki", _url(brokers["password"])
    server_url = resolve_broker(url, **_security(pki, DEFAULT_SERVER_USER))
    first = _Recorder(server_url, "rx-restarted")
    first.start()
    assert first.subscribed.wait(10)
    first.stop()
    device = Client(resolve_broker(url, **_security(pki, "cam-a")), "device")
    second = _Recorder(server_url, "rx-restarted")
    try:
        _publish_features(device, "cam-a", 5)  # while no receiver runs: queued in its session
        second.start()
        assert wait_until(lambda: len(second.topics) == 5, 10), second.topics
    finally:
        second.stop()
        device.close()


def test_receivers_of_a_group_each_with_its_own_server_user_share_the_frames(pki_dir, tmp_path):
    """A group needs one user name per receiver (the user name is the client id): listed with --server-user,
    each gets the server role's rights, and both stay connected though they ask for the same client id."""
    folder = tmp_path / "broker"
    shutil.copytree(pki_dir, folder, ignore=shutil.ignore_patterns("*.db", "*.log", "mosquitto.conf"))
    broker = MosquittoBroker(workdir=tmp_path / "run", secure=SecureBroker(folder, server_users=("rx-1", "rx-2")))
    broker.start()
    url = _url(broker)
    receivers = [_Recorder(resolve_broker(url, **_security(folder / "pki", user)), "edgekit-server-same-host",
                           features_filter("g")) for user in ("rx-1", "rx-2")]
    device = Client(resolve_broker(url, **_security(folder / "pki", "cam-a")), "device")
    try:
        for receiver in receivers:
            receiver.start()
            assert receiver.subscribed.wait(10)
        _publish_features(device, "cam-a", 20)
        assert wait_until(lambda: sum(len(r.topics) for r in receivers) == 20, 10)
        assert all(r.topics for r in receivers)  # the load is split between them
        assert [r.connects for r in receivers] == [1, 1] and not any(r.fatal_error for r in receivers)
    finally:
        for receiver in receivers:
            receiver.stop()
        device.close()
        broker.close()


@pytest.mark.parametrize("mode", ["password", "certs"])
def test_device_a_can_neither_write_b_topics_nor_read_b_results(mode, brokers, pki_dir):
    pki = pki_dir / "pki"
    clients = {u: Client(resolve_broker(_url(brokers[mode]), **_security(pki, u, mode)), u) for u in PASSWORDS}
    a, b, server = clients["cam-a"], clients["cam-b"], clients[DEFAULT_SERVER_USER]
    try:
        assert not server.subscribe("edgekit/v1/+/features").is_failure
        assert not a.subscribe(topic("cam-a", "results")).is_failure
        assert not b.subscribe(topic("cam-b", "results")).is_failure
        a.subscribe(topic("cam-b", "results"))  # Mosquitto grants it but delivers nothing the ACL denies
        a.subscribe("edgekit/v1/+/results")
        assert a.publish(topic("cam-b", "features"), b"forged").is_failure  # PUBACK "Not authorized"
        assert a.publish(topic("cam-b", "status"), b"forged").is_failure
        assert a.publish(topic("cam-a", "results"), b"self-served").is_failure
        assert not a.publish(topic("cam-a", "features"), b"genuine").is_failure
        assert not server.publish(topic("cam-b", "results"), b"for b").is_failure
        assert b.publish(topic("cam-b", "features"), b"b genuine") is not None
        time.sleep(0.3)
        assert server.messages == [(topic("cam-a", "features"), b"genuine"), (topic("cam-b", "features"), b"b genuine")]
        assert a.messages == [] and b.messages == [(topic("cam-b", "results"), b"for b")]
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.parametrize("mode", ["password", "certs"])
def test_only_a_receiver_writes_its_status_and_every_device_reads_it(mode, brokers, pki_dir):
    """A device's fake "caught up" status would make every agent re-send, a fake "behind" one stop them all."""
    pki = pki_dir / "pki"
    clients = {u: Client(resolve_broker(_url(brokers[mode]), **_security(pki, u, mode)), u) for u in PASSWORDS}
    a, b, server = clients["cam-a"], clients["rx-1"], clients[DEFAULT_SERVER_USER]  # rx-1: no server user here
    try:
        assert not a.subscribe(RECEIVER_STATUS_FILTER).is_failure
        assert a.publish(receiver_status_topic("cam-a"), b"forged").is_failure  # PUBACK "Not authorized"
        assert a.publish(receiver_status_topic(DEFAULT_SERVER_USER), b"forged").is_failure
        assert b.publish(receiver_status_topic("rx-1"), b"forged").is_failure
        assert not server.publish(receiver_status_topic(DEFAULT_SERVER_USER), b"genuine").is_failure
        assert wait_until(lambda: a.messages, 5)
        time.sleep(0.3)
        assert a.messages == [(receiver_status_topic(DEFAULT_SERVER_USER), b"genuine")]
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.parametrize("mode", ["password", "certs"])
def test_a_receiver_names_its_status_as_the_broker_names_it(mode, pki_dir):
    """The ACL lets rx-1 write only its own status: under its user name, or its certificate's name."""
    url = resolve_broker("mqtts://127.0.0.1:8883", **_security(pki_dir / "pki", "rx-1", mode))
    assert receiver_name(ClientLoop(url, "edgekit-server-host", "5")) == "rx-1"
    assert receiver_name(ClientLoop(parse_broker_url("mqtt://127.0.0.1:1883"), "rx-9", "5")) == "rx-9"


# ---- later refusals, rotation and revocation ------------------------------------------------------------------
def test_a_refusal_after_connecting_is_logged_once_and_retried_until_accepted(pki_dir, tmp_path, caplog):
    folder = tmp_path / "broker"
    shutil.copytree(pki_dir, folder, ignore=shutil.ignore_patterns("*.db", "*.log", "mosquitto.conf"))
    setup, broker = SecureBroker(folder), _start(folder, tmp_path / "run")
    link = ClientLoop(resolve_broker(_url(broker), **_security(setup.pki, "cam-a")), "cam-a", "5")
    link.refused_retry_s = 0.3
    link.start()
    try:
        assert link.connected.wait(10)
        _passwd(setup, "cam-a", None)  # revoke the device's password, then drop its connection
        with caplog.at_level(logging.ERROR, logger="edgekit.mqtt"):
            broker.restart()
            time.sleep(2.0)
        assert link.alive and not link.connected.is_set() and link.fatal_error is None
        refusals = [r for r in caplog.records if "not authorized" in r.getMessage()]
        assert len(refusals) == 1 and "retrying every" in refusals[0].getMessage()
        _passwd(setup, "cam-a", PASSWORDS["cam-a"])  # re-provisioned: it comes back by itself
        broker.process.send_signal(signal.SIGHUP)  # Mosquitto re-reads its password file and ACL
        assert link.connected.wait(10)
    finally:
        link.stop()
        broker.close()


def test_a_revoked_certificate_is_refused_and_a_reissued_one_accepted(pki_dir, tmp_path):
    folder = tmp_path / "broker"
    shutil.copytree(pki_dir, folder, ignore=shutil.ignore_patterns("*.db", "*.log", "mosquitto.conf"))
    setup = SecureBroker(folder, client_certs=True)
    revoke_client(setup.pki, "cam-b")  # the CRL is read when the broker starts
    broker = _start(folder, tmp_path / "run", client_certs=True)
    try:
        opts = _security(setup.pki, "cam-b", "certs")
        link = _link_outcome(resolve_broker(_url(broker), **opts))
        assert "this client's certificate" in link.fatal_error.problem and link.connects == 0
        assert _link_outcome(resolve_broker(_url(broker), **_security(setup.pki, "cam-a", "certs"))).connects == 1
        issue_client(setup.pki, "cam-b")  # rotation: a new certificate (new serial) for the same device id
        assert _link_outcome(resolve_broker(_url(broker), **opts)).connects == 1
    finally:
        broker.close()


# ---- URLs, options and secrets --------------------------------------------------------------------------------
def test_urls_carry_tls_and_credentials_and_never_print_the_password(caplog):
    url = parse_broker_url("mqtts://cam-07:s3cr%40t@gw.local")
    assert (url.host, url.port, url.security.tls, url.security.username, url.security.password) == \
        ("gw.local", 8883, True, "cam-07", "s3cr@t")
    assert str(url) == "mqtts://cam-07:***@gw.local:8883" and "s3cr" not in repr(url)
    with caplog.at_level(logging.WARNING):
        resolved = resolve_broker("mqtts://cam-07:s3cr3t@gw.local", environ={})
    assert resolved.security.password == "s3cr3t" and "ps" in caplog.text and "s3cr3t" not in caplog.text
    with pytest.raises(UsageError) as info:
        parse_broker_url("ws://cam-07:s3cr3t@gw")
    assert "s3cr3t" not in str(info.value)


def test_password_comes_from_file_then_environment_then_url(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    base = "mqtts://cam-07:from-url@gw"
    assert resolve_broker(base, password_file=str(secret), environ={PASSWORD_ENV: "env"}).security.password == "from-file"
    assert resolve_broker(base, environ={PASSWORD_ENV: "env"}).security.password == "env"
    assert resolve_broker(base, environ={}).security.password == "from-url"


@pytest.mark.parametrize("url, opts, message", [
    ("mqtt://gw", {"ca": "ca.crt"}, "need a TLS broker URL"),
    ("mqtts://gw", {"key": "k.pem"}, "--key given without --cert"),
    ("mqtts://gw", {"ca": "/nonexistent/ca.crt"}, "TLS file not found"),
    ("mqtts://gw", {"password_file": "/nonexistent/pw"}, "cannot read the password file"),
    ("mqtts://gw", {"environ": {PASSWORD_ENV: "x"}}, "without a user name"),
])
def test_bad_security_options_are_one_line_usage_errors(url, opts, message):
    with pytest.raises(UsageError) as info:
        resolve_broker(url, **{"environ": {}, **opts})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_key_that_does_not_match_its_certificate_is_refused_at_start(pki_dir):
    clients = pki_dir / "pki" / "clients"
    with pytest.raises(UsageError, match="cannot load the TLS files"):
        resolve_broker("mqtts://gw", cert=str(clients / "cam-a.crt"), key=str(clients / "cam-b.key"), environ={})


def test_security_repr_hides_the_password():
    assert "hunter2" not in repr(BrokerSecurity(tls=True, username="u", password="hunter2"))


# ---- the commands -----------------------------------------------------------------------------------------------
def test_certs_commands_make_a_pki_with_private_keys_and_a_crl(cli_runner, tmp_path):
    from cryptography import x509

    from edgekit.mqtt.certs import certs_group

    run, pki = cli_runner(certs_group), tmp_path / "pki"
    assert run("certs", "init", "--dir", pki, "--name", "gw.local", "--name", "10.0.0.5")[0] == 0
    assert run("certs", "client", "--dir", pki, "cam-07")[0] == 0
    assert run("certs", "revoke", "--dir", pki, "cam-07")[0] == 0
    server = x509.load_pem_x509_certificate((pki / "server.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == ["localhost", "127.0.0.1", "gw.local", "10.0.0.5"]
    client = x509.load_pem_x509_certificate((pki / "clients" / "cam-07.crt").read_bytes())
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(client.serial_number) is not None
    for key in (pki / "ca.key", pki / "server.key", pki / "clients" / "cam-07.key"):
        assert key.stat().st_mode & 0o077 == 0
    code, _, err = run("certs", "client", "--dir", pki, "../evil")
    assert code == 2 and "bad device id" in err
    code, _, err = run("certs", "client", "--dir", tmp_path / "nothing", "cam-07")
    assert code == 2 and "edgekit certs init" in err


def test_secure_broker_needs_a_folder(cli_runner):
    from edgekit.mqtt.broker import broker_command

    code, _, err = cli_runner(broker_command)("broker", "--secure")
    assert code == 2 and "--secure needs --dir" in err


def test_a_bad_server_user_is_refused_before_the_broker_starts(cli_runner, tmp_path):
    from edgekit.mqtt.broker import broker_command

    code, _, err = cli_runner(broker_command)("broker", "--secure", "--dir", tmp_path, "--server-user", "rx 1")
    assert code == 2 and "bad server user name 'rx 1'" in err and not (tmp_path / "acl").exists()
