"""The INT8 adder kernel (kdforge::AdderConv2dInteger, SAD instructions) against the FP32 adder
kernel, F.conv2d in FP32 and ONNX Runtime's INT8 convolution (QLinearConv), one layer at a time,
at ResNet-20 shapes (batch 64) and ImageNet ResNet-18 3x3 shapes (batch 8).

Every ONNX row is a one-node model in an ONNX Runtime session with kdforge's native kernels, the
same thread count as PyTorch. Time: the median over interleaved rounds (each implementation in
turn, every round) of each round's median call. Targets (issue 14): INT8 adder / F.conv2d <= 1.0
on every shape; stretch: INT8 adder / ORT INT8 conv <= 1.5.

    python benchmarks/int8_adder.py [--threads 2] [--rounds 5] [--quick]
"""

import argparse
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from kdforge.export import ort as ort_backend
from kdforge.export.int8_cpu import instructions
from kdforge.profile.latency import LatencySetup, call_timer, cpu_model, measure

SHAPES = [  # net, N, C (= O), H (= W), stride
    ("ResNet-20", 64, 16, 32, 1), ("ResNet-20", 64, 32, 16, 1), ("ResNet-20", 64, 64, 8, 1),
    ("ResNet-18", 8, 64, 56, 1), ("ResNet-18", 8, 128, 28, 1), ("ResNet-18", 8, 256, 14, 1), ("ResNet-18", 8, 512, 7, 1),
]


def _session(nodes, inputs, output, initializers, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "bench", inputs, [output], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("kdforge", 1)])
    model.ir_version = 8
    return ort_backend.model_session(model, "benchmark", threads, adder_kernel="native")


def layer_runners(n: int, c: int, h: int, stride: int, threads: int, rng) -> dict:
    """name -> a call running one 3x3 layer (padding 1) on fixed inputs."""
    attrs = {"strides": [stride, stride], "pads": [1, 1, 1, 1]}
    x8 = rng.integers(0, 256, (n, c, h, h), dtype=np.uint8)
    w8 = rng.integers(0, 256, (c, c, 3, 3), dtype=np.uint8)
    xf, wf = rng.standard_normal((n, c, h, h)).astype(np.float32), rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    info = helper.make_tensor_value_info
    int8_adder = _session([helper.make_node("AdderConv2dInteger", ["x", "w", "z"], ["y"], domain="kdforge", **attrs)],
                          [info("x", TensorProto.UINT8, x8.shape)], info("y", TensorProto.INT32, None),
                          [numpy_helper.from_array(w8, "w"), numpy_helper.from_array(np.array(3, np.uint8), "z")], threads)
    fp32_adder = _session([helper.make_node("AdderConv2d", ["x", "w"], ["y"], domain="kdforge", **attrs)],
                          [info("x", TensorProto.FLOAT, xf.shape)], info("y", TensorProto.FLOAT, None),
                          [numpy_helper.from_array(wf, "w")], threads)
    qlinear = _session([helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)],
                       [info("x", TensorProto.UINT8, x8.shape)], info("y", TensorProto.UINT8, None),
                       [numpy_helper.from_array(a, name) for a, name in [
                           (np.array(0.02, np.float32), "xs"), (np.array(128, np.uint8), "xz"),
                           (rng.integers(-127, 128, (c, c, 3, 3), dtype=np.int8), "w"),
                           (np.full(c, 0.01, np.float32), "ws"), (np.zeros(c, np.int8), "wz"),
                           (np.array(0.5, np.float32), "ys"), (np.array(128, np.uint8), "yz")]], threads)
    xt, wt = torch.from_numpy(xf), torch.from_numpy(wf)
    return {
        "INT8 adder": lambda: int8_adder.run(None, {"x": x8}),
        "FP32 adder": lambda: fp32_adder.run(None, {"x": xf}),
        "F.conv2d FP32": lambda: F.conv2d(xt, wt, stride=stride, padding=1),
        "ORT INT8 conv": lambda: qlinear.run(None, {"x": x8}),
    }


def interleaved_medians(runners: dict, rounds: int) -> dict:
    """kdforge's latency method (kdforge/profile/latency.py): median ms per call over `rounds`
    interleaved rounds. Each round starts after a pause: the thread pools of the implementation before
    it (ONNX Runtime's, PyTorch's OpenMP, the kernel's) spin a while after their work and would
    otherwise be timed as part of the next one."""
    setup = LatencySetup(rounds=rounds, round_ms=20, max_rounds=rounds, settle_ms=50)
    return {name: f["p50_ms"] for name, f in measure({n: call_timer(run) for n, run in runners.items()}, setup).items()}


def sad_instruction_count() -> str:
    library, objdump = ort_backend.native_library(), shutil.which("objdump")
    if library is None or objdump is None:
        return "not checked (no compiler or objdump)"
    lines = subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True).stdout.splitlines()
    sad = [line.split("\t")[-1].split()[0] for line in lines if "psadbw" in line]
    return f"{len(sad)} SAD instructions in the native library ({', '.join(sorted(set(sad)))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="ResNet-20 shapes only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{cpu_model()} ({instructions()}), {args.threads} threads, onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"median ms per layer call over {args.rounds} interleaved rounds; {sad_instruction_count()}")
    print("| net | N x C x HxW | INT8 adder | FP32 adder | F.conv2d FP32 | ORT INT8 conv | INT8 adder / F.conv2d | "
          "INT8 adder / ORT INT8 | FP32 adder / INT8 adder |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for net, n, c, h, stride in SHAPES[:3] if args.quick else SHAPES:
        with torch.inference_mode():
            ms = interleaved_medians(layer_runners(n, c, h, stride, args.threads, rng), args.rounds)
        print(f"| {net} | {n}x{c}x{h}x{h} | {ms['INT8 adder']:.2f} | {ms['FP32 adder']:.2f} | {ms['F.conv2d FP32']:.2f} | "
              f"{ms['ORT INT8 conv']:.2f} | {ms['INT8 adder'] / ms['F.conv2d FP32']:.2f} | "
              f"{ms['INT8 adder'] / ms['ORT INT8 conv']:.2f} | {ms['FP32 adder'] / ms['INT8 adder']:.1f} |")


if __name__ == "__main__":
    main()
