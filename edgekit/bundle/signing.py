"""Ed25519 signatures of bundle manifests: ``edgekit keygen``, ``edgekit sign``, and the check at load.

The manifest lists the sha256 of every bundle file and the bundle id, so one signature over its exact bytes
covers the whole bundle::

    sign:    private key ─► Ed25519(DOMAIN + manifest.json bytes) ─► manifest.sig (JSON: key, signature)
    load:    manifest.sig ─► verify against the public key it names (always: a bad signature is refused)
                          ─► that key among --trust-key keys? (when keys are given; else refused)
                          ─► no --trust-key: loaded, with a warning that the signature proves nothing
             no manifest.sig ─► refused when --trust-key keys are given, else accepted as unsigned

A trust key means a signature is required: were an unsigned bundle accepted beside a trust key, deleting
``manifest.sig`` would undo the signature (tamper a file, re-hash the manifest, drop the signature).
Without a trust key a signature proves nothing, since anyone can make a key pair and sign.

``cryptography`` is imported inside the functions that need it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from edgekit.errors import BundleError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["SIGNATURE_FORMAT", "DOMAIN", "TrustPolicy", "SignatureStatus", "key_id", "generate_key_pair",
           "load_private_key", "load_public_keys", "sign_manifest", "check_signature"]

SIGNATURE_FORMAT = "edgekit-signature"
#: Prefixed to the manifest bytes before signing, so a signature made here can never pass for another
#: protocol's message signed with the same key (and the reverse).
DOMAIN = b"edgekit-bundle-manifest-v1\0"
_RESIGN = "sign it with: edgekit sign BUNDLE --key private.pem"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key: how keys are named in messages."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class TrustPolicy:
    """What a loader accepts: only bundles signed by one of ``keys`` (public keys); unsigned ones are refused."""

    keys: tuple[Ed25519PublicKey, ...]

    @classmethod
    def from_options(cls, trust_keys: Iterable[str | Path], require: bool) -> TrustPolicy | None:
        """The policy of ``--trust-key`` (files or directories of ``*.pem``); None without keys.

        ``--require-signature`` (``require``) adds nothing to a trust key, which already requires a signature; it
        stays accepted for the scripts and units that pass it, and alone it is a usage error."""
        keys = load_public_keys(trust_keys)
        if require and not keys:
            raise UsageError("--require-signature needs the public key to check against",
                             "add --trust-key public.pem (or a directory of public keys)")
        return cls(tuple(keys)) if keys else None


@dataclass(frozen=True)
class SignatureStatus:
    """A bundle's verified signature: which key made it and whether that key is one the loader trusts."""

    key_id: str
    trusted: bool

    def line(self) -> str:
        """What ``edgekit inspect`` prints."""
        return (f"signature  Ed25519 by key {self.key_id}, "
                + ("a trusted key" if self.trusted else "valid, but unchecked: no --trust-key given, so it proves nothing"))


def generate_key_pair(folder: str | Path, name: str = "signing") -> tuple[Path, Path]:
    """Write ``NAME.key.pem`` (private, PKCS#8, mode 0600) and ``NAME.pub.pem`` into ``folder``; never overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key.pem", folder / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} already exists", "pick another --name or folder (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path``; refused when other users can read the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read private key {path}: {err.strerror}",
                         "pass the file edgekit keygen wrote") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{path} is not an unencrypted PEM private key: {str(err)[:120]}",
                         "pass NAME.key.pem from edgekit keygen (not the .pub.pem)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is a {type(key).__name__}, not an Ed25519 key", "make one with edgekit keygen DIR")
    if mode & 0o077:
        raise UsageError(f"private key {path} is readable by other users (mode {stat.S_IMODE(mode):04o})",
                         f"chmod 600 {path}")
    return key


def load_public_keys(sources: Iterable[str | Path]) -> list[Ed25519PublicKey]:
    """Every public key of ``sources``: PEM files, or directories whose ``*.pem`` files are all public keys."""
    keys = []
    for source in map(Path, sources):
        files = sorted(source.glob("*.pem")) if source.is_dir() else [source]
        if not files:
            raise UsageError(f"--trust-key {source}: no *.pem public key in that directory",
                             "copy the .pub.pem written by edgekit keygen into it")
        keys += [_load_public_key(path) for path in files]
    return keys


def _load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read --trust-key {path}: {err.strerror}", "pass a .pub.pem file") from None
    if b"PRIVATE KEY" in data:
        raise UsageError(f"--trust-key {path} holds a private key",
                         "give the public key (NAME.pub.pem) and keep the private key off devices and servers")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise UsageError(f"--trust-key {path} is not a PEM public key: {str(err)[:120]}",
                         "pass the .pub.pem of edgekit keygen") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"--trust-key {path} is a {type(key).__name__}, not an Ed25519 key",
                         "pass the .pub.pem of edgekit keygen")
    return key


def sign_manifest(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` document for the exact bytes of ``manifest.json``."""
    public = private_key.public_key()
    doc = {"format": SIGNATURE_FORMAT, "version": 1, "algorithm": "ed25519",
           "public_key": base64.b64encode(_raw(public)).decode(),
           "signature": base64.b64encode(private_key.sign(DOMAIN + manifest)).decode()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse(signature: bytes) -> tuple[bytes, bytes]:
    """(raw public key, signature) from a ``manifest.sig`` document, or BundleError."""
    raw = sig = b""
    try:
        doc: Any = json.loads(signature)
        if (isinstance(doc, dict) and doc.get("format") == SIGNATURE_FORMAT and doc.get("version") == 1
                and doc.get("algorithm") == "ed25519"):
            raw = base64.b64decode(doc["public_key"], validate=True)
            sig = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
        pass  # refused below, as any other malformed document
    if len(raw) != 32 or len(sig) != 64:
        raise BundleError("manifest.sig is not an edgekit Ed25519 signature document", _RESIGN)
    return raw, sig


def check_signature(manifest: bytes, signature: bytes | None, policy: TrustPolicy | None) -> SignatureStatus | None:
    """Verify ``signature`` (the ``manifest.sig`` bytes, None when absent) over ``manifest`` under ``policy``.

    A signature that does not verify is refused whatever the policy; one by a key outside a given set of
    trusted keys is refused; no signature is refused whenever there is a policy (a trust key requires one).
    None: unsigned, and no policy.
    """
    if signature is None:
        if policy is not None:
            raise BundleError("bundle is not signed (no manifest.sig) and a signature is required by --trust-key",
                              _RESIGN)
        return None
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw, sig = _parse(signature)
    public = Ed25519PublicKey.from_public_bytes(raw)
    try:
        public.verify(sig, DOMAIN + manifest)
    except InvalidSignature:
        raise BundleError("manifest.sig does not verify: manifest.json changed after it was signed, or the "
                          "signature is corrupt", f"copy the bundle again, or re-{_RESIGN}") from None
    trusted = policy is not None and any(_raw(key) == raw for key in policy.keys)
    if policy is not None and not trusted:
        known = ", ".join(key_id(k) for k in policy.keys)
        raise BundleError(f"bundle is signed by key {key_id(public)}, which is not a trusted key ({known})",
                          "pass its public key with --trust-key, or re-sign the bundle with a trusted key")
    return SignatureStatus(key_id(public), trusted)

