"""TensorRT engines for exported students (GPU machines with TensorRT; not installable on the
development machine, so this path has not run in CI: see the README).

`build_engine` parses the ONNX file (adder nodes through the kdforge plugin), builds an fp32,
fp16 or INT8 engine with a dynamic batch profile and writes it atomically; INT8 engines are
calibrated by TensorRT's entropy calibrator on training images (implicit quantization; the adder
plugin declares fp32 only, so TensorRT converts around it and the adder layers stay fp32 on the
GPU). `engine_runner` runs an engine for the verify stage. Both end with one sentence when
TensorRT or a GPU is missing.
"""

from pathlib import Path

import numpy as np

from kdforge.atomic import atomic_path
from kdforge.errors import UserError


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed; install it on a CUDA machine (or use the kdforge Docker image) "
                        "to build engines, or export ONNX only.") from None
    import torch

    if not torch.cuda.is_available():
        raise UserError("TensorRT needs a CUDA GPU and this machine has none; export ONNX only here.")
    return trt


def build_engine(onnx_path: Path, engine_path: Path, input_shape: tuple[int, ...], fp16: bool = False,
                 int8_images: np.ndarray | None = None, max_batch: int = 64, workspace_bytes: int = 2 << 30) -> Path:
    """`int8_images` (N, C, H, W) float32: build INT8 (with fp16 where INT8 is not possible),
    calibrated on them."""
    trt = require_tensorrt()
    from kdforge.export import tensorrt_plugin

    tensorrt_plugin.register()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise UserError(f"TensorRT cannot parse {onnx_path}: {parser.get_error(0).desc()}.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 or int8_images is not None:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    _, c, h, w = input_shape
    profile.set_shape(network.get_input(0).name, (1, c, h, w), (max(1, max_batch // 2), c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    if int8_images is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(trt, int8_images)
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path}; its log above names the layer.")
    with atomic_path(Path(engine_path)) as tmp:
        tmp.write_bytes(bytes(serialized))
    return Path(engine_path)


def _calibrator(trt, images: np.ndarray, batch: int = 32):
    """TensorRT's entropy calibrator (IInt8EntropyCalibrator2) over `images`, `batch` at a time,
    from GPU memory."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
            size = min(batch, len(data))
            self.batches = [data[i:i + size].contiguous() for i in range(0, len(data) - size + 1, size)]
            self.next = 0

        def get_batch_size(self):
            return self.batches[0].shape[0]

        def get_batch(self, names):
            if self.next == len(self.batches):
                return None
            self.next += 1
            return [int(self.batches[self.next - 1].data_ptr())]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return Calibrator()


def engine_timers(run, input_shape) -> dict:
    """Timers (kdforge.profile.latency) of one call of an `engine_runner`: "tensorrt" is host
    latency (the call, copies included), "tensorrt_gpu" the GPU time between CUDA events around it."""
    import torch

    from kdforge.profile.latency import call_timer

    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)

    def gpu() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return {"tensorrt": call_timer(lambda: run(x)), "tensorrt_gpu": gpu}


def engine_runner(engine_path: Path):
    """A function from a batch of images (fp32, numpy) to the engine's logits, run through torch's
    CUDA tensors; the engine is deserialised once."""
    trt = require_tensorrt()
    import torch

    from kdforge.export import tensorrt_plugin

    tensorrt_plugin.register()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise UserError(f"{engine_path} is not a TensorRT engine this TensorRT version can load; rebuild it.")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
        context.set_input_shape(names[0], tuple(x.shape))
        y = torch.empty(tuple(context.get_tensor_shape(names[1])), device="cuda")
        context.set_tensor_address(names[0], x.data_ptr())
        context.set_tensor_address(names[1], y.data_ptr())
        stream = torch.cuda.current_stream()
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return y.cpu().numpy()

    return run
