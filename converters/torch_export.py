"""PyTorch sources: a ``torch.export`` program (``.pt2``, from ``torch.export.save``) exported to ONNX.

convert cuts a PyTorch model on its ONNX export, as it cuts an ONNX model: ``torch.onnx``'s dynamo exporter
turns the saved program into ONNX with the program's own example inputs, keeping a batch dimension the
program declared dynamic. A program made by ``edgekit reencode`` names the node that outputs its code in its
record (``code_node``): that tensor is called ``code`` in the export, so ``--split code`` cuts there. PyTorch is imported only here, only when a ``.pt2`` is converted: the device and
the server never need it (docs/convert.md, PyTorch).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

from edgekit.errors import ConversionError, UsageError
from edgekit.reencode.metadata import CODE_NAME, read_metadata

from .sources import first_line

__all__ = ["import_torch", "load_program", "export_pt2_onnx"]

log = logging.getLogger(__name__)
OPSET = 18  # the lowest opset torch.onnx's dynamo exporter writes without a version conversion


def import_torch() -> Any:
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


def load_program(torch: Any, path: Path) -> Any:
    try:
        with _quiet_torch():
            return torch.export.load(str(path))
    except Exception as err:  # torch raises several types for a file that is not a saved program
        raise UsageError(f"cannot read {path} as a torch.export program: {first_line(err)}",
                         "save it with torch.export.save(torch.export.export(model, example_args), 'model.pt2')"
                         ) from None


def export_pt2_onnx(path: str | Path, out: Path) -> Path:
    """Write the ONNX export of the ``torch.export`` program at ``path`` to ``out``; returns ``out``."""
    torch = import_torch()
    program = load_program(torch, Path(path))
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
            raise UsageError(f"torch.onnx could not export {path}: {first_line(err)}",
                             "export it to ONNX yourself (torch.onnx.export) and pass the .onnx") from None
    record = read_metadata(path)
    if record and record.get("code_node"):
        _rename_tensor(out, record["code_node"], CODE_NAME)
    return out


def _rename_tensor(path: Path, old: str, new: str) -> None:
    """Rename tensor ``old`` of the ONNX file at ``path`` to ``new`` wherever the graph names it."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if not any(old in node.output for node in graph.node):
        raise ConversionError(f"the re-encoded program's code node {old!r} is not in its ONNX export",
                              "re-run edgekit reencode with this edgekit")
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.value_info, *graph.output]:
        if value.name == old:
            value.name = new
    onnx.save(model, str(path))
