"""``edgekit device run|selftest|systemd-unit``: the agent on a Raspberry Pi. Imports only click here; the rest
inside the commands."""

from __future__ import annotations

import click

from edgekit.bundle.commands import trust_args, trust_options, trust_policy
from edgekit.metrics import HOST_OPTION, PORT_OPTION
from edgekit.mqtt.security import security_args, security_options

__all__ = ["device_group", "AGENT_OPTIONS"]

RUNTIMES = click.Choice(["litert", "tflite-runtime", "tensorflow", "onnxruntime"])

#: Options of ``device run`` that ``device systemd-unit`` takes too and passes on to the agent it starts.
AGENT_OPTIONS = {
    "runtime": click.option("--runtime", type=RUNTIMES, default=None,
                            help="Force a runtime (default: the best one installed for the bundle's device model)."),
    "codec": click.option("--codec", default=None, help="Feature codec (default: the bundle's, else the best one it "
                                                        "offers that this device can run)."),
    "spool": click.option("--spool", type=click.Path(dir_okay=False), default=None,
                          help="Spool file (default: ~/.cache/edgekit/spool-<device-id>.sqlite)."),
    "spool_max_mb": click.option("--spool-max-mb", type=float, default=256.0, show_default=True,
                                 help="Spool bound in MiB."),
    "spool_max_age": click.option("--spool-max-age", type=float, default=7 * 24 * 3600.0, show_default=True,
                                  help="Frames older than this many seconds expire unsent."),
    "spool_policy": click.option("--spool-policy", type=click.Choice(["drop-oldest", "drop-newest"]),
                                 default="drop-oldest", show_default=True,
                                 help="What a full spool does with a new frame."),
    "frame_key": click.option("--frame-key", "frame_key", type=click.Path(dir_okay=False), default=None,
                              help="This device's key file (edgekit keys add): tag every frame, accept only signed "
                                   "results."),
    "metrics_port": PORT_OPTION,
    "metrics_host": HOST_OPTION,
}


def agent_options(command):
    """Add the :data:`AGENT_OPTIONS` to a command, in their order."""
    for option in reversed(AGENT_OPTIONS.values()):
        command = option(command)
    return command


@click.group("device")
def device_group() -> None:
    """Device side: run the split model's device half and stream its codes to a broker."""


@device_group.command("run")
@click.option("--bundle", "bundle", required=True, type=click.Path(), help="Bundle folder from edgekit convert.")
@click.option("--broker", default="mqtt://localhost:1883", show_default=True,
              help="Broker URL mqtt://HOST:PORT or mqtts://[USER@]HOST:PORT (TLS; see docs/security.md).")
@security_options
@click.option("--device-id", required=True, help="This device's id (one topic level, e.g. cam-07).")
@click.option("--source", required=True,
              help="x.npz | npz:PATH | images:DIR | images:'GLOB' | camera:0 | video:PATH; a text bundle: "
                   "FILE.txt | text:FILE | - (stdin), one text per line, or FILE.tsv | pairs:FILE, two texts per line "
                   "(docs/device.md, Text bundles).")
@click.option("--fps", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Frames per second (0: as fast as possible).")
@click.option("--loop", is_flag=True, help="Replay a finite source forever.")
@click.option("--limit", type=int, default=None, help="Stop after this many frames.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
@click.option("--target", default=None, help="Device model target in the bundle (default: the first).")
@agent_options
@click.option("--max-frame-bytes", type=int, default=None,
              help="Refuse larger frames locally (needed with MQTT 3.1.1 brokers that cap message size).")
@click.option("--mqtt", "protocol", type=click.Choice(["auto", "5", "3.1.1"]), default="auto", show_default=True,
              help="MQTT version (auto: 5 when the broker speaks it).")
@click.option("--confirm-timeout", type=click.FloatRange(min=0.05), default=5.0, show_default=True,
              help="Seconds to wait for a receiver to confirm a frame before sending it again (doubles per "
                   "attempt, up to 5 min). See docs/device.md, Delivery.")
@click.option("--uplink-budget", default=None,
              help="Nested bundles: bytes per second the frames may take, e.g. 2kB/s. The agent sends the highest "
                   "rate level that fits, steps down when the broker acknowledges less than it offers, and back up "
                   "when the uplink clears (docs/device.md, Uplink budget).")
@click.option("--level", type=click.IntRange(min=0), default=None,
              help="Nested bundles: send every frame at this rate level (0 = fewest channels).")
@click.option("--heartbeat", type=float, default=5.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--linger", type=float, default=5.0, show_default=True,
              help="After a finite source: seconds to wait for the last confirmations and results (frames still "
                   "unconfirmed stay spooled for the next start).")
@click.option("--allow-failing-parity", is_flag=True,
              help="Run a bundle that failed its parity check at convert time (warned, and marked in the status).")
@click.option("--json", "json_logs", is_flag=True, help="Machine-readable logs: one JSON object per line.")
@trust_options
def run_command(bundle, broker, device_id, source, fps, loop, limit, runtime, threads, target, codec, spool,
                spool_max_mb, spool_max_age, spool_policy, max_frame_bytes, protocol, confirm_timeout, uplink_budget,
                level, heartbeat,
                linger, allow_failing_parity, frame_key, metrics_port, metrics_host, json_logs, trust_keys,
                require_signature, **security) -> None:
    """Stream a source through the device half to the broker, with store-and-forward.

    Frames go to a bounded on-disk spool and leave it only when a receiver confirms it stored them, so broker
    crashes, receiver failures and agent restarts lose nothing within the spool's bounds. A finite source is
    sent once (or forever with --loop); once the broker has it all, the agent waits up to --linger for the
    confirmations and exits (unconfirmed frames stay spooled for the next start). At start the agent runs
    the bundle's self-test (see edgekit device selftest) and exits 4 when it fails; a bundle that failed
    parity at convert time exits 3 unless --allow-failing-parity. Either way it first leaves a retained
    "refused" status with the reason on the broker, when the broker takes it within 5 s.

    \b
    Example:
      edgekit device run --bundle bundles/fmnist-v1 --broker mqtt://pi-gw:1883 \\
          --device-id cam-07 --source images:/data/frames --fps 10
      edgekit device run --bundle bundles/digits --device-id d1 --source test.npz --fps 0 --json
      edgekit device run --bundle bundles/fmnist-v1 --broker mqtts://gw:8883 --ca pki/ca.crt \\
          --cert pki/clients/cam-07.crt --key pki/clients/cam-07.key --device-id cam-07 --source camera:0
      edgekit device run --bundle bundles/fmnist-v1 --device-id cam-07 --source camera:0 --frame-key cam-07.key
      transcriber | edgekit device run --bundle bundles/minilm --device-id kiosk-1 --source - --fps 0
      edgekit device run --bundle bundles/cifar-ladder --device-id cam-07 --source camera:0 --uplink-budget 2kB/s
    """
    import json
    import signal
    import threading
    from pathlib import Path

    from edgekit.device.agent import Agent, AgentConfig
    from edgekit.device.uplink import parse_rate
    from edgekit.logs import setup_run_logging
    from edgekit.metrics import MetricsEndpoint
    from edgekit.mqtt.topics import check_device_id
    from edgekit.mqtt.urls import resolve_broker

    setup_run_logging(json_logs)
    cfg = AgentConfig(bundle=Path(bundle), broker=resolve_broker(broker, **security), device_id=check_device_id(device_id),
                      source=source, fps=fps, spool=Path(spool) if spool else None,
                      spool_max_bytes=int(spool_max_mb * 2**20), spool_max_age_s=spool_max_age,
                      spool_policy=spool_policy, confirm_timeout_s=confirm_timeout, runtime=runtime, threads=threads,
                      target=target, codec=codec,
                      protocol=protocol, max_frame_bytes=max_frame_bytes, heartbeat_s=heartbeat, loop=loop,
                      limit=limit, linger_s=linger, allow_failing_parity=allow_failing_parity,
                      trust=trust_policy(trust_keys, require_signature),
                      key=Path(frame_key) if frame_key else None,
                      uplink_budget=parse_rate(uplink_budget) if uplink_budget is not None else None, level=level)
    metrics = MetricsEndpoint(metrics_host, metrics_port)  # before the slow loading: a taken port fails at once
    agent = Agent(cfg, metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stats = agent.run(stop)
    finally:
        metrics.close()
    click.echo(json.dumps(stats) if json_logs else
               f"device {stats['device']}: captured {stats['captured']}, confirmed {stats['confirmed']}, "
               f"dropped {stats['dropped']}, still spooled {stats['queue_depth']}, results {stats['results']}")


@device_group.command("selftest")
@click.option("--bundle", "bundle", required=True, type=click.Path(), help="Bundle folder from edgekit convert.")
@click.option("--runtime", type=RUNTIMES, default=None,
              help="Runtime to test (default: the one edgekit device run would pick).")
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
@click.option("--target", default=None, help="Device model target in the bundle (default: the first).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@trust_options
def selftest_command(bundle, runtime, threads, target, as_json, trust_keys, require_signature) -> None:
    """Check that this device computes the bundle's golden codes, as the agent does at start.

    Runs the golden inputs stored by edgekit convert through the device model and runtime the agent would
    use, and compares the int8 codes with the ones the validated model produced. Prints the result, the
    runtime and its version, the CPU and the time per frame. Exit 0: passed (or the bundle is too old to
    have golden vectors: a warning); 4: the codes differ beyond the bundle's tolerance; 2: a usage error.

    \b
    Example:
      edgekit device selftest --bundle bundles/fmnist-v1
      edgekit device selftest --bundle bundles/fmnist-v1 --runtime tflite-runtime --json
      edgekit device selftest --bundle bundles/fmnist-v1 --trust-key keys/release.pub.pem --require-signature
    """
    import json

    from edgekit.bundle.manifest import Bundle
    from edgekit.runtime import open_device_runner
    from edgekit.selftest import device_selftest, require_pass

    loaded = Bundle.load(bundle, trust=trust_policy(trust_keys, require_signature))
    model = loaded.device_model(target=target, runtime=runtime)
    runner = open_device_runner(model.path, runtime=runtime, threads=threads, code_quant=model.code_quant)
    result = device_selftest(loaded, runner, model.path)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.line())
    require_pass(result)


@device_group.command("systemd-unit")
@click.option("--bundle", "bundle", required=True, type=click.Path(), help="Bundle folder on this device.")
@click.option("--broker", required=True, help="Broker URL mqtt://HOST:PORT.")
@click.option("--device-id", required=True, help="This device's id (one topic level, e.g. cam-07).")
@click.option("--source", default="camera:0", show_default=True, help="The agent's --source.")
@click.option("--fps", type=click.FloatRange(min=0), default=10.0, show_default=True, help="The agent's --fps.")
@click.option("--user", default=None, help="User the agent runs as (default: the current user, e.g. pi).")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Inference threads (a Raspberry Pi 4/5 has 4 cores).")
@agent_options
@security_options
@trust_options
def systemd_unit_command(bundle, broker, device_id, source, fps, user, threads, trust_keys, require_signature, runtime,
                         codec, spool, spool_max_mb, spool_max_age, spool_policy, frame_key, metrics_port, metrics_host,
                         **security) -> None:
    """Print a systemd unit that runs the agent at boot, with this virtualenv's edgekit.

    The unit waits for the network and restarts the agent after a crash, but never after a configuration
    error a restart cannot fix (exit 2: usage or bundle error, 3: failing-parity bundle, 4: failed self-test,
    5: the broker refused the credentials). A camera source is restarted even after a clean exit; a finite
    source (a file, a folder, a video) is sent once. --runtime, --codec, --frame-key, the spool and the metrics
    options go to the agent as given. Install the unit as shown in its header.

    \b
    Example:
      edgekit device systemd-unit --bundle ~/bundles/fmnist-v1 --broker mqtt://gw:1883 \\
          --device-id cam-07 --user pi | sudo tee /etc/systemd/system/edgekit-agent-cam-07.service
      edgekit device systemd-unit --bundle ~/bundles/fmnist-v1 --broker mqtts://cam-07@gw --ca ~/ca.crt \\
          --password-file ~/.config/edgekit/mqtt-password --device-id cam-07 --user pi --frame-key ~/cam-07.key
    """
    import getpass
    import shutil
    import sys
    from pathlib import Path

    from edgekit.bundle.manifest import Bundle
    from edgekit.device.sources import check_preprocessing, is_endless
    from edgekit.device.systemd import agent_command, render_unit, under_root
    from edgekit.metrics import check_port
    from edgekit.errors import UsageError
    from edgekit.mqtt.topics import check_device_id
    from edgekit.mqtt.urls import parse_broker_url, resolve_broker

    root = Path(bundle).expanduser().resolve()
    device_id = check_device_id(device_id)
    loaded = Bundle.load(root, trust=trust_policy(trust_keys, require_signature))  # no unit the agent would refuse
    _check_agent_options(loaded, device_id, runtime, codec, frame_key)
    check_port(metrics_port)
    if parse_broker_url(broker).security.password:
        raise UsageError("a password in --broker would be written into a world-readable unit file",
                         "put it in a file readable by the agent's user only and pass --password-file")
    resolve_broker(broker, **security, environ={})  # the TLS files and password file load here too
    user = user or getpass.getuser()
    for name, value in (("--user", user), ("--source", source), ("--broker", broker)):
        if not value or any(not c.isprintable() for c in value) or (name == "--user" and " " in value):
            raise UsageError(f"{name} {value!r} cannot go into a unit file",
                             "use a value without control characters (and a user name without spaces)")
    if "text" in loaded.manifest:  # lines of a file (device/text_source.py): sent once, an unknown kind refused
        from edgekit.device.text_source import text_source_kind

        text_source_kind(source)
        endless = False
    else:
        endless = is_endless(source)  # an unknown kind of source is an error here already
        try:
            check_preprocessing(source, loaded.input.preprocessing)
        except UsageError as err:  # the agent would stop at once (exit 2), and the unit with it
            click.echo(f"warning: the agent will stop at start: {err}", err=True)
    venv_edgekit = Path(sys.prefix) / "bin" / "edgekit"
    edgekit = venv_edgekit if venv_edgekit.is_file() else Path(shutil.which("edgekit") or venv_edgekit)
    command = agent_command(edgekit.absolute(), root, broker, device_id, source, fps, threads,
                            security_args(security), trust_args(trust_keys, require_signature), _given_agent_args())
    hidden = under_root(command, user)
    if hidden:
        click.echo(f"warning: the agent runs as {user} but {hidden[0]}"
                   f"{f' (and {len(hidden) - 1} more path(s))' if len(hidden) > 1 else ''} is under /root, which only "
                   f"root can enter: put the virtualenv, the bundle and the agent's files under ~{user}, or pass --user root",
                   err=True)
    click.echo(render_unit(command, device_id, user, threads, endless), nl=False)


def _check_agent_options(loaded, device_id: str, runtime: str | None, codec: str | None, frame_key: str | None) -> None:
    """Refuse now what the agent would refuse at boot (a runtime or a codec the bundle lacks, a bad key file or
    one for another device), as the bundle itself: the unit would stop at once."""
    from pathlib import Path

    loaded.device_model(runtime=runtime)
    if codec is not None:
        from edgekit.wire.encoder import WireEncoder

        WireEncoder.from_bundle(loaded, codec=codec)
    if frame_key is not None:
        from edgekit.auth.keys import read_key_file

        read_key_file(Path(frame_key).expanduser(), device_id)


def _given_agent_args() -> tuple[str, ...]:
    """The :data:`AGENT_OPTIONS` given on this command line, as the agent's arguments: paths made absolute (systemd
    runs the agent from ``/``), options left at their default left out (the agent's own default applies)."""
    from pathlib import Path

    from click.core import ParameterSource

    ctx = click.get_current_context()
    args: list[str] = []
    for param in ctx.command.params:
        if param.name not in AGENT_OPTIONS or ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
            continue
        value = ctx.params[param.name]
        if isinstance(param.type, click.Path):
            value = Path(value).expanduser().resolve()
        args += [param.opts[0], str(value)]
    return tuple(args)
