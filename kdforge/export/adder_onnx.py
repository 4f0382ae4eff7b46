"""ONNX translations of `kdforge::adder_conv2d` for torch's dynamo exporter.

`custom`: the node of DESIGN.md, domain `kdforge`, op_type `AdderConv2d`, version 1, inputs
(X, W), int-list attributes `strides` and `pads` (ONNX Conv order: [top, left, bottom, right])
and `plugin_namespace` = "kdforge"; ONNX Runtime (kdforge.export.ort) and TensorRT (the
plugin) both implement exactly this node.

`portable`: the same function in standard ONNX operators only, so that any runtime runs it:
for every kernel offset (u, v), a strided Slice of the padded input against W[:, :, u, v],
Abs, ReduceSum over channels, summed over offsets and negated. It makes (N, O, C, Ho, Wo)
temporaries: correct everywhere, slow.
"""

import onnx
import onnxscript
from onnxscript import opset18 as op

DOMAIN = "kdforge"
OP_TYPE = "AdderConv2d"
VERSION = 1


def _infer_output(ctx) -> None:
    """Y's type and shape, so that onnx's shape inference carries on past adder nodes: (N, O, Ho,
    Wo) with every dimension it can know (a symbolic batch stays symbolic)."""
    x, w = ctx.get_input_type(0), ctx.get_input_type(1)
    y = onnx.TypeProto()
    y.tensor_type.elem_type = x.tensor_type.elem_type or onnx.TensorProto.FLOAT
    x_dims, w_dims = x.tensor_type.shape.dim, w.tensor_type.shape.dim
    if len(x_dims) != 4 or len(w_dims) != 4:
        ctx.set_output_type(0, y)
        return
    attrs = {name: ctx.get_attribute(name) for name in ("strides", "pads")}
    strides = list(attrs["strides"].ints) if attrs["strides"] is not None else [1, 1]
    pads = list(attrs["pads"].ints) if attrs["pads"] is not None else [0, 0, 0, 0]
    out = [x_dims[0], w_dims[0], None, None]
    if len(strides) == 2 and len(pads) == 4 and min(strides) >= 1:
        for axis in (2, 3):
            size, kernel = x_dims[axis], w_dims[axis]
            if size.HasField("dim_value") and kernel.HasField("dim_value"):
                i = axis - 2
                out[axis] = (size.dim_value + pads[i] + pads[i + 2] - kernel.dim_value) // strides[i] + 1
    for value in out:
        dim = y.tensor_type.shape.dim.add()
        if isinstance(value, int):
            dim.dim_value = value
        elif value is not None:
            dim.CopyFrom(value)
    ctx.set_output_type(0, y)


def _register_schema() -> None:
    """The node's schema, registered with onnx in this process, so that the exporter and onnx's
    tools know its inputs, attributes and output shape (files stay plain ONNX: no runtime needs
    the schema)."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    attr = onnx.defs.OpSchema.Attribute
    ints, string = onnx.defs.OpSchema.AttrType.INTS, onnx.defs.OpSchema.AttrType.STRING
    schema = onnx.defs.OpSchema(
        OP_TYPE, DOMAIN, VERSION,
        doc="Adder convolution: Y[n,o,i,j] = -sum_{c,u,v} |Xpad[n,c,i*s+u,j*s+v] - W[o,c,u,v]|.",
        inputs=[onnx.defs.OpSchema.FormalParameter("X", "T"), onnx.defs.OpSchema.FormalParameter("W", "T")],
        outputs=[onnx.defs.OpSchema.FormalParameter("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")],
        attributes=[attr("strides", ints, "[stride_h, stride_w]"), attr("pads", ints, "[top, left, bottom, right]"),
                    attr("plugin_namespace", string, "the TensorRT plugin namespace")],
    )
    schema.set_type_and_shape_inference_function(_infer_output)
    onnx.defs.register_schema(schema)


_register_schema()
_adder_node = onnxscript.values.Opset(DOMAIN, VERSION)[OP_TYPE]


def adder_conv2d_node(x, weight, stride: list[int], padding: list[int], eta: float):
    pads = [padding[0], padding[1], padding[0], padding[1]]
    return _adder_node(x, weight, strides=list(stride), pads=pads, plugin_namespace=DOMAIN)


def adder_conv2d_portable(x, weight, stride: list[int], padding: list[int], eta: float):
    out_channels, in_channels, kh, kw = (int(d) for d in weight.shape)
    height, width = int(x.shape[2]), int(x.shape[3])
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    padded = op.Pad(x, op.Constant(value_ints=[0, 0, ph, pw, 0, 0, ph, pw]))
    filters = op.Reshape(weight, op.Constant(value_ints=[1, out_channels, in_channels, kh * kw, 1, 1]))
    total = None
    for u in range(kh):
        for v in range(kw):
            window = op.Slice(padded, op.Constant(value_ints=[u, v]), op.Constant(value_ints=[u + sh * (ho - 1) + 1, v + sw * (wo - 1) + 1]),
                              op.Constant(value_ints=[2, 3]), op.Constant(value_ints=[sh, sw]))
            w_uv = op.Gather(filters, op.Constant(value_ints=[u * kw + v]), axis=3)  # (1, O, C, 1, 1, 1)
            w_uv = op.Reshape(w_uv, op.Constant(value_ints=[1, out_channels, in_channels, 1, 1]))
            distance = op.ReduceSum(op.Abs(op.Sub(op.Unsqueeze(window, op.Constant(value_ints=[1])), w_uv)),
                                    op.Constant(value_ints=[2]), keepdims=0)
            total = distance if total is None else op.Add(total, distance)
    return op.Neg(total)


def translation_table(portable: bool) -> dict:
    import torch

    import kdforge.nn.adder_op  # noqa: F401  (registers the op)

    return {torch.ops.kdforge.adder_conv2d.default: adder_conv2d_portable if portable else adder_conv2d_node}
