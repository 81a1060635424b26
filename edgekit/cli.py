"""The ``edgekit`` command: a thin layer over the Python API.

Each role keeps its commands next to its code (``edgekit.converters.commands``, ``edgekit.device.commands``,
``edgekit.server.commands``, ...). Those modules import only click at module level, so ``edgekit device``
on a Raspberry Pi never loads TensorFlow: heavy imports happen inside the command bodies.
"""

from __future__ import annotations

import logging
import sys

import click

from edgekit import __version__
from edgekit.errors import EdgekitError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """edgekit: carry a model with a trained re-encoder to a split device/server deployment.

    \b
    Workstation:  edgekit convert model.keras --split code --calib calib.npz -o bundles/m-v1
                  edgekit inspect bundles/m-v1
    Broker:       edgekit broker --port 1883
    Server:       edgekit server run --bundle bundles/m-v1 --broker mqtt://localhost:1883
    Device:       edgekit device run --bundle bundles/m-v1 --broker mqtt://gw:1883 --source x.npz
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """Attach each role's commands; their modules are cheap to import."""
    from edgekit.bundle.commands import inspect_command, keygen_command, sign_command
    from edgekit.converters.commands import convert_command
    from edgekit.device.commands import device_group
    from edgekit.server.commands import server_group
    from edgekit.mqtt.broker import broker_command
    from edgekit.mqtt.certs import certs_group
    from edgekit.demo.command import demo_command
    from edgekit.reencode.commands import reencode_command
    from edgekit.auth.commands import keys_group

    for command in (convert_command, inspect_command, device_group, server_group, broker_command, demo_command,
                    reencode_command, sign_command, keygen_command, certs_group, keys_group):
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake (:class:`EdgekitError`) prints one line and exits non-zero."""
    _register()
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
