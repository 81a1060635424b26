"""report.json (the machine-readable result of convert) rendered as report.md for people.

The JSON is built by :mod:`edgekit.converters.pipeline`; the field list is in ``docs/convert.md``. This
module only formats it, so both files always say the same thing.
"""

from __future__ import annotations

from typing import Any

from edgekit.cpu import describe_cpu

from .image_baseline import LABELS

__all__ = ["render_markdown", "summary_lines", "format_lines", "reencode_summary"]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _kib(size: int | None) -> str:
    return "–" if size is None else f"{size / 1024:.1f} KiB"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: verdict, and per device model agreement, accuracy, size, latency."""
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [f"{verdict}: worst top-1 agreement {_pct(report['worst_agreement'])} "
             f"(min {_pct(report['min_agreement'])}) on {report['eval']['samples']} samples; "
             f"code {report['code']['bytes_per_sample']} B/sample"]
    original = report["eval"].get("original")
    if original and original["found"]:
        lines.append(f"  accuracy: original model {_pct(original['accuracy'])}, re-encoded float "
                     f"{_pct(report['eval'].get('accuracy_float'))} (agreement with the original "
                     f"{_pct(original['float_agreement'])})")
    for m in report["models"]:
        lat = m.get("latency") or {}
        ratio = f", float/int8 latency x{lat['float_over_int8']}" if lat.get("float_over_int8") else ""
        acc = f", accuracy {_pct(m['accuracy_deployed'])} (drop {_num(m['accuracy_drop_points'], 2)} pt)" \
            if m.get("accuracy_deployed") is not None else ""
        lines.append(f"  {m['target']}/{m['runtime']}: agreement {_pct(m['top1_agreement'])}{acc}, "
                     f"{_kib(m['bytes'])} ({_pct(m['size_vs_float'])} of float){ratio}")
    for name, compiled in report["targets"].items():
        if compiled and compiled.get("compiler") == "vela":
            lines.append(f"  {name}: {compiled['npu_ops']} NPU / {compiled['cpu_ops']} CPU ops, "
                         f"SRAM {compiled['sram_kib']:.1f} KiB, est. {compiled['inference_time_ms']:.3f} ms")
        elif compiled:
            lines.append(f"  {name}: {compiled['tpu_ops']} Edge TPU / {compiled['cpu_ops']} CPU ops; "
                         f"compile with: {compiled['command']}")
    lines += [f"  {line}" for line in format_lines(report)]
    lines += _kernel_lines(report)
    lines += [f"  {line}" for line in _rounding_lines(report)]
    if not report["passed"] and report.get("layers_to_check"):
        lines.append("  look at layers: " + ", ".join(report["layers_to_check"]))
    return lines + _wire_summary(report.get("wire")) + _baseline_summary(report.get("baseline"))


def _codec_label(name: str, stats: dict[str, Any]) -> str:
    return f"{name}-{stats['level']}" if stats.get("level") is not None else name


def _wire_summary(wire: dict[str, Any] | None) -> list[str]:
    """The chosen codec, its bytes and device cost, and the codecs rejected for time."""
    if not wire:
        return []
    name = wire["default_codec"]
    stats, device = wire["codecs"][name], wire["device"]
    lines = [f"  wire: {_codec_label(name, stats)} {stats['mean_frame_bytes']:.0f} B/frame, "
             f"v{wire.get('frame_version', 1)} header included (int8 code "
             f"{wire['raw_code_bytes']} B, float32 {wire['float32_bytes']} B), est. encode "
             f"{stats['device_encode_ms']:.3f} ms on {device['device']} (budget {device['budget_ms']:g} ms)"]
    slow = [f"{_codec_label(c['codec'], c)} {c['device_encode_ms']:.3f} ms" for c in wire["candidates"]
            if not c["within_budget"]]
    if slow:
        lines.append(f"  over the encode budget on {device['device']} (est.): " + ", ".join(slow))
    return lines + [f"  level {row['level']} ({row['channels']} channels): {_level_figures(row)}"
                    for row in wire.get("levels", [])]


def _level_figures(row: dict[str, Any]) -> str:
    """A nested code's rate level: its frame bytes (v2 header and level byte included) and what the server
    half makes of it (converters/levels.py)."""
    accuracy = f", accuracy {100 * row['accuracy']:.2f}%" if row.get("accuracy") is not None else ""
    return (f"{row['mean_frame_bytes']:.1f} B/frame, top-1 agreement with all channels "
            f"{100 * row['top1_agreement_with_all_channels']:.2f}%{accuracy}")


def _baseline_summary(baseline: dict[str, Any] | None) -> list[str]:
    """The input as ordinary image files next to the frame, and the warning when the frame is bigger."""
    if not baseline:
        return []
    if not baseline["available"]:
        return [f"  input baseline unavailable: {baseline['reason']}"]
    sizes = ", ".join(f"{LABELS[n]} {f['mean_bytes']:.0f} B" for n, f in baseline["formats"].items())
    shape = "×".join(map(str, baseline["image_shape"]))
    lines = [f"  input as an image ({shape}, mean of {baseline['images']}): {sizes}"]
    if baseline.get("warning"):
        lines.append(f"  WARNING: {baseline['warning']}")
    return lines


_FORMATS = {"qdq": "int8 QDQ", "qoperator": "int8 QOperator", "float": "the float half (int8 code output)"}


def format_lines(report: dict[str, Any]) -> list[str]:
    """One line per ONNX device model whose format was chosen on speed: what ships and the figures behind it."""
    lines = []
    for m in report["models"]:
        chosen = m.get("format")
        if not chosen:
            continue
        ms = chosen["median_ms"]
        others = ", ".join(f"{_FORMATS[name].split(' (')[0]} {value:.2f} ms" for name, value in ms.items()
                           if name != chosen["format"])
        scores = chosen.get("agreement_on_calibration") or {}
        rejected = [f"{_FORMATS[name].split(' (')[0]} agreed {_pct(score)}" for name, score in scores.items()
                    if name != chosen["format"]]
        why = (f"; faster but below --min-agreement {_pct(chosen['min_agreement'])} on calibration samples: "
               + ", ".join(rejected)) if rejected else ""
        lines.append(f"{m['target']}/{m['runtime']}: ships {_FORMATS[chosen['format']]}: "
                     f"{ms[chosen['format']]:.2f} ms vs {others} (ONNX Runtime, batch 1, {chosen['threads']} thread, "
                     f"median of {chosen['runs']}){why}")
    return lines


def _kernel_lines(report: dict[str, Any]) -> list[str]:
    """Terminal lines: does each ONNX model give the reference codes on the CPU that measured it?"""
    lines = []
    for m in report["models"]:
        ref = m.get("reference_kernels")
        if ref:
            verdict = "match" if ref["kernels_agree"] else "DIFFER from"
            lines.append(f"  {m['target']}/{m['runtime']}: fused int8 kernels {verdict} the unfused reference "
                         f"(max {ref['max_level_difference']} levels; "
                         f"reference agreement {_pct(ref['top1_agreement'])})")
    if lines and report.get("cpu"):
        lines.append(f"  measured on {describe_cpu(report['cpu'])}")
    return lines


def _kernels_table(report: dict[str, Any]) -> list[str]:
    """ONNX models run with ORT's fused int8 kernels (deployed) and unfused (reference, same on every CPU)."""
    rows = ["| target | top-1 agreement fused / reference | code SQNR fused / reference (dB) | max level difference "
            "| elements differing | fused vs reference SQNR (dB) | kernels agree |", "|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        ref = m.get("reference_kernels")
        if ref:
            rows.append(f"| {m['target']} | {_pct(m['top1_agreement'])} / {_pct(ref['top1_agreement'])} "
                        f"| {_num(m['code_sqnr_db'], 2)} / {_num(ref['code_sqnr_db'], 2)} "
                        f"| {ref['max_level_difference']} | {_pct(ref['differing_fraction'])} "
                        f"| {_num(ref['fused_vs_reference_sqnr_db'], 1)} "
                        f"| {'yes' if ref['kernels_agree'] else '**no**'} |")
    return rows if len(rows) > 2 else []


def _models_table(report: dict[str, Any]) -> list[str]:
    rows = ["| target | runtime | file | size | vs float | top-1 agreement | accuracy | drop (pt) | code SQNR (dB) "
            "| max output error | latency int8 median / p95 (ms) | float median (ms) | float/int8 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        lat = m.get("latency") or {}
        int8 = lat.get("int8") or {}
        flt = lat.get("float") or {}
        rows.append(
            f"| {m['target']} | {m['runtime']} | `{m['path']}` | {_kib(m['bytes'])} | {_pct(m['size_vs_float'])} "
            f"| {_pct(m['top1_agreement'])} | {_pct(m['accuracy_deployed'])} | {_num(m['accuracy_drop_points'], 2)} "
            f"| {_num(m['code_sqnr_db'], 2)} | {_num(m['max_output_error'], 4)} "
            f"| {_num(int8.get('median_ms'))} / {_num(int8.get('p95_ms'))} | {_num(flt.get('median_ms'))} "
            f"| {_num(lat.get('float_over_int8'), 2)} |")
    return rows


def _target_sections(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, compiled in report["targets"].items():
        if not compiled:
            continue
        lines += ["", f"### {name}", ""]
        if compiled["compiler"] == "vela":
            lines += [f"- Vela ({compiled['accelerator_config']}, {compiled['system_config']}, {compiled['memory_mode']}): "
                      f"**{compiled['npu_ops']} ops on the NPU, {compiled['cpu_ops']} on the CPU**",
                      f"- SRAM used: {compiled['sram_kib']:.2f} KiB; off-chip flash: {compiled['off_chip_flash_kib']:.2f} KiB",
                      f"- estimated inference time: {compiled['inference_time_ms']:.4f} ms "
                      f"({compiled['inferences_per_second']:.0f} inferences/s, {compiled['macs']} MACs)",
                      f"- command: `{compiled['command']}`"]
        else:
            lines += [f"- static Edge TPU check: **{compiled['tpu_ops']} ops on the Edge TPU, "
                      f"{compiled['cpu_ops']} on the CPU**",
                      f"- compile on a Linux x86-64 host: `{compiled['command']}`"]
        for op in compiled.get("cpu_operations", []):
            reason = f": {op['reason']}" if op.get("reason") else ""
            lines.append(f"  - CPU: {op['op']} `{op['tensor']}`{reason}")
    return lines


def reencode_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the report says of a re-encoded model's training: its method and quantization-aware epochs."""
    settings = record.get("settings") or {}
    return {"method": record.get("method"), "qat_epochs": int(settings.get("qat_epochs") or 0),
            "qat_margin": settings.get("qat_margin")}


def _rounding_lines(report: dict[str, Any]) -> list[str]:
    """An entropic code is rounded on the device: say whether it was trained for the int8 device half, and how
    to fix a failing agreement when it was not (docs/reencode.md, "Quantization-aware training")."""
    reencode = report.get("reencode") or {}
    if reencode.get("method") != "entropic":
        return []
    agreement = f"int8 agreement {_pct(report['worst_agreement'])}"
    if reencode["qat_epochs"]:
        return [f"entropic code: {reencode['qat_epochs']} quantization-aware epochs (latents kept "
                f"{reencode['qat_margin']} from rounding boundaries); {agreement}"]
    fix = "" if report["passed"] else ": re-encode with --qat-epochs 4 so fewer symbols flip at rounding boundaries"
    return [f"entropic code trained without quantization-aware epochs; {agreement}{fix}"]


def _accuracy_lines(report: dict[str, Any]) -> list[str]:
    """The float model's accuracy; for a re-encoded model, the original model's beside the re-encoded float one
    (the deployed accuracies are in the per-model table), so the re-encoder's cost is not hidden."""
    evaluation = report["eval"]
    original = evaluation.get("original")
    if not original:
        return [f"- float model accuracy: {_pct(evaluation.get('accuracy_float'))}"]
    if not original["found"]:
        return [f"- re-encoded float model accuracy: {_pct(evaluation.get('accuracy_float'))}; original model "
                f"`{original['model']}` not evaluated: {original['reason']}"]
    return [f"- accuracy: original model `{original['model']}` {_pct(original['accuracy'])}, re-encoded float model "
            f"{_pct(evaluation.get('accuracy_float'))} (top-1 agreement with the original "
            f"{_pct(original['float_agreement'])}), deployed: per model below"]


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    code = report["code"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"# edgekit convert report — {report['model']}",
        "",
        f"**{verdict}**: worst top-1 agreement with the float model {_pct(report['worst_agreement'])} "
        f"(required ≥ {_pct(report['min_agreement'])}).",
        "",
        f"- bundle id: `{report['bundle_id']}`",
        f"- split: `{report['split']}`; code `{code['name']}` shape {code['shape']} int8, "
        f"{code['bytes_per_sample']} bytes/sample raw, wire scale {code['wire_quant']['scale']:.6g} "
        f"zero-point {code['wire_quant']['zero_point']}",
        f"- evaluated on {report['eval']['samples']} samples from `{report['eval']['source']}`"
        + ("" if report["eval"]["held_out"] else " (the calibration data: no --eval given, not held out)"),
        *_accuracy_lines(report),
        *[f"- {line}" for line in _rounding_lines(report)],
        f"- measured on: {describe_cpu(report['cpu']) if report.get('cpu') else 'unknown CPU'}",
        f"- float device half: TFLite {_kib(report['float_sizes'].get('tflite'))}, "
        f"ONNX {_kib(report['float_sizes'].get('onnx'))}; server half {_kib(report['server']['bytes'])} "
        f"({report['server']['precision']})",
        "",
        "## Deployed path per device model",
        "",
        *_models_table(report),
    ]
    formats = format_lines(report)
    if formats:
        lines += ["", "## ONNX device format (chosen on speed)", "", *[f"- {line}" for line in formats]]
    kernels = _kernels_table(report)
    if kernels:
        lines += ["", "## ONNX Runtime int8 kernels: fused (deployed) vs unfused QDQ reference", "",
                  "The reference runs every op in float between "
                  "DequantizeLinear/QuantizeLinear and gives the same codes on every CPU; the fused kernels of x86 "
                  "CPUs without VNNI can saturate.", "", *kernels]
    targets = _target_sections(report)
    if targets:
        lines += ["", "## Target compilers", *targets]
    if report.get("wire"):
        lines += ["", "## Wire codecs (held-out codes)", "", *_wire_table(report["wire"]),
                  "", *_candidates_table(report["wire"])]
    if report.get("baseline"):
        lines += ["", "## Input baseline: the input as an image file", "", *_baseline_table(report["baseline"])]
    if report.get("debug_layers"):
        lines += ["", "## Per-layer quantization error (worst first)", "",
                  "ONNX rows: SQNR of each activation of the QDQ model run unfused against the float device half, "
                  "on the first 64 eval samples: compare it with the reference code SQNR above, not the fused one.",
                  ""]
        for runtime, rows in report["debug_layers"].items():
            for row in rows:
                metric = ", ".join(f"{k} {v}" for k, v in row.items() if k != "layer")
                lines.append(f"- {runtime}: `{row['layer']}` ({metric})")
    if report.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


def _wire_table(wire: dict[str, Any]) -> list[str]:
    """Per codec: frame bytes (header included) against the entropy bounds, and per-frame cost."""
    lines = [
        f"- {wire['heldout_samples']} held-out codes of {wire['raw_code_bytes']} B (float32 at the cut: "
        f"{wire['float32_bytes']} B); frame version {wire.get('frame_version', 1)}, header {wire['header_bytes']:.1f} B "
        "(mean)",
        f"- order-0 entropy {wire['order0_entropy_bytes_per_sample']:.1f} B/sample; cross-entropy under the "
        f"stored ans prior {wire['cross_entropy_bytes_per_sample']:.1f} B/sample (the bound `ans` can reach)",
        f"- default codec: **{_codec_label(wire['default_codec'], wire['codecs'][wire['default_codec']])}** "
        f"({wire['default_reason']})",
        "",
        "| codec | mean frame B | p95 frame B | mean payload B | vs raw int8 code | encode µs | decode µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stats in wire["codecs"].items():
        lines.append(
            f"| {name} | {stats['mean_frame_bytes']:.1f} | {stats['p95_frame_bytes']:.0f} | "
            f"{stats['mean_payload_bytes']:.1f} | {stats['mean_frame_bytes'] / wire['raw_code_bytes']:.3f} | "
            f"{stats['encode_us']:.1f} | {stats['decode_us']:.1f} |"
        )
    levels = wire.get("levels", [])
    return lines + (["", "Rate levels of the nested code (the default codec; the frames the agent sends at each "
                     "level, docs/wire-format.md, Levels):", ""] if levels else []) + [
        f"- level {row['level']} ({row['channels']} channels): {_level_figures(row)}" for row in levels]


def _candidates_table(wire: dict[str, Any]) -> list[str]:
    """Every candidate with its estimated device time and why it was chosen or not."""
    device = wire["device"]
    lines = [f"Codec choice: encode time measured here (median per frame over {wire['measured_samples']} codes), "
             f"scaled to {device['device']} (CPU speed ×{device['relative_cpu_speed']:g} of an x86-64 core, an "
             f"estimate); budget {device['budget_ms']:g} ms per frame (`--encode-budget-ms`).",
             "",
             "| candidate | mean frame B | encode µs here | est. device ms | verdict |",
             "|---|---|---|---|---|"]
    for c in wire["candidates"]:
        lines.append(f"| {_codec_label(c['codec'], c)} | {c['mean_frame_bytes']:.1f} | {c['encode_us']:.1f} "
                     f"| {c['device_encode_ms']:.3f} | {c['status']}: {c['why']} |")
    return lines


def _baseline_table(baseline: dict[str, Any]) -> list[str]:
    """The input's bytes as JPEG/WebP/PNG against the frame's, or why there is no baseline."""
    if not baseline["available"]:
        return [f"Unavailable: {baseline['reason']}."]
    shape = "×".join(map(str, baseline["image_shape"]))
    lines = [f"{baseline['images']} inputs as {shape} uint8 images ({baseline['source']}; raw pixels "
             f"{baseline['raw_pixel_bytes']} B).", "",
             "| sent | mean B | p95 B |", "|---|---|---|"]
    for name, f in baseline["formats"].items():
        lines.append(f"| input as {LABELS[name]} | {f['mean_bytes']:.1f} | {f['p95_bytes']:.0f} |")
    frame = baseline.get("frame")
    if frame:
        lines += [f"| **frame** ({frame['codec']}, header included) | {frame['mean_frame_bytes']:.1f} | |",
                  f"| code as int8 (no header) | {frame['int8_code_bytes']} | |",
                  f"| code as float32 | {frame['float32_code_bytes']} | |"]
    if baseline.get("warning"):
        lines += ["", f"**Warning**: {baseline['warning']}."]
    return lines
