"""Learned input ranges (kdforge.train.qat's `qat.ranges: learned`) as ONNX Runtime's per-tensor
quantization overrides: each range names a layer by its module path, and the override names the
tensor that layer reads in the file being quantized.

The module-to-tensor map is found by value, not by name: torch.onnx folds a batch norm into the
convolution before it, so a convolution's node records the batch norm's scope, and the tensor a
layer reads is an earlier node's output. Each layer's input is captured in PyTorch (a forward
pre-hook) and matched to the Conv, Gemm or MatMul input in the file that is closest to it on the
same images; a layer with no input within a float tolerance of its own is one sentence. A tensor
that other nodes read too (a residual block's input, which its shortcut adds) keeps calibrated
ranges in QAT and in the file: the file has one quantizer per tensor, and fake quantization would
clip only the layers' copy of it, not the sum's (privately_read_layers picks the others).
"""

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from kdforge.errors import UserError
from kdforge.export.divergence import intermediate_values

LAYER_OPS = ("Conv", "Gemm", "MatMul")
MATCH_IMAGES = 8
RELATIVE_TOLERANCE = 1e-3  # of the tensor's largest magnitude: float rounding, not a different tensor


def range_overrides(prepared: Path, model: nn.Module, images: np.ndarray, ranges: dict[str, list[float]]) -> dict:
    """{tensor: [{"rmin", "rmax"}]} of `prepared` (an ONNX file exported from `model`) for `ranges`,
    {layer path: [rmin, rmax]}, in quantize_static's TensorQuantOverrides form."""
    if not ranges:
        return {}
    tensors = _tensors_read(prepared, model, images, list(ranges))
    elsewhere = _read_elsewhere(onnx.load(str(prepared)))
    overrides = {}
    for path, tensor in tensors.items():
        if tensor in elsewhere:  # one quantizer per tensor: the other readers would take the learned clip too
            continue
        rmin, rmax = ranges[path]
        overrides[tensor] = [{"rmin": np.asarray(rmin, np.float32), "rmax": np.asarray(rmax, np.float32)}]
    return overrides


def privately_read_layers(model: nn.Module, images: np.ndarray) -> set[str]:
    """The paths of `model`'s Conv2d and Linear layers whose input, in its ONNX export, no node but
    such layers reads: the layers whose input range can be learned (range_overrides applies no other)."""
    from kdforge.export.onnx_export import export_onnx

    paths = [name for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    with tempfile.TemporaryDirectory() as folder:
        exported = export_onnx(copy.deepcopy(model).eval(), torch.from_numpy(images[:2]), Path(folder) / "model.onnx")
        tensors = _tensors_read(exported, model, images, paths)
        graph = onnx.load(str(exported))
    elsewhere = _read_elsewhere(graph)
    return {path for path, tensor in tensors.items() if tensor not in elsewhere}


def _read_elsewhere(graph: onnx.ModelProto) -> set[str]:
    return {i for n in graph.graph.node if n.op_type not in LAYER_OPS for i in n.input}


def _tensors_read(onnx_file: Path, model: nn.Module, images: np.ndarray, paths: list[str]) -> dict[str, str]:
    """{layer path: the tensor of `onnx_file` it reads}."""
    images = np.ascontiguousarray(images[:MATCH_IMAGES], dtype=np.float32)
    graph = onnx.load(str(onnx_file))
    reads = list(dict.fromkeys(n.input[0] for n in graph.graph.node if n.op_type in LAYER_OPS))
    values = intermediate_values(graph, reads, images)
    return {path: _matching_tensor(layer_input, {t: values[t] for t in reads}, path, onnx_file)
            for path, layer_input in _layer_inputs(model, images, paths).items()}


def _layer_inputs(model: nn.Module, images: np.ndarray, paths: list[str]) -> dict[str, np.ndarray]:
    modules = dict(model.named_modules())
    captured, handles = {}, []

    def capture(path: str):
        def hook(_module, inputs) -> None:
            captured.setdefault(path, inputs[0].detach().float().numpy().copy())
        return hook

    for path in paths:
        handles.append(modules[path].register_forward_pre_hook(capture(path)))
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(images))
    finally:
        for h in handles:
            h.remove()
    return captured


def _matching_tensor(layer_input: np.ndarray, candidates: dict[str, np.ndarray], path: str, prepared: Path) -> str:
    gaps = {name: float(np.abs(value - layer_input).max()) for name, value in candidates.items()
            if value.shape == layer_input.shape}
    tolerance = RELATIVE_TOLERANCE * max(float(np.abs(layer_input).max()), 1e-12)
    best = min(gaps, key=gaps.get, default=None)
    if best is None or gaps[best] > tolerance:
        raise UserError(f"no layer input in {Path(prepared).name} matches layer '{path}''s input in PyTorch, so its "
                        f"learned INT8 range has no tensor; export the student with qat.ranges: calibrated.")
    return best
