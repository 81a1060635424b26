"""The text branch of ``edgekit reencode``: its options checked and passed to :func:`.text_pipeline.reencode_text`.

commands.py routes here when MODEL is a sentence-transformers folder; the image options (--split, --channels,
...) have no meaning for it and are refused by name.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

from edgekit.errors import UsageError

__all__ = ["run_text", "TEXT_EXAMPLE", "parse_prefixes"]

TEXT_EXAMPLE = "edgekit reencode MODEL_DIR --method distill --bytes 16 --out work/minilm-16"
_IMAGE_ONLY = ("split", "channels", "target_agreement", "kd_epochs", "train_tail", "beta", "downsample", "resume",
               "image_size", "scale", "mean", "std", "layout")


def parse_prefixes(text: str | None) -> list[int]:
    """``8,16,32`` → [8, 16, 32]."""
    if not text:
        return []
    try:
        return sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise UsageError(f"--prefixes {text!r} is not a comma-separated list of byte counts",
                         "pass e.g. --prefixes 8,12,16") from None


def run_text(model: str, method: str, output: str | None, payload_bytes: int | None, options: dict[str, Any],
             echo: Callable[[str], None], as_json: bool) -> None:
    """Fit and write a text re-encoder; one summary line (or the record as JSON with ``as_json``)."""
    from .text_pipeline import DEFAULT_SETTINGS, TEXT_METHODS, reencode_text

    given = [name for name in _IMAGE_ONLY if options.get(name) not in (None, False, 0, 0.0)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags} apply to image models, not to the text model {model}",
                         f"drop them; e.g. {TEXT_EXAMPLE}")
    if method not in TEXT_METHODS:
        raise UsageError(f"--method {method} is for image models", f"choose one of {', '.join(TEXT_METHODS)}")
    if payload_bytes is None or output is None:
        raise UsageError("a text re-encoder needs --bytes N and --out OUT_DIR", f"e.g. {TEXT_EXAMPLE}")
    prefixes = parse_prefixes(options.get("prefixes"))
    if prefixes and method != "nested":
        raise UsageError("--prefixes is for --method nested", "use --method nested --prefixes 8,16,32")
    trained = {key: options[key] for key in ("hidden", "epochs", "batch_size", "learning_rate", "seed")
               if options.get(key) is not None}
    settings = replace(DEFAULT_SETTINGS, prefixes=prefixes, **trained)
    result = reencode_text(model, method, payload_bytes, output, bits=options.get("bits"), settings=settings,
                           data=options.get("data"), cache=options.get("cache"), max_pairs=options.get("max_samples"),
                           progress=options.get("progress", False), echo=echo, force=options.get("force", False))
    if as_json:
        print(json.dumps(result.record, sort_keys=True))
