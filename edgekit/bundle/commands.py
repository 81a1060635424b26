"""``edgekit inspect BUNDLE``: print a bundle's manifest readably after verifying every file's hash.
``edgekit keygen`` and ``edgekit sign``: Ed25519 signatures of bundles (edgekit.bundle.signing), and
:func:`trust_options`, the ``--trust-key``/``--require-signature`` pair of every command that loads a bundle."""

from __future__ import annotations

import json

import click

__all__ = ["inspect_command", "keygen_command", "sign_command", "describe", "trust_options", "trust_policy",
           "trust_args"]


def trust_options(command):
    """Add ``--trust-key`` (repeatable) and ``--require-signature`` to a command that loads bundles."""
    command = click.option("--require-signature", is_flag=True,
                           help="Refuse a bundle that is not signed by a --trust-key key. Implied by --trust-key "
                                "(kept for existing scripts and units); alone it is an error.")(command)
    return click.option("--trust-key", "trust_keys", multiple=True, type=click.Path(),
                        help="Public key (.pub.pem) or directory of them whose signatures are trusted; a bundle "
                             "that is unsigned or signed by another key is refused. Repeatable.")(command)


def trust_policy(trust_keys: tuple[str, ...], require_signature: bool):
    """The :class:`edgekit.bundle.signing.TrustPolicy` of the :func:`trust_options` values (None: no key given)."""
    from edgekit.bundle.signing import TrustPolicy

    return TrustPolicy.from_options(trust_keys, require_signature)


def trust_args(trust_keys: tuple[str, ...], require_signature: bool) -> tuple[str, ...]:
    """The :func:`trust_options` values as arguments again, key paths made absolute (for a unit file)."""
    from pathlib import Path

    args = tuple(arg for key in trust_keys for arg in ("--trust-key", str(Path(key).expanduser().resolve())))
    return (*args, "--require-signature") if require_signature else args


def _quant(q: dict | None) -> str:
    return "–" if q is None else f"scale {q['scale']:.6g}, zero-point {q['zero_point']}"


def _golden(golden: dict | None) -> str:
    if golden is None:
        return "golden     none (bundle from an older edgekit convert: no start-up self-test)"
    tol, cpu = golden["tolerance"], golden.get("cpu") or {}
    made = ", ".join(sorted({f"{d['runtime']} {d['runtime_version']}" for d in golden["device"]}))
    return (f"golden     {golden['samples']} samples for {len(golden['device'])} device models and the server; "
            f"codes within {tol['code_max_level_diff']} level on <= {100 * tol['code_max_fraction_diff']:g}% of "
            f"elements, outputs within {tol['output_max_abs_error']:.3g}; made with {made} on "
            f"{cpu.get('arch', '?')} {cpu.get('model', '?')}")


def describe(manifest: dict) -> list[str]:
    """The manifest as readable lines (what `edgekit inspect` prints)."""
    m = manifest
    parity = m["parity"]
    worst = parity.get("worst_agreement")
    lines = [
        f"bundle {m['bundle_id']}  (format v{m['version']}, created {m['created']})",
        f"model      {m['model']['name']} ({m['model']['source_format']}), split at {m['model']['split']!r}",
        f"input      {m['input']['name']} {tuple(m['input']['shape'])} {m['input']['dtype']}",
    ]
    pre = m["input"]["preprocessing"]
    if pre:
        lines.append(f"  preprocessing: {pre['color']} {pre['size'][0]}x{pre['size'][1]}, x{pre['scale']:.6g}, "
                     f"mean {pre['mean']}, std {pre['std']}, {pre['layout']}")
    code = m["code"]
    lines += [
        f"code       {code['name']} {tuple(code['shape'])} int8 = {code['bytes_per_sample']} B/sample; wire "
        f"{_quant(code['wire_quant'])}",
        f"output     {m['output']['name']} {tuple(m['output']['shape'])}"
        + (f", labels: {', '.join(m['output']['labels'][:10])}" + (" ..." if len(m['output']['labels']) > 10 else "")
           if m["output"]["labels"] else ""),
        "device models:",
    ]
    for d in m["device_models"]:
        size = m["files"][d["path"]]["bytes"]
        lines.append(f"  {d['target']:15s} {d['runtime']:7s} {d['path']} ({size / 1024:.1f} KiB, in {d['input_dtype']}, "
                     f"code {d['code_dtype']} {_quant(d['code_quant'])})")
    s = m["server_model"]
    lines.append(f"server     {s['path']} ({s['precision']}, {m['files'][s['path']]['bytes'] / 1024:.1f} KiB)")
    if "text" in m:
        t = m["text"]
        lines.append(f"text       {t['tokenizer']} (up to {t['max_length']} tokens, lowercase {t['lowercase']}); "
                     f"{t['pooling']} pooling{', normalized' * t['normalize']}, {t['dims']} dims; int8 "
                     f"{t['quantization']['method']}; documents: {t['float_encoder']['path']}")
    for name, target in m["targets"].items():
        report = target.get("compiler_report")
        if report and report.get("compiler") == "vela":
            lines.append(f"target     {name}: {report['npu_ops']} NPU / {report['cpu_ops']} CPU ops, "
                         f"SRAM {report['sram_kib']:.1f} KiB, est. {report['inference_time_ms']:.3f} ms")
        elif report:
            lines.append(f"target     {name}: {report['tpu_ops']} Edge TPU / {report['cpu_ops']} CPU ops")
    lines += [
        f"wire       default codec {m['wire']['default_codec']}; codecs {', '.join(m['wire']['codecs'])}",
        f"parity     {'PASSED' if parity['passed'] else 'FAILED'} on {parity['samples']} samples"
        + (f", {'int8 encoder mean cosine' if parity.get('metric') == 'mean_cosine' else 'worst top-1 agreement'} "
           f"{100 * worst:.2f}% (min {100 * parity['min_agreement']:.2f}%)"
           if worst is not None else ""),
        _golden(m.get("golden")),
        f"provenance edgekit {m['provenance']['edgekit']}; seed {m['provenance']['seed']}; "
        f"command: {m['provenance'].get('command') or '(python API)'}",
        f"files      {len(m['files'])} files, all sha256 verified",
    ]
    return lines


@click.command("inspect")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True,
              help="Print the verified manifest as JSON (with a \"selftest\" list unless --no-selftest).")
@click.option("--selftest/--no-selftest", default=True, show_default=True,
              help="Run the golden vectors through this machine's runtimes.")
@trust_options
def inspect_command(bundle: str, as_json: bool, selftest: bool, trust_keys: tuple[str, ...],
                    require_signature: bool) -> None:
    """Show a bundle's manifest, verify the sha256 of every file, and self-test it on this machine.

    Exits non-zero with a one-line error when a file is missing, changed, unlisted or a symlink, or when the
    signature does not verify (or is missing or by another key, under --trust-key). The self-test runs the bundle's
    golden vectors through every device model and the server half with the runtimes installed here and
    shows the result, the runtime and version, and the CPU (see edgekit device selftest).

    \b
    Example:
      edgekit inspect bundles/fmnist-v1
      edgekit inspect bundles/fmnist-v1 --json --no-selftest | jq .code
      edgekit inspect bundles/fmnist-v1 --trust-key keys/signing.pub.pem
    """
    from edgekit.bundle.manifest import Bundle
    from edgekit.selftest import bundle_selftests

    loaded = Bundle.load(bundle, trust=trust_policy(trust_keys, require_signature))
    results = bundle_selftests(loaded) if selftest and loaded.golden is not None else []
    if as_json:
        extra = {"selftest": [r.as_dict() for r in results]} if selftest else {}
        click.echo(json.dumps({**loaded.manifest, **extra}, indent=2))
    else:
        signed = loaded.signature.line() if loaded.signature else "signature  none (unsigned: see edgekit sign)"
        click.echo("\n".join(describe(loaded.manifest) + [signed] + [r.line() for r in results]))


@click.command("keygen")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", default="signing", show_default=True, help="File name stem of the key pair.")
def keygen_command(folder: str, name: str) -> None:
    """Make an Ed25519 key pair for signing bundles: NAME.key.pem (private, mode 0600) and NAME.pub.pem.

    Keep the private key on the machine that signs (never in a bundle, on a device or on the server); copy
    the public key to devices and servers and pass it with --trust-key. Existing files are never overwritten.
    (The per-device keys that authenticate frames are another thing: edgekit keys.)

    \b
    Example:
      edgekit keygen ~/.config/edgekit/keys
      edgekit keygen keys --name release-2026
    """
    from edgekit.bundle.signing import generate_key_pair, key_id, load_public_keys

    private, public = generate_key_pair(folder, name)
    click.echo(f"private key {private} (keep secret)\npublic key  {public} (key id "
               f"{key_id(load_public_keys([public])[0])}: give it to devices and servers with --trust-key)")


@click.command("sign")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False),
              help="Ed25519 private key (PEM) from edgekit keygen.")
def sign_command(bundle: str, key: str) -> None:
    """Sign a bundle: verify every file, then write BUNDLE/manifest.sig, an Ed25519 signature of manifest.json.

    The manifest holds every file's sha256 and the bundle id, so the signature covers the whole bundle.
    Re-signing replaces the previous signature. Devices and servers check it with --trust-key.

    \b
    Example:
      edgekit sign bundles/fmnist-v1 --key ~/.config/edgekit/keys/signing.key.pem
      edgekit inspect bundles/fmnist-v1 --trust-key keys/signing.pub.pem
    """
    from edgekit.bundle.manifest import sign_bundle

    path, signer = sign_bundle(bundle, key)
    click.echo(f"signed {bundle} with key {signer}: {path}")
