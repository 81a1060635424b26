"""Target profiles: data files (``converters/profiles/<name>.json``) loaded into typed dataclasses.

A target is what a device half must look like to run well somewhere (I/O dtypes, per-channel or per-tensor
weights, static shapes, which compiler checks it). Keeping them as data means adding a target is adding a
file, and the exact profile used is copied into the bundle manifest beside the models it produced.
See ``converters/profiles/README.md`` for the fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

__all__ = ["Runtime", "IOType", "Compiler", "TfliteOptions", "OnnxOptions", "TargetProfile", "load_target",
           "list_targets", "PROFILE_DIR"]

PROFILE_DIR = Path(__file__).parent / "profiles"


class Runtime(str, Enum):
    TFLITE = "tflite"
    ONNX = "onnx"


class IOType(str, Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


class Compiler(str, Enum):
    NONE = "none"
    VELA = "vela"
    EDGETPU = "edgetpu"


@dataclass(frozen=True)
class TfliteOptions:
    input_type: IOType = IOType.INT8
    output_type: IOType = IOType.INT8
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.output_type == IOType.FLOAT32:
            raise UsageError("tflite.output_type float32 is not allowed", "the code leaves the device as int8 or uint8")


@dataclass(frozen=True)
class OnnxOptions:
    """ONNX Runtime static quantization scheme of the device half.

    The default, uint8 activations and uint8 weights (U8U8), is the scheme whose fused ORT kernels are
    exact on every CPU: x86 without VNNI multiplies U8S8/S8S8 with VPMADDUBSW, whose int16 sums saturate,
    so those codes differ from the unfused QDQ reference (by up to 147 int8 levels, measured). U8U8 widens
    to int16 first on x86 (exact) and uses UDOT on Arm. ``reduce_range`` (7-bit weights) also avoids the
    saturation, at some precision. The output stays the int8 wire code whatever the activations are.

    ``float_input_layers`` keeps the input unquantized and the layers that read it in float: one per-tensor
    8-bit grid over a normalized image is coarser than the pixel grid (0.0187 vs 0.0171 per step for the
    ImageNet mean/std), and that re-gridding alone flips 0.7% of the pretrained ResNet20's CIFAR-10
    predictions (measured on 1,000 test JPEGs). The first convolution is a small share of a device half's
    MACs, so CPU targets (cpu, rpi) pay little for it; integer-only NPU targets cannot.
    """

    per_channel: bool = True
    activation_type: IOType = IOType.UINT8
    weight_type: IOType = IOType.UINT8
    reduce_range: bool = False
    float_input_layers: bool = False  # run the nodes reading the model input in float (see below)

    def __post_init__(self) -> None:
        if IOType.FLOAT32 in (self.activation_type, self.weight_type):
            raise UsageError("onnx.activation_type/weight_type float32 is not allowed", "choose int8 or uint8")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    runtimes: tuple[Runtime, ...]
    tflite: TfliteOptions | None
    onnx: OnnxOptions | None
    static_shapes: bool
    full_integer: bool
    compiler: Compiler
    compiler_options: dict[str, Any] = field(default_factory=dict)
    relative_cpu_speed: float = 1.0  # one device core vs a modern x86-64 core: an estimate, see profiles/README.md

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy for the manifest (enums as their string values)."""
        return json.loads(json.dumps(asdict(self), default=lambda v: v.value))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TargetProfile":
        try:
            runtimes = tuple(Runtime(r) for r in data["runtimes"])
            tflite = data.get("tflite")
            onnx = data.get("onnx")
            profile = cls(
                name=data["name"],
                description=data.get("description", ""),
                runtimes=runtimes,
                tflite=TfliteOptions(IOType(tflite["input_type"]), IOType(tflite["output_type"]),
                                     bool(tflite.get("per_channel", True))) if tflite else None,
                onnx=_onnx_options(onnx) if onnx else None,
                static_shapes=bool(data.get("static_shapes", False)),
                full_integer=bool(data.get("full_integer", False)),
                compiler=Compiler(data.get("compiler", "none")),
                compiler_options=dict(data.get("compiler_options") or {}),
                relative_cpu_speed=float(data.get("relative_cpu_speed", 1.0)),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise UsageError(f"target profile {data.get('name', '?')} is malformed: {err}",
                             "see converters/profiles/README.md for the fields") from None
        if Runtime.TFLITE in runtimes and profile.tflite is None or Runtime.ONNX in runtimes and profile.onnx is None:
            raise UsageError(f"target profile {profile.name} lists a runtime without its options",
                             "add the 'tflite'/'onnx' section to the profile")
        if not profile.relative_cpu_speed > 0:
            raise UsageError(f"target profile {profile.name} has relative_cpu_speed {profile.relative_cpu_speed}",
                             "give the device's single-core speed as a positive fraction of an x86-64 core, e.g. 0.25")
        return profile


def _onnx_options(data: dict[str, Any]) -> OnnxOptions:
    defaults = OnnxOptions()
    return OnnxOptions(bool(data.get("per_channel", True)),
                       IOType(data.get("activation_type", defaults.activation_type.value)),
                       IOType(data.get("weight_type", defaults.weight_type.value)),
                       bool(data.get("reduce_range", False)), bool(data.get("float_input_layers", False)))


def list_targets() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_target(name_or_path: str) -> TargetProfile:
    """A profile by target name (``rpi``) or by path to a profile JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise UsageError(f"unknown target {name_or_path!r}", f"choose one of {', '.join(list_targets())}, "
                         "or pass a profile .json file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read target profile {path}: {err}", "fix the JSON") from None
    return TargetProfile.from_dict(data)
