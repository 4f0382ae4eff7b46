"""Which deployed models are the same computation, weights aside, so that a report times each such
graph once and its students share the figure.

An ONNX graph's digest covers what decides its run time: the opsets, the graph's inputs and outputs
(types and shapes), every initializer's type and shape, and every node's operator, domain, wiring
(tensor names replaced by their order of first appearance) and attributes. Floating-point weights
are left out; small integer tensors (shapes, axes, zero points: at most 64 values) count as
structure, since they change what the operators do. Names, doc strings and producer fields are
left out. A PyTorch module's digest covers its printed module tree (classes and their settings),
every parameter's and buffer's name, shape and dtype, and the input shape."""

import hashlib
import json

import onnx
from onnx import helper, numpy_helper

_STRUCTURAL_VALUES = 64
_INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
                  onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
                  onnx.TensorProto.BOOL}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tensor(t: onnx.TensorProto) -> list:
    described = [t.data_type, list(t.dims)]
    count = 1
    for d in t.dims:
        count *= d
    if t.data_type in _INTEGER_TYPES and count <= _STRUCTURAL_VALUES:
        described.append(numpy_helper.to_array(t).tolist())
    return described


def _value_info(v: onnx.ValueInfoProto) -> str:
    return str(v.type).replace("\n", " ")


def _attribute(a: onnx.AttributeProto, names: dict) -> list:
    if a.type == onnx.AttributeProto.TENSOR:
        return [a.name, _tensor(a.t)]
    if a.type == onnx.AttributeProto.TENSORS:
        return [a.name, [_tensor(t) for t in a.tensors]]
    if a.type == onnx.AttributeProto.GRAPH:
        return [a.name, _graph(a.g, names)]
    if a.type == onnx.AttributeProto.GRAPHS:
        return [a.name, [_graph(g, names) for g in a.graphs]]
    return [a.name, helper.get_attribute_value(a)]


def _graph(graph: onnx.GraphProto, names: dict) -> list:
    """Tensor names map to their order of first appearance; `names` is shared with enclosing graphs,
    whose tensors a subgraph may read."""
    def canonical(name: str) -> int | str:
        if not name:
            return ""  # an omitted optional input
        return names.setdefault(name, len(names))

    return [
        [[canonical(v.name), _value_info(v)] for v in graph.input],
        [[canonical(t.name), _tensor(t)] for t in graph.initializer],
        [[n.domain, n.op_type, [canonical(i) for i in n.input], [canonical(o) for o in n.output],
          [_attribute(a, names) for a in n.attribute]] for n in graph.node],
        [[canonical(v.name), _value_info(v)] for v in graph.output],
    ]


def onnx_digest(model: onnx.ModelProto) -> str:
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    return _digest([opsets, _graph(model.graph, {})])


def torch_digest(model, input_shape) -> str:
    tensors = [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()]
    return _digest([repr(model), tensors, list(input_shape)])
