"""Operation counts and activation memory of a model, read off its torch.export graph.

Convention (DESIGN.md): a multiply-accumulate (MAC) of a convolution (grouped, depthwise and
transposed too) or linear layer, and of a matrix product of two activations (attention's Q K^T
and its product with V, scaled_dot_product_attention included), is one multiplication and one
addition; an adder-convolution MAC is two additions (subtract and
accumulate; |.| is a sign-bit operation and not counted); a binary MAC (a convolution of sign()
inputs with sign() weights, kdforge/nn/binary.py) is one XNOR and one (popcount) addition. Bias
additions are not MACs (as in fvcore). Normalisation (batch norm, folded at deployment) and element-wise work (activations,
shortcut additions, pooling) are counted apart, in elements, never mixed into those totals.

Peak activation memory follows tensor lifetimes over the graph: a tensor lives from the node
that makes it to its last use; in-place and view ops share their input's storage. Parameters
and buffers are not activations, and neither is anything computed from them alone (a binary
layer's sign(W) and scale): a deployed graph holds those as constants, so they cost nothing per
inference either.
"""

from dataclasses import asdict, dataclass
from math import prod
from typing import Optional

import torch
from torch import nn

from kdforge.profile.energy import SOURCE as ENERGY_SOURCE
from kdforge.profile.energy import energy_estimate

_CONV = {"aten.conv2d.default", "aten.convolution.default", "aten.conv1d.default"}
_CONV_TRANSPOSE = {"aten.conv_transpose2d.input", "aten.conv_transpose1d.default"}
_LINEAR = {"aten.linear.default", "aten.addmm.default", "aten.mm.default", "aten.matmul.default", "aten.bmm.default",
           "aten.baddbmm.default"}
_ATTENTION = {"aten.scaled_dot_product_attention.default"}
_ADDER = {"kdforge.adder_conv2d.default", "kdforge.adder_conv2d_integer.default", "kdforge.qlinear_adder_conv2d.default"}
_NORM = {"aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default", "aten.layer_norm.default", "aten.group_norm.default"}
_VIEWS = {"aten.view.default", "aten.reshape.default", "aten.flatten.using_ints", "aten.t.default", "aten.permute.default",
          "aten.squeeze.dim", "aten.unsqueeze.default", "aten.expand.default", "aten.alias.default", "aten.detach.default"}


@dataclass
class LayerCost:
    layer: str
    op: str
    kind: str  # conv | linear | adder | binary | norm | elementwise | unknown
    macs: int = 0
    mul: int = 0
    add: int = 0
    xnor: int = 0
    elements: int = 0  # normalisation or element-wise outputs
    params: int = 0
    traffic: int = 0  # elements read (activations and weights) and written, for the roofline
    outputs: int = 0  # elements written
    gemm: Optional[list[int]] = None  # [groups, M, N, K] of a matrix product or convolution as implicit GEMM


def _val(node):
    return node.meta.get("val") if hasattr(node, "meta") else None


def _layer_name(node) -> str:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else node.name


def _traffic(node, out: torch.Tensor) -> int:
    operands = [a for arg in node.args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
    return out.numel() + sum(v.numel() for v in (_val(a) for a in operands if isinstance(a, torch.fx.Node))
                             if isinstance(v, torch.Tensor))


def _cost(node, target: str) -> LayerCost | None:
    cost = _cost_of(node, target)
    if cost is not None:
        cost.traffic, cost.outputs = _traffic(node, _val(node)), _val(node).numel()
    return cost


def _cost_of(node, target: str) -> LayerCost | None:
    out = _val(node)
    if not isinstance(out, torch.Tensor):
        return None
    name = _layer_name(node)
    transposed = target == "aten.convolution.default" and len(node.args) > 6 and node.args[6]
    if target in _CONV_TRANSPOSE or transposed:
        x, weight = _val(node.args[0]), _val(node.args[1])
        macs = x.numel() * prod(weight.shape[1:])  # every input element meets (out_channels/groups) * kh * kw weights
        return LayerCost(name, target, "conv", macs, macs, macs, params=weight.numel() + _bias_numel(node),
                         gemm=conv_transpose_gemm(list(x.shape), list(weight.shape)))
    if target in _ATTENTION:  # softmax(Q K^T) V: two matrix products of activations
        q, k, v = (_val(a) for a in node.args[:3])
        macs = prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return LayerCost(name, target, "linear", macs, macs, macs, gemm=[1, prod(q.shape[:-1]), k.shape[-2], q.shape[-1] + v.shape[-1]])
    if target in _CONV or target in _ADDER:
        weight = _val(node.args[1])
        per_output = prod(weight.shape[1:])  # in_channels/groups * kh * kw
        macs = out.numel() * per_output
        gemm = conv_gemm(list(out.shape), list(weight.shape), _val(node.args[0]).shape[1])
        if target in _ADDER:
            return LayerCost(name, target, "adder", macs, 0, 2 * macs, params=weight.numel(), gemm=gemm)
        if all(_is_sign(a) for a in node.args[:2]):
            return LayerCost(name, target, "binary", macs, 0, macs, macs, params=weight.numel(), gemm=gemm)
        return LayerCost(name, target, "conv", macs, macs, macs, params=weight.numel() + _bias_numel(node), gemm=gemm)
    if target in _LINEAR:
        a = _val(node.args[1] if target in ("aten.addmm.default", "aten.baddbmm.default") else node.args[0])
        macs = out.numel() * a.shape[-1]
        weight = _val(node.args[1]) if target == "aten.linear.default" else None
        params = (weight.numel() + _bias_numel(node)) if weight is not None else 0
        gemm = [1, out.numel() // max(out.shape[-1], 1), out.shape[-1], a.shape[-1]] if out.dim() else None
        return LayerCost(name, target, "linear", macs, macs, macs, params=params, gemm=gemm)
    if target in _NORM:
        return LayerCost(name, target, "norm", elements=out.numel())
    if target in _VIEWS:
        return None
    return LayerCost(name, target, "elementwise", elements=out.numel())


def conv_gemm(out_shape: list[int], weight_shape: list[int], in_channels: int) -> list[int]:
    """[groups, M, N, K] of a convolution as the implicit GEMM its kernels run: M the output
    positions (batch x spatial), N the output channels and K the inputs of one group's output."""
    out_channels = weight_shape[0]
    groups = max(in_channels // max(weight_shape[1], 1), 1)
    return [groups, prod(out_shape) // max(out_channels, 1), out_channels // groups, prod(weight_shape[1:])]


def conv_transpose_gemm(in_shape: list[int], weight_shape: list[int]) -> list[int]:
    """[1, M, N, K] of a transposed convolution run as a GEMM over its input positions (M), each
    meeting (out_channels / groups) * kh * kw weights (N) per input channel (K); groups are left
    in K, which keeps the MAC count."""
    in_channels = weight_shape[0]
    return [1, prod(in_shape) // max(in_channels, 1), prod(weight_shape[1:]), in_channels]


def _is_sign(arg) -> bool:
    return isinstance(arg, torch.fx.Node) and str(arg.target) == "aten.sign.default"


def _bias_numel(node) -> int:
    bias = node.args[2] if len(node.args) > 2 else None
    val = _val(bias) if bias is not None else None
    return val.numel() if isinstance(val, torch.Tensor) else 0


def _peak_activation_bytes(graph, parameter_nodes: set) -> int:
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    storage = {}  # node -> the node that owns its storage
    last_use = {}
    size = {}
    for n in nodes:
        val = _val(n)
        if n in parameter_nodes or not isinstance(val, torch.Tensor):
            continue
        target = str(n.target)
        aliases = n.op == "call_function" and (target in _VIEWS or target.split(".")[1].endswith("_") if "." in target else False)
        source = next((a for a in n.args if isinstance(a, torch.fx.Node) and a in storage), None) if aliases else None
        owner = storage[source] if source is not None else n
        storage[n] = owner
        if owner is n:
            size[n] = val.numel() * val.element_size()
        last = max([index[u] for u in n.users] + [index[n]])
        last_use[owner] = max(last_use.get(owner, 0), last)
    live, peak = 0, 0
    frees: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if n in size:
            live += size[n]
            peak = max(peak, live)
            frees[last_use[n]] = frees.get(last_use[n], 0) + size[n]
        live -= frees.pop(i, 0)
    return peak


def count_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Per-layer costs and totals for one forward pass of `model` on an input of `input_shape`."""
    return count_program(torch.export.export(model.eval(), (torch.zeros(input_shape),)))


def program_input_shape(program) -> list[int]:
    """The shape of an exported program's first user input."""
    user_inputs = set(program.graph_signature.user_inputs)
    first = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs)
    return [int(d) for d in _val(first).shape]


def count_program(program) -> dict:
    """Per-layer costs and totals of a torch.export program."""
    signature = program.graph_signature
    parameter_names = (set(signature.inputs_to_parameters) | set(signature.inputs_to_buffers)
                       | set(signature.inputs_to_lifted_tensor_constants))
    parameter_nodes = {n for n in program.graph.nodes if n.op == "placeholder" and n.name in parameter_names}
    layers = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        operands = [a for a in node.all_input_nodes]
        if operands and all(a in parameter_nodes for a in operands):
            parameter_nodes.add(node)  # computed from weights alone (a binary layer's sign(W) and scale): constant-folded when deployed
            continue
        cost = _cost(node, str(node.target))
        if cost is not None:
            layers.append(cost)
    parameters = [program.state_dict[name] for name in signature.parameters]
    return summarise(layers, sum(p.numel() for p in parameters), sum(p.numel() * p.element_size() for p in parameters),
                     _peak_activation_bytes(program.graph, parameter_nodes), program_input_shape(program),
                     _output_elements(program))


def _output_elements(program) -> int:
    """Elements of the tensors the program returns to its caller."""
    user_outputs = set(program.graph_signature.user_outputs)
    (output,) = [n for n in program.graph.nodes if n.op == "output"]
    returned = [a for a in torch.utils._pytree.tree_leaves(output.args) if isinstance(a, torch.fx.Node) and a.name in user_outputs]
    return sum(_val(a).numel() for a in returned if isinstance(_val(a), torch.Tensor))


def summarise(layers: list[LayerCost], params: int, param_bytes: int, peak_activation_bytes: int, input_shape,
              output_elements: int) -> dict:
    """{"totals", "layers"}: the report structure every counter (torch.export, ONNX) returns."""
    totals = {key: sum(getattr(c, key) for c in layers) for key in ("macs", "mul", "add", "xnor")}
    totals.update({
        "params": params,
        "param_bytes": param_bytes,
        "norm_elements": sum(c.elements for c in layers if c.kind == "norm"),
        "elementwise_elements": sum(c.elements for c in layers if c.kind == "elementwise"),
        "unknown_layers": [c.layer for c in layers if c.kind == "unknown"],
        "peak_activation_bytes": peak_activation_bytes,
        "input_shape": input_shape,
        "output_elements": output_elements,
        "energy_uj": energy_estimate(totals["mul"], totals["add"]),
        "energy_source": ENERGY_SOURCE,
    })
    return {"totals": totals, "layers": [asdict(c) for c in layers]}


def macs_by_kind(costs: dict) -> dict:
    """MACs of conv, linear, adder and binary layers: what two counts of one model must agree on exactly."""
    return {kind: sum(c["macs"] for c in costs["layers"] if c["kind"] == kind) for kind in ("conv", "linear", "adder", "binary")}
