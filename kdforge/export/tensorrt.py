"""TensorRT engines for exported students (GPU machines with TensorRT; not installable on the
development machine, so the builder has not run against TensorRT itself: see the README).

`build_engine` parses an ONNX file (adder nodes through the kdforge plugin) into a strongly typed
network: the file says each tensor's precision. An FP32 file gives an FP32 engine with TF32 off
(so that it meets verify's tolerance), kdforge's FP16 file an FP16 engine, and a Q/DQ file with
signed, symmetric int8 (the TENSORRT scheme of kdforge.export.int8_cpu) an INT8 engine by explicit
quantisation. That is the one form TensorRT 11 keeps: it removed the FP16/INT8 builder flags and
the implicit-quantisation calibrators. The optimisation profile covers every batch kdforge feeds
(1 to `max_batch`). `engine_runner` runs an engine for the verify and profile stages, in chunks
of the profile's largest batch, and checks what TensorRT returns. Both end with one sentence
when TensorRT or a GPU is missing.
"""

from pathlib import Path

import numpy as np

from kdforge.atomic import atomic_path
from kdforge.errors import UserError


DEVICE = "cuda"  # where engines read and write their tensors


def _stream():
    import torch

    return torch.cuda.current_stream()


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


def build_engine(onnx_path: Path, engine_path: Path, input_shape: tuple[int, ...], max_batch: int = 128,
                 workspace_bytes: int = 2 << 30) -> Path:
    """An engine of `onnx_path` at the precision its tensors declare, for batches 1 to `max_batch`."""
    trt = require_tensorrt()
    from kdforge.export import tensorrt_plugin

    tensorrt_plugin.register()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise UserError(f"TensorRT cannot parse {onnx_path}: {parser.get_error(0).desc()}.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: TF32 products miss verify's 1e-3
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
    largest = engine.get_tensor_profile_shape(names[0], 0)[2][0]

    def run_chunk(x) -> np.ndarray:
        if not context.set_input_shape(names[0], tuple(x.shape)):
            raise UserError(f"{engine_path} refuses a batch of shape {tuple(x.shape)}; rebuild it for that shape.")
        y = torch.empty(tuple(context.get_tensor_shape(names[1])), device=DEVICE)
        context.set_tensor_address(names[0], x.data_ptr())
        context.set_tensor_address(names[1], y.data_ptr())
        stream = _stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise UserError(f"TensorRT could not run {engine_path} on a batch of shape {tuple(x.shape)}; its log above says why.")
        stream.synchronize()
        return y.cpu().numpy()

    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(DEVICE)
        return np.concatenate([run_chunk(x[i:i + largest].contiguous()) for i in range(0, len(x), largest)])

    return run
