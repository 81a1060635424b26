"""Convert-time fitting of the feature codecs, and the numbers that justify the choice.

``fit_codecs`` learns everything a codec needs from calibration codes, judges on held-out codes, and writes
the artifacts under ``<bundle>/wire``. The choice weighs bytes *and* the device's time: every candidate's
encode time per frame is measured on this host, scaled by the device's relative CPU speed (from the target
profile), and a candidate over the per-frame budget is rejected; the smallest of the rest wins::

    calib codes (sample) ─► zstd dictionary (kept only if it helps on held-out) ─► wire/zstd.dict
    calib codes (sample) ─► ans prior, per tensor and per channel ─► the smaller on held-out ─► wire/ans_prior.json
    held-out codes (sample) ─► candidates raw, zstd levels 1/3/9/19, ans, as full frames: mean/p95 bytes,
                               median encode/decode µs here, bit-exact round trip, est. device encode ms
        ─► zstd level = the smallest zstd within budget; default codec = the smallest within budget
        ─► (wire_section for manifest["wire"], wire_report for report.json: chosen, rejected and why)

Samples bound the cost on big codes (zstd level 19 takes 20-150 ms per 75 KB frame here): dictionary and
prior fitting and every measurement use at most ``_SAMPLE_BYTES`` of codes (and at most ``_MAX_SAMPLES``
codes), and a candidate stops being measured after ``_MEASURE_SECONDS`` (once it has ``_MIN_SAMPLES`` frames).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from edgekit.wire.codecs.ans import AnsCodec, AnsPrior
from edgekit.wire.codecs.registry import entry
from edgekit.wire.codecs.zstd import DEFAULT_LEVEL, ZstdCodec
from edgekit.errors import UsageError
from edgekit.wire.frame_v1 import FRAME_VERSIONS

__all__ = ["fit_codecs", "choose_codecs", "EncodeBudget", "limits_for", "order0_entropy_bits", "ZSTD_LEVELS",
           "DEFAULT_ENCODE_BUDGET_MS", "prior_from_pmf"]

log = logging.getLogger(__name__)

PRIOR_FILE = "ans_prior.json"
DICT_FILE = "zstd.dict"
ZSTD_LEVELS = (1, 3, 9, 19)
DEFAULT_ENCODE_BUDGET_MS = 2.0
SIZE_TIE = 0.01
_SAMPLE_BYTES = 4 << 20
_MAX_SAMPLES = 1000
_MIN_SAMPLES = 16
_MEASURE_SECONDS = 2.0
_PLACEHOLDER_ID = "00" * 32


@dataclass(frozen=True)
class EncodeBudget:
    """Who encodes the frames: a CPU ``relative_cpu_speed`` times a modern x86-64 core, ``budget_ms`` per frame."""

    relative_cpu_speed: float = 1.0
    budget_ms: float = DEFAULT_ENCODE_BUDGET_MS
    device: str = "this host"

    def __post_init__(self) -> None:
        if not self.relative_cpu_speed > 0 or not self.budget_ms > 0:
            raise UsageError(f"encode budget {self.budget_ms} ms at relative CPU speed {self.relative_cpu_speed}",
                             "both must be positive (e.g. --encode-budget-ms 2)")

    def device_ms(self, host_us: float) -> float:
        """Estimated time on the device for ``host_us`` microseconds measured on this host."""
        return host_us / 1000 / self.relative_cpu_speed


def limits_for(code_shape: tuple[int, ...]) -> dict[str, int]:
    """Decoder limits: the code's elements, and the worst-case payload (ans: 32 bits per escaped symbol)."""
    elements = math.prod(code_shape)
    return {"max_code_elements": elements, "max_payload_bytes": 4 * elements + 64}


def order0_entropy_bits(codes: np.ndarray) -> float:
    """Empirical order-0 entropy of the values of ``codes``, in bits per element."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel() + 128, minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def fit_codecs(calib_codes: np.ndarray, heldout_codes: np.ndarray, out_dir: Path | str, codec: str | None = None,
               budget: EncodeBudget | None = None,
               progress: Callable[[str], None] | None = None, trained_prior: AnsPrior | None = None,
               levels: list[int] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit all codecs on ``calib_codes``, judge them on ``heldout_codes`` (int8, ``(N, *code_shape)``).

    ``out_dir`` is ``<bundle>/wire``; artifact paths in the returned section are relative to the bundle.
    ``codec`` names the default codec; ``None`` picks the smallest mean frame within ``budget`` (default: this
    host, 2 ms). ``progress`` gets a line per fitted codec (default: INFO log lines).
    ``trained_prior`` (an entropic re-encoder's learned prior) becomes the ans prior instead of a fitted one.
    ``levels`` (a nested re-encoder's channel counts) go into the section as ``wire.levels``.
    """
    calib, heldout = _check_codes(calib_codes, heldout_codes)
    if codec is not None:
        try:
            entry(codec)
        except ValueError as err:
            raise UsageError(str(err), "use raw, zstd or ans") from None
    budget = budget or EncodeBudget()
    say = progress or log.info
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_sample, sample = _sample(calib), _sample(heldout)
    dictionary, zstd_report = _fit_zstd_dictionary(calib_sample, sample, out_dir)
    ans_params, ans_report, prior = _fit_ans(calib_sample, sample, out_dir, trained_prior)
    say(f"codecs: dictionary and ans prior fitted ({time.perf_counter() - started:.1f} s)")
    base = {"frame_versions": list(FRAME_VERSIONS), "default_codec": "raw", "codecs": {"raw": {}, "ans": ans_params},
            "limits": limits_for(calib.shape[1:]), **({"levels": list(levels)} if levels else {})}
    candidates = [("raw", None, {}), *[("zstd", lv, {"level": lv, "dictionary": dictionary}) for lv in ZSTD_LEVELS],
                  ("ans", None, ans_params)]
    rows = [_candidate(name, level, params, base, out_dir.parent, sample, budget, say, started)
            for name, level, params in candidates]
    level, default, reason = choose_codecs(rows, budget, codec)
    section = {**base, "default_codec": default,
               "codecs": {"raw": {}, "zstd": {"level": level, "dictionary": dictionary}, "ans": ans_params}}
    stats = {r["codec"]: _stats(r) for r in rows if r["codec"] != "zstd" or r["level"] == level}
    report = _report(calib, heldout, sample, prior, stats, default, reason)
    report["device"] = asdict(budget)
    report["candidates"] = rows
    report["zstd"], report["ans"] = {"level": level, **zstd_report}, ans_report
    report["ans"]["payload_vs_bound"] = stats["ans"]["mean_payload_bytes"] / max(
        report["cross_entropy_bytes_per_sample"], 1e-9)
    return section, report


def _candidate(name: str, level: int | None, params: dict, base: dict, bundle_dir: Path, sample: np.ndarray,
               budget: EncodeBudget, say: Callable[[str], None], started: float) -> dict[str, Any]:
    """One candidate measured as full frames, with its estimated device time, and a progress line."""
    section = {**base, "codecs": {**base["codecs"], name: params}}
    row = {"codec": name, "level": level, **_measure(name, section, bundle_dir, sample)}
    row["device_encode_ms"] = budget.device_ms(row["encode_us"])
    say(f"codec {_label(row)}: {row['mean_frame_bytes']:.0f} B/frame, encode {row['encode_us']:.0f} µs here, "
        f"est. {row['device_encode_ms']:.3f} ms on {budget.device} ({time.perf_counter() - started:.1f} s)")
    return row


def choose_codecs(rows: list[dict[str, Any]], budget: EncodeBudget, named: str | None = None
                  ) -> tuple[int, str, str]:
    """The zstd level and the default codec from measured ``rows``; marks each row chosen/kept/rejected and why.

    A row is within budget when its estimated device encode time is at most ``budget.budget_ms``. The zstd
    level is the smallest zstd within budget (the fastest zstd when none is); the default is the named codec,
    or the smallest of raw / that zstd / ans within budget (the fastest when none is). Sizes within 1% of the
    smallest are a tie, which the faster candidate wins.
    """
    for r in rows:
        r["within_budget"] = r["device_encode_ms"] <= budget.budget_ms
    zstd = _best([r for r in rows if r["codec"] == "zstd"])
    families = [r for r in rows if r["codec"] != "zstd"] + [zstd]
    if named is not None:
        best = next(r for r in families if r["codec"] == named)
        reason = "named" + ("" if best["within_budget"] else
                            f", although its est. {best['device_encode_ms']:.2f} ms exceeds the budget")
    else:
        best = _best(families)
        reason = (f"smallest mean frame on held-out codes within the {budget.budget_ms:g} ms encode budget on "
                  f"{budget.device}" if best["within_budget"] else
                  f"no codec fits the {budget.budget_ms:g} ms encode budget on {budget.device}: the fastest")
    for r in rows:
        r["status"], r["why"] = _verdict(r, best, zstd, budget)
    return zstd["level"], best["codec"], reason


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest row within budget, the fastest when none is.

    Sizes within ``SIZE_TIE`` of the smallest count as a tie that the faster row wins: 0.1% fewer bytes is
    not worth 3x the device's time.
    """
    within = [r for r in rows if r["within_budget"]]
    if not within:
        return min(rows, key=lambda r: r["device_encode_ms"])
    smallest = min(r["mean_frame_bytes"] for r in within)
    tied = [r for r in within if r["mean_frame_bytes"] <= smallest * (1 + SIZE_TIE)]
    return min(tied, key=lambda r: (r["device_encode_ms"], r["codec"]))


def _verdict(row: dict[str, Any], best: dict[str, Any], zstd: dict[str, Any], budget: EncodeBudget
             ) -> tuple[str, str]:
    if row is best:
        return "chosen", "the default codec"
    if row is zstd:
        return "kept", ("the bundle's zstd level: the smallest (±1%, then fastest) zstd within budget"
                        if row["within_budget"] else
                        "the bundle's zstd level: no zstd level fits the budget, the fastest")
    if not row["within_budget"]:
        return "rejected", (f"est. {row['device_encode_ms']:.3f} ms on {budget.device} > "
                            f"{budget.budget_ms:g} ms budget")
    return "rejected", f"{row['mean_frame_bytes']:.1f} B > {best['mean_frame_bytes']:.1f} B of {_label(best)}"


def _label(row: dict[str, Any]) -> str:
    return row["codec"] if row["level"] is None else f"{row['codec']}-{row['level']}"


def _stats(row: dict[str, Any]) -> dict[str, Any]:
    """A candidate's measurement without its verdict (the per-codec table of the report)."""
    keep = ("mean_frame_bytes", "p95_frame_bytes", "mean_payload_bytes", "frames", "encode_us", "decode_us",
            "device_encode_ms", "level")
    return {k: row[k] for k in keep if k != "level" or row[k] is not None}


def _check_codes(calib: np.ndarray, heldout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both int8, at least one sample each, same code shape."""
    calib, heldout = np.asarray(calib), np.asarray(heldout)
    for name, arr in (("calibration", calib), ("held-out", heldout)):
        if arr.dtype != np.int8 or arr.ndim < 2 or len(arr) == 0:
            raise UsageError(f"{name} codes must be a non-empty int8 array (N, *code_shape), got "
                             f"{arr.dtype} {arr.shape}")
    if calib.shape[1:] != heldout.shape[1:]:
        raise UsageError(f"calibration codes {calib.shape[1:]} and held-out codes {heldout.shape[1:]} differ")
    return np.ascontiguousarray(calib), np.ascontiguousarray(heldout)


def _sample(codes: np.ndarray) -> np.ndarray:
    """Evenly spaced codes totalling at most ``_SAMPLE_BYTES`` (at least 16, at most 1,000 codes)."""
    count = int(np.clip(_SAMPLE_BYTES // codes[0].nbytes, _MIN_SAMPLES, _MAX_SAMPLES))
    if len(codes) <= count:
        return codes
    return codes[np.linspace(0, len(codes) - 1, count).astype(np.int64)]


def _fit_zstd_dictionary(calib: np.ndarray, heldout: np.ndarray, out_dir: Path) -> tuple[str | None, dict]:
    """Train a dictionary on calibration codes; keep it only if held-out frames get smaller (at level 3)."""
    plain_bytes = _mean_payload(ZstdCodec(DEFAULT_LEVEL), heldout)
    report: dict[str, Any] = {"dictionary_judged_at_level": DEFAULT_LEVEL,
                              "mean_payload_bytes_without_dictionary": plain_bytes}
    samples = [c.tobytes() for c in calib]
    size = int(min(8192, max(512, sum(map(len, samples)) // 10)))
    try:
        dictionary = zstandard.train_dictionary(size, samples).as_bytes()
    except zstandard.ZstdError as err:
        report.update(dictionary=False, reason=f"dictionary training failed ({err}): too few samples")
        return None, report
    with_dict = _mean_payload(ZstdCodec(DEFAULT_LEVEL, dictionary), heldout)
    report["mean_payload_bytes_with_dictionary"] = with_dict
    if with_dict >= plain_bytes:
        report.update(dictionary=False, reason="the trained dictionary did not help on held-out codes")
        return None, report
    (out_dir / DICT_FILE).write_bytes(dictionary)
    report.update(dictionary=True, dictionary_bytes=len(dictionary), reason="smaller on held-out codes")
    return f"{out_dir.name}/{DICT_FILE}", report


def _fit_ans(calib: np.ndarray, heldout: np.ndarray, out_dir: Path,
             trained: AnsPrior | None = None) -> tuple[dict, dict, AnsPrior]:
    """Fit a per-tensor and a per-channel prior; store the one that codes held-out codes smaller (or the
    trained prior when given: the fitted ones are then measured for the report only)."""
    candidates = {mode: AnsPrior.fit(calib, per_channel=mode == "per_channel")
                  for mode in ("per_tensor", "per_channel")}
    if trained is not None:
        candidates["trained"] = trained
    sizes = {mode: _mean_payload(AnsCodec(p), heldout) for mode, p in candidates.items()}
    mode = "trained" if trained is not None else min(sizes, key=lambda m: (sizes[m], m != "per_tensor"))
    prior = candidates[mode]
    prior.save(out_dir / PRIOR_FILE)
    report = {"mode": mode, "mean_payload_bytes": sizes, "alphabet": [prior.lo, prior.hi],
              "escapes_heldout": int(np.count_nonzero((heldout < prior.lo) | (heldout > prior.hi)))}
    params = {"prior": f"{out_dir.name}/{PRIOR_FILE}", "mode": "per_channel" if prior.per_channel else "per_tensor"}
    return {**params, "source": "trained"} if trained is not None else params, report, prior


def _mean_payload(codec: Any, codes: np.ndarray) -> float:
    """Mean payload bytes of ``codec`` over ``codes``."""
    return float(np.mean([len(codec.encode(c)) for c in codes]))


def _measure(name: str, section: dict, bundle_dir: Path, codes: np.ndarray) -> dict[str, float]:
    """Full frames of codec ``name``: sizes, median per-frame times (robust to a busy host), bit-exact round trip.

    Frames are the newest version (what the agent sends: 17-20 B of version-2 header, seq growing from 0), so
    the report prices the bytes the wire carries.

    Stops after ``_MEASURE_SECONDS`` once ``_MIN_SAMPLES`` frames are in: a slow candidate is still measured,
    on fewer frames (``frames`` says how many).
    """
    from edgekit.wire.decoder import WireDecoder
    from edgekit.wire.encoder import WireEncoder
    from edgekit.wire.spec import WireSpec  # wire builds on codecs: import late

    from edgekit.wire.frame_v2 import split_v2

    shape, quant = codes.shape[1:], (1.0, 0)  # the bundle's quantization: no per-frame scale in the header
    enc = WireEncoder(_PLACEHOLDER_ID, shape, section, bundle_dir, codec=name, wire_quant=quant,
                      frame_version=max(FRAME_VERSIONS))
    dec = WireDecoder([WireSpec(_PLACEHOLDER_ID, shape, section, bundle_dir, quant)])
    enc.encode(codes[0], 1.0, 0, seq=0, boot_id=1, timestamp_ns=0)  # warm-up: first-call allocations
    frames, payloads, encode_s, decode_s = [], [], [], []
    deadline = time.perf_counter() + _MEASURE_SECONDS
    for i, code in enumerate(codes):
        if i >= _MIN_SAMPLES and time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        frame = enc.encode(code, 1.0, 0, seq=i, boot_id=1, timestamp_ns=0)
        t1 = time.perf_counter()
        decoded = dec.decode(frame).code
        t2 = time.perf_counter()
        if not np.array_equal(decoded, code):
            raise RuntimeError(f"codec {name} does not round-trip the held-out codes bit-exactly")
        frames.append(len(frame))
        payloads.append(split_v2(frame).payload_len)
        encode_s.append(t1 - t0)
        decode_s.append(t2 - t1)
    sizes = np.array(frames, dtype=np.float64)
    return {"mean_frame_bytes": float(sizes.mean()), "p95_frame_bytes": float(np.percentile(sizes, 95)),
            "mean_payload_bytes": float(np.mean(payloads)), "frames": len(frames),
            "encode_us": float(np.median(encode_s)) * 1e6, "decode_us": float(np.median(decode_s)) * 1e6}


def _report(calib: np.ndarray, heldout: np.ndarray, sample: np.ndarray, prior: AnsPrior, stats: dict, default: str,
            reason: str) -> dict[str, Any]:
    """The ``wire`` part of report.json (sizes per sample, header included where it says frame)."""
    elements = math.prod(heldout.shape[1:])
    h0 = order0_entropy_bits(sample)
    return {
        "code_shape": list(heldout.shape[1:]), "calib_samples": len(calib), "heldout_samples": len(heldout),
        "measured_samples": len(sample),
        "header_bytes": stats[default]["mean_frame_bytes"] - stats[default]["mean_payload_bytes"],
        "frame_version": max(FRAME_VERSIONS), "raw_code_bytes": elements, "float32_bytes": 4 * elements,
        "order0_entropy_bits_per_element": h0, "order0_entropy_bytes_per_sample": h0 * elements / 8,
        "cross_entropy_bytes_per_sample": prior.cross_entropy_bits(sample) / 8 / len(sample),
        "default_codec": default,
        "default_reason": reason,
        "codecs": stats,
    }


def prior_from_pmf(lo: int, pmf: np.ndarray) -> AnsPrior:
    """A per-channel ans prior from probabilities: ``pmf[c, i]`` of value ``lo + i``, the last column the escape."""
    pmf = np.asarray(pmf, np.float64)
    return AnsPrior.from_weights(lo, lo + pmf.shape[1] - 2, True, pmf)
