"""ONNX translations of `kdforge::adder_conv2d` for torch's dynamo exporter.

`custom`: the node of DESIGN.md, domain `kdforge`, op_type `AdderConv2d`, version 1, inputs
(X, W), int-list attributes `strides` and `pads` (ONNX Conv order: [top, left, bottom, right])
and `plugin_namespace` = "kdforge"; ONNX Runtime (kdforge.export.ort) and TensorRT (the
plugin) both implement exactly this node.

`custom`, INT8 (an INT8 AdderNet layer, kdforge.nn.adder_int8): QuantizeLinear(X, scale,
zero_point) -> uint8, then the node `kdforge::AdderConv2dInteger`, version 1, inputs (X uint8
(N, C, H, W), W uint8 (O, C, kh, kw), x_zero_point uint8 scalar), the same attributes, output
Y int32 (N, O, Ho, Wo) = -sum_{c,u,v} |Xpad - W| where the padding holds x_zero_point (as in ONNX's
ConvInteger). X and W share one scale and zero point, so |s(qx - z) - s(qw - z)| = s |qx - qw|;
the layer's float output is Cast(Y) * scale - correction, with the per-filter correction of the
weights' clamp as a (1, O, 1, 1) initializer. Only ONNX Runtime (kdforge.export.ort) implements
this node; the TensorRT plugin does not.

`custom`, fused INT8 (kdforge.nn.adder_int8.QLinearAdderConv2d, an adder layer with its batch
norm, ReLU and output quantization, as ONNX's QLinearConv): QuantizeLinear(X) -> the node
`kdforge::QLinearAdderConv2d`, version 1, inputs (X uint8 (N, C, H, W), W uint8 (O, C, kh, kw),
x_zero_point uint8 scalar, multiplier float (O), bias float (O), y_zero_point uint8 scalar), the
same attributes and `relu` (0 or 1), output Y uint8 (N, O, Ho, Wo) =
saturate(round_half_even(v) + y_zero_point), v = multiplier[o] * S + bias[o] in float32 (the
product rounded, then the sum; max(v, 0) where relu = 1), S the integer node's int32 sum; then
DequantizeLinear(Y, y_scale, y_zero_point). Only ONNX Runtime (kdforge.export.ort) implements it.

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
INTEGER_OP_TYPE = "AdderConv2dInteger"
QLINEAR_OP_TYPE = "QLinearAdderConv2d"
VERSION = 1


def _infer_output(ctx) -> None:
    """Y's type and shape, so that onnx's shape inference carries on past adder nodes: (N, O, Ho,
    Wo) with every dimension it can know (a symbolic batch stays symbolic); int32 for the
    integer node."""
    x, w = ctx.get_input_type(0), ctx.get_input_type(1)
    y = onnx.TypeProto()
    inputs = ctx.get_num_inputs()
    y.tensor_type.elem_type = {3: onnx.TensorProto.INT32, 6: onnx.TensorProto.UINT8}.get(inputs, x.tensor_type.elem_type or onnx.TensorProto.FLOAT)
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


def _register_schema(op_type: str, doc: str, inputs: dict[str, str], output_type: str, extra_attributes=()) -> None:
    """A node's schema, registered with onnx in this process, so that the exporter and onnx's
    tools know its inputs, attributes and output shape (files stay plain ONNX: no runtime needs
    the schema)."""
    if onnx.defs.has(op_type, DOMAIN):
        return
    attr, param = onnx.defs.OpSchema.Attribute, onnx.defs.OpSchema.FormalParameter
    ints, string = onnx.defs.OpSchema.AttrType.INTS, onnx.defs.OpSchema.AttrType.STRING
    schema = onnx.defs.OpSchema(
        op_type, DOMAIN, VERSION, doc=doc,
        inputs=[param(name, type_name) for name, type_name in inputs.items()],
        outputs=[param("Y", output_type)],
        type_constraints=[(t, *_TYPES[t]) for t in dict.fromkeys([*inputs.values(), output_type])],
        attributes=[attr("strides", ints, "[stride_h, stride_w]"), attr("pads", ints, "[top, left, bottom, right]"),
                    attr("plugin_namespace", string, "the TensorRT plugin namespace"),
                    *(attr(name, onnx.defs.OpSchema.AttrType.INT, doc) for name, doc in extra_attributes)],
    )
    schema.set_type_and_shape_inference_function(_infer_output)
    onnx.defs.register_schema(schema)


_TYPES = {"T": (["tensor(float)"], "float32 tensors"), "T8": (["tensor(uint8)"], "uint8 tensors"),
          "T32": (["tensor(int32)"], "int32 tensors")}
_register_schema(OP_TYPE, "Adder convolution: Y[n,o,i,j] = -sum_{c,u,v} |Xpad[n,c,i*s+u,j*s+v] - W[o,c,u,v]|.",
                 {"X": "T", "W": "T"}, "T")
_register_schema(INTEGER_OP_TYPE, "Integer adder convolution: Y = -sum |Xpad - W| on uint8, padded with x_zero_point; int32 out.",
                 {"X": "T8", "W": "T8", "x_zero_point": "T8"}, "T32")
_register_schema(QLINEAR_OP_TYPE, "Fused integer adder convolution: uint8 Y = saturate(round(multiplier * S + bias) + y_zero_point), "
                 "S the integer adder sum; ReLU with relu = 1.",
                 {"X": "T8", "W": "T8", "x_zero_point": "T8", "multiplier": "T", "bias": "T", "y_zero_point": "T8"}, "T8",
                 extra_attributes=[("relu", "1: max(v, 0) before rounding")])
_adder_node = onnxscript.values.Opset(DOMAIN, VERSION)[OP_TYPE]
_integer_node = onnxscript.values.Opset(DOMAIN, VERSION)[INTEGER_OP_TYPE]
_qlinear_node = onnxscript.values.Opset(DOMAIN, VERSION)[QLINEAR_OP_TYPE]


def adder_conv2d_node(x, weight, stride: list[int], padding: list[int], eta: float):
    pads = [padding[0], padding[1], padding[0], padding[1]]
    return _adder_node(x, weight, strides=list(stride), pads=pads, plugin_namespace=DOMAIN)


def _quantized(x, scale: float, zero_point: int):
    return op.QuantizeLinear(x, op.Constant(value_float=scale), op.Constant(value=_scalar(zero_point)))


def _scalar(value: int, dtype=onnx.TensorProto.UINT8):
    return onnx.helper.make_tensor("zero_point", dtype, [], [int(value)])


def adder_conv2d_integer_node(x, qweight, scale: float, zero_point: int, stride: list[int], padding: list[int]):
    pads = [padding[0], padding[1], padding[0], padding[1]]
    return _integer_node(_quantized(x, scale, zero_point), qweight, op.Constant(value=_scalar(zero_point)),
                         strides=list(stride), pads=pads, plugin_namespace=DOMAIN)


def adder_conv2d_integer_portable(x, qweight, scale: float, zero_point: int, stride: list[int], padding: list[int]):
    """The integer node in standard operators: the adder's portable form on int32 tensors of qx - z
    and qw - z (padding 0 there is the zero point in uint8)."""
    z = op.Constant(value=_scalar(zero_point, onnx.TensorProto.INT32))
    centred_x = op.Sub(op.Cast(_quantized(x, scale, zero_point), to=onnx.TensorProto.INT32), z)
    centred_w = op.Sub(op.Cast(qweight, to=onnx.TensorProto.INT32), z)
    return adder_conv2d_portable(centred_x, centred_w, stride, padding, 0.0, weight_shape=qweight.shape, x_shape=x.shape)


def qlinear_adder_conv2d_node(x, qweight, scale: float, zero_point: int, multiplier, bias, y_scale: float, y_zero_point: int,
                              relu: bool, stride: list[int], padding: list[int]):
    pads = [padding[0], padding[1], padding[0], padding[1]]
    y = _qlinear_node(_quantized(x, scale, zero_point), qweight, op.Constant(value=_scalar(zero_point)), multiplier, bias,
                      op.Constant(value=_scalar(y_zero_point)), strides=list(stride), pads=pads, relu=int(relu),
                      plugin_namespace=DOMAIN)
    return _dequantized(y, y_scale, y_zero_point)


def qlinear_adder_conv2d_portable(x, qweight, scale: float, zero_point: int, multiplier, bias, y_scale: float, y_zero_point: int,
                                  relu: bool, stride: list[int], padding: list[int]):
    """The fused node in standard operators: QuantizeLinear with scale 1 is round half to even,
    the zero point and saturation."""
    sums = op.Cast(adder_conv2d_integer_portable(x, qweight, scale, zero_point, stride, padding), to=onnx.TensorProto.FLOAT)
    per_channel = op.Constant(value_ints=[1, -1, 1, 1])
    v = op.Add(op.Mul(sums, op.Reshape(multiplier, per_channel)), op.Reshape(bias, per_channel))
    y = op.QuantizeLinear(op.Relu(v) if relu else v, op.Constant(value_float=1.0), op.Constant(value=_scalar(y_zero_point)))
    return _dequantized(y, y_scale, y_zero_point)


def _dequantized(y, scale: float, zero_point: int):
    return op.DequantizeLinear(y, op.Constant(value_float=scale), op.Constant(value=_scalar(zero_point)))


def quantize_dequantize(x, scale: float, zero_point: int):
    return _dequantized(_quantized(x, scale, zero_point), scale, zero_point)


def adder_conv2d_portable(x, weight, stride: list[int], padding: list[int], eta: float, weight_shape=None, x_shape=None):
    out_channels, in_channels, kh, kw = (int(d) for d in (weight_shape or weight.shape))
    height, width = int((x_shape or x.shape)[2]), int((x_shape or x.shape)[3])
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

    import kdforge.nn.adder_int8  # noqa: F401  (registers the ops)

    ops = torch.ops.kdforge
    common = {ops.quantize_dequantize.default: quantize_dequantize}
    if portable:
        return {**common, ops.adder_conv2d.default: adder_conv2d_portable, ops.adder_conv2d_integer.default: adder_conv2d_integer_portable,
                ops.qlinear_adder_conv2d.default: qlinear_adder_conv2d_portable}
    return {**common, ops.adder_conv2d.default: adder_conv2d_node, ops.adder_conv2d_integer.default: adder_conv2d_integer_node,
            ops.qlinear_adder_conv2d.default: qlinear_adder_conv2d_node}
