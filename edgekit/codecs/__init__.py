"""Feature codecs behind one small interface, their registry table, and convert-time fitting.

``raw`` (the int8 code as is), ``zstd`` (optionally with a trained dictionary) and ``ans`` (rANS under a
static prior fitted on calibration codes). The registry (``registry.py``) is the only place mapping wire id,
name and class; ``fit_codecs`` writes the artifacts and returns ``manifest["wire"]`` and the report.
"""

from edgekit.codecs.ans import AnsCodec, AnsPrior
from edgekit.codecs.base import Codec
from edgekit.codecs.fit import EncodeBudget, fit_codecs, limits_for, order0_entropy_bits
from edgekit.codecs.raw import RawCodec
from edgekit.codecs.registry import BY_ID, BY_NAME, CODECS, CodecEntry, build_codec
from edgekit.codecs.zstd import ZstdCodec

__all__ = [
    "Codec",
    "RawCodec",
    "ZstdCodec",
    "AnsCodec",
    "AnsPrior",
    "CodecEntry",
    "CODECS",
    "BY_ID",
    "BY_NAME",
    "build_codec",
    "fit_codecs",
    "EncodeBudget",
    "limits_for",
    "order0_entropy_bits",
]
