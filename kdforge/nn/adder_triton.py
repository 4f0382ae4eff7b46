"""The adder convolution's CUDA kernels, in Triton: the same formula and backward as adder_cpu.py.

forward:   one program per (block of output pixels over the batch) x (block of filters); the
           receptive field is gathered on the fly (implicit im2col, zero padding by masked
           loads) and |x - w| accumulated in a (BLOCK_P x BLOCK_O) register tile.
weight:    dW = sum_p G^T X_col - W * sum_p G, one program per (filter block, column block), the
           first term as a tl.dot over pixel blocks in full fp32 precision.
input:     dX_col = sum_o G * HardTanh(W - X_col), folded onto dX with atomic adds.

These kernels are registered as the op's CUDA implementation; they also run on CPU tensors
under TRITON_INTERPRET=1 (how the tests check them here) and compile to PTX for a named GPU
target without a GPU (`compile_forward`), which is what the TensorRT plugin embeds in an engine.
The forward kernel's arguments are ordered (inputs, scalars, output), the calling convention of
TensorRT's ahead-of-time plugins, so one kernel serves the torch op and the engine.
"""

import torch
import triton
import triton.language as tl

from kdforge.nn.adder_geometry import INT32_MAX, check


@triton.jit
def _pixel_coords(offs_p, Ho, Wo):
    n = offs_p // (Ho * Wo)
    rem = offs_p % (Ho * Wo)
    return n, rem, rem // Wo, rem % Wo


@triton.jit
def adder_forward_kernel(x_ptr, w_ptr, N, C, H, W, O, Ho, Wo, SH, SW, PH, PW, y_ptr,
                         KH: tl.constexpr, KW: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_p, mask_o = offs_p < N * Ho * Wo, offs_o < O
    n, rem, i, j = _pixel_coords(offs_p, Ho, Wo)
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for c in range(0, C):
        for u in tl.static_range(KH):
            hi = i * SH - PH + u
            for v in tl.static_range(KW):
                wj = j * SW - PW + v
                inside = mask_p & (hi >= 0) & (hi < H) & (wj >= 0) & (wj < W)
                xv = tl.load(x_ptr + ((n * C + c) * H + hi) * W + wj, mask=inside, other=0.0)
                wv = tl.load(w_ptr + ((offs_o * C + c) * KH + u) * KW + v, mask=mask_o, other=0.0)
                acc += tl.abs(xv[:, None] - wv[None, :])
    out = y_ptr + (n[:, None] * O + offs_o[None, :]) * (Ho * Wo) + rem[:, None]
    tl.store(out, -acc, mask=mask_p[:, None] & mask_o[None, :])


@triton.jit
def _gather_cols(x_ptr, n, i, j, mask_p, offs_k, C, H, W, SH, SW, PH, PW, KH: tl.constexpr, KW: tl.constexpr):
    c = offs_k // (KH * KW)
    u = (offs_k // KW) % KH
    v = offs_k % KW
    hi = i[:, None] * SH - PH + u[None, :]
    wj = j[:, None] * SW - PW + v[None, :]
    inside = mask_p[:, None] & (offs_k < C * KH * KW)[None, :] & (hi >= 0) & (hi < H) & (wj >= 0) & (wj < W)
    ptrs = x_ptr + ((n[:, None] * C + c[None, :]) * H + hi) * W + wj
    return tl.load(ptrs, mask=inside, other=0.0), inside


@triton.jit
def adder_weight_grad_kernel(x_ptr, w_ptr, g_ptr, dw_ptr, N, C, H, W, O, Ho, Wo, SH, SW, PH, PW,
                             KH: tl.constexpr, KW: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_o, mask_k = offs_o < O, offs_k < C * KH * KW
    acc = tl.zeros((BLOCK_O, BLOCK_K), dtype=tl.float32)
    gsum = tl.zeros((BLOCK_O,), dtype=tl.float32)
    for p0 in range(0, N * Ho * Wo, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < N * Ho * Wo
        n, rem, i, j = _pixel_coords(offs_p, Ho, Wo)
        cols, _ = _gather_cols(x_ptr, n, i, j, mask_p, offs_k, C, H, W, SH, SW, PH, PW, KH, KW)
        g = tl.load(g_ptr + (n[:, None] * O + offs_o[None, :]) * (Ho * Wo) + rem[:, None],
                    mask=mask_p[:, None] & mask_o[None, :], other=0.0)
        acc += tl.dot(tl.trans(g), cols, input_precision="ieee")
        gsum += tl.sum(g, axis=0)
    w_ptrs = offs_o[:, None] * (C * KH * KW) + offs_k[None, :]
    mask = mask_o[:, None] & mask_k[None, :]
    w = tl.load(w_ptr + w_ptrs, mask=mask, other=0.0)
    tl.store(dw_ptr + w_ptrs, acc - w * gsum[:, None], mask=mask)


@triton.jit
def adder_input_grad_kernel(x_ptr, w_ptr, g_ptr, dx_ptr, N, C, H, W, O, Ho, Wo, SH, SW, PH, PW,
                            KH: tl.constexpr, KW: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_p, mask_k = offs_p < N * Ho * Wo, offs_k < C * KH * KW
    n, rem, i, j = _pixel_coords(offs_p, Ho, Wo)
    cols, inside = _gather_cols(x_ptr, n, i, j, mask_p, offs_k, C, H, W, SH, SW, PH, PW, KH, KW)
    gcols = tl.zeros((BLOCK_P, BLOCK_K), dtype=tl.float32)
    for o in range(0, O):
        g = tl.load(g_ptr + (n * O + o) * (Ho * Wo) + rem, mask=mask_p, other=0.0)
        w = tl.load(w_ptr + o * (C * KH * KW) + offs_k, mask=mask_k, other=0.0)
        gcols += g[:, None] * tl.clamp(w[None, :] - cols, -1.0, 1.0)
    c = offs_k // (KH * KW)
    hi = i[:, None] * SH - PH + ((offs_k // KW) % KH)[None, :]
    wj = j[:, None] * SW - PW + (offs_k % KW)[None, :]
    tl.atomic_add(dx_ptr + ((n[:, None] * C + c[None, :]) * H + hi) * W + wj, gcols, mask=inside)


FORWARD_BLOCKS = {"BLOCK_P": 64, "BLOCK_O": 32}
_WEIGHT_BLOCKS = {"BLOCK_P": 32, "BLOCK_O": 32, "BLOCK_K": 32}
_INPUT_BLOCKS = {"BLOCK_P": 32, "BLOCK_K": 32}


def _geometry(x, weight, stride, padding):
    """The kernels' scalar arguments, checked first: the kernels index in int32 without bounds checks."""
    n, o, ho, wo = check(x.shape, weight.shape, stride, padding, "adder_conv2d (CUDA)", limit=INT32_MAX)
    _, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    return (n, c, h, w, o, ho, wo, stride[0], stride[1], padding[0], padding[1]), {"KH": kh, "KW": kw}


def forward(x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int], eta: float = 0.0) -> torch.Tensor:
    x, weight = x.contiguous().float(), weight.contiguous().float()
    dims, kernel = _geometry(x, weight, stride, padding)
    n, _, _, _, o, ho, wo = dims[:7]
    y = torch.empty((n, o, ho, wo), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(n * ho * wo, FORWARD_BLOCKS["BLOCK_P"]), triton.cdiv(o, FORWARD_BLOCKS["BLOCK_O"]))
    adder_forward_kernel[grid](x, weight, *dims, y, **kernel, **FORWARD_BLOCKS)
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int]):
    x, weight, grad = x.contiguous().float(), weight.contiguous().float(), grad.contiguous().float()
    dims, kernel = _geometry(x, weight, stride, padding)
    n, _, _, _, o, ho, wo = dims[:7]
    if tuple(grad.shape) != (n, o, ho, wo):
        raise ValueError(f"adder_conv2d backward (CUDA): gradient of shape {tuple(grad.shape)}, expected {(n, o, ho, wo)}")
    k_len = weight[0].numel()
    grad_w = torch.empty_like(weight)
    grid_w = (triton.cdiv(o, _WEIGHT_BLOCKS["BLOCK_O"]), triton.cdiv(k_len, _WEIGHT_BLOCKS["BLOCK_K"]))
    adder_weight_grad_kernel[grid_w](x, weight, grad, grad_w, *dims, **kernel, **_WEIGHT_BLOCKS)
    grad_x = torch.zeros_like(x)
    grid_x = (triton.cdiv(n * ho * wo, _INPUT_BLOCKS["BLOCK_P"]), triton.cdiv(k_len, _INPUT_BLOCKS["BLOCK_K"]))
    adder_input_grad_kernel[grid_x](x, weight, grad, grad_x, *dims, **kernel, **_INPUT_BLOCKS)
    return grad_x, grad_w


FORWARD_SCALARS = ("N", "C", "H", "W", "O", "Ho", "Wo", "SH", "SW", "PH", "PW")
FORWARD_BLOCKS = FORWARD_BLOCKS


def compile_forward(kernel_h: int, kernel_w: int, capability=None):
    """The forward kernel compiled for fp32 and a kernel size: for `capability` (e.g. 90, Hopper)
    without a GPU, or for the current GPU when None. `.asm["ptx"]` is its PTX."""
    from triton.compiler import ASTSource

    signature = {"x_ptr": "*fp32", "w_ptr": "*fp32", **{s: "i32" for s in FORWARD_SCALARS}, "y_ptr": "*fp32",
                 "KH": "constexpr", "KW": "constexpr", "BLOCK_P": "constexpr", "BLOCK_O": "constexpr"}
    constexprs = {"KH": kernel_h, "KW": kernel_w, **FORWARD_BLOCKS}
    source = ASTSource(adder_forward_kernel, signature, constexprs=constexprs)
    if capability is None:
        return triton.compile(source)
    from triton.backends.compiler import GPUTarget

    return triton.compile(source, target=GPUTarget("cuda", capability, 32))


def compile_ptx(kernel_size: int = 3, capability: int = 90) -> str:
    """PTX of the forward kernel for one compute capability, compiled without a GPU."""
    return compile_forward(kernel_size, kernel_size, capability).asm["ptx"]
