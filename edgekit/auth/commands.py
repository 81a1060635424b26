"""``edgekit keys add|revoke|list``: per-device frame keys, provisioned out of band (docs/security.md).

The server's key store is a folder of ``<device-id>.key`` files; ``add`` writes the device's entry there and
a copy for the device (``--out``), both mode 0600, to be carried to the device by the operator's own means
(never inside a bundle). Keys are never printed.
"""

from __future__ import annotations

import click

__all__ = ["keys_group"]


@click.group("keys")
def keys_group() -> None:
    """Per-device keys that authenticate frames and results (HMAC-SHA256, docs/wire-format.md).

    Not the bundle-signing key pair: that is edgekit keygen / edgekit sign (docs/bundle.md, Trust).
    """


@keys_group.command("add")
@click.argument("device_id")
@click.option("--store", required=True, type=click.Path(file_okay=False),
              help="The server's key store folder (created, mode 0700, if missing).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the device's key file (default: ./<DEVICE_ID>.key).")
@click.option("--rotate", is_flag=True, help="Replace the device's existing key (the old one stops working).")
def add_command(device_id: str, store: str, out: str | None, rotate: bool) -> None:
    """Make a new random 32-byte key for DEVICE_ID: the server's entry and the device's key file.

    Copy the device's key file to the device (e.g. scp, then chmod 600) and pass it to edgekit device run
    --frame-key; give the store to edgekit server run --frame-keys. A running receiver picks up the change
    within a second.

    \b
    Example:
      edgekit keys add cam-07 --store /etc/edgekit/keys --out cam-07.key
      edgekit keys add cam-07 --store /etc/edgekit/keys --out cam-07.key --rotate
    """
    from pathlib import Path

    from edgekit.auth.keys import KeyStore, write_key_file
    from edgekit.errors import UsageError
    from edgekit.mqtt.topics import check_device_id

    check_device_id(device_id)
    keys = KeyStore(store, create=True)
    target = Path(out) if out else Path(f"{device_id}.key")
    if target.resolve().parent == keys.folder.resolve():
        raise UsageError(f"--out {target} is inside the key store", "write the device's copy somewhere else")
    key = keys.add(device_id, replace=rotate)
    write_key_file(target, device_id, key)
    click.echo(f"device {device_id}: key stored in {keys.path(device_id)}, device key file {target} (mode 0600)")


@keys_group.command("revoke")
@click.argument("device_id")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="The server's key store folder.")
def revoke_command(device_id: str, store: str) -> None:
    """Delete DEVICE_ID's key: a receiver dead-letters its frames (unknown-key) within a second.

    \b
    Example:
      edgekit keys revoke cam-07 --store /etc/edgekit/keys
    """
    from edgekit.auth.keys import KeyStore

    KeyStore(store).revoke(device_id)
    click.echo(f"device {device_id}: key revoked")


@keys_group.command("list")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="The server's key store folder.")
def list_command(store: str) -> None:
    """List the devices that have a key (never the keys).

    \b
    Example:
      edgekit keys list --store /etc/edgekit/keys
    """
    from edgekit.auth.keys import KeyStore

    for device in KeyStore(store).devices():
        click.echo(device)
