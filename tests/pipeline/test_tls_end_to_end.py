"""The real roles over TLS: ``edgekit server run`` and ``edgekit device run`` with per-device credentials.

Frames stream end to end through ``edgekit broker --secure`` (passwords, then client certificates), every
frame is stored once; a device with a wrong password exits 5 with one error line and no traceback. The
refusals and the ACL are tested in tests/mqtt/test_tls.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from edgekit.mqtt.broker import MosquittoBroker, find_mosquitto
from edgekit.mqtt.certs import issue_client
from edgekit.demo.roles import count_results, start_device, start_server
from support.running import db_rows
from edgekit.mqtt.secure_broker import DEFAULT_SERVER_USER, SecureBroker

FRAMES = 60
USERS = {"cam-a": "pw-a", "cam-b": "pw-b", DEFAULT_SERVER_USER: "pw-server"}


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory):
    if find_mosquitto() is None:
        pytest.fail("Mosquitto is not installed: apt-get install mosquitto")
    folder = tmp_path_factory.mktemp("secure")
    setup = SecureBroker(folder)
    setup.prepare()
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(setup.passwd), user, password], check=True)
        issue_client(setup.pki, user)
        (folder / f"{user}.pw").write_text(password + "\n")
    return folder


@pytest.fixture
def roles(tmp_path):
    started = []
    yield started
    for role in started:
        role.stop(signal.SIGKILL)
        print(f"\n---- {' '.join(role.args[:2])} log ----\n{role.log_text()[-3000:]}")


def _credentials(folder, user: str, client_certs: bool) -> list[str]:
    ca = ["--ca", str(folder / "pki" / "ca.crt")]
    if client_certs:
        return [*ca, "--cert", str(folder / "pki/clients" / f"{user}.crt"), "--key",
                str(folder / "pki/clients" / f"{user}.key")]
    return [*ca, "--username", user, "--password-file", str(folder / f"{user}.pw")]


@pytest.mark.parametrize("client_certs", [False, True], ids=["passwords", "client-certs"])
def test_devices_stream_over_tls_with_their_own_credentials(client_certs, bundle, stream, secure_dir, roles,
                                                            tmp_path):
    bundle_path, stream = bundle, stream(FRAMES)
    broker = MosquittoBroker(workdir=tmp_path / "broker", secure=SecureBroker(secure_dir, client_certs=client_certs))
    with broker.start():
        db = tmp_path / "results.sqlite"
        roles.append(start_server([bundle_path], broker.url, db, tmp_path / "server.log",
                                  *_credentials(secure_dir, DEFAULT_SERVER_USER, client_certs)))
        for device in ("cam-a", "cam-b"):
            roles.append(start_device(bundle_path, broker.url, device, stream, tmp_path / f"{device}.sqlite",
                                      tmp_path / f"{device}.log", "--fps", "0",
                                      *_credentials(secure_dir, device, client_certs)))
        stats = {s["device"]: s for s in (role.final_json() for role in roles[1:])}
        for device, s in stats.items():
            assert s["acknowledged"] == FRAMES and s["results"] == FRAMES, s
            seqs = [r for (r,) in db_rows(db, "SELECT seq FROM results WHERE device = ? ORDER BY seq", device)]
            assert seqs == list(range(FRAMES))
        assert count_results(db) == 2 * FRAMES


def test_a_device_with_a_wrong_password_exits_5_with_one_line(bundle, stream, secure_dir, tmp_path):
    bundle_path, stream = bundle, stream(FRAMES)
    (tmp_path / "wrong.pw").write_text("not-the-password\n")
    with MosquittoBroker(workdir=tmp_path / "broker", secure=SecureBroker(secure_dir)).start() as broker:
        done = subprocess.run([sys.executable, "-m", "edgekit.cli", "device", "run", "--bundle", str(bundle_path),
                               "--broker", f"mqtts://cam-a@127.0.0.1:{broker.port}", "--device-id", "cam-a",
                               "--source", str(stream), "--spool", str(tmp_path / "s.sqlite"),
                               "--ca", str(secure_dir / "pki" / "ca.crt"), "--password-file",
                               str(tmp_path / "wrong.pw")], capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 5, done.stderr
    assert len(errors) == 1 and "not authorized" in errors[0] and "Traceback" not in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


def test_systemd_unit_carries_the_tls_options_but_never_a_password(bundle, secure_dir, cli_runner):
    from edgekit.device.commands import device_group

    run = cli_runner(device_group)
    ca, secret = secure_dir / "pki" / "ca.crt", secure_dir / "cam-a.pw"
    code, unit, err = run("device", "systemd-unit", "--bundle", bundle, "--broker", "mqtts://cam-a@gw",
                          "--ca", ca, "--password-file", secret, "--device-id", "cam-a")
    assert code == 0, err
    assert f"--broker mqtts://cam-a@gw --ca {ca} --password-file {secret} --device-id cam-a" in unit
    assert USERS["cam-a"] not in unit
    code, unit, err = run("device", "systemd-unit", "--bundle", bundle, "--broker", "mqtts://cam-a:pw-a@gw",
                          "--device-id", "cam-a")
    assert code == 2 and "world-readable" in err and "pw-a" not in err + unit
