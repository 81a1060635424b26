"""What ``edgekit convert`` takes from a re-encoded model (numpy only at import; a small hook in convert).

    read_metadata(model) ──► manifest["model"]["reencode"]       (method, settings, teacher sha256, prior)
    entropic             ──► wire quantization fixed at scale 1, zero point 0 (the trained integers)
                         ──► its custom layers registered, so Keras can load the model
                         ──► ans_prior(wire_quant): the learned prior as the bundle's ans prior
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .metadata import read_metadata
from .prior import wire_pmf

__all__ = ["ReencoderHints", "hints_for"]


@dataclass
class ReencoderHints:
    """The record of the re-encoder in a model convert is about to cut."""

    metadata: dict[str, Any]

    @property
    def wire_quant(self) -> tuple[float, int] | None:
        """The entropic code is integer-valued in -128..127: the wire carries those integers as they are."""
        return (1.0, 0) if self.metadata.get("prior") else None

    @property
    def levels(self) -> list[int] | None:
        """A nested code's rate levels (channel counts, nested.py): the bundle's ``wire.levels``."""
        return self.metadata.get("settings", {}).get("levels") or None

    def ans_prior(self, wire_quant: tuple[float, int]) -> Any:
        """The learned prior as an ``AnsPrior`` over the wire's int8 levels, or None (no learned prior)."""
        if not self.metadata.get("prior"):
            return None
        from edgekit.wire.codecs.fit import prior_from_pmf

        return prior_from_pmf(*wire_pmf(self.metadata["prior"], wire_quant))


def hints_for(model: str | Path | None) -> ReencoderHints | None:
    """The hints for ``model`` (None when it was not made by ``edgekit reencode``)."""
    metadata = read_metadata(model) if model is not None else None
    if metadata is None:
        return None
    if metadata.get("prior") and Path(model).suffix == ".keras":
        from . import layers  # noqa: F401 - registers IntegerCode so keras.models.load_model finds it
    return ReencoderHints(metadata)
