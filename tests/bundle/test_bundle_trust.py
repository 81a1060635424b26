"""Trusted bundles: every file the manifest names is checked before it is read, and signatures are verified.

Each hostile bundle is a copy of the session's real converted bundle, changed the way an attacker would
(manifest hashes recomputed where that helps them), and must be refused at start by ``edgekit inspect``,
``edgekit device run`` and ``edgekit server run`` with one ``error:`` line and a non-zero exit. The signed
bundle then runs end to end (real agent, real Mosquitto, real receiver) under ``--require-signature``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from support.running import wait_until

from edgekit.bundle.manifest import Bundle, write_manifest
from edgekit.bundle.commands import inspect_command, keygen_command, sign_command
from edgekit.demo.roles import count_results, start_device, start_server
from edgekit.device.commands import device_group
from edgekit.errors import BundleError, UsageError
from edgekit.server.commands import server_group
from edgekit.bundle.signing import TrustPolicy, generate_key_pair, key_id, load_public_keys

DICT = "wire/zstd.dict"
MODEL = "device/rpi/device_int8.tflite"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: ``trusted`` (its public key alone in ``trusted_dir``) and an attacker's."""
    root = tmp_path_factory.mktemp("keys")
    trusted = generate_key_pair(root / "signer")
    attacker = generate_key_pair(root / "attacker")
    trusted_dir = root / "trusted"
    trusted_dir.mkdir()
    shutil.copy(trusted[1], trusted_dir)
    return {"trusted": trusted, "attacker": attacker, "trusted_dir": trusted_dir}


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    """A private copy of the session bundle (the shared one is never changed)."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


@pytest.fixture
def run(cli_runner):
    return cli_runner(inspect_command, device_group, server_group, sign_command, keygen_command)


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _set_dictionary(root: Path, value: str) -> None:
    """Point the zstd dictionary elsewhere, leaving ``files`` as is."""
    manifest = _manifest(root)
    manifest["wire"]["codecs"]["zstd"]["dictionary"] = value
    (root / "manifest.json").write_text(json.dumps(manifest))


def _refused_everywhere(run, root: Path, pattern: str, *trust: str) -> None:
    """inspect, device selftest, device run and server run each refuse ``root`` at start: one line matching
    ``pattern``."""
    for argv in (["inspect", root, "--no-selftest"],
                 ["device", "selftest", "--bundle", root],
                 ["device", "run", "--bundle", root, "--device-id", "cam-1", "--source", "none.npz",
                  "--broker", "mqtt://127.0.0.1:1"],
                 ["server", "run", "--bundle", root, "--broker", "mqtt://127.0.0.1:1", "--db", root.parent / "r.db"]):
        code, out, err = run(*argv, *trust)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), (argv[:2], code, err)
        assert re.search(pattern, lines[0]), (argv[:2], lines[0])


@pytest.mark.parametrize("value, pattern", [
    ("/etc/passwd", r"wire/codecs/zstd/dictionary '/etc/passwd' is not a relative path inside the bundle"),
    ("../outside.dict", r"'\.\./outside\.dict' is not a relative path"),
    ("/dev/zero", r"'/dev/zero' is not a relative path"),
    ("wire/./zstd.dict", r"is not a relative path"),
    ("wire/unlisted.dict", r"wire/codecs/zstd/dictionary wire/unlisted.dict is not listed in the manifest's files"),
])
def test_codec_artifact_paths_outside_the_bundle_are_refused(run, copy, value, pattern):
    shutil.copy(copy / DICT, copy.parent / "outside.dict")
    _set_dictionary(copy, value)
    _refused_everywhere(run, copy, pattern)


@pytest.mark.parametrize("target", ["outside", "/dev/zero"])
def test_a_symlinked_file_is_refused_even_with_the_right_bytes(run, copy, target):
    outside = copy.parent / "outside.dict"
    shutil.copy(copy / DICT, outside)  # same bytes, same sha256: only the link is wrong
    (copy / DICT).unlink()
    (copy / DICT).symlink_to(outside if target == "outside" else target)
    _refused_everywhere(run, copy, rf"{DICT}: {DICT} is a symbolic link")


def test_a_symlinked_directory_is_refused(run, copy):
    shutil.move(copy / "wire", copy.parent / "wire")
    (copy / "wire").symlink_to(copy.parent / "wire")
    _refused_everywhere(run, copy, r"wire is a symbolic link")


def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(run, copy):
    (copy / DICT).unlink()
    os.mkfifo(copy / DICT)
    _refused_everywhere(run, copy, rf"{DICT} is not a regular file")


def test_an_extra_file_is_refused(run, copy):
    (copy / "device/rpi/helper.tflite").write_bytes(b"not in the manifest")
    _refused_everywhere(run, copy, r"device/rpi/helper.tflite is not listed in the manifest")


def test_a_file_above_its_size_limit_is_refused_before_hashing(run, copy):
    (copy / DICT).write_bytes(b"\0" * (16 << 20) + b"!")  # the wire/ limit is 16 MiB
    write_manifest(copy, _manifest(copy))  # hashes recomputed: only the size gives it away
    _refused_everywhere(run, copy, rf"{DICT} is 16777217 bytes, above the 16777216-byte limit")


def test_keygen_writes_a_private_key_only_its_owner_reads(run, tmp_path):
    code, out, _ = run("keygen", tmp_path / "k", "--name", "ci")
    assert code == 0 and "key id" in out
    assert stat.S_IMODE((tmp_path / "k/ci.key.pem").stat().st_mode) == 0o600
    assert len(load_public_keys([tmp_path / "k/ci.pub.pem"])) == 1
    code, _, err = run("keygen", tmp_path / "k", "--name", "ci")
    assert code != 0 and "already exists" in err  # never overwritten


def test_trust_keys_must_be_public_and_required_signatures_need_one(keys, tmp_path):
    with pytest.raises(UsageError, match="holds a private key"):
        load_public_keys([keys["trusted"][0]])
    with pytest.raises(UsageError, match="no \\*.pem public key"):
        load_public_keys([tmp_path])
    with pytest.raises(UsageError, match="--require-signature needs"):
        TrustPolicy.from_options([], True)


def test_a_readable_private_key_is_not_used(run, keys, copy, tmp_path):
    loose = tmp_path / "loose.key.pem"
    shutil.copy(keys["trusted"][0], loose)
    loose.chmod(0o644)
    code, _, err = run("sign", copy, "--key", loose)
    assert code != 0 and "chmod 600" in err and not (copy / "manifest.sig").exists()


def _tamper_model(root: Path) -> None:
    """Change the device model and recompute every hash and the bundle id, as an attacker can."""
    model = root / MODEL
    model.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))
    write_manifest(root, _manifest(root))


def test_a_tampered_model_with_rehashed_manifest_is_refused_when_signed(run, keys, copy):
    trusted_pub = str(keys["trusted"][1])
    assert run("sign", copy, "--key", keys["trusted"][0])[0] == 0
    _tamper_model(copy)
    # the old signature no longer matches the manifest: refused, with or without a trusted key
    _refused_everywhere(run, copy, r"manifest.sig does not verify")
    _refused_everywhere(run, copy, r"manifest.sig does not verify", "--trust-key", trusted_pub, "--require-signature")
    # the signature removed (the downgrade): a trust key alone requires a signature; --require-signature adds nothing
    (copy / "manifest.sig").unlink()
    assert Bundle.load(copy).bundle_id  # every hash matches: only a required signature stops it
    unsigned = r"bundle is not signed \(no manifest.sig\) and a signature is required by --trust-key"
    _refused_everywhere(run, copy, unsigned, "--trust-key", trusted_pub)
    _refused_everywhere(run, copy, unsigned, "--trust-key", trusted_pub, "--require-signature")
    with pytest.raises(BundleError, match=unsigned):
        Bundle.load(copy, trust=TrustPolicy.from_options([trusted_pub], require=False))
    # re-signed with the attacker's own key: refused by key
    assert run("sign", copy, "--key", keys["attacker"][0])[0] == 0
    _refused_everywhere(run, copy, r"signed by key [0-9a-f]{16}, which is not a trusted key",
                        "--trust-key", str(keys["trusted_dir"]))


def test_a_signature_that_is_not_a_signature_is_refused(copy):
    (copy / "manifest.sig").write_text('{"format": "edgekit-signature", "version": 1, "algorithm": "rsa"}')
    with pytest.raises(BundleError, match="not an edgekit Ed25519 signature document"):
        Bundle.load(copy)
    (copy / "manifest.sig").write_text("[" * 10_000)  # nested too deep for json: RecursionError, not ValueError
    with pytest.raises(BundleError, match="not an edgekit Ed25519 signature document"):
        Bundle.load(copy)


def test_a_manifest_nested_too_deep_is_one_line(run, copy):
    (copy / "manifest.json").write_text("[" * 10_000)
    _refused_everywhere(run, copy, r"cannot read .*manifest.json: maximum recursion depth exceeded")


UNCHECKED = "the signature was not checked against a trusted key and proves nothing: pass --trust-key"


def _unchecked_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if UNCHECKED in r.getMessage()]


def test_a_signed_bundle_loaded_without_a_trust_key_warns_that_its_signature_proves_nothing(run, keys, copy,
                                                                                            caplog):
    caplog.set_level(logging.WARNING, logger="edgekit")
    Bundle.load(copy)
    assert not _unchecked_warnings(caplog)  # unsigned: nothing to say
    assert run("sign", copy, "--key", keys["attacker"][0])[0] == 0  # anyone can sign: that is the point
    caplog.clear()
    assert Bundle.load(copy).signature.trusted is False
    (warning,) = _unchecked_warnings(caplog)
    assert warning.levelno == logging.WARNING and f"key {key_id(load_public_keys([keys['attacker'][1]])[0])}," in warning.getMessage()
    code, out, _ = run("inspect", copy, "--no-selftest")
    assert code == 0 and "valid, but unchecked: no --trust-key given, so it proves nothing" in out
    caplog.clear()
    assert run("sign", copy, "--key", keys["trusted"][0])[0] == 0
    assert Bundle.load(copy, trust=TrustPolicy.from_options([keys["trusted"][1]], require=False)).signature.trusted
    assert not _unchecked_warnings(caplog)  # checked against a trusted key: no warning


def test_the_signed_bundle_runs_under_require_signature(run, keys, copy, stream, mosquitto, tmp_path):
    code, out, _ = run("sign", copy, "--key", keys["trusted"][0])
    assert code == 0 and "signed" in out
    trust = ["--trust-key", str(keys["trusted"][1]), "--require-signature"]
    code, out, err = run("inspect", copy, *trust)  # with the self-test: golden vectors read through the checks
    assert code == 0, err
    assert "a trusted key" in out and "device self-test passed" in out and "server self-test passed" in out
    code, out, err = run("device", "selftest", "--bundle", copy, *trust)
    assert code == 0 and "passed" in out, err

    db = tmp_path / "results.sqlite"
    server = start_server([copy], mosquitto.url, db, tmp_path / "server.log", "--trust-key", str(keys["trusted_dir"]),
                          "--require-signature")
    try:
        device = start_device(copy, mosquitto.url, "cam-signed", stream(5), tmp_path / "spool.sqlite",
                              tmp_path / "device.log", "--fps", "0", "--linger", "10", *trust)
        stats = device.final_json()
        assert stats["captured"] == 5 and stats["acknowledged"] == 5
        assert wait_until(lambda: count_results(db, "cam-signed") == 5)
    finally:
        server.stop()


def test_the_systemd_unit_keeps_the_signature_requirement(run, keys, copy):
    unit_args = ["device", "systemd-unit", "--bundle", copy, "--broker", "mqtt://gw:1883", "--device-id", "cam-07",
                 "--trust-key", keys["trusted_dir"], "--require-signature"]
    code, _, err = run(*unit_args)
    assert code != 0 and "bundle is not signed" in err  # no unit is written for a bundle the agent would refuse
    assert run("sign", copy, "--key", keys["trusted"][0])[0] == 0
    code, unit, err = run(*unit_args)
    assert code == 0, err
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert f"--trust-key {keys['trusted_dir'].resolve()} --require-signature" in exec_start
