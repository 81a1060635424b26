"""PyTorch sources: a ``torch.export`` program (``.pt2``, from ``torch.export.save``) exported to ONNX.

convert cuts a PyTorch model on its ONNX export, as it cuts an ONNX model: ``torch.onnx``'s dynamo exporter
turns the saved program into ONNX with the program's own example inputs, keeping a batch dimension the
program declared dynamic. PyTorch is imported only here, only when a ``.pt2`` is converted: the device and
the server never need it (docs/convert.md, PyTorch).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

__all__ = ["export_pt2_onnx"]

log = logging.getLogger(__name__)
OPSET = 18  # the lowest opset torch.onnx's dynamo exporter writes without a version conversion


def _import_torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError:
        raise UsageError("a .pt2 model needs PyTorch, which is not installed here",
                         "pip install torch==2.13.0 onnxscript (the CPU build), or export the model to ONNX "
                         "yourself and pass the .onnx") from None
    return torch


@contextlib.contextmanager
def _quiet_torch():
    """torch logs its own tracebacks (a file that is not a program) and a line per optional op library it
    skips: errors reach the user as one line from us instead, so only torch's errors pass meanwhile."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _load_program(torch: Any, path: Path) -> Any:
    try:
        with _quiet_torch():
            return torch.export.load(str(path))
    except Exception as err:  # torch raises several types for a file that is not a saved program
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UsageError(f"cannot read {path} as a torch.export program: {first}",
                         "save it with torch.export.save(torch.export.export(model, example_args), 'model.pt2')"
                         ) from None


def export_pt2_onnx(path: str | Path, out: Path) -> Path:
    """Write the ONNX export of the ``torch.export`` program at ``path`` to ``out``; returns ``out``."""
    torch = _import_torch()
    program = _load_program(torch, Path(path))
    example = program.example_inputs
    if example is None or len(example[0]) != 1 or example[1]:
        raise UsageError(f"{path} has no example input, or more than one input",
                         "export the model with one tensor input: torch.export.export(model, (x,))")
    log.info("exporting %s to ONNX (torch.onnx, opset %d)", path, OPSET)
    with _quiet_torch():
        try:
            torch.onnx.export(program, example[0], str(out), dynamo=True, opset_version=OPSET, verbose=False,
                              external_data=False)
        except Exception as err:  # the exporter's errors are long reports: keep their first line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UsageError(f"torch.onnx could not export {path}: {first}",
                             "export it to ONNX yourself (torch.onnx.export) and pass the .onnx") from None
    return out
