"""Convert-time fitting of the feature codecs, and the numbers that justify the choice.

``fit_codecs`` learns everything a codec needs from calibration codes, judges on held-out codes, and writes
the artifacts under ``<bundle>/wire``::

    calib codes ──► zstd dictionary (kept only if it helps on held-out) ──► wire/zstd.dict
                └─► ans prior, per tensor and per channel ──► the smaller on held-out ──► wire/ans_prior.json
    held-out codes ─► every codec, full frames: mean/p95 bytes, encode/decode µs, bit-exact round trip
                   ─► order-0 entropy, cross-entropy under the stored prior (the bound ``ans`` approaches)
    ──► (wire_section for manifest["wire"], wire_report for report.json)
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from edgekit.codecs.ans import AnsCodec, AnsPrior, _quantize
from edgekit.codecs.registry import entry
from edgekit.codecs.zstd import DEFAULT_LEVEL, ZstdCodec
from edgekit.errors import UsageError
from edgekit.frame import HEADER_SIZE, VERSION

__all__ = ["fit_codecs", "limits_for", "order0_entropy_bits", "prior_from_pmf"]

PRIOR_FILE = "ans_prior.json"
DICT_FILE = "zstd.dict"
_TIMING_FRAMES = 500
_PLACEHOLDER_ID = "00" * 32


def limits_for(code_shape: tuple[int, ...]) -> dict[str, int]:
    """Decoder limits: the code's elements, and the worst-case payload (ans: 32 bits per escaped symbol)."""
    elements = math.prod(code_shape)
    return {"max_code_elements": elements, "max_payload_bytes": 4 * elements + 64}


def order0_entropy_bits(codes: np.ndarray) -> float:
    """Empirical order-0 entropy of the values of ``codes``, in bits per element."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel() + 128, minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def fit_codecs(calib_codes: np.ndarray, heldout_codes: np.ndarray, out_dir: Path | str,
               codec: str | None = None, zstd_level: int = DEFAULT_LEVEL,
               trained_prior: AnsPrior | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit all codecs on ``calib_codes``, judge them on ``heldout_codes`` (int8, ``(N, *code_shape)``).

    ``out_dir`` is ``<bundle>/wire``; artifact paths in the returned section are relative to the bundle.
    ``codec`` names the default codec; ``None`` picks the smallest mean frame on held-out codes.
    ``trained_prior`` (an entropic re-encoder's learned prior) becomes the ans prior instead of a fitted one.
    """
    calib, heldout = _check_codes(calib_codes, heldout_codes)
    if codec is not None:
        try:
            entry(codec)
        except ValueError as err:
            raise UsageError(str(err), "use raw, zstd or ans") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = calib.shape[1:]
    zstd_params, zstd_report = _fit_zstd(calib, heldout, out_dir, zstd_level)
    ans_params, ans_report, prior = _fit_ans(calib, heldout, out_dir, trained_prior)
    section: dict[str, Any] = {"frame_version": VERSION, "default_codec": "raw",
                               "codecs": {"raw": {}, "zstd": zstd_params, "ans": ans_params},
                               "limits": limits_for(shape)}
    stats = {name: _measure(name, section, out_dir.parent, heldout) for name in section["codecs"]}
    section["default_codec"] = codec or min(stats, key=lambda n: (stats[n]["mean_frame_bytes"], n))
    report = _report(calib, heldout, prior, stats, section["default_codec"], codec is not None)
    report["zstd"], report["ans"] = zstd_report, ans_report
    report["ans"]["payload_vs_bound"] = stats["ans"]["mean_payload_bytes"] / max(
        report["cross_entropy_bytes_per_sample"], 1e-9)
    return section, report


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


def _fit_zstd(calib: np.ndarray, heldout: np.ndarray, out_dir: Path, level: int) -> tuple[dict, dict]:
    """Train a dictionary on calibration codes; keep it only if held-out frames get smaller."""
    plain = ZstdCodec(level)
    plain_bytes = _mean_payload(plain, heldout)
    report: dict[str, Any] = {"level": level, "mean_payload_bytes_without_dictionary": plain_bytes}
    samples = [c.tobytes() for c in calib]
    size = int(min(8192, max(512, sum(map(len, samples)) // 10)))
    try:
        dictionary = zstandard.train_dictionary(size, samples).as_bytes()
    except zstandard.ZstdError as err:
        report.update(dictionary=False, reason=f"dictionary training failed ({err}): too few samples")
        return {"level": level, "dictionary": None}, report
    with_dict = _mean_payload(ZstdCodec(level, dictionary), heldout)
    report["mean_payload_bytes_with_dictionary"] = with_dict
    if with_dict >= plain_bytes:
        report.update(dictionary=False, reason="the trained dictionary did not help on held-out codes")
        return {"level": level, "dictionary": None}, report
    (out_dir / DICT_FILE).write_bytes(dictionary)
    report.update(dictionary=True, dictionary_bytes=len(dictionary), reason="smaller on held-out codes")
    return {"level": level, "dictionary": f"{out_dir.name}/{DICT_FILE}"}, report


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


def prior_from_pmf(lo: int, pmf: np.ndarray) -> AnsPrior:
    """A per-channel ans prior from probabilities: ``pmf[c, i]`` of value ``lo + i``, the last column the escape."""
    pmf = np.asarray(pmf, np.float64)
    return AnsPrior(lo=lo, hi=lo + pmf.shape[1] - 2, per_channel=True, freqs=np.stack([_quantize(p) for p in pmf]))


def _mean_payload(codec: Any, codes: np.ndarray) -> float:
    """Mean payload bytes of ``codec`` over ``codes``."""
    return float(np.mean([len(codec.encode(c)) for c in codes]))


def _measure(name: str, section: dict, bundle_dir: Path, heldout: np.ndarray) -> dict[str, float]:
    """Full frames of codec ``name`` on held-out codes: sizes, per-frame times, bit-exact round trip."""
    from edgekit.wire import WireDecoder, WireEncoder, WireSpec  # wire builds on codecs: import late

    shape = heldout.shape[1:]
    enc = WireEncoder(_PLACEHOLDER_ID, shape, section, bundle_dir, codec=name)
    dec = WireDecoder([WireSpec(_PLACEHOLDER_ID, shape, section, bundle_dir)])
    t0 = time.perf_counter()
    frames = [enc.encode(c, 1.0, 0, seq=i, boot_id=1, timestamp_ns=0) for i, c in enumerate(heldout)]
    t1 = time.perf_counter()
    timed = frames[:_TIMING_FRAMES]
    decoded = [dec.decode(f).code for f in timed]
    t2 = time.perf_counter()
    if not all(np.array_equal(d, c) for d, c in zip(decoded, heldout[: len(decoded)], strict=True)):
        raise RuntimeError(f"codec {name} does not round-trip the held-out codes bit-exactly")
    sizes = np.array([len(f) for f in frames], dtype=np.float64)
    return {"mean_frame_bytes": float(sizes.mean()), "p95_frame_bytes": float(np.percentile(sizes, 95)),
            "mean_payload_bytes": float(sizes.mean() - HEADER_SIZE),
            "encode_us": (t1 - t0) / len(frames) * 1e6, "decode_us": (t2 - t1) / len(timed) * 1e6}


def _report(calib: np.ndarray, heldout: np.ndarray, prior: AnsPrior, stats: dict, default: str,
            named: bool) -> dict[str, Any]:
    """The ``wire`` part of report.json (sizes per sample, header included where it says frame)."""
    elements = math.prod(heldout.shape[1:])
    h0 = order0_entropy_bits(heldout)
    return {
        "code_shape": list(heldout.shape[1:]), "calib_samples": len(calib), "heldout_samples": len(heldout),
        "header_bytes": HEADER_SIZE, "raw_code_bytes": elements, "float32_bytes": 4 * elements,
        "order0_entropy_bits_per_element": h0, "order0_entropy_bytes_per_sample": h0 * elements / 8,
        "cross_entropy_bytes_per_sample": prior.cross_entropy_bits(heldout) / 8 / len(heldout),
        "default_codec": default,
        "default_reason": "named" if named else "smallest mean frame on held-out codes",
        "codecs": stats,
    }
