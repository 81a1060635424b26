"""``edgekit broker --bridge``: the config it writes (``--print-config``) and its one-line errors."""

from __future__ import annotations

import pytest

from edgekit.mqtt.broker import broker_command
from edgekit.mqtt.certs import init_pki, issue_client

UP = ["topic edgekit/v1/+/features out 1", "topic edgekit/v1/+/status out 1", "topic edgekit/v1/+/heartbeat out 1"]
DOWN = ["topic edgekit/v1/+/results in 1", "topic edgekit/v1/+/deadletter in 1", "topic edgekit/v1/+/acks in 1",
        "topic edgekit/v1/$receivers/+/status in 0"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("central-pki")
    init_pki(folder)
    issue_client(folder, "site-a")
    (folder / "pw").write_text("s3cret-pw\n")
    return folder


def test_print_config_writes_a_persistent_tls_bridge_and_hides_the_password(cli_runner, pki, tmp_path):
    run = cli_runner(broker_command)
    code, out, err = run("broker", "--dir", tmp_path / "site", "--bridge", "mqtts://central.example:8883",
                         "--bridge-ca", pki / "ca.crt", "--bridge-cert", pki / "clients" / "site-a.crt",
                         "--bridge-key", pki / "clients" / "site-a.key", "--bridge-username", "site-a",
                         "--bridge-password-file", pki / "pw", "--bridge-client-id", "site-a", "--print-config")
    assert code == 0, err
    lines = out.splitlines()
    block = lines[lines.index("connection edgekit-bridge-site-a"):]  # last: what follows belongs to the bridge
    for line in ["address central.example:8883", "remote_clientid site-a", "bridge_protocol_version mqttv311",
                 "cleansession false", "local_cleansession false", f"bridge_cafile {pki / 'ca.crt'}",
                 f"bridge_certfile {pki / 'clients' / 'site-a.crt'}", f"bridge_keyfile {pki / 'clients' / 'site-a.key'}",
                 "remote_username site-a", *UP, *DOWN]:
        assert line in block, line
    assert "remote_password ********" in block and "s3cret-pw" not in out
    assert "max_queued_bytes 268435456" in lines and "max_queued_messages 100000" in lines
    assert f"persistence_location {tmp_path / 'site'}/" in lines
    assert not (tmp_path / "site" / "mosquitto.conf").exists()  # printed, not written, nothing started


def test_plain_bridge_uses_no_tls_and_the_queue_limits_given(cli_runner, tmp_path):
    code, out, _ = cli_runner(broker_command)("broker", "--dir", tmp_path, "--bridge", "mqtt://central:1884",
                                              "--max-queued-messages", "5000", "--max-queued-bytes", "1000000",
                                              "--print-config")
    assert code == 0
    assert "address central:1884" in out and "bridge_cafile" not in out and "bridge_capath" not in out
    assert "max_queued_messages 5000" in out and "max_queued_bytes 1000000" in out


@pytest.mark.parametrize("args, message", [
    (["--bridge", "http://central:1883"], "unsupported broker scheme 'http'"),
    (["--bridge", "mqtts://central:88x3"], "--bridge: bad broker URL"),
    (["--bridge", "mqtts://central:8883", "--bridge-ca", "/nonexistent/ca.crt"],
     "--bridge-ca: no such file /nonexistent/ca.crt"),
    (["--bridge", "mqtts://central:8883", "--bridge-cert", "/nonexistent/site.crt"],
     "--bridge-cert: no such file /nonexistent/site.crt"),
    (["--bridge", "mqtt://central:1883", "--bridge-ca", "{pki}/ca.crt"], "need a TLS bridge"),
    (["--bridge", "mqtts://central:8883", "--bridge-ca", "{pki}/pw"], "--bridge: cannot load the TLS files"),
    (["--bridge-username", "site-a"], "--bridge-* options without --bridge"),
    (["--bridge", "mqtt://central", "--bridge-client-id", "site a"], "bad bridge client id 'site a'"),
])
def test_bad_bridge_options_are_one_line_errors(cli_runner, pki, tmp_path, args, message):
    args = [a.format(pki=pki) for a in args]
    code, out, err = cli_runner(broker_command)("broker", "--dir", tmp_path, *args, "--print-config")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_print_config_needs_a_folder(cli_runner):
    code, _, err = cli_runner(broker_command)("broker", "--bridge", "mqtt://central", "--print-config")
    assert code == 2 and "--print-config needs --dir" in err


def test_site_users_get_the_reverse_of_the_server_role_in_the_central_acl(cli_runner, tmp_path):
    from edgekit.errors import UsageError
    from edgekit.mqtt.secure_broker import acl_text

    block = acl_text(site_users=("site-a",)).split("user site-a\n")[1].split("\n\n")[0].splitlines()
    assert block == ["topic write edgekit/v1/+/features", "topic write edgekit/v1/+/status",
                     "topic write edgekit/v1/+/heartbeat", "topic read edgekit/v1/+/results",
                     "topic read edgekit/v1/+/deadletter", "topic read edgekit/v1/+/acks"]
    with pytest.raises(UsageError, match="bad site user name 'site a'"):
        acl_text(site_users=("site a",))
    code, _, err = cli_runner(broker_command)("broker", "--dir", tmp_path, "--site-user", "site-a", "--print-config")
    assert code == 2 and "--site-user needs --secure" in err
