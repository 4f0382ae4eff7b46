"""`torch.ops.kdforge.adder_conv2d`: the adder convolution as one torch.library custom op.

One opaque op for eager mode, torch.compile, torch.export, the ONNX exporter and the cost
counter. Kernels: CPU (numba, adder_cpu.py) and CUDA (Triton, adder_triton.py, registered when
Triton imports). A fake implementation gives shapes to the compilers. Autograd is AdderNet's:
the weight gradient uses the full-precision difference X - W, the input gradient HardTanh(W - X),
and the weight gradient of each call is rescaled by eta * sqrt(numel(W)) / ||dW||_2 (the
paper's adaptive learning rate; eta = 0 turns it off).
"""

import math

import torch
from torch import Tensor

from kdforge.nn import adder_cpu
from kdforge.nn.adder_geometry import layer_attributes


def _float32_numpy(t: Tensor):
    return t.detach().to(torch.float32).contiguous().numpy()


@torch.library.custom_op("kdforge::adder_conv2d", mutates_args=(), device_types="cpu")
def adder_conv2d(x: Tensor, weight: Tensor, stride: list[int], padding: list[int], eta: float) -> Tensor:
    """Y = -sum |Xpad - W| over each receptive field; no bias."""
    y = adder_cpu.adder_conv2d_forward(_float32_numpy(x), _float32_numpy(weight), stride, padding)
    return torch.from_numpy(y).to(x.dtype)


@torch.library.custom_op("kdforge::adder_conv2d_backward", mutates_args=(), device_types="cpu")
def adder_conv2d_backward(grad: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int]) -> tuple[Tensor, Tensor]:
    """(dX, dW) of AdderNet's backward, without the adaptive rescaling."""
    gx, gw = adder_cpu.adder_conv2d_backward(_float32_numpy(x), _float32_numpy(weight), _float32_numpy(grad), stride, padding)
    return torch.from_numpy(gx).to(x.dtype), torch.from_numpy(gw).to(weight.dtype)


def output_shape(x_shape, w_shape, stride, padding) -> tuple[int, int, int, int]:
    n, _, h, w = x_shape
    o, _, kh, kw = w_shape
    return (n, o, (h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1)


@adder_conv2d.register_fake
def _adder_conv2d_fake(x, weight, stride, padding, eta):
    layer_attributes(stride, padding, "adder_conv2d")  # shapes may be symbolic here; the kernels check them
    torch._check(x.dim() == 4 and weight.dim() == 4, lambda: "adder_conv2d: input and weight must be 4-D")
    torch._check(x.shape[1] == weight.shape[1], lambda: "adder_conv2d: input and weight channels differ")
    return x.new_empty(output_shape(x.shape, weight.shape, stride, padding))


@adder_conv2d_backward.register_fake
def _adder_conv2d_backward_fake(grad, x, weight, stride, padding):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, stride, padding, eta = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride, ctx.padding, ctx.eta = stride, padding, eta


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x, grad_w = adder_conv2d_backward(grad.contiguous(), x, weight, ctx.stride, ctx.padding)
    if ctx.eta > 0:
        grad_w = grad_w * (ctx.eta * math.sqrt(weight.numel()) / grad_w.norm().clamp_min(1e-12))
    return grad_x, grad_w, None, None, None


adder_conv2d.register_autograd(_backward, setup_context=_setup_context)


def _register_cuda_kernels() -> None:
    """The Triton kernels become the op's CUDA implementation where CUDA and Triton exist."""
    if not torch.cuda.is_available():
        return
    try:
        from kdforge.nn import adder_triton
    except ImportError:  # CUDA without Triton: the op then says it has no CUDA kernel
        return
    adder_conv2d.register_kernel("cuda")(adder_triton.forward)
    adder_conv2d_backward.register_kernel("cuda")(adder_triton.backward)


_register_cuda_kernels()
