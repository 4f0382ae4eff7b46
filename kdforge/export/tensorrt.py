"""TensorRT engines for exported students (GPU machines with TensorRT; not installable on the
development machine, so this path has not run in CI: see the README).

`build_engine` parses the ONNX file (adder nodes through the kdforge plugin), builds an fp32 or
fp16 engine with a dynamic batch profile and writes it atomically; `verify_engine` runs it on the
test split against PyTorch. Both end with one sentence when TensorRT or a GPU is missing.
"""

import time
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
                 max_batch: int = 64, workspace_bytes: int = 2 << 30) -> Path:
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
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    _, c, h, w = input_shape
    profile.set_shape(network.get_input(0).name, (1, c, h, w), (max(1, max_batch // 2), c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path}; its log above names the layer.")
    with atomic_path(Path(engine_path)) as tmp:
        tmp.write_bytes(bytes(serialized))
    return Path(engine_path)


def engine_latency(engine_path: Path, input_shape, warmup: int, runs: int) -> dict:
    """GPU compute time of the engine from CUDA events, and host latency (the call, copies
    included) apart, both as percentiles over `runs` after `warmup`."""
    import torch

    from kdforge.profile.latency import percentiles

    run = engine_runner(engine_path)
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    for _ in range(warmup):
        run(x)
    gpu, host = [], []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        run(x)
        end.record()
        end.synchronize()
        host.append(time.perf_counter() - t0)
        gpu.append(start.elapsed_time(end) / 1e3)
    return {"backend": "tensorrt", "batch": input_shape[0], "gpu": percentiles(gpu), **percentiles(host)}


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
