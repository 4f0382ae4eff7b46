"""ONNX Runtime sessions for exported students. Imports no torch: an inference process that
runs kdforge's ONNX files needs only onnxruntime and numpy."""

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A session on CPU (and CUDA first where onnxruntime-gpu has it), `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(os.fspath(path), options, providers=providers)


def run(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})[0]
