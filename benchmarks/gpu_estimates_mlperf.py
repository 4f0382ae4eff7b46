"""kdforge's GPU estimates (kdforge/profile/gpu_cost.py, gpu_query.py) beside NVIDIA's MLPerf
Inference results (closed division, TensorRT, INT8) for four networks of three families: ResNet-50,
SSD-MobileNet-v1 (depthwise), SSD-ResNet34 at 1200x1200 and RetinaNet at 800x800 (detectors at
large inputs), on every catalogued GPU NVIDIA submitted them for. Ratio = MLPerf / estimate: above
1, the GPU is slower than estimated for latency and faster for throughput.

- SingleStream: the 90th-percentile latency of one query at batch 1, against the estimate of one
  query as NVIDIA's harness serves it: kernels replayed from a CUDA graph, the input copied over
  the host link except on the A100 SXM systems (`start_from_device`), nothing copied on Orin (one
  memory), the detections copied back (keepTopK x 7 floats, from NVIDIA's harness code).
- Offline: images per second at the batch size NVIDIA's config for that system and round sets
  (configs/<network>/Offline), against that batch's engine time (copies overlap it on their own
  streams). Orin's Offline runs use its two DLAs beside the GPU, so they are left out.

The networks are benchmarks/mlperf_models.py's. Non-maximum suppression is not in kdforge's counts
but is in MLPerf's detector figures. Nothing here is fitted: change a constant in gpu_cost.py,
gpu_query.py or targets.py and this table moves.

    python benchmarks/gpu_estimates_mlperf.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlperf_models import NETWORKS  # noqa: E402

from kdforge.profile.counts import count_costs  # noqa: E402
from kdforge.profile.gpu_cost import estimate  # noqa: E402
from kdforge.profile.gpu_query import Deployment  # noqa: E402
from kdforge.profile.targets import CATALOGUE  # noqa: E402

# (network, target): (SingleStream p90 ms or None, Offline samples/s or None, Offline batch, round and system).
# From mlcommons/inference_results_<round>/closed/NVIDIA/results/<system>/<network>/<scenario>/performance/run_1/
# mlperf_log_summary.txt; batch sizes from closed/NVIDIA/configs/<network>/Offline of the same round.
MLPERF = {
    ("resnet50", "h100"): (None, 88714.3, 2048, "v4.0 DGX-H100_H100-SXM-80GBx1_TRT"),
    ("resnet50", "h100-pcie"): (None, 54851.4, 2048, "v3.1 H100-PCIe-80GBx1_TRT"),
    ("resnet50", "a100"): (0.457245, 42379.3, 2048, "v3.0 DGX-A100_A100-SXM-80GBx1_TRT"),
    ("resnet50", "a100-pcie"): (0.476417, 39152.4, 2048, "v3.0 A100-PCIe-80GBx1_TRT"),
    ("resnet50", "a30"): (0.520989, 18072.9, 1536, "v2.0 A30x1_TRT"),
    ("resnet50", "a2"): (0.706005, 3036.57, 1024, "v2.0 A2x1_TRT"),
    ("resnet50", "l4"): (0.361584, 13157.8, 32, "v3.0 L4x1_TRT"),
    ("resnet50", "t4"): (1.086217, 6035.57, 256, "v0.7 T4x1_TRT"),
    ("resnet50", "orin"): (0.633478, None, 0, "v3.0 Orin_TRT"),
    ("ssd-mobilenet", "a100"): (0.289704, 55841.6, 1024, "v2.0 DGX-A100_A100-SXM-80GBx1_TRT"),
    ("ssd-mobilenet", "a100-pcie"): (0.316707, 50089.1, 1024, "v2.0 A100-PCIe-80GBx1_TRT"),
    ("ssd-mobilenet", "a30"): (0.326005, 25903.8, 1024, "v2.0 A30x1_TRT"),
    ("ssd-mobilenet", "a2"): (0.448881, 4855.82, 768, "v2.0 A2x1_TRT"),
    ("ssd-mobilenet", "t4"): (0.550122, 7959.76, 128, "v0.7 T4x1_TRT"),
    ("ssd-mobilenet", "orin"): (0.473641, None, 0, "v2.0 Orin_TRT"),
    ("ssd-resnet34", "a100"): (1.700969, 1001.76, 64, "v2.0 DGX-A100_A100-SXM-80GBx1_TRT"),
    ("ssd-resnet34", "a100-pcie"): (1.931624, 913.678, 64, "v2.0 A100-PCIe-80GBx1_TRT"),
    ("ssd-resnet34", "a30"): (3.032527, 480.905, 32, "v2.0 A30x1_TRT"),
    ("ssd-resnet34", "a2"): (14.636769, 72.2695, 32, "v2.0 A2x1_TRT"),
    ("ssd-resnet34", "t4"): (8.416519, 135.452, 12, "v0.7 T4x1_TRT"),
    ("ssd-resnet34", "orin"): (8.028243, None, 0, "v2.0 Orin_TRT"),
    ("retinanet", "h100"): (None, 1478.64, 16, "v3.0 DGX-H100_H100-SXM-80GBx1_TRT"),
    ("retinanet", "h100-pcie"): (None, 958.97, 16, "v3.0 H100-PCIe-80GBx1_TRT"),
    ("retinanet", "a100"): (2.734424, 728.898, 32, "v3.0 DGX-A100_A100-SXM-80GBx1_TRT"),
    ("retinanet", "a100-pcie"): (2.944300, 653.236, 16, "v3.0 A100-PCIe-80GBx1_TRT"),
    ("retinanet", "l4"): (6.185093, 179.492, 2, "v3.0 L4x1_TRT"),
    ("retinanet", "orin"): (13.923135, None, 0, "v3.0 Orin_TRT"),
}
DETECTIONS = {"ssd-mobilenet": 100, "ssd-resnet34": 200, "retinanet": 1000}  # keepTopK of NVIDIA's NMS plugin
START_FROM_DEVICE = {"a100"}


def _costs(network: str, batch: int, cache: dict) -> dict:
    if (network, batch) not in cache:
        make, side = NETWORKS[network]
        costs = count_costs(make(), (batch, 3, side, side))
        if network in DETECTIONS:  # NMS on the GPU leaves keepTopK rows of 7 float32 (4 bytes, 4 INT8 elements) to copy back
            costs["totals"]["output_elements"] = DETECTIONS[network] * 7 * 4
        cache[(network, batch)] = costs
    return cache[(network, batch)]


def rows() -> list[dict]:
    cache, out = {}, []
    for (network, name), (latency_ms, throughput, batch, where) in MLPERF.items():
        target = CATALOGUE[name]
        deployment = Deployment(input_on_device=name in START_FROM_DEVICE)
        row = {"network": network, "target": name, "where": where, "latency_ms": latency_ms, "throughput": throughput,
               "batch": batch, "estimate_ms": estimate(_costs(network, 1, cache), target, "int8", deployment)["total_ms"]}
        if throughput:
            row["estimate_per_s"] = batch / estimate(_costs(network, batch, cache), target, "int8")["engine_ms"] * 1e3
        out.append(row)
    return out


def _off_by(ratio: float) -> float:
    return max(ratio, 1 / ratio)


def main() -> None:
    table = rows()
    print("kdforge's estimates at INT8 beside NVIDIA's MLPerf Inference results (closed, TensorRT); ratio = MLPerf / "
          "estimate (above 1: the GPU is slower than estimated for latency, faster for throughput)\n")
    print("| network | GPU | batch 1 est. (ms) | SingleStream p90 (ms) | ratio | Offline batch | est. (img/s) | Offline (img/s) "
          "| ratio | MLPerf round, system |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    worst: dict[tuple[str, str], float] = {}
    for r in table:
        single = offline = "- | -"
        if r["latency_ms"]:
            ratio = r["latency_ms"] / r["estimate_ms"]
            single = f"{r['latency_ms']:.3f} | {ratio:.2f}x"
            worst[("SingleStream", r["target"])] = max(worst.get(("SingleStream", r["target"]), 0), _off_by(ratio))
        if r["throughput"]:
            ratio = r["throughput"] / r["estimate_per_s"]
            offline = f"{r['batch']} | {r['estimate_per_s']:,.0f} | {r['throughput']:,.1f} | {ratio:.2f}x"
            worst[("Offline", r["target"])] = max(worst.get(("Offline", r["target"]), 0), _off_by(ratio))
        else:
            offline = "- | - | - | -"
        print(f"| {r['network']} | {r['target']} | {r['estimate_ms']:.3f} | {single} | {offline} | {r['where']} |")
    print("\nWorst factor per regime and GPU (max of ratio and 1/ratio over the networks):\n")
    print("| GPU | SingleStream | Offline |")
    print("|---|---:|---:|")
    for name in CATALOGUE:
        cells = [f"{worst[(regime, name)]:.2f}x" if (regime, name) in worst else "-" for regime in ("SingleStream", "Offline")]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
