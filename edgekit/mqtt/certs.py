"""A small PKI for a test bench or a small fleet: a CA, the broker's certificate, one certificate per client.

Layout of the folder (``--dir``, e.g. ``pki/``)::

    ca.crt  ca.key                 the CA (keep ca.key offline in production; ca.crt goes to every client)
    server.crt  server.key         the broker's certificate: SANs localhost, 127.0.0.1 and every --name
    clients/<name>.crt  .key       one per device (name = device id) and one for the server role
    crl.pem                        certificates revoked so far (the broker's crlfile)

Keys are ECDSA P-256 (fast on a Raspberry Pi, accepted by Mosquitto and OpenSSL). A client certificate's
common name is its MQTT user name when the broker sets ``use_identity_as_username`` (edgekit broker
--secure --client-certs), which is what ties a device's certificate to its own topics in the ACL.

``cryptography`` is imported inside the functions: this module is also a command module.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Any

import click

from edgekit.errors import UsageError

__all__ = ["DEFAULT_DAYS", "init_pki", "issue_client", "revoke_client", "certs_group"]

DEFAULT_DAYS = 825  # the longest validity Apple platforms accept for a server certificate
SERVER_NAMES = ("localhost", "127.0.0.1")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    """Write a private key readable by its owner only (created 0600, never world-readable for a moment)."""
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_cert(path: Path, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(pki: Path) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    except FileNotFoundError:
        raise UsageError(f"no CA in {pki}", f"create it first: edgekit certs init --dir {pki}") from None
    return cert, key


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgekit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer, public_key, days: int):
    from cryptography import x509

    now = _now()
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


def _leaf(subject: str, ca_cert, ca_key, days: int, usage, sans: list | None = None) -> tuple[Any, Any]:
    """A certificate for ``subject`` signed by the CA, for TLS server or client use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    builder = (_builder(subject, ca_cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _san(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def init_pki(pki: Path, names: tuple[str, ...] = (), days: int = DEFAULT_DAYS) -> None:
    """Create the CA (kept when it exists) and (re-)issue the broker's certificate for ``names``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        key = _new_key()
        ca_name = _name("edgekit CA")
        cert = (_builder("edgekit CA", ca_name, key.public_key(), days * 4)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_key(pki / "ca.key", key)
        _write_cert(pki / "ca.crt", cert)
    ca_cert, ca_key = _load_ca(pki)
    all_names = list(dict.fromkeys([*SERVER_NAMES, *names]))
    cert, key = _leaf(all_names[-1] if names else "localhost", ca_cert, ca_key, days,
                      ExtendedKeyUsageOID.SERVER_AUTH, [_san(n) for n in all_names])
    _write_key(pki / "server.key", key)
    _write_cert(pki / "server.crt", cert)
    if not (pki / "crl.pem").exists():
        _write_crl(pki, ca_cert, ca_key, [])


def issue_client(pki: Path, name: str, days: int = DEFAULT_DAYS) -> tuple[Path, Path]:
    """(Re-)issue ``clients/<name>.crt`` and ``.key``; the old certificate stays valid until revoked."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from edgekit.mqtt.topics import check_device_id

    check_device_id(name)  # the common name becomes a user name and a topic level
    ca_cert, ca_key = _load_ca(pki)
    cert, key = _leaf(name, ca_cert, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    folder = pki / "clients"
    folder.mkdir(exist_ok=True)
    _write_key(folder / f"{name}.key", key)
    _write_cert(folder / f"{name}.crt", cert)
    return folder / f"{name}.crt", folder / f"{name}.key"


def revoke_client(pki: Path, name: str) -> int:
    """Add the current certificate of client ``name`` to ``crl.pem``; returns its serial number."""
    from cryptography import x509

    ca_cert, ca_key = _load_ca(pki)
    path = pki / "clients" / f"{name}.crt"
    try:
        serial = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except FileNotFoundError:
        raise UsageError(f"no certificate for client {name!r} in {pki / 'clients'}",
                         "give a name issued with edgekit certs client") from None
    revoked = [entry.serial_number for entry in _read_crl(pki)]
    if serial not in revoked:
        _write_crl(pki, ca_cert, ca_key, [*revoked, serial])
    return serial


def _read_crl(pki: Path) -> list:
    from cryptography import x509

    path = pki / "crl.pem"
    return list(x509.load_pem_x509_crl(path.read_bytes())) if path.exists() else []


def _write_crl(pki: Path, ca_cert, ca_key, serials: list[int]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=DEFAULT_DAYS)))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    (pki / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))


_DIR = click.option("--dir", "pki", type=click.Path(file_okay=False), default="pki", show_default=True,
                    help="The PKI folder (CA, broker and client certificates).")
_DAYS = click.option("--days", type=click.IntRange(min=1), default=DEFAULT_DAYS, show_default=True,
                     help="Validity of the new certificate, in days.")


@click.group("certs")
def certs_group() -> None:
    """Make a CA, the broker's TLS certificate and per-device client certificates (see docs/security.md)."""


@certs_group.command("init")
@_DIR
@click.option("--name", "names", multiple=True,
              help="Host name or IP address clients use for the broker (repeat); localhost and 127.0.0.1 "
                   "are always included.")
@_DAYS
def init_command(pki: str, names: tuple[str, ...], days: int) -> None:
    """Create the CA (kept if it exists) and issue the broker's certificate.

    \b
    Example:
      edgekit certs init --dir pki --name gw.local --name 192.168.1.10
    """
    init_pki(Path(pki), names, days)
    click.echo(f"CA {pki}/ca.crt (give it to every client with --ca); broker certificate {pki}/server.crt "
               f"for {', '.join(dict.fromkeys([*SERVER_NAMES, *names]))}")


@certs_group.command("client")
@_DIR
@click.argument("name")
@_DAYS
def client_command(pki: str, name: str, days: int) -> None:
    """Issue a client certificate whose common name is NAME (a device id, or the server role's user).

    \b
    Example:
      edgekit certs client --dir pki cam-07
      edgekit certs client --dir pki edgekit-server
    """
    cert, key = issue_client(Path(pki), name, days)
    click.echo(f"{cert} and {key} (copy both to {name}; pass them as --cert/--key)")


@certs_group.command("revoke")
@_DIR
@click.argument("name")
def revoke_command(pki: str, name: str) -> None:
    """Revoke client NAME's current certificate (added to crl.pem; restart the broker to load it).

    \b
    Example:
      edgekit certs revoke --dir pki cam-07
    """
    serial = revoke_client(Path(pki), name)
    click.echo(f"revoked {name} (serial {serial:x}) in {pki}/crl.pem; restart the broker to apply it")
