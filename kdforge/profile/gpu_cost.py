"""Latency of one inference on a catalogued GPU as TensorRT runs it: the cost table's layers
fused into kernels, each kernel its launch, its latency floor and the larger of its compute time
and its memory time; a query adds what the host does around the engine (gpu_query.py).

1. Fusion (TensorRT Developer Guide, "Types of Fusions": convolution with ReLU, with the
   element-wise sum of a residual, scale/batch norm folded into the weights; pointwise fusion of
   element-wise chains): a layer that is element-wise or a normalisation and writes a tensor of
   the element count of the current kernel's output joins that kernel; its other inputs (the
   residual) are read by it. Pooling, or any layer that changes the tensor's size, starts a
   kernel of its own, as does every convolution and matrix product. So a depthwise convolution is
   a kernel, and a squeeze-excite block is four (pool, two small matrix products, the scaling).
2. Compute on tensor cores: a convolution as the implicit GEMM [groups, M, N, K] of NVIDIA's
   "Convolutional Layers User's Guide" (M = batch x output positions, N = output channels per
   group, K = input channels per group x kernel area). K rounds up to the k of the mma
   instruction (PTX ISA, mma.sync shapes: m16n8k16 for fp16/bf16, m16n8k32 for int8). The output
   is cut into thread-block tiles of one of CUTLASS's tensor-core tile shapes, the tiles run in
   waves over the SMs, and the kernel takes waves x the time one SM needs for one tile at its share
   of the dense peak: the tile and wave quantisation of NVIDIA's "Matrix Multiplication
   Background User's Guide". The tile is the one that makes this shortest, as TensorRT times its
   tactics and keeps the fastest. A grid smaller than one wave leaves SMs idle: its time is one
   tile's, however many SMs the GPU has.
3. Compute on CUDA cores: fp32 (TF32 is not assumed), groups narrower than the mma's n = 8
   (depthwise convolutions) and adder layers (no tensor core computes |x - w|; roofline.py's two
   add instructions per adder MAC). An FMA is one instruction per lane; packed half2 does two MACs
   and dp4a four 8-bit MACs per instruction (CUDA C++ Programming Guide, arithmetic instruction
   throughput).
4. Memory: weights come from DRAM on every inference. A kernel's activations (what it reads and
   writes) stay in the L2 cache only when its whole working set, weights included, fits there;
   otherwise they cross to DRAM, read and written.
5. Floor: a kernel cannot finish before its first operands arrive from DRAM (the prologue) and
   its last result is written back for the next kernel to read (the epilogue): two DRAM
   latencies, DRAM_LATENCY_CYCLES each at the target's boost clock (targets.py).
6. Launch: each kernel costs one launch more, as the deployment serves it (gpu_query.py): from a
   CUDA graph, or on its own.

Each kernel is named by the term that bounds it: compute, memory, floor (the two latencies
outweigh its work) or launch (the launch outweighs everything else).

Left out: clocks below boost under power limits (sustained large batches), the efficiency of
real kernels below the tile model's per-SM peak, split-K, and post-processing that is not in the
cost table (non-maximum suppression). Against NVIDIA's MLPerf results (benchmarks/
gpu_estimates_mlperf.py, README) every estimate is faster than measured: 1.1x to 4.0x at batch 1,
1.1x to 2.4x at the Offline batch sizes. What a real TensorRT kernel costs beyond these terms has
no published measurement with its GPU named, so it is not guessed here.
"""

import math

from kdforge.profile.gpu_query import Deployment, query_seconds
from kdforge.profile.roofline import ADDER_INSTRUCTIONS_PER_MAC, BYTES
from kdforge.profile.targets import Target

# Global-memory latency in clock cycles, the same on Volta, Ampere and Hopper: Table 3 of "Hardware
# features of different Nvidia GPU architectures", https://pmc.ncbi.nlm.nih.gov/articles/PMC10448217/
DRAM_LATENCY_CYCLES = 400
MMA_K = {"fp16": 16, "bf16": 16, "int8": 32}
MMA_N = 8
TILES = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64))  # CUTLASS's tensor-core thread-block shapes
CUDA_CORE_MACS_PER_INSTRUCTION = {"fp32": 1, "fp16": 2, "bf16": 2, "int8": 4}  # FMA, half2 FMA, dp4a
_MAIN = ("conv", "linear", "binary", "adder")
_JOINS = ("norm", "elementwise")


def fuse(layers: list[dict]) -> list[dict]:
    """The kernels TensorRT would run: for each, its layers, its main layer (a convolution or
    matrix product, or None), and the elements it reads (activations), writes and loads as weights."""
    kernels: list[dict] = []
    for layer in layers:
        outputs = layer.get("outputs", 0)
        reads = max(layer.get("traffic", 0) - outputs - layer.get("params", 0), 0)
        current = kernels[-1] if kernels else None
        if layer["kind"] in _JOINS and current is not None and outputs == current["outputs"]:
            current["layers"].append(layer)
            if layer["kind"] == "elementwise":  # a norm folds into the weights; a residual is read, the fused input is on chip
                current["reads"] += max(reads - outputs, 0)
            continue
        main = layer if layer["kind"] in _MAIN else None
        kernels.append({"layers": [layer], "main": main, "reads": reads, "outputs": outputs, "weights": layer.get("params", 0)})
    return kernels


def tensor_core_seconds(gemm: list[int], target: Target, precision: str) -> float:
    """Waves x one tile's time on one SM, for the fastest tile shape."""
    groups, m, n, k = gemm
    k_padded = math.ceil(k / MMA_K[precision]) * MMA_K[precision]
    per_sm = target.matmul_ops_per_s(precision) / target.sms
    best = math.inf
    for tile_m, tile_n in TILES:
        tiles = groups * math.ceil(m / tile_m) * math.ceil(n / tile_n)
        waves = math.ceil(tiles / target.sms)
        best = min(best, waves * 2 * tile_m * tile_n * k_padded / per_sm)
    return best


def cuda_core_seconds(macs: int, target: Target, precision: str, adder: bool) -> float:
    lanes = target.fp32_tflops * 1e12 / 2  # FMA instructions per second (the FP32 peak counts an FMA as 2 FLOPs)
    if adder:
        return ADDER_INSTRUCTIONS_PER_MAC * macs / target.scalar_instructions_per_s(precision)
    return macs / (lanes * CUDA_CORE_MACS_PER_INSTRUCTION[precision])


def compute_seconds(main: dict, target: Target, precision: str) -> float:
    gemm = main.get("gemm")
    on_tensor_cores = (main["kind"] != "adder" and precision in MMA_K and gemm is not None and gemm[2] >= MMA_N)
    if on_tensor_cores:
        return tensor_core_seconds(gemm, target, precision)
    return cuda_core_seconds(main["macs"], target, precision, adder=main["kind"] == "adder")


def dram_bytes(kernel: dict, target: Target, precision: str) -> float:
    """Weights always; activations too when the working set, weights included, outgrows the L2."""
    weights = kernel["weights"] * BYTES[precision]
    activations = (kernel["reads"] + kernel["outputs"]) * BYTES[precision]
    return weights + (activations if weights + activations > target.l2_mb * 2**20 else 0)


def floor_seconds(target: Target) -> float:
    """The prologue's and the epilogue's DRAM latencies."""
    return 2 * DRAM_LATENCY_CYCLES / target.clock_hz


def kernel_terms(kernel: dict, target: Target, precision: str, launch_s: float) -> dict:
    """A kernel's seconds and the term that bounds it."""
    compute = compute_seconds(kernel["main"], target, precision) if kernel["main"] else 0.0
    memory = dram_bytes(kernel, target, precision) / (target.bandwidth_gbs * 1e9)
    floor = floor_seconds(target)
    terms = {"compute": compute, "memory": memory, "floor": floor, "launch": launch_s}
    return {"seconds": launch_s + floor + max(compute, memory), "bound": max(terms, key=terms.get), **terms}


def estimate(costs: dict, target: Target, precision: str, deployment: Deployment | None = None) -> dict:
    """The model's latency on `target`, per kernel and per query: total_ms is one query (the
    engine and the host's work around it, gpu_query.py); engine_ms the kernels alone."""
    deployment = deployment or Deployment()
    launch_s = deployment.launch_seconds()
    kernels = []
    for kernel in fuse(costs["layers"]):
        terms = kernel_terms(kernel, target, precision, launch_s)
        kernels.append({"layer": "+".join(l["layer"] for l in kernel["layers"]), "kind": kernel["layers"][0]["kind"],
                        "ms": terms["seconds"] * 1e3, "bound": terms["bound"],
                        **{f"{term}_us": terms[term] * 1e6 for term in ("compute", "memory", "floor", "launch")}})
    engine_ms = sum(k["ms"] for k in kernels)
    host = query_seconds(costs, target, precision, deployment)
    return {
        "target": target.name, "description": target.description, "precision": precision,
        "total_ms": engine_ms + sum(host.values()) * 1e3, "engine_ms": engine_ms,
        "query_ms": {name: seconds * 1e3 for name, seconds in host.items()}, "gpu_name_contains": target.gpu_name_contains,
        **{f"{bound}_bound_ms": sum(k["ms"] for k in kernels if k["bound"] == bound) for bound in ("compute", "memory", "floor", "launch")},
        "launch_ms": launch_s * 1e3 * len(kernels), "kernels": len(kernels), "layers": kernels, "source": target.source,
        "deployment": deployment.describe(),
        "method": (f"GPU kernel model: {len(kernels)} kernels after TensorRT's fusions, each {launch_s * 1e6:.3f} us launch + "
                   f"{floor_seconds(target) * 1e6:.3f} us floor (prologue and epilogue DRAM latency at {target.clock_hz / 1e9:.2f} GHz) + "
                   "max(tensor-core time after tile and wave quantisation, DRAM time of what outgrows the L2); "
                   "per query, the host's copies and graph launch"),
    }
