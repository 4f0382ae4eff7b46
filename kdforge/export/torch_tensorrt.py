"""Torch-TensorRT compilation of a PyTorch student, the adder op included: a converter maps
torch.ops.kdforge.adder_conv2d onto the same TensorRT plugin the ONNX path uses
(kdforge::AdderConv2d, ahead-of-time Triton kernel). GPU machines with Torch-TensorRT only;
not run in CI (see the README)."""

import numpy as np
import torch

from kdforge.errors import UserError


def adder_plugin(trtp, x, weight, stride, padding):
    """TensorRT's plugin call for one adder op, its attributes typed as the plugin declares them
    (int32 arrays, the ONNX node's [top, left, bottom, right] pads)."""
    return trtp.op.kdforge.AdderConv2d(x, weight, strides=np.asarray(stride, np.int32),
                                       pads=np.asarray([*padding, *padding], np.int32), plugin_namespace="kdforge")


def _register_converter() -> None:
    import tensorrt.plugin as trtp
    from torch_tensorrt.dynamo.conversion import dynamo_tensorrt_converter
    from torch_tensorrt.dynamo.conversion.converter_utils import get_trt_tensor

    from kdforge.export import tensorrt_plugin

    tensorrt_plugin.register()

    @dynamo_tensorrt_converter(torch.ops.kdforge.adder_conv2d.default, supports_dynamic_shapes=True)
    def convert_adder(ctx, target, args, kwargs, name):
        x, weight, stride, padding, _eta = args
        x, weight = get_trt_tensor(ctx, x, f"{name}_x"), get_trt_tensor(ctx, weight, f"{name}_w")
        return ctx.net.add_plugin(adder_plugin(trtp, x, weight, stride, padding), aot=True).get_output(0)


def compile_student(model: torch.nn.Module, example: torch.Tensor, fp16: bool = False) -> torch.nn.Module:
    """The student compiled by Torch-TensorRT for the current GPU."""
    try:
        import torch_tensorrt
    except ImportError:
        raise UserError("Torch-TensorRT is not installed; use the kdforge Docker image or export to ONNX/TensorRT instead.") from None
    if not torch.cuda.is_available():
        raise UserError("Torch-TensorRT needs a CUDA GPU and this machine has none.")
    _register_converter()
    precisions = {torch.float16, torch.float32} if fp16 else {torch.float32}
    return torch_tensorrt.compile(model.cuda().eval(), ir="dynamo", inputs=[example.cuda()], enabled_precisions=precisions,
                                  min_block_size=1)
