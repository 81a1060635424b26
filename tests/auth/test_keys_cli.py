"""``edgekit keys`` and the key options of ``device run`` / ``server run``: files, modes, and one-line errors."""

from __future__ import annotations

import os

import pytest

from edgekit.auth.keys import read_key_file


@pytest.fixture
def run(cli_runner):
    from edgekit.device.commands import device_group
    from edgekit.auth.commands import keys_group
    from edgekit.server.commands import server_group

    return cli_runner(keys_group, device_group, server_group)


def test_add_writes_the_store_entry_and_the_device_file_never_the_key(run, tmp_path):
    store, out = tmp_path / "keys", tmp_path / "cam-07.key"
    code, stdout, stderr = run("keys", "add", "cam-07", "--store", store, "--out", out)
    assert code == 0, stderr
    device, key = read_key_file(out, "cam-07")
    assert read_key_file(store / "cam-07.key", "cam-07") == (device, key)
    assert os.stat(store).st_mode & 0o777 == 0o700 and os.stat(out).st_mode & 0o777 == 0o600
    assert key.hex() not in stdout + stderr
    assert run("keys", "list", "--store", store)[1] == "cam-07\n"

    code, _, stderr = run("keys", "add", "cam-07", "--store", store, "--out", out)
    assert code == 2 and stderr.count("\n") == 1 and "--rotate" in stderr
    assert run("keys", "add", "cam-07", "--store", store, "--out", out, "--rotate")[0] == 0
    assert read_key_file(out, "cam-07")[1] != key
    assert run("keys", "revoke", "cam-07", "--store", store)[0] == 0
    assert run("keys", "list", "--store", store)[1] == ""


@pytest.mark.parametrize("args, problem", [
    (("keys", "revoke", "cam-08", "--store", "{tmp}/keys0"), "has no key"),
    (("keys", "add", "a/b", "--store", "{tmp}/keys"), "bad device id"),
    (("keys", "add", "cam-07", "--store", "{tmp}/keys", "--out", "{tmp}/keys/x.key"), "inside the key store"),
    (("keys", "list", "--store", "{tmp}/missing"), "is not a folder"),
    (("server", "run", "--bundle", "{tmp}/nobundle", "--require-auth"), "--require-auth needs"),
    (("server", "run", "--bundle", "{tmp}/nobundle", "--frame-keys", "{tmp}/missing"), "is not a folder"),
    (("device", "run", "--bundle", "{tmp}/nobundle", "--device-id", "cam-07", "--source", "x.npz",
      "--frame-key", "{tmp}/open.key"), "readable by other users"),
    (("device", "run", "--bundle", "{tmp}/nobundle", "--device-id", "cam-08", "--source", "x.npz",
      "--frame-key", "{tmp}/cam-07.key"), "is for device 'cam-07', not 'cam-08'"),
])
def test_mistakes_are_one_line_errors(run, tmp_path, args, problem):
    assert run("keys", "add", "cam-07", "--store", tmp_path / "keys0", "--out", tmp_path / "cam-07.key")[0] == 0
    (tmp_path / "open.key").write_bytes((tmp_path / "cam-07.key").read_bytes())
    os.chmod(tmp_path / "open.key", 0o644)
    code, _, stderr = run(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and stderr.count("\n") == 1 and problem in stderr and "Traceback" not in stderr, stderr
