"""The PyTorch side of reencode: cut a ``torch.export`` program (``.pt2``) at a node, put a re-encoder into the
cut, and save the result as a ``.pt2`` that ``edgekit convert --split code`` takes.

    model.pt2 ─► program.module() (an FX graph) ─► head: input → features at --split
                                                 └► tail: features → output
    Reencoded(head, encoder, decoder, tail) ─► torch.export (the source's batch dimension kept) ─► OUT.pt2
        + the record (metadata.py) as the archive's extra file, with ``code_node``: the node that outputs the
          code, which convert names ``code`` in its ONNX export (converters/torch_export.py)

The cut is taken on the graph, like convert's ONNX cut: a tensor computed before the cut that the tail also
reads is refused, naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.torch_export import import_torch, load_program
from edgekit.converters.torch_tflite import program_node
from edgekit.errors import UsageError

from .metadata import KERAS_ENTRY

__all__ = ["TorchCut", "cut_program", "save_reencoded"]

_FREE = ("placeholder", "get_attr", "output")  # nodes that belong to neither half by computation


@dataclass
class TorchCut:
    """The two halves of a program at its cut, as FX graph modules, and the program's example input."""

    head: Any
    tail: Any
    example: Any
    dynamic_batch: bool

    def features(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        """The features at the cut for inputs ``x`` (float32 numpy, batched)."""
        return self._run(self.head, x, batch)

    def output(self, features: np.ndarray, batch: int = 64) -> np.ndarray:
        """The model's output from features at the cut."""
        return self._run(self.tail, features, batch)

    @staticmethod
    def _run(module: Any, x: np.ndarray, batch: int) -> np.ndarray:
        torch = import_torch()
        with torch.no_grad():
            return np.concatenate([module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)))
                                   .numpy() for i in range(0, len(x), batch)])


def _subgraph(torch: Any, root: Any, nodes: list[Any], inputs: dict[Any, str], out: Any,
              batch_sizes: list[Any] = ()) -> Any:
    """A graph module of ``nodes`` (in order), reading ``inputs`` (node → placeholder name) and returning ``out``;
    ``batch_sizes`` (nodes of the other half) read the batch size from its first input instead."""
    graph = torch.fx.Graph()
    env = {old: graph.placeholder(name) for old, name in inputs.items()}
    for node in batch_sizes:
        env[node] = graph.call_function(torch.ops.aten.sym_size.int, (next(iter(env.values())), 0))
    for node in nodes:
        if node not in env:
            env[node] = graph.node_copy(node, lambda arg: env[arg])
    graph.output(env[out])
    module = torch.fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()  # the other half's weights and the export's guard call
    module.delete_all_unused_submodules()  # ...and their parameters (the tail's are trained with --train-tail)
    module.recompile()
    return module


def _is_batch_size(torch: Any, node: Any, source: Any) -> bool:
    """``x.size(0)`` of the input (a dynamic-batch export of ``x.view(x.size(0), -1)``): not data the tail
    needs from the head, the features carry the same batch size."""
    return node.op == "call_function" and node.target == torch.ops.aten.sym_size.int and tuple(node.args) == (source, 0)


def _output_node(graph: Any) -> Any:
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    values = out if isinstance(out, (tuple, list)) else [out]
    if len(values) != 1:
        raise UsageError(f"the program has {len(values)} outputs", "edgekit re-encodes models with one output")
    return values[0]


def cut_program(path: str | Path, split: str) -> TorchCut:
    """Load the program at ``path`` and cut it after node ``split`` (a name ``convert --list-splits`` shows:
    a name the ONNX exporter's decomposition gave, as ``add_383`` for a batch-normed network, is traced back
    to the program's node, as convert does for TFLite targets)."""
    torch = import_torch()
    program = load_program(torch, Path(path))
    module = program.module()
    nodes = list(module.graph.nodes)
    names = [n.name for n in nodes]
    if split not in names:
        split = program_node(program, split) or split
    if split not in names:
        computed = [n.name for n in nodes if n.op not in _FREE and n.op != "call_module"]
        raise UsageError(f"{path} has no node {split!r}",
                         f"cut at one of its nodes ({', '.join(computed[:12])}{', ...' if len(computed) > 12 else ''}),"
                         f" listed with: edgekit convert {path} --list-splits")
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UsageError(f"the program has {len(inputs)} inputs", "edgekit re-encodes models with one input")
    at = names.index(split)
    before, cut = set(nodes[:at + 1]), nodes[at]
    crossing = [n for n in nodes[:at] if n.op not in _FREE and any(u not in before for u in n.users)]
    sizes = [n for n in crossing if _is_batch_size(torch, n, inputs[0])]
    if len(sizes) < len(crossing):
        raise UsageError(f"tensors {', '.join(n.name for n in crossing if n not in sizes)} cross the cut at "
                         f"{split!r}: the tail reads them too",
                         "cut where one tensor carries everything (edgekit convert MODEL --list-splits)")
    head = _subgraph(torch, module, [n for n in nodes[:at + 1] if n.op not in ("placeholder", "output")],
                     {inputs[0]: "x"}, cut)
    tail = _subgraph(torch, module, [n for n in nodes if n.op == "get_attr" or (n not in before and n.op != "output")],
                     {cut: "features"}, _output_node(module.graph), sizes)
    example = program.example_inputs[0][0]
    batch = inputs[0].meta.get("val").shape[0] if inputs[0].meta.get("val") is not None else 1
    return TorchCut(head, tail, example, not isinstance(batch, int))


def _reencoded_module(torch: Any, cut: TorchCut, encoder: Any, decoder: Any) -> Any:
    class Reencoded(torch.nn.Module):
        """head → encoder (the code) → decoder → tail."""

        def __init__(self):
            super().__init__()
            self.head, self.encoder, self.decoder, self.tail = cut.head, encoder, decoder, cut.tail

        def forward(self, x):
            return self.tail(self.decoder(self.encoder(self.head(x))))

    return Reencoded()


def _innermost_module(node: Any) -> str | None:
    """The attribute path of the submodule a node of an exported program was computed in (None: the top)."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return stack[-1][0] if stack else None


def _code_node(program: Any) -> str:
    """The last node computed inside the ``encoder`` submodule (or its children): its output is the code."""
    inside = [n.name for n in program.graph.nodes
              if n.op == "call_function" and (_innermost_module(n) or "").split(".")[0] == "encoder"]
    if not inside:
        raise RuntimeError("the exported program has no node inside the encoder")  # a bug, not a user mistake
    return inside[-1]


def save_reencoded(cut: TorchCut, encoder: Any, decoder: Any, output: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Export head → encoder → decoder → tail as a program (the source's batch dimension kept), save it with
    the record (plus ``code_node``) at ``output``; returns the record as stored."""
    torch = import_torch()
    module = _reencoded_module(torch, cut, encoder, decoder)
    dynamic = ({0: torch.export.Dim("batch")},) if cut.dynamic_batch else None
    program = torch.export.export(module, (cut.example,), dynamic_shapes=dynamic)
    record = {**record, "code_node": _code_node(program)}
    torch.export.save(program, str(output), extra_files={KERAS_ENTRY: json.dumps(record, indent=1, sort_keys=True)})
    return record
