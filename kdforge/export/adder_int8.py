"""INT8 AdderNet students: every AdderConv2d becomes a QuantizedAdderConv2d with one scale and
zero point shared by its input and weights, calibrated on training images.

What it follows, from Nie et al., "Redistribution of Weights and Activations for AdderNet
Quantization" (NeurIPS 2022): an adder layer needs X and W on one scale, and AdderNet weights
often reach far beyond the activations' range, so a shared scale fitted to both would waste most
of the 8 bits on the weights. Their "lossless range clamp" for weights: for every x in [lo, hi],
|x - w| = |x - clamp(w, lo, hi)| + |w - clamp(w, lo, hi)|, so weights are clamped into the
activations' range and the removed part is a constant per filter, added back after the integer
sum (`correction`). The shared range is therefore the activations': MinMax over the calibration
images, widened to hold 0 (the padding), asymmetric uint8 (scale (hi - lo) / 255, zero point
round(-lo / scale)); post-ReLU inputs then use all 256 levels.
Where this departs from the paper: one scale per layer (the paper also splits a layer's filters
into groups with their own scales, and clamps activation outliers by a percentile); no
quantization-aware fine-tuning. The first convolution and the classifier stay float, as the
AdderNet papers keep them.

Between adder layers the tensors stay uint8 (issue 26): the model is traced (torch.fx), and each
adder layer with the batch norm and ReLU that follow it becomes one QLinearAdderConv2d, whose
int32 sums are requantized straight to the uint8 its consumers read. With S = -sum |qx - qw|,
the layer's float output is s S - correction and the batch norm's a y + c, so
multiplier = a s / y_scale and bias = (c - a correction) / y_scale. Every tensor an adder layer
reads is quantized once, with the parameters of its own calibrated range, whoever reads it: a
fused layer's output, or a float tensor (the stem's output, a residual sum) through
quantize_dequantize. The ONNX file then holds QuantizeLinear -> node -> DequantizeLinear chains in
which each DequantizeLinear -> QuantizeLinear pair of equal parameters is an identity, and
kdforge.export.onnx_export drops it: consecutive adder layers pass uint8, and a residual sum reads
DequantizeLinear inputs and feeds a QuantizeLinear, which ONNX Runtime fuses into QLinearAdd.
A model torch.fx cannot trace gets per-layer QuantizedAdderConv2d instead (float between layers),
and the log says so.
"""

import copy
import logging

import torch
from torch import fx, nn

from kdforge.nn.adder import AdderConv2d
from kdforge.nn.adder_int8 import QLinearAdderConv2d, QuantizedAdderConv2d

log = logging.getLogger(__name__)


def input_ranges(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of each adder layer's input over `images`, by layer name."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(name):
        def hook(_module, args):
            lo, hi = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, AdderConv2d)]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return ranges


def quantization_parameters(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric uint8 (scale, zero point) of a tensor seen in [lo, hi], widened to hold 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255 if hi > lo else 1.0
    return scale, int(min(255, max(0, round(-lo / scale))))


def _integer_weights(layer: AdderConv2d, scale: float, zero_point: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 weights clamped into the input's range, the per-filter correction of the clamp)."""
    w = layer.weight.detach().to(torch.float32)
    clamped = w.clamp((0 - zero_point) * scale, (255 - zero_point) * scale)
    correction = (w - clamped).abs().sum(dim=(1, 2, 3))
    return torch.clamp(torch.round(clamped / scale) + zero_point, 0, 255), correction


def quantized_layer(layer: AdderConv2d, lo: float, hi: float) -> QuantizedAdderConv2d:
    """The INT8 twin of `layer` whose input was seen in [lo, hi]."""
    scale, zero_point = quantization_parameters(lo, hi)
    qweight, correction = _integer_weights(layer, scale, zero_point)
    return QuantizedAdderConv2d(qweight, correction, scale, zero_point, layer.stride, layer.padding)


def fused_layer(layer: AdderConv2d, norm: nn.BatchNorm2d | None, relu: bool, x_range: tuple[float, float],
                y_range: tuple[float, float]) -> QLinearAdderConv2d:
    """`layer`, then `norm` and a ReLU, as one uint8 -> uint8 layer whose input was seen in
    `x_range` and whose output in `y_range`."""
    (scale, zero_point), (y_scale, y_zero_point) = quantization_parameters(*x_range), quantization_parameters(*y_range)
    qweight, correction = _integer_weights(layer, scale, zero_point)
    a, c = torch.ones_like(correction), torch.zeros_like(correction)
    if norm is not None:
        a = torch.rsqrt(norm.running_var.float() + norm.eps)
        if norm.weight is not None:
            a = a * norm.weight.detach().float()
        c = -norm.running_mean.float() * a + (norm.bias.detach().float() if norm.bias is not None else 0)
    return QLinearAdderConv2d(qweight, a * scale / y_scale, (c - a * correction) / y_scale, scale, zero_point,
                              y_scale, y_zero_point, relu, layer.stride, layer.padding)


def quantize_adder_layers(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """A copy of `model` (eval mode) whose adder layers are INT8, calibrated on `images`: fused
    uint8 layers where torch.fx traces the model, else one QuantizedAdderConv2d per layer."""
    model = copy.deepcopy(model).eval()
    try:
        graph = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - any tracing failure: data-dependent control flow, untraceable calls
        log.info("INT8 adder layers: the model cannot be traced by torch.fx (%s); each adder layer is quantized on its own, "
                 "float between layers", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return _per_layer(model, images)
    return _fused(graph, images)


def _per_layer(model: nn.Module, images: torch.Tensor) -> nn.Module:
    ranges = input_ranges(model, images)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, AdderConv2d)]:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantized_layer(layer, *ranges[name]))
    return model


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with adder layers kept as modules."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, AdderConv2d) or super().is_leaf_module(module, name)


def _groups(graph: fx.GraphModule) -> list[tuple[fx.Node, fx.Node | None, fx.Node | None]]:
    """(adder, batch norm or None, ReLU or None) for every adder layer: the norm where it is the
    adder's only reader and keeps running statistics, the ReLU where it is the norm's only reader."""
    modules = dict(graph.named_modules())

    def only_reader(node, accept):
        users = list(node.users)
        return users[0] if len(users) == 1 and accept(users[0]) else None

    def is_norm(n):  # one with running statistics: a fixed affine in eval mode
        return n.op == "call_module" and isinstance(modules[n.target], nn.BatchNorm2d) and modules[n.target].running_var is not None

    def is_relu(n):
        return ((n.op == "call_module" and isinstance(modules[n.target], nn.ReLU))
                or (n.op == "call_function" and n.target in (torch.relu, torch.nn.functional.relu))
                or (n.op == "call_method" and n.target == "relu"))

    groups = []
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], AdderConv2d):
            norm = only_reader(node, is_norm)
            relu = only_reader(norm, is_relu) if norm is not None else only_reader(node, is_relu)
            groups.append((node, norm, relu))
    return groups


class _Ranges(fx.Interpreter):
    """Runs the traced model, recording (min, max) of the watched nodes' values."""

    def __init__(self, graph: fx.GraphModule, watched: set):
        super().__init__(graph)
        self.watched, self.ranges = watched, {}

    def run_node(self, node):
        value = super().run_node(node)
        if node in self.watched:  # before any in-place reader changes it
            lo, hi = float(value.min()), float(value.max())
            old = self.ranges.get(node, (lo, hi))
            self.ranges[node] = (min(lo, old[0]), max(hi, old[1]))
        return value


def _fused(graph: fx.GraphModule, images: torch.Tensor, batch_size: int = 64) -> fx.GraphModule:
    groups = _groups(graph)
    sources = {adder.args[0] for adder, _, _ in groups}
    outputs = {group: next(n for n in reversed(group) if n is not None) for group in groups}
    recorder = _Ranges(graph, sources | set(outputs.values()))
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            recorder.run(images[i:i + batch_size])
    ranges, modules, fused_outputs = recorder.ranges, dict(graph.named_modules()), {}
    x_ranges = {group: ranges[group[0].args[0]] for group in groups}  # before the rewrite moves the adders' inputs
    for group in groups:
        adder, norm, relu = group
        last = outputs[group]
        layer = fused_layer(modules[adder.target], modules[norm.target] if norm is not None else None, relu is not None,
                            x_ranges[group], ranges[last])
        name = f"{adder.name}_int8"  # a node name: unique even where one module runs twice
        graph.add_submodule(name, layer)
        with graph.graph.inserting_after(last):
            node = graph.graph.call_module(name, (adder.args[0],))
        last.replace_all_uses_with(node)
        fused_outputs[last] = node
        for old in (relu, norm, adder):
            if old is not None:
                graph.graph.erase_node(old)
    for source in sources:  # float tensors an adder layer reads: quantized once, for every reader
        if source in fused_outputs:
            continue
        scale, zero_point = quantization_parameters(*ranges[source])
        with graph.graph.inserting_after(source):
            node = graph.graph.call_function(torch.ops.kdforge.quantize_dequantize.default, (source, scale, zero_point))
        source.replace_all_uses_with(node, delete_user_cb=lambda user, node=node: user is not node)
    graph.delete_all_unused_submodules()
    graph.recompile()
    return graph
