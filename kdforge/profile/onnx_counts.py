"""Operation counts and activation memory of an ONNX graph: the cost of the file a user ships.

The same conventions as counts.py (DESIGN.md): a MAC of a convolution, transposed convolution,
Gemm or MatMul (two activations too, as in attention) is one multiplication and one addition; a
kdforge::AdderConv2d MAC is two additions; a binary MAC (a Conv whose input comes from Sign and
whose weight is Sign's output or holds only +-1, kdforge/nn/binary.py) is one XNOR and one
addition; integer and QLinear convolutions and matrix products
(an INT8 file's) count their MACs the same way; bias additions are not MACs. Normalisation and
element-wise work (activations, pooling, residual additions, quantize/dequantize) are counted apart,
in output elements. Ops that only reshape or relabel data count nothing.

Control flow counts what it runs: a Loop's body times its constant trip count (once where the
count is computed), a Scan's body times the scanned length, an If's costlier branch.

Shapes come from onnx's shape inference, subgraphs' too (the adder node's schema infers its own
output, see kdforge.export.adder_onnx); a symbolic batch dimension is set to `batch` first. Where inference
leaves shapes unknown (data-dependent ops such as Range, which exporters emit for dynamic
batches), one run of ONNX Runtime on zeros in a capped child process tells them (onnx_trial).
A node whose output shape is still unknown, or whose inputs do not fit its op, is listed as kind
"unknown", never dropped. Nothing a file declares is allocated before its size is checked
(kdforge.export.onnx_file.size_problem); a graph too large to run is counted all the same.

Peak activation memory follows tensor lifetimes in the graph's (topological) node order: a
tensor lives from its node to its last consumer, graph outputs to the end; reshape-like ops
alias their input. Initializers are parameters, not activations, and so is anything computed
from them alone (see _constants).
"""

import re
from math import prod

import numpy as np
import onnx

from kdforge.errors import UserError, printable, printable_name
from kdforge.export.onnx_file import feed_problem, feedable_inputs, size_problem
from kdforge.profile.counts import LayerCost, conv_gemm, conv_transpose_gemm, summarise
from kdforge.profile.onnx_trial import MalformedGraph, trial_run
from kdforge.safe_files import MAX_TENSOR_MIB

# op_type -> index of the weight input, for ops whose MACs are outputs x (weight volume per output)
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_B = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3}
_NORM = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
         "RMSNormalization", "LpNormalization"}
_NO_WORK = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Constant", "ConstantOfShape",
            "Transpose", "Expand", "Gather", "Slice", "Concat", "Split", "Cast", "Dropout", "Range"}
_ALIASES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}


def fixed_inputs(model: onnx.ModelProto, batch: int = 1, dims: dict | None = None) -> onnx.ModelProto:
    """A copy of `model` whose inputs' dynamic sizes are fixed: a dimension named in `dims` takes
    its size there, any other dynamic first axis is the batch; any other dynamic size is a
    UserError that names it."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's copy stays as it was
    for value in feedable_inputs(model):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            if dim.dim_param in (dims or {}):
                size = dims[dim.dim_param]
            elif axis == 0:
                size = batch
            else:
                raise UserError(f"input {printable_name(value.name)} has a dynamic dimension {axis} "
                                f"({printable_name(dim.dim_param)}); give its size with --dim NAME=SIZE.")
            dim.Clear()
            dim.dim_value = size
    return model


def _shapes(model: onnx.ModelProto, path) -> tuple[dict, dict]:
    """Shapes and element sizes of every tensor onnx's shape inference can tell."""
    import kdforge.export.adder_onnx  # noqa: F401  (the adder node's schema and shape inference)

    problem = malformation(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)  # ranks and types per schema
    except Exception as e:  # noqa: BLE001 - onnx's inference errors: a node its schema's rules reject
        problem = problem or _inference_reason(e)
    if problem:
        raise MalformedGraph(f"{printable(str(path))} is not a well-formed ONNX graph: {problem}.")
    shapes, itemsize = {}, {}
    values = [v for g in _graphs(inferred.graph) for v in (*g.input, *g.value_info, *g.output)]
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.HasField("shape") and None not in dims:
            shapes[value.name] = dims
            itemsize[value.name] = _itemsize(tensor.elem_type)
    for init in (i for g in _graphs(model.graph) for i in g.initializer):
        shapes[init.name] = list(init.dims)
        itemsize[init.name] = _itemsize(init.data_type)
    return shapes, itemsize


def malformation(model: onnx.ModelProto) -> str | None:
    """Why `model`'s top-level graph is malformed, where it is: an initializer whose data does not
    hold what its dims declare, a node that reads a tensor no earlier node, input or initializer
    gives (a cycle, or a name that does not exist), a convolution or matrix product whose weight
    has a zero dimension, or a node of the standard domain with an input or output count its
    schema does not take."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    graph = model.graph
    for tensor in graph.initializer:
        problem = _data_problem(tensor)
        if problem:
            return problem
    initializers = {t.name: t for t in graph.initializer}
    known = {v.name for v in graph.input} | set(initializers) | {""}
    for node in graph.node:
        name = printable_name(node.name or node.op_type)
        for tensor in node.input:
            if tensor not in known:
                return f"node {name} reads {printable_name(tensor)}, which no input, initializer or earlier node gives (a cycle, or no such tensor)"
        known.update(node.output)
        weight = initializers.get(node.input[1]) if node.op_type in _WEIGHTED and len(node.input) > 1 else None
        if weight is not None and 0 in weight.dims:
            return (f"node {name} ({node.op_type}) has an empty weight {printable_name(weight.name)} "
                    f"({'x'.join(map(str, weight.dims))}): it computes nothing")
        domain = node.domain or "ai.onnx"
        if domain == "ai.onnx" and domain in opsets and onnx.defs.has(node.op_type, ""):
            try:
                schema = onnx.defs.get_schema(node.op_type, opsets[domain], "")
            except onnx.defs.SchemaError:
                continue
            inputs, outputs = len(node.input), len(node.output)
            if not schema.min_input <= inputs <= schema.max_input:
                return f"node {name} ({node.op_type}) has {inputs} input(s); its schema takes {schema.min_input} to {schema.max_input}"
            if not schema.min_output <= outputs <= schema.max_output:
                return f"node {name} ({node.op_type}) has {outputs} output(s); its schema takes {schema.min_output} to {schema.max_output}"
    return None


_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul", "AdderConv2d")
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _data_problem(tensor: onnx.TensorProto) -> str | None:
    """Where an initializer's data does not hold the element count its dims declare."""
    declared = prod(tensor.dims)
    if tensor.HasField("raw_data"):
        itemsize = _itemsize(tensor.data_type)
        if tensor.data_type in _SUB_BYTE_TYPES:
            return None  # packed 4-bit and 2-bit types: ONNX Runtime checks their length
        held = len(tensor.raw_data) / itemsize
    else:
        held = sum(len(getattr(tensor, f)) for f in _TYPED_FIELDS)
        if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            held /= 2
        elif tensor.data_type in _SUB_BYTE_TYPES:
            return None
    if held != declared:
        return (f"initializer {printable_name(tensor.name)} declares {'x'.join(map(str, tensor.dims)) or 'a scalar'} "
                f"({declared:,} elements) but holds data for {held:,.0f}")
    return None


_SUB_BYTE_TYPES = {getattr(onnx.TensorProto, t) for t in ("INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1") if hasattr(onnx.TensorProto, t)}


def _inference_reason(error: Exception) -> str:
    """onnx's shape-inference error on one line, without its error-class prefixes."""
    text = " ".join(str(error).split())
    text = re.sub(r"\[(Shape|Type)InferenceError\] (Inference error\(s\): )?", "", text)
    text = re.sub(r"\(op_type:(\w+), node name: ([^)]*)\): ", lambda m: f"node '{m[2]}' ({m[1]}): ", text)
    text = re.sub(r"\(op_type:(\w+)\): ", lambda m: f"{'an' if m[1][0] in 'AEIOU' else 'a'} {m[1]} node: ", text)
    return printable(text[:300].rstrip(". "))


def _graphs(graph: onnx.GraphProto):
    """`graph` and every graph nested in its nodes (If branches, Loop and Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(sub)


def _itemsize(elem_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 4


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Graph:
    """What the cost of a node may depend on beyond shapes: who produced a tensor, and the values
    of the initializers (read only for the few convolutions that may be binary)."""

    def __init__(self, graph: onnx.GraphProto):
        self.producer = {o: n for n in graph.node for o in n.output}
        self._initializers = {i.name: i for i in graph.initializer}

    def constant(self, tensor: str):
        """The value of an initializer or Constant node's output, else None."""
        if tensor in self._initializers:
            return onnx.numpy_helper.to_array(self._initializers[tensor])
        node = self.producer.get(tensor)
        return onnx.numpy_helper.to_array(_attr(node, "value", None)) if node is not None and node.op_type == "Constant" \
            and _attr(node, "value", None) is not None else None

    def from_sign(self, tensor: str) -> bool:
        node = self.producer.get(tensor)
        return node is not None and node.op_type == "Sign"

    def is_binary_weight(self, tensor: str) -> bool:
        if self.from_sign(tensor):
            return True
        init = self._initializers.get(tensor)
        return init is not None and bool(np.isin(onnx.numpy_helper.to_array(init), (-1, 0, 1)).all())


def _node_cost(node, shapes: dict, weights: dict, graph: "_Graph") -> LayerCost | None:
    try:
        cost = _node_cost_of(node, shapes, weights, graph)
    except (IndexError, KeyError, TypeError, ValueError):  # inputs missing or of the wrong rank for the op
        return LayerCost(node.name or node.op_type, node.op_type, "unknown")
    if cost is not None and cost.kind != "unknown":
        cost.traffic = sum(prod(shapes[t]) for t in [*node.input, *node.output] if t in shapes)
        cost.outputs = prod(shapes[node.output[0]]) if node.output and node.output[0] in shapes else 0
    return cost


def _node_cost_of(node, shapes: dict, weights: dict, graph: "_Graph") -> LayerCost | None:
    name, op = node.name or node.output[0], node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if node.domain == "kdforge" and op in ("AdderConv2d", "AdderConv2dInteger", "QLinearAdderConv2d"):
        w = shapes.get(node.input[1])
        if out is None or w is None:
            return LayerCost(name, op, "unknown")
        macs = prod(out) * prod(w[1:])
        gemm = conv_gemm(list(out), list(w), shapes[node.input[0]][1]) if node.input[0] in shapes else None
        return LayerCost(name, op, "adder", macs, 0, 2 * macs, params=prod(w) if node.input[1] in weights else 0, gemm=gemm)
    if op in _NO_WORK:
        return None
    operands = [shapes.get(i) for i in node.input[:4] if i]
    if out is None or None in operands:
        return LayerCost(name, op, "unknown")
    params = sum(prod(weights[i]) for i in node.input if i in weights)
    if op in _CONV_WEIGHT:
        w = shapes.get(node.input[_CONV_WEIGHT[op]])
        macs = prod(out) * prod(w[1:])  # (in_channels / groups) * kh * kw per output
        gemm = conv_gemm(list(out), list(w), shapes[node.input[0]][1])
        if op == "Conv" and graph.from_sign(node.input[0]) and graph.is_binary_weight(node.input[1]):
            return LayerCost(name, op, "binary", macs, 0, macs, macs, params=params, gemm=gemm)
        return LayerCost(name, op, "conv", macs, macs, macs, params=params, gemm=gemm)
    if op == "ConvTranspose":
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        macs = prod(x) * prod(w[1:])  # every input element meets (out_channels / groups) * kh * kw weights
        return LayerCost(name, op, "conv", macs, macs, macs, params=params, gemm=conv_transpose_gemm(list(x), list(w)))
    if op == "Gemm":
        a = shapes.get(node.input[0])
        k = a[0] if _attr(node, "transA", 0) else a[1]
        macs = prod(out) * k
        return LayerCost(name, op, "linear", macs, macs, macs, params=params, gemm=[1, out[0], out[-1], k] if out else None)
    if op in _MATMUL_B:
        a = shapes.get(node.input[0])
        macs = prod(out) * a[-1]
        gemm = [1, prod(out[:-1]), out[-1], a[-1]] if out else None
        return LayerCost(name, op, "linear", macs, macs, macs, params=params, gemm=gemm)
    if op in _PRODUCTS:
        macs = _PRODUCTS[op](node, [shapes.get(i) if i else None for i in node.input])
        return LayerCost(name, op, "linear", macs, macs, macs, params=params)
    if op in _NORM:
        return LayerCost(name, op, "norm", elements=prod(out), params=params)
    return LayerCost(name, op, "elementwise", elements=prod(out), params=params)


def _einsum_macs(node, shapes: list) -> int:
    """A contraction's MACs: one per combination of every index of the equation (for n operands,
    n - 1 products each), the sizes read off the operands; '...' stands for their leading axes."""
    inputs = _attr(node, "equation", b"").decode().replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for k, (term, shape) in enumerate(zip(inputs, shapes)):
        if "..." in term:
            spread = len(shape) - len(term) + 3
            term = term.replace("...", "".join(chr(0x100 + j) for j in range(spread)))  # broadcast axes, right-aligned
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return (len(inputs) - 1) * prod(sizes.values()) if len(inputs) > 1 else 0


def _attention_macs(node, shapes: list) -> int:
    """ONNX Attention (opset 23): softmax(Q K^T) V, i.e. S x L x (D + Dv) MACs per batch and query
    head, with 4-D (B, H, S, D) or 3-D (B, S, H*D) operands (then `q_num_heads` / `kv_num_heads`);
    L counts the past keys too."""
    q, k, v = shapes[:3]
    past = shapes[4][2] if len(shapes) > 4 and shapes[4] else 0  # past_key (B, H, P, D): the keys grow by P
    if len(q) == 4:
        return q[0] * q[1] * q[2] * (k[2] + past) * (q[3] + v[3])
    heads_q, heads_kv = _attr(node, "q_num_heads", 1), _attr(node, "kv_num_heads", 1)
    return q[0] * q[1] * (k[1] + past) * (q[2] + heads_q * v[2] // heads_kv)


def _recurrent_macs(node, shapes: list) -> int:
    """RNN, GRU, LSTM: per step, batch row and direction, W X_t and R H_{t-1}, i.e. (gates x hidden)
    x (input + hidden) MACs, W being (directions, gates x hidden, input) and R (..., hidden); X is
    (sequence, batch, input), or (batch, sequence, input) with layout 1."""
    x, w, r = shapes[:3]
    steps, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
    return steps * batch * w[0] * w[1] * (w[2] + r[2])


# op_type -> MACs from the node and its operands' shapes, for products that are not conv or Gemm/MatMul
_PRODUCTS = {"Einsum": _einsum_macs, "Attention": _attention_macs, "RNN": _recurrent_macs, "GRU": _recurrent_macs,
             "LSTM": _recurrent_macs}


def _graph_layers(graph: onnx.GraphProto, shapes: dict, weights: dict, constants: set) -> list[LayerCost]:
    """The costs of `graph`'s nodes; a Loop, Scan or If contributes its body's layers, repeated as
    often as it runs (a Loop's constant trip count, a Scan's sequence length; once where the trip
    count is not a constant) and, for If, the costlier branch's."""
    helper, layers = _Graph(graph), []
    for node in graph.node:
        if all(o in constants for o in node.output if o):
            continue
        bodies = _bodies(node)
        if not bodies:
            cost = _node_cost(node, shapes, weights, helper)
            layers += [cost] if cost is not None else []
            continue
        runs = _runs(node, shapes, helper)
        branches = [_graph_layers(body, shapes, weights, constants) for body in bodies]
        chosen = max(branches, key=lambda costs: sum(c.macs for c in costs))
        layers += [_repeated(c, f"{node.name or node.op_type}/{c.layer}", runs) for c in chosen]
    return layers


def _bodies(node) -> list:
    return [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]


def _runs(node, shapes: dict, helper: "_Graph") -> int:
    if node.op_type == "Loop" and node.input and node.input[0]:
        trips = helper.constant(node.input[0])
        return max(int(trips), 0) if trips is not None and trips.size == 1 else 1
    if node.op_type == "Scan":
        first = node.input[len(node.input) - _attr(node, "num_scan_inputs", 1)]
        axes = _attr(node, "scan_input_axes", [0])
        return shapes[first][axes[0]] if first in shapes and axes else 1
    return 1


def _repeated(cost: LayerCost, name: str, runs: int) -> LayerCost:
    return LayerCost(name, cost.op, cost.kind, cost.macs * runs, cost.mul * runs, cost.add * runs, cost.xnor * runs,
                     cost.elements * runs, cost.params, cost.traffic * runs)


def _constants(model: onnx.ModelProto) -> set[str]:
    """Initializers and every tensor computed from them alone (Constant nodes, a binary layer's
    Sign of its weight, ...): constants of the deployed graph, neither work nor activations."""
    constants = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
            constants.update(o for o in node.output if o)
    return constants


def _peak_activation_bytes(model: onnx.ModelProto, shapes: dict, itemsize: dict, weights: set[str]) -> int:
    nodes = list(model.graph.node)
    end = len(nodes)
    owner, last_use, size = {}, {}, {}
    for value in model.graph.input:
        if value.name not in weights and value.name in shapes:
            owner[value.name] = value.name
            size[value.name] = (prod(shapes[value.name]) * itemsize[value.name], -1)
    for i, node in enumerate(nodes):
        for tensor in node.input:
            if tensor in owner:
                last_use[owner[tensor]] = max(last_use.get(owner[tensor], -1), i)
        for j, tensor in enumerate(node.output):
            if tensor not in shapes or tensor in weights:
                continue
            if node.op_type in _ALIASES and j == 0 and node.input and node.input[0] in owner:
                owner[tensor] = owner[node.input[0]]
            else:
                owner[tensor] = tensor
                size[tensor] = (prod(shapes[tensor]) * itemsize[tensor], i)
    for value in model.graph.output:
        if value.name in owner:
            last_use[owner[value.name]] = end
    live = peak = 0
    frees: dict[int, int] = {}
    born: dict[int, int] = {}
    for tensor, (nbytes, start) in size.items():
        born[start] = born.get(start, 0) + nbytes
        frees[last_use.get(tensor, start)] = frees.get(last_use.get(tensor, start), 0) + nbytes
    for step in range(-1, end + 1):
        live += born.get(step, 0)
        peak = max(peak, live)
        live -= frees.get(step, 0)
    return peak


def count_onnx(model: onnx.ModelProto, batch: int = 1, path="the graph", max_bytes: int = MAX_TENSOR_MIB << 20,
               run: bool = False, dims: dict | None = None) -> dict:
    """Per-node costs and totals of one run of `model` with inputs fixed by `fixed_inputs` (the
    structure of kdforge.profile.counts.count_costs). Shapes that inference leaves open come from
    one run on zeros in a capped child process (kdforge.profile.onnx_trial), which `run` asks for
    even when every shape is known. The graph is not run where it cannot be fed or would exceed
    `max_bytes` (onnx_file.feed_problem, size_problem): it is counted all the same, and
    `not_run` says why (None where it ran, or needed not); `trial_seconds` is the run's time."""
    model = fixed_inputs(model, batch, dims)
    shapes, itemsize = _shapes(model, path)
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    constants = _constants(model)
    problem = feed_problem(model, path) or size_problem(
        path, shapes, itemsize, _peak_activation_bytes(model, shapes, itemsize, constants), max_bytes)
    missing = [o for node in model.graph.node for o in node.output if o and o not in shapes]
    run_seconds = None
    if (missing or run) and problem is None:
        try:
            ran = trial_run(model, missing, path, max_bytes)
        except MalformedGraph:
            raise
        except UserError as e:
            problem = str(e).rstrip(".")
        else:
            for name, (shape, size) in ran["shapes"].items():
                shapes[name], itemsize[name] = shape, size
            run_seconds = ran["seconds"]
            problem = size_problem(path, shapes, itemsize, _peak_activation_bytes(model, shapes, itemsize, constants), max_bytes)
    # a layer's weights are its constant inputs: initializers, or tensors computed from them (an
    # INT8 file's DequantizeLinear of its quantized weights, a binary layer's Sign)
    layer_weights = {**{c: shapes[c] for c in constants if c in shapes}, **weights}
    layers = _graph_layers(model.graph, shapes, layer_weights, constants)
    params = sum(prod(d) for d in weights.values())
    param_bytes = sum(prod(init.dims) * _itemsize(init.data_type) for init in model.graph.initializer)
    inputs = feedable_inputs(model)
    input_shape = shapes.get(inputs[0].name) if inputs else None
    output_elements = sum(prod(shapes[o.name]) for o in model.graph.output if o.name in shapes)
    costs = summarise(layers, params, param_bytes, _peak_activation_bytes(model, shapes, itemsize, constants), input_shape,
                      output_elements)
    costs["trial_seconds"], costs["not_run"] = run_seconds, problem
    return costs
