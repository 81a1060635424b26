"""Feature codecs behind one small interface, their registry table, and convert-time fitting.

``raw`` (the int8 code as is), ``zstd`` (optionally with a trained dictionary) and ``ans`` (rANS under a
static prior fitted on calibration codes). The registry (``registry.py``) is the only place mapping wire id,
name and class; ``fit_codecs`` writes the artifacts and returns ``manifest["wire"]`` and the report.

The names below are imported on first use (PEP 562), so importing ``edgekit.wire.codecs.registry`` on a device
loads no codec module and no codec dependency until the codec it runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Codec": "base",
    "RawCodec": "raw",
    "ZstdCodec": "zstd",
    "AnsCodec": "ans",
    "AnsPrior": "ans",
    "CodecEntry": "registry",
    "CODECS": "registry",
    "BY_ID": "registry",
    "BY_NAME": "registry",
    "build_codec": "registry",
    "fit_codecs": "fit",
    "EncodeBudget": "fit",
    "limits_for": "fit",
    "order0_entropy_bits": "fit",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
