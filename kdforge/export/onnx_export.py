"""ONNX export of a deployed student with torch's current (dynamo) exporter: a dynamic batch
axis, input 'input', output 'logits', checked by onnx's checker and shape inference, written
atomically. A DequantizeLinear whose only use is a QuantizeLinear of the same scale and zero
point is an identity on the uint8 tensor, and both are dropped (INT8 AdderNet students pass uint8
between their fused layers that way, kdforge.export.adder_int8)."""

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from kdforge.atomic import atomic_path
from kdforge.export.adder_onnx import translation_table


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 18, portable: bool = False) -> Path:
    """Writes `model` to `path`. Adder layers become kdforge::AdderConv2d nodes, or with
    `portable` standard ONNX operators only."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(Path(path)) as tmp, _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), external_data=False, verbose=False,  # by position: any forward argument name
            custom_translation_table=translation_table(portable),
        )
        program.save(str(tmp))
        model = onnx.load(str(tmp))
        if drop_identity_requantization(model):
            onnx.save(model, str(tmp))
        check_onnx(tmp)
    return Path(path)


def drop_identity_requantization(model: onnx.ModelProto) -> int:
    """Removes every DequantizeLinear -> QuantizeLinear pair whose scales and zero points are
    equal constants (the QuantizeLinear's readers read the DequantizeLinear's input); returns how
    many. A DequantizeLinear with other readers stays for them. A graph with subgraphs (If, Loop,
    Scan), whose nodes may read the outer names, is left as it is."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return 0
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    constants.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producers = {out: n for n in graph.node for out in n.output}
    kept_outputs = {o.name for o in graph.output}

    def parameters(node):
        values = [constants.get(name) for name in node.input[1:3]]
        return None if len(values) != 2 or any(v is None for v in values) else values

    renamed, dropped = {}, []
    for node in graph.node:
        dq = producers.get(node.input[0]) if node.op_type == "QuantizeLinear" and node.domain in ("", "ai.onnx") else None
        if dq is None or dq.op_type != "DequantizeLinear" or node.output[0] in kept_outputs:
            continue
        a, b = parameters(dq), parameters(node)
        if a is None or b is None or not all(x.dtype == y.dtype and x.shape == y.shape and (x == y).all() for x, y in zip(a, b)):
            continue
        renamed[node.output[0]] = dq.input[0]
        dropped.append(node)
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    readers = {name for n in graph.node for name in n.input} | kept_outputs
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in readers]:
        graph.node.remove(node)
    return len(dropped)


def onnx_flavour(path: Path) -> str:
    """'custom' when the file holds kdforge nodes (it needs kdforge's operator), else 'standard'."""
    domains = {node.domain for node in onnx.load(str(path), load_external_data=False).graph.node}
    return "custom" if "kdforge" in domains else "standard"


def check_onnx(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


class _quiet_exporter:
    """The exporter logs registry notes (e.g. torchvision absent) and deprecation warnings that
    say nothing about the user's model; keep them off the user's terminal."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)
