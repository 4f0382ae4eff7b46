"""The adder convolution's geometry, checked before any kernel touches memory.

Every entry point of the op (the numba kernels behind the torch op and the ONNX Runtime Python
operator, the Triton launch, the TensorRT plugin's shape descriptor, the loader of ONNX files)
calls `check` first; the native ONNX Runtime kernel (adder_ort_op.c) repeats the same checks in
C. A malformed layer or node gets an `AdderGeometryError` that names it and the attribute or
input at fault, never a kernel run on memory that does not belong to the tensors.

Pure Python (no torch, no numpy): the inference processes that import it have neither for sure.
"""

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class AdderGeometryError(ValueError):
    """A malformed adder layer or node; the message names it and what is wrong."""


def _ints(values, name: str, where: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise AdderGeometryError(f"{where}: attribute '{name}' must be a list of integers, got {values!r}") from None


def node_attributes(strides, pads, where: str) -> tuple[int, int, int, int]:
    """(stride_h, stride_w, pad_h, pad_w) of an exported node: `strides` two integers >= 1, `pads`
    four integers >= 0 as ONNX orders them (top, left, bottom, right), symmetric."""
    pads = _ints(pads, "pads", where)
    if len(pads) != 4 or min(pads) < 0:
        raise AdderGeometryError(f"{where}: attribute 'pads' must be 4 integers >= 0, got {pads}")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise AdderGeometryError(f"{where}: attribute 'pads' must be symmetric (top = bottom, left = right), got {pads}")
    return layer_attributes(strides, pads[:2], where)


def _product(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def layer_attributes(stride, padding, where: str, limit: int = INT64_MAX) -> tuple[int, int, int, int]:
    """(sh, sw, ph, pw) of a layer's `stride` (two integers >= 1) and `padding` (two integers >= 0)."""
    stride, padding = _ints(stride, "strides", where), _ints(padding, "pads", where)
    if len(stride) != 2 or min(stride) < 1:
        raise AdderGeometryError(f"{where}: attribute 'strides' must be 2 integers >= 1, got {stride}")
    if len(padding) != 2 or min(padding) < 0:
        raise AdderGeometryError(f"{where}: attribute 'pads' must be 2 integers >= 0, got {padding}")
    if max(stride + padding) > limit:
        raise AdderGeometryError(f"{where}: strides {stride} or pads {padding} exceed this kernel's index range ({limit})")
    return stride[0], stride[1], padding[0], padding[1]


def check(x_shape, w_shape, stride, padding, where: str, limit: int = INT64_MAX) -> tuple[int, int, int, int]:
    """The output shape (N, O, Ho, Wo) of input X (N, C, H, W) and weight W (O, C, kh, kw) with
    `stride` (sh, sw) >= 1 and `padding` (ph, pw) >= 0; every element count, stride and pad must
    stay <= `limit` (the kernel's index type)."""
    sh, sw, ph, pw = layer_attributes(stride, padding, where, limit)
    x_shape, w_shape = _ints(x_shape, "X shape", where), _ints(w_shape, "W shape", where)
    if len(x_shape) != 4:
        raise AdderGeometryError(f"{where}: input X must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise AdderGeometryError(f"{where}: weight W must be 4-D (O, C, kh, kw), got shape {tuple(w_shape)}")
    n, c, h, w = x_shape
    o, wc, kh, kw = w_shape
    if n < 0 or min(c, h, w) < 1:
        raise AdderGeometryError(f"{where}: input X of shape {tuple(x_shape)} is empty")
    if min(o, wc, kh, kw) < 1:
        raise AdderGeometryError(f"{where}: weight W of shape {tuple(w_shape)} is empty")
    if wc != c:
        raise AdderGeometryError(f"{where}: weight W has {wc} input channels but input X has {c}")
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise AdderGeometryError(f"{where}: the {kh}x{kw} kernel is larger than the padded {h + 2 * ph}x{w + 2 * pw} input "
                                 f"(pads {ph}, {pw}); the output would be empty")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    for what, count in (("input X", _product(x_shape)), ("weight W", _product(w_shape)), ("output", n * o * ho * wo),
                        ("receptive field", c * kh * kw), ("padded height", h + 2 * ph), ("padded width", w + 2 * pw)):
        if count > limit:
            raise AdderGeometryError(f"{where}: the {what} would have {count} elements, more than this kernel indexes ({limit})")
    return n, o, ho, wo
