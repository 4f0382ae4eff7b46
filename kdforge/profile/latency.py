"""Latency as inference engineers measure it: warm-up runs excluded, then per-run wall times
with a monotonic clock, reported as p50/p90/p99 with the thread count and the environment."""

import os
import platform
import time
from typing import Callable

import numpy as np


def percentiles(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "runs": int(len(ms))}


def time_calls(fn: Callable[[], object], warmup: int, runs: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import onnxruntime
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def onnxruntime_latency(onnx_path, input_shape, threads: int, warmup: int, runs: int) -> dict:
    from kdforge.export import ort as ort_backend

    sess = ort_backend.session(onnx_path, threads=threads)
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    result = time_calls(lambda: ort_backend.run(sess, x), warmup, runs)
    return {"backend": "onnxruntime", "provider": sess.get_providers()[0], "threads": threads, "batch": input_shape[0], **result}


def batch_sweep(measure, input_shape, batches: list[int], warmup: int, runs: int) -> list[dict]:
    """`measure(shape, warmup, runs)` at every batch size, with throughput in images per second."""
    rows = []
    for batch in batches:
        result = measure((batch, *input_shape[1:]), warmup, runs)
        rows.append({"batch": batch, "p50_ms": result["p50_ms"], "p90_ms": result["p90_ms"],
                     "images_per_s": batch / (result["p50_ms"] / 1e3)})
    return rows


def pytorch_latency(model, input_shape, threads: int, warmup: int, runs: int) -> dict:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(input_shape)
    try:
        with torch.inference_mode():
            result = time_calls(lambda: model(x), warmup, runs)
    finally:
        torch.set_num_threads(previous)
    return {"backend": "pytorch-eager", "device": "cpu", "threads": threads, "batch": input_shape[0], **result}
