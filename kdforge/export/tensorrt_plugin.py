"""The TensorRT plugin for kdforge::AdderConv2d: a Quick Deployable Plugin (tensorrt.plugin) with
an ahead-of-time implementation. TensorRT's ONNX parser finds it by op_type and the node's
`plugin_namespace` ("kdforge::AdderConv2d"); the AOT implementation compiles the same Triton
forward kernel the torch CUDA op runs (kdforge/nn/adder_triton.py) to PTX, which TensorRT embeds
in the engine, so the engine runs without Python.

Importing this module registers the plugin and needs TensorRT; the geometry below (attributes,
output shape, launch grid) is plain Python, tested on machines without TensorRT.
"""

from math import ceil

PLUGIN_ID = "kdforge::AdderConv2d"


def geometry(strides, pads) -> tuple[int, int, int, int]:
    """(stride_h, stride_w, pad_h, pad_w) of a node's attributes; padding must be symmetric."""
    strides, pads = [int(s) for s in strides], [int(p) for p in pads]
    if len(strides) != 2 or len(pads) != 4:
        raise ValueError(f"AdderConv2d takes 2 strides and 4 pads, got {strides} and {pads}")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"AdderConv2d takes symmetric padding, got pads {pads}")
    return strides[0], strides[1], pads[0], pads[1]


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
        n, o = x.shape_expr[0], w.shape_expr[0]
        ho = output_size(x.shape_expr[2], w.shape_expr[2], sh, ph)
        wo = output_size(x.shape_expr[3], w.shape_expr[3], sw, pw)
        return trtp.from_shape_expr((n, o, ho, wo), dtype=x.dtype)

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
