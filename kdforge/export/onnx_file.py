"""Opening an ONNX file that may come from anyone: nothing it points to is followed, nothing it
declares is allocated before it is checked.

- Only a regular file is read (a FIFO or /dev/zero named model.onnx is refused, not waited on).
- External data is refused wherever a tensor can sit: graph initializers, sparse initializers,
  every node attribute (Constant's `value`, `tensors`, sparse tensors), every subgraph (If, Loop,
  Scan bodies) and every local function. ONNX would read external data relative to the file or
  the working directory, i.e. wherever the file says.
- `feed_problem`: a graph is fed only where each input is a tensor of a known element type whose
  shape is declared, with non-negative sizes.
- `size_problem`: a graph is run only where no tensor and no peak of live activations exceeds
  `max_bytes` (`kdforge profile --max-tensor-mib`), before ONNX Runtime allocates them.
Either way it is still counted: counting reads shapes, it allocates nothing they declare.
"""

from math import prod

import onnx

from kdforge.errors import UserError, printable, printable_name
from kdforge.safe_files import read_bytes

MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit; larger models keep their weights in external data


def _subgraphs(attribute: onnx.AttributeProto):
    if attribute.HasField("g"):
        yield attribute.g
    yield from attribute.graphs


def _attribute_tensors(attribute: onnx.AttributeProto):
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    for sparse in [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []:
        yield sparse.values
        yield sparse.indices
    for sparse in attribute.sparse_tensors:
        yield sparse.values
        yield sparse.indices


def _graph_tensors(graph: onnx.GraphProto, where: str):
    """(where, tensor) for every tensor of `graph` and of the graphs nested in its nodes."""
    for tensor in graph.initializer:
        yield f"{where} initializer {printable_name(tensor.name)}", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where} sparse initializer {printable_name(sparse.values.name)}", sparse.values
        yield f"{where} sparse initializer {printable_name(sparse.values.name)}", sparse.indices
    for node in graph.node:
        yield from _node_tensors(node, where)


def _node_tensors(node: onnx.NodeProto, where: str):
    for attribute in node.attribute:
        place = f"{where} node {printable_name(node.name or node.op_type)} attribute {printable_name(attribute.name)}"
        for tensor in _attribute_tensors(attribute):
            yield place, tensor
        for subgraph in _subgraphs(attribute):
            yield from _graph_tensors(subgraph, f"{place} subgraph")


def all_tensors(model: onnx.ModelProto):
    """(where, tensor) for every tensor stored anywhere in `model`."""
    yield from _graph_tensors(model.graph, "graph")
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node, f"function {printable_name(function.name)}")


def load_model(path) -> onnx.ModelProto:
    """The ONNX graph of `path`, a UserError if it is not one or if any tensor lives outside it."""
    shown = printable(str(path))
    data = read_bytes(path, "ONNX file", MAX_ONNX_BYTES)
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception:  # noqa: BLE001 - protobuf's decode errors have no common type
        raise UserError(f"{shown} is not a readable ONNX file.") from None
    for where, tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise UserError(f"{shown} keeps the tensor of its {where} in an external data file, which kdforge does not "
                            f"load; save the model as one file.")
    return model


def feedable_inputs(model: onnx.ModelProto) -> list:
    """The graph inputs a caller feeds: all but initializers (old IR versions list weights as inputs)."""
    weights = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def feed_problem(model: onnx.ModelProto, path) -> str | None:
    """Why the graph's inputs cannot be fed (None if they can): each must be a tensor of a declared
    element type and shape, no size negative."""
    shown = printable(str(path))
    inputs = feedable_inputs(model)
    if not inputs:
        return f"{shown} has no graph input to feed"
    for value in inputs:
        name = printable_name(value.name)
        if not value.type.HasField("tensor_type") or value.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
            return f"input {name} is not a tensor of a known element type; kdforge feeds tensors only"
        if not value.type.tensor_type.HasField("shape"):
            return f"input {name} declares no shape"
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                return f"input {name} declares size {dim.dim_value} on axis {axis}; sizes are never negative"
    return None


def size_problem(path, shapes: dict, itemsize: dict, peak_bytes: int, max_bytes: int) -> str | None:
    """Why the graph is not run (None if it may be): its largest tensor or its peak of live
    activations exceeds `max_bytes`."""
    limit = f"{max_bytes / (1 << 20):,.0f} MiB"
    for name, shape in shapes.items():
        nbytes = prod(shape) * itemsize.get(name, 4)
        if nbytes > max_bytes:
            return (f"tensor {printable_name(name)} would be {'x'.join(map(str, shape))} ({nbytes / (1 << 20):,.0f} MiB), "
                    f"more than the {limit} kdforge allocates for one file; raise --max-tensor-mib to run it")
    if peak_bytes > max_bytes:
        return (f"its live activations would reach {peak_bytes / (1 << 20):,.0f} MiB, more than the {limit} kdforge "
                f"allocates for one file; raise --max-tensor-mib to run it")
    return None
