"""The one way a bundle file is opened: checked path, regular file, bounded size, sha256 — then its bytes.

A bundle comes from elsewhere (a copy, a download, a USB stick), so every file the manifest names is
treated as hostile until checked, and checked before anything parses it::

    "wire/zstd.dict" ─► relative, no "..", no empty or "." level          (else BundleError)
                    ─► opened level by level with O_NOFOLLOW from the bundle directory: no symlink anywhere
                    ─► fstat of the open file: a regular file (no device, FIFO, directory), size <= limit
                    ─► size and sha256 of the bytes read == the manifest's ``files`` entry
                    ─► bytes (or nothing, when only verifying)

The checks run on the open file descriptor, so the bytes returned are the bytes that were hashed: nothing
can be swapped between the check and the read. Files in the bundle directory that the manifest does not
list are refused by :func:`check_listing`; only :data:`BESIDE_MANIFEST` may sit there unlisted.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError

__all__ = ["MANIFEST_NAME", "SIGNATURE_NAME", "BESIDE_MANIFEST", "SIZE_LIMITS", "CODEC_FILE_PARAMS", "size_limit",
           "check_bundle_path", "read_bundle_file", "check_listing"]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
#: The params of ``wire.codecs.<name>`` that name bundle files (a zstd dictionary, an ans prior): the bundle
#: checks them like every other file it names, before a codec reads them (docs/bundle.md, Trust).
CODEC_FILE_PARAMS: dict[str, tuple[str, ...]] = {"zstd": ("dictionary",), "ans": ("prior",)}
#: Files a bundle holds that its manifest cannot list: the manifest itself and its signature (edgekit sign).
BESIDE_MANIFEST = (MANIFEST_NAME, SIGNATURE_NAME)
#: Largest size of a bundle file by its first path level (the rest: reports, other files).
SIZE_LIMITS = {
    MANIFEST_NAME: 8 << 20,
    SIGNATURE_NAME: 64 << 10,
    "device": 1 << 30,  # device halves and compiled target artifacts
    "server": 2 << 30,  # the server half (fp32 weights)
    "wire": 16 << 20,  # codec artifacts: zstd dictionary, ans prior
    "golden": 64 << 20,  # golden vectors (.npz)
}
OTHER_LIMIT = 16 << 20  # report.md, report.json and anything else the manifest lists
_BLOCK = 1 << 20
_FIX = "copy the bundle directory again from the machine that converted it (edgekit convert)"


def size_limit(rel: str) -> int:
    """The size limit of the bundle file ``rel`` (by its first path level)."""
    return SIZE_LIMITS.get(rel.split("/", 1)[0], OTHER_LIMIT)


def check_bundle_path(rel: Any, where: str = "bundle file path") -> list[str]:
    """``rel``'s path levels, or BundleError (naming ``where`` the manifest says it) when it is not a plain
    relative path inside the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{where} {rel!r} is not a path", "re-create the bundle with edgekit convert")
    levels = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(level in ("", ".", "..") for level in levels):
        raise BundleError(f"{where} {rel[:200]!r} is not a relative path inside the bundle (absolute, "
                          "'..', '.', an empty level or a backslash)", "manifests name files as "
                          "'wire/zstd.dict': re-create the bundle with edgekit convert")
    return levels


def _open_nofollow(root: Path, rel: str) -> int:
    """A read-only descriptor of ``root/rel``, opened one level at a time refusing symlinks."""
    levels = check_bundle_path(rel)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise BundleError(f"cannot open bundle directory {root}: {err.strerror}",
                          "pass the directory written by edgekit convert") from None
    try:
        for i, level in enumerate(levels):
            last = i == len(levels) - 1
            # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat refuses it right after.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                child = os.open(level, flags, dir_fd=fd)
            except OSError as err:
                raise _open_error(root, rel, levels[: i + 1], err) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_error(root: Path, rel: str, levels: list[str], err: OSError) -> BundleError:
    """The one-line reason ``root/rel`` could not be opened (``levels``: up to the failing one)."""
    where = "/".join(levels)
    if err.errno == errno.ENOENT:
        return BundleError(f"bundle file {rel} is missing", _FIX)
    if os.path.islink(root / where):
        return BundleError(f"bundle file {rel}: {where} is a symbolic link, which bundles may not contain",
                           "replace it with the file itself (copy with cp -L or rsync -L)")
    if err.errno in (errno.ENOTDIR, errno.ELOOP):
        return BundleError(f"bundle file {rel}: {where} is not a directory or regular file", _FIX)
    return BundleError(f"cannot open bundle file {rel}: {err.strerror}", "check its permissions")


def read_bundle_file(root: str | Path, rel: str, entry: dict[str, Any] | None = None, keep: bool = True) -> bytes:
    """The bytes of bundle file ``rel`` after every check (see the module docstring); ``b""`` when not ``keep``.

    ``entry`` is the manifest's ``files[rel]`` (``sha256`` and ``bytes``); None only for the files that the
    manifest cannot list (:data:`BESIDE_MANIFEST`) and for codec artifacts convert is fitting, before the
    manifest exists. Raises :class:`BundleError` naming the file, the problem and the fix.
    """
    root = Path(root)
    limit = size_limit(rel)
    fd = _open_nofollow(root, rel)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"bundle file {rel} is not a regular file (a device, FIFO, socket or directory)", _FIX)
        if info.st_size > limit:
            raise BundleError(f"bundle file {rel} is {info.st_size} bytes, above the {limit}-byte limit for "
                              f"{rel.split('/', 1)[0]!r} files", "re-create the bundle with edgekit convert")
        if entry is not None and info.st_size != entry.get("bytes"):
            raise BundleError(f"bundle file {rel} does not match its sha256 in the manifest ({info.st_size} bytes, "
                              f"listed as {entry.get('bytes')})", f"the file was changed or truncated: {_FIX}")
        digest, kept, size = hashlib.sha256(), [], 0
        while size <= limit and (block := handle.read(_BLOCK)):  # bounded even if the file grows meanwhile
            digest.update(block)
            size += len(block)
            if keep:
                kept.append(block)
    if size > limit or (entry is not None and size != entry["bytes"]):
        raise BundleError(f"bundle file {rel} changed size while it was read", _FIX)
    if entry is not None and digest.hexdigest() != entry.get("sha256"):
        raise BundleError(f"bundle file {rel} does not match its sha256 in the manifest",
                          f"the file was changed or truncated: {_FIX}")
    return b"".join(kept)


def check_listing(root: str | Path, files: dict[str, Any]) -> None:
    """BundleError for anything in the bundle directory that is neither listed in ``files`` nor allowed beside
    the manifest: an extra file could be picked up by a tool that globs the folder, so none is tolerated."""
    root = Path(root)
    for folder, dirs, names in os.walk(root):  # does not follow symlinked directories: they are listed in dirs
        base = Path(folder).relative_to(root)
        for name in sorted(names) + sorted(d for d in dirs if os.path.islink(os.path.join(folder, d))):
            rel = (base / name).as_posix()
            if rel not in files and rel not in BESIDE_MANIFEST:
                raise BundleError(f"bundle file {rel} is not listed in the manifest",
                                  f"remove it from the bundle directory, or {_FIX}")
