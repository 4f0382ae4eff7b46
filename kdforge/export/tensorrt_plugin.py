"""The TensorRT plugin for kdforge::AdderConv2d: a Quick Deployable Plugin (tensorrt.plugin) with
an ahead-of-time implementation. TensorRT's ONNX parser finds it by op_type and the node's
`plugin_namespace` ("kdforge::AdderConv2d"); the AOT implementation compiles the same Triton
forward kernel the torch CUDA op runs (kdforge/nn/adder_triton.py) to PTX, which TensorRT embeds
in the engine, so the engine runs without Python.

`register()` registers the plugin and needs TensorRT (10.9 or newer) and Triton (3.3 or newer);
the geometry below (attributes, static shapes, output shape, launch grid) is plain Python.
The shape descriptor checks the node's attributes, and every dimension TensorRT already knows,
with the same checks as every other entry point of the op (kdforge.nn.adder_geometry), before
an engine with that node can be built: the kernel indexes in int32 without bounds checks.
"""

import re
from math import ceil

from kdforge.errors import UserError
from kdforge.nn.adder_geometry import INT32_MAX, AdderGeometryError, check, node_attributes

PLUGIN_ID = "kdforge::AdderConv2d"
_WHERE = "TensorRT plugin kdforge::AdderConv2d"


def geometry(strides, pads) -> tuple[int, int, int, int]:
    """(stride_h, stride_w, pad_h, pad_w) of a node's attributes, checked."""
    sh, sw, ph, pw = node_attributes(strides, pads, _WHERE)
    if max(sh, sw, ph, pw) > INT32_MAX:
        raise AdderGeometryError(f"{_WHERE}: strides or pads exceed the kernel's int32 index range")
    return sh, sw, ph, pw


def check_static_shapes(x_dims, w_dims, sh: int, sw: int, ph: int, pw: int) -> None:
    """Checks the input and weight shapes where every dimension is a known integer (None marks
    one TensorRT will only know at run time, such as a dynamic batch, which counts as 1 here)."""
    if len(x_dims) != 4 or len(w_dims) != 4:
        raise AdderGeometryError(f"{_WHERE}: input X and weight W must be 4-D, got ranks {len(x_dims)} and {len(w_dims)}")
    x_dims = [1 if d is None else d for d in x_dims]
    if None not in w_dims:
        check(x_dims, w_dims, (sh, sw), (ph, pw), _WHERE, limit=INT32_MAX)


def _known(dim):
    """A TensorRT shape expression's value where it is a build-time constant, else None (a
    dynamic dimension, or a "fake" expression, whose is_constant raises RuntimeError)."""
    try:
        return int(dim.constant_value()) if not dim.is_fake and dim.is_constant else None
    except RuntimeError:
        return None


def output_size(size, kernel, stride: int, pad: int):
    """Works on ints and on TensorRT's symbolic shape expressions alike."""
    return (size + 2 * pad - kernel) // stride + 1


def launch_grid(pixels_total: int, out_channels: int, block_p: int, block_o: int) -> tuple[int, int]:
    """(grid_x, grid_y) of the forward kernel: blocks of output pixels over the batch x blocks of filters."""
    return ceil(pixels_total / block_p), ceil(out_channels / block_o)


MIN_TENSORRT = (10, 9)  # the first TensorRT whose tensorrt.plugin has ahead-of-time implementations
MIN_TRITON = (3, 3)  # the first Triton with the compile signature compile_forward uses


def version_tuple(text: str) -> tuple[int, ...]:
    """(10, 13, 3) of "10.13.3.9.post1"."""
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_versions(tensorrt_version: str, triton_version: str) -> None:
    """One sentence where TensorRT or Triton is too old for the plugin."""
    if version_tuple(tensorrt_version) < MIN_TENSORRT:
        raise UserError(f"TensorRT {tensorrt_version} is older than 10.9, the first whose Python plugins take an "
                        f"ahead-of-time kernel; install TensorRT 10.9 or newer.")
    if version_tuple(triton_version) < MIN_TRITON:
        raise UserError(f"Triton {triton_version} is older than 3.3, which kdforge's adder kernel compiles with; "
                        f"install Triton 3.3 or newer.")


def launchable_ptx(ptx: str, kernel: str, params: int) -> str:
    """`ptx` with the entry `kernel` taking its first `params` parameters only. TensorRT's AOT
    launcher passes exactly the inputs, the extra scalars and the outputs; Triton 3.3+ appends
    pointers to scratch buffers after them, which are dropped here. A kernel that reads them (a
    non-zero scratch size) cannot be launched by TensorRT: ValueError."""
    start = ptx.index(f".entry {kernel}(")
    end = ptx.index(")", start)
    declared = [line.strip().rstrip(",") for line in ptx[start:end].splitlines()[1:] if line.strip()]
    if len(declared) < params:
        raise ValueError(f"{kernel} takes {len(declared)} parameters, fewer than the {params} TensorRT passes")
    dropped = [line.split()[-1] for line in declared[params:]]
    body = ptx[end:]
    if any(re.search(rf"\b{re.escape(name)}\b", body) for name in dropped):
        raise ValueError(f"{kernel} reads its scratch parameters {dropped}, which TensorRT does not pass")
    signature = ",\n".join(f"\t{line}" for line in declared[:params])
    return f"{ptx[:start]}.entry {kernel}(\n{signature}\n{body}"


def _registered(trtp) -> bool:
    """Whether this process has already registered the plugin with TensorRT (registering twice raises)."""
    try:
        getattr(getattr(trtp.op, PLUGIN_ID.split("::")[0]), PLUGIN_ID.split("::")[1])
    except AttributeError:
        return False
    return True


def register(capability: int | None = None) -> None:
    """Registers the plugin's shape descriptor and AOT implementation with TensorRT, once per
    process. `capability` (e.g. 90) compiles the kernel for that GPU without one; None, for the
    GPU TensorRT builds on."""
    import typing

    import numpy as np
    import numpy.typing as npt
    import tensorrt as trt
    import tensorrt.plugin as trtp
    import triton

    from kdforge.nn import adder_triton

    check_versions(trt.__version__, triton.__version__)
    if _registered(trtp):
        return
    Ints = npt.NDArray[np.int32]  # what TensorRT's validator asks of array attributes, and what the ONNX parser passes
    Kernel = typing.Tuple[typing.Union[str, bytes], typing.Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]

    @trtp.register(PLUGIN_ID)
    def adder_desc(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: Ints, pads: Ints,
                   plugin_namespace: str) -> typing.Tuple[trtp.TensorDesc]:
        sh, sw, ph, pw = geometry(strides, pads)
        check_static_shapes([_known(x.shape_expr[i]) for i in range(len(x.shape_expr))],
                            [_known(w.shape_expr[i]) for i in range(len(w.shape_expr))], sh, sw, ph, pw)
        n, o = x.shape_expr[0], w.shape_expr[0]
        ho = output_size(x.shape_expr[2], w.shape_expr[2], sh, ph)
        wo = output_size(x.shape_expr[3], w.shape_expr[3], sw, pw)
        return (trtp.from_shape_expr((n, o, ho, wo), dtype=x.dtype),)

    @trtp.autotune(PLUGIN_ID)
    def adder_autotune(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: Ints, pads: Ints,
                       plugin_namespace: str, outputs: typing.Tuple[trtp.TensorDesc]) -> typing.List[trtp.AutoTuneCombination]:
        """The precisions the plugin supports: fp32 only (the Triton kernel's)."""
        return [trtp.AutoTuneCombination("FP32, FP32, FP32", "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def adder_aot(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: Ints, pads: Ints, plugin_namespace: str,
                  outputs: typing.Tuple[trtp.TensorDesc], tactic: int) -> Kernel:
        sh, sw, ph, pw = geometry(strides, pads)
        kh, kw = int(w.shape_expr[2].constant_value()), int(w.shape_expr[3].constant_value())
        compiled = adder_triton.compile_forward(kh, kw, capability)
        n, c, h, wd = (x.shape_expr[i] for i in range(4))
        o = w.shape_expr[0]
        ho, wo = outputs[0].shape_expr[2], outputs[0].shape_expr[3]
        blocks = adder_triton.FORWARD_BLOCKS
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(n * ho * wo, blocks["BLOCK_P"])
        params.grid_y = trtp.cdiv(o, blocks["BLOCK_O"])
        params.block_x = compiled.metadata.num_warps * 32
        params.shared_mem = compiled.metadata.shared
        scalars = [n, c, h, wd, o, ho, wo, sh, sw, ph, pw]  # the kernel's order: adder_triton.FORWARD_SCALARS
        extra = trtp.SymIntExprs(len(scalars))
        for i, value in enumerate(scalars):
            extra[i] = trtp.SymInt32(value)
        ptx = launchable_ptx(compiled.asm["ptx"], compiled.metadata.name, 2 + len(scalars) + 1)
        return compiled.metadata.name, ptx, params, extra
