"""Named deployment targets: each one's peak arithmetic throughput and memory bandwidth, with the
datasheet every figure comes from. Dense figures throughout (no structured sparsity).

`fp32_tflops` is the CUDA-core (non-tensor) FP32 peak, which counts a fused multiply-add as two
FLOPs; `fp16_tensor_tflops` (BF16 is the same on these parts) and `int8_tensor_tops` are the dense
tensor-core peaks. "cpu" is this machine, measured when first asked for (a float32 matrix product
and a large array copy), with no tensor cores: every precision runs at its FP32 rate.
"""

import time
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    fp32_tflops: float
    fp16_tensor_tflops: float
    int8_tensor_tops: float
    bandwidth_gbs: float
    source: str
    gpu_name_contains: str = ""  # how torch.cuda.get_device_name() spells it, to pair a measurement with it
    sms: int = 0  # streaming multiprocessors; 0 for the CPU, which gpu_cost.py does not model
    l2_mb: float = 0.0
    cores_per_sm: int = 128  # FP32 lanes per SM (the architecture whitepaper's)
    host_link_gbs: float = 0.0  # one direction of the host link; 0 where host and GPU share memory (zero-copy)
    host_link: str = ""

    @property
    def clock_hz(self) -> float:
        """The boost clock the datasheet's FP32 peak implies: FP32 TFLOPS / (2 x SMs x lanes per SM)."""
        return self.fp32_tflops * 1e12 / (2 * self.sms * self.cores_per_sm)

    def matmul_ops_per_s(self, precision: str) -> float:
        """Peak multiply-add throughput of convolutions and matrix products (FLOPs/s, FMA = 2)."""
        peak = {"fp32": self.fp32_tflops, "fp16": self.fp16_tensor_tflops, "bf16": self.fp16_tensor_tflops,
                "int8": self.int8_tensor_tops}[precision]
        return peak * 1e12

    def scalar_instructions_per_s(self, precision: str) -> float:
        """Issue rate of CUDA-core add instructions: one per lane per cycle, half the FP32 FLOP peak
        (which counts an FMA twice); packed half2 instructions double it at fp16/bf16."""
        return self.fp32_tflops * 1e12 / 2 * (2 if precision in ("fp16", "bf16") and self.name != "cpu" else 1)


# SMs are the datasheet's CUDA cores over the cores per SM of the architecture's whitepaper (GA100:
# 64, GA10x/AD10x/GH100: 128, TU104: 64); L2 sizes are the whitepapers'. Host links are the
# datasheets' PCIe generation and width, one direction at the PCI-SIG signalling rate after
# 128b/130b encoding: Gen3 x16 15.75 GB/s, Gen4 x8 15.75, Gen4 x16 31.5, Gen5 x16 63.
_AMPERE = "NVIDIA A100 Tensor Core GPU Architecture whitepaper (GA100: 64 FP32 cores per SM; A100: 108 SMs, 40 MB L2)"
_HOPPER = "NVIDIA H100 Tensor Core GPU Architecture whitepaper (SXM5: 132 SMs, PCIe: 114 SMs; 50 MB L2)"
CATALOGUE = {t.name: t for t in (
    Target("h100", "NVIDIA H100 SXM5 80 GB", 67.0, 989.4, 1978.9, 3350.0,
           "NVIDIA H100 Tensor Core GPU datasheet (SXM5: FP32 67 TFLOPS, FP16/BF16 tensor 1,979 TFLOPS and INT8 3,958 TOPS "
           f"with sparsity, half without; HBM3 3.35 TB/s); {_HOPPER}", "H100", sms=132, l2_mb=50,
           host_link_gbs=63.0, host_link="PCIe Gen5 x16"),
    Target("h100-pcie", "NVIDIA H100 PCIe 80 GB", 51.0, 756.0, 1513.0, 2000.0,
           "NVIDIA H100 Tensor Core GPU datasheet (PCIe: FP32 51 TFLOPS, FP16/BF16 tensor 1,513 TFLOPS and INT8 3,026 TOPS "
           f"with sparsity, half without; HBM2e 2 TB/s); {_HOPPER}", "H100 PCIe", sms=114, l2_mb=50,
           host_link_gbs=63.0, host_link="PCIe Gen5 x16"),
    Target("a100", "NVIDIA A100 SXM4 80 GB", 19.5, 312.0, 624.0, 2039.0,
           "NVIDIA A100 Tensor Core GPU datasheet (SXM 80 GB: FP32 19.5 TFLOPS, FP16/BF16 tensor 312 TFLOPS, INT8 624 TOPS "
           f"dense; HBM2e 2,039 GB/s); {_AMPERE}", "A100", sms=108, l2_mb=40,
           cores_per_sm=64, host_link_gbs=31.5, host_link="PCIe Gen4 x16"),
    Target("a100-pcie", "NVIDIA A100 PCIe 80 GB", 19.5, 312.0, 624.0, 1935.0,
           "NVIDIA A100 Tensor Core GPU datasheet (PCIe 80 GB: FP32 19.5 TFLOPS, FP16/BF16 tensor 312 TFLOPS, INT8 624 TOPS "
           f"dense; HBM2e 1,935 GB/s); {_AMPERE}", "A100 80GB PCIe", sms=108, l2_mb=40,
           cores_per_sm=64, host_link_gbs=31.5, host_link="PCIe Gen4 x16"),
    Target("a30", "NVIDIA A30 24 GB", 10.3, 165.0, 330.0, 933.0,
           "NVIDIA A30 Tensor Core GPU datasheet (FP32 10.3 TFLOPS, FP16 tensor 165 TFLOPS and INT8 330 TOPS dense; HBM2 "
           f"933 GB/s; 3,584 CUDA cores = 56 SMs); 24 MB L2, a figure not in the datasheet and not verified here; "
           f"{_AMPERE}", "A30", sms=56, l2_mb=24,
           cores_per_sm=64, host_link_gbs=31.5, host_link="PCIe Gen4 x16"),
    Target("a2", "NVIDIA A2 16 GB", 4.5, 18.0, 36.0, 200.0,
           "NVIDIA A2 Tensor Core GPU datasheet (FP32 4.5 TFLOPS; FP16 tensor 36 TFLOPS and INT8 72 TOPS with sparsity, "
           "half without; GDDR6 200 GB/s; 1,280 CUDA cores = 10 SMs of GA107 at 128 per SM, NVIDIA Ampere GA102 "
           "whitepaper); 2 MB L2, a figure not in the datasheet and not verified here; PCIe Gen4 x8", "A2", sms=10,
           l2_mb=2, host_link_gbs=15.75, host_link="PCIe Gen4 x8"),
    Target("l4", "NVIDIA L4 24 GB", 30.3, 121.0, 242.5, 300.0,
           "NVIDIA L4 Tensor Core GPU datasheet (FP32 30.3 TFLOPS; FP16 tensor 242 TFLOPS and INT8 485 TOPS with sparsity, "
           "half without; GDDR6 300 GB/s; 7,424 CUDA cores = 58 SMs at 128 per SM); NVIDIA Ada GPU Architecture whitepaper "
           "(AD104: 48 MB L2)", "L4", sms=58, l2_mb=48, host_link_gbs=31.5, host_link="PCIe Gen4 x16"),
    Target("t4", "NVIDIA T4 16 GB", 8.1, 65.0, 130.0, 320.0,
           "NVIDIA T4 Tensor Core GPU datasheet (FP32 8.1 TFLOPS, mixed-precision FP16/FP32 65 TFLOPS, INT8 130 TOPS; "
           "GDDR6 320 GB/s; 2,560 CUDA cores = 40 SMs at 64 per SM); NVIDIA Turing GPU Architecture whitepaper "
           "(TU104: 4 MB L2)", "T4", sms=40, l2_mb=4, cores_per_sm=64,
           host_link_gbs=15.75, host_link="PCIe Gen3 x16"),
    Target("orin", "NVIDIA Jetson AGX Orin 64 GB (GPU, MAXN)", 5.3, 42.5, 85.0, 204.8,
           "NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (GPU: 2,048 CUDA cores in 16 SMs, 5.3 FP32 TFLOPS; 64 tensor "
           "cores, 170 sparse INT8 TOPS, so 85 dense and 42.5 dense FP16; 4 MB L2; LPDDR5 204.8 GB/s; CPU and GPU share "
           "that memory)", "Orin", sms=16, l2_mb=4, host_link="unified memory (zero-copy)"),
)}


@lru_cache(maxsize=1)
def measured_cpu(threads: int = 1) -> Target:
    """This machine: float32 matrix-product throughput and copy bandwidth, best of a few runs."""
    import numpy as np
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(1024, 1024)
        torch.mm(a, a)
        best = min(_seconds(lambda: torch.mm(a, a)) for _ in range(5))
    finally:
        torch.set_num_threads(previous)
    flops = 2 * 1024**3 / best
    src = np.ones(16 * 2**20, np.float32)  # 64 MiB, past the caches
    dst = np.empty_like(src)
    copy = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(5))
    bandwidth = 2 * src.nbytes / copy / 1e9  # read + write
    return Target("cpu", f"this CPU, {threads} thread(s), measured", flops / 1e12, flops / 1e12, flops / 1e12, bandwidth,
                  "measured here: torch.mm of 1024x1024 float32 matrices and a 64 MiB array copy, best of 5")


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def target(name: str, threads: int = 1) -> Target:
    return measured_cpu(threads) if name == "cpu" else CATALOGUE[name]


TARGET_NAMES = (*CATALOGUE, "cpu")
