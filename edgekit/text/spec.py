"""The ``text`` section of a text bundle's manifest, typed (docs/bundle.md, Text bundles).

Its presence is what makes a bundle a text bundle; image bundles have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.errors import BundleError

__all__ = ["TEXT_VERSION", "TextSpec"]

TEXT_VERSION = 1


@dataclass(frozen=True)
class TextSpec:
    """How text becomes the device model's input, and what the server embeds documents with.

    ``float_encoder`` is the bundle-relative path of the float model (token ids -> embedding) the server uses
    for its documents; ``reencoder`` the re-encoder's record (None: the code is the int8 embedding itself).
    """

    tokenizer: str
    max_length: int
    lowercase: bool
    pad_id: int
    pooling: str
    normalize: bool
    dims: int
    float_encoder: str
    reencoder: dict[str, Any] | None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> TextSpec | None:
        """The text section of ``manifest``; None for an image bundle, BundleError for an unknown version."""
        text = manifest.get("text")
        if text is None:
            return None
        if text.get("version") != TEXT_VERSION:
            raise BundleError(f"text bundle section version {text.get('version')} is not supported (this edgekit "
                              f"reads version {TEXT_VERSION})", "upgrade edgekit or re-convert the model")
        return cls(text["tokenizer"], int(text["max_length"]), bool(text["lowercase"]), int(text["pad_id"]),
                   text["pooling"], bool(text["normalize"]), int(text["dims"]), text["float_encoder"]["path"],
                   text.get("reencoder"))

    @classmethod
    def from_bundle(cls, bundle: Any) -> TextSpec | None:
        """The text section of a loaded :class:`~edgekit.bundle.manifest.Bundle` (None: an image bundle)."""
        return cls.from_manifest(bundle.manifest)
