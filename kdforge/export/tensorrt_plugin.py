"""The TensorRT plugin for kdforge::AdderConv2d: a Quick Deployable Plugin (tensorrt.plugin) with
an ahead-of-time implementation. TensorRT's ONNX parser finds it by op_type and the node's
`plugin_namespace` ("kdforge::AdderConv2d"); the AOT implementation compiles the same Triton
forward kernel the torch CUDA op runs (kdforge/nn/adder_triton.py) to PTX, which TensorRT embeds
in the engine, so the engine runs without Python.

Importing this module registers the plugin and needs TensorRT; the geometry below (attributes,
static shapes, output shape, launch grid) is plain Python, tested on machines without TensorRT.
The shape descriptor checks the node's attributes, and every dimension TensorRT already knows,
with the same checks as every other entry point of the op (kdforge.nn.adder_geometry), before
an engine with that node can be built: the kernel indexes in int32 without bounds checks.
"""

from math import ceil

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


def register() -> None:
    """Registers the plugin's shape descriptor and AOT implementation with TensorRT."""
    import numpy as np
    import tensorrt.plugin as trtp

    from kdforge.nn import adder_triton

    @trtp.register(PLUGIN_ID)
    def adder_desc(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: np.ndarray, pads: np.ndarray,
                   plugin_namespace: str) -> tuple[trtp.TensorDesc]:
        sh, sw, ph, pw = geometry(strides, pads)
        check_static_shapes([_known(x.shape_expr[i]) for i in range(len(x.shape_expr))],
                            [_known(w.shape_expr[i]) for i in range(len(w.shape_expr))], sh, sw, ph, pw)
        n, o = x.shape_expr[0], w.shape_expr[0]
        ho = output_size(x.shape_expr[2], w.shape_expr[2], sh, ph)
        wo = output_size(x.shape_expr[3], w.shape_expr[3], sw, pw)
        return trtp.from_shape_expr((n, o, ho, wo), dtype=x.dtype)

    @trtp.autotune(PLUGIN_ID)
    def adder_autotune(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: np.ndarray, pads: np.ndarray,
                       plugin_namespace: str, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        """The precisions the plugin supports: fp32 only (the Triton kernel's); in fp16 and INT8
        engines TensorRT converts the tensors around it."""
        return [trtp.AutoTuneCombination("FP32, FP32, FP32", "LINEAR")]

    @trtp.aot_impl(PLUGIN_ID)
    def adder_aot(x: trtp.TensorDesc, w: trtp.TensorDesc, strides: np.ndarray, pads: np.ndarray,
                  plugin_namespace: str, outputs: tuple[trtp.TensorDesc], tactic: int):
        sh, sw, ph, pw = geometry(strides, pads)
        kh, kw = int(w.shape_expr[2].constant_value()), int(w.shape_expr[3].constant_value())
        compiled = adder_triton.compile_forward(kh, kw)
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
        return compiled.metadata.name, compiled.asm["ptx"], params, extra
