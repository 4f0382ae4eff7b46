"""The INT8 adder layers: `torch.ops.kdforge.adder_conv2d_integer` and `QuantizedAdderConv2d` (int32
sums, float out), and `torch.ops.kdforge.qlinear_adder_conv2d` and `QLinearAdderConv2d` (batch
norm, ReLU and the next layer's quantization folded in: uint8 out, as ONNX's QLinearConv).

An adder layer can run on integers only if its input X and weight W share one scale s and zero
point z: then |s(qx - z) - s(qw - z)| = s |qx - qw|, and the layer is a sum of absolute
differences of bytes (kdforge.export.adder_onnx's kdforge::AdderConv2dInteger node; its CPU
kernel uses SAD instructions). This module is that layer in PyTorch, the reference the exported
INT8 file is verified against: X is quantized exactly as ONNX's QuantizeLinear does (round half
to even, saturate to 0..255), and -sum |qx - qw| is computed by the float adder op on qx - z and
qw - z, which is exact: every term is an integer <= 255 and every partial sum stays below 2^24,
float32's exact-integer range (checked). How s, z and the weights are chosen is
kdforge.export.adder_int8's job.

The fused layer requantizes the int32 sum S straight to the next layer's uint8:
Y_q = saturate(round_half_even(v) + y_zero_point), v = multiplier[o] * S + bias[o] (then max(v, 0)
with `relu`), a multiplication and an addition in float32, each rounded, in that order; the
native kernel computes it the same way, so the two agree bit for bit. The PyTorch op returns
Y_q dequantized, (Y_q - y_zero_point) * y_scale, which is what the ONNX file's DequantizeLinear
computes.
"""

import torch
from torch import Tensor, nn

from kdforge.nn.adder_geometry import AdderGeometryError
from kdforge.nn.adder_op import adder_conv2d, output_shape

FLOAT32_EXACT_FIELD = 2**24 // 255  # receptive fields whose sums of |qx - qw| stay exact in float32


def quantize(x: Tensor, scale: float, zero_point: int) -> Tensor:
    """ONNX QuantizeLinear to uint8, as float values: clamp(round_half_even(x / scale) + z, 0, 255)."""
    return torch.clamp(torch.round(x / scale) + zero_point, 0, 255)


@torch.library.custom_op("kdforge::adder_conv2d_integer", mutates_args=())
def adder_conv2d_integer(x: Tensor, qweight: Tensor, scale: float, zero_point: int, stride: list[int], padding: list[int]) -> Tensor:
    """int32 Y = -sum |Xpad_q - W_q| of X quantized with (scale, zero_point) and uint8 weights
    `qweight` on the same scale; the padding is the zero point."""
    field = qweight[0].numel()
    if field > FLOAT32_EXACT_FIELD:
        raise AdderGeometryError(f"adder_conv2d_integer: a receptive field of {field} values is beyond the PyTorch reference's "
                                 f"exact range ({FLOAT32_EXACT_FIELD})")
    centred_x = quantize(x.to(torch.float32), scale, zero_point) - zero_point
    centred_w = qweight.to(torch.float32) - zero_point
    return adder_conv2d(centred_x, centred_w, stride, padding, 0.0).round().to(torch.int32)


@adder_conv2d_integer.register_fake
def _adder_conv2d_integer_fake(x, qweight, scale, zero_point, stride, padding):
    return x.new_empty(output_shape(x.shape, qweight.shape, stride, padding), dtype=torch.int32)


class QuantizedAdderConv2d(nn.Module):
    """An AdderConv2d on integers: Y = scale * adder_conv2d_integer(X, qweight) - correction,
    where `correction` (one value per filter) restores what clamping the weights into the shared
    range removed (see kdforge.export.adder_int8)."""

    def __init__(self, qweight: Tensor, correction: Tensor, scale: float, zero_point: int, stride: int, padding: int):
        super().__init__()
        self.register_buffer("qweight", qweight.to(torch.uint8))
        self.register_buffer("correction", correction.reshape(1, -1, 1, 1).to(torch.float32))
        self.scale, self.zero_point, self.stride, self.padding = float(scale), int(zero_point), stride, padding

    def forward(self, x: Tensor) -> Tensor:
        s, p = self.stride, self.padding
        y = adder_conv2d_integer(x, self.qweight, self.scale, self.zero_point, [s, s], [p, p])
        return y.to(x.dtype) * self.scale - self.correction

    def extra_repr(self) -> str:
        o, c, k, _ = self.qweight.shape
        return f"{c}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, scale={self.scale:.4g}, zero_point={self.zero_point}"


@torch.library.custom_op("kdforge::qlinear_adder_conv2d", mutates_args=())
def qlinear_adder_conv2d(x: Tensor, qweight: Tensor, scale: float, zero_point: int, multiplier: Tensor, bias: Tensor,
                         y_scale: float, y_zero_point: int, relu: bool, stride: list[int], padding: list[int]) -> Tensor:
    """The fused INT8 adder layer (module docstring), dequantized with (y_scale, y_zero_point)."""
    sums = adder_conv2d_integer(x, qweight, scale, zero_point, stride, padding).to(torch.float32)
    v = sums * multiplier.reshape(1, -1, 1, 1)
    v = v + bias.reshape(1, -1, 1, 1)
    if relu:
        v = torch.relu(v)
    q = torch.clamp(torch.round(v) + y_zero_point, 0, 255)
    return (q - y_zero_point) * y_scale


@qlinear_adder_conv2d.register_fake
def _qlinear_adder_conv2d_fake(x, qweight, scale, zero_point, multiplier, bias, y_scale, y_zero_point, relu, stride, padding):
    return x.new_empty(output_shape(x.shape, qweight.shape, stride, padding), dtype=torch.float32)


@torch.library.custom_op("kdforge::quantize_dequantize", mutates_args=())
def quantize_dequantize(x: Tensor, scale: float, zero_point: int) -> Tensor:
    """x through QuantizeLinear and DequantizeLinear to uint8 and back: what the tensors between
    fused adder layers hold."""
    return (quantize(x.to(torch.float32), scale, zero_point) - zero_point) * scale


@quantize_dequantize.register_fake
def _quantize_dequantize_fake(x, scale, zero_point):
    return torch.empty_like(x, dtype=torch.float32)


class QLinearAdderConv2d(nn.Module):
    """An adder layer with its batch norm, ReLU and output quantization folded in: uint8 in
    (quantized with `scale`, `zero_point`), uint8 out (`y_scale`, `y_zero_point`); see
    kdforge.export.adder_int8 for how `multiplier` and `bias` are made."""

    def __init__(self, qweight: Tensor, multiplier: Tensor, bias: Tensor, scale: float, zero_point: int,
                 y_scale: float, y_zero_point: int, relu: bool, stride: int, padding: int):
        super().__init__()
        self.register_buffer("qweight", qweight.to(torch.uint8))
        self.register_buffer("multiplier", multiplier.reshape(-1).to(torch.float32))
        self.register_buffer("bias", bias.reshape(-1).to(torch.float32))
        self.scale, self.zero_point, self.y_scale, self.y_zero_point = float(scale), int(zero_point), float(y_scale), int(y_zero_point)
        self.relu, self.stride, self.padding = bool(relu), stride, padding

    def forward(self, x: Tensor) -> Tensor:
        s, p = self.stride, self.padding
        return qlinear_adder_conv2d(x, self.qweight, self.scale, self.zero_point, self.multiplier, self.bias,
                                    self.y_scale, self.y_zero_point, self.relu, [s, s], [p, p])

    def extra_repr(self) -> str:
        o, c, k, _ = self.qweight.shape
        return (f"{c}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, scale={self.scale:.4g}, "
                f"zero_point={self.zero_point}, y_scale={self.y_scale:.4g}, y_zero_point={self.y_zero_point}, relu={self.relu}")
