"""kdforge's GPU estimates (kdforge/profile/gpu_cost.py) for ResNet-50 at INT8 beside NVIDIA's
MLPerf Inference results (closed division, TensorRT, INT8), with the ratio measured / estimate.

ResNet-50 is torchvision's definition (v1.5, the MLPerf model), counted by kdforge's own counter
at batch 1 (SingleStream: the 90th-percentile latency of one image) and batch 256 (Offline:
images per second). The first five rows are the catalogue the issue asked about; the rest are
further published results the model was not looked at against while it was written (it was
written, then run once on all rows). Nothing here is fitted: change a constant in gpu_cost.py
or targets.py and this table moves.

    python benchmarks/gpu_estimates_mlperf.py
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kdforge.profile.counts import count_costs  # noqa: E402
from kdforge.profile.gpu_cost import estimate  # noqa: E402
from kdforge.profile.targets import CATALOGUE  # noqa: E402

# target: (SingleStream p90 ms or None, Offline images/s, where: mlcommons/inference_results_<round>/closed/NVIDIA/results/<system>/resnet50)
MLPERF = {
    "h100": (None, 88714.3, "v4.0, DGX-H100_H100-SXM-80GBx1_TRT (no SingleStream submitted)"),
    "a100": (0.457, 42379.0, "v3.0, A100 SXM 80 GB x1"),
    "l4": (0.348735, 12882.0, "v3.1, L4x1_TRT"),
    "t4": (1.086, 6036.0, "v0.7, T4 x1"),
    "orin": (0.640, 6424.0, "v3.1, Orin_TRT (Offline uses the GPU and both DLAs; kdforge estimates the GPU alone)"),
    "h100-pcie": (None, 54851.4, "v3.1, H100-PCIe-80GBx1_TRT"),
    "a100-pcie": (0.476417, 39152.4, "v3.0, A100-PCIe-80GBx1_TRT"),
    "a30": (0.520989, 18072.9, "v2.0, A30x1_TRT"),
    "a2": (0.706005, 3036.57, "v2.0, A2x1_TRT"),
}
OFFLINE_BATCH = 256


def resnet50():
    try:
        import torchvision.models as models
    except Exception:  # noqa: BLE001 - torchvision's compiled operators do not load against this torch: its model files alone
        from test_torchvision_counts import _WHEELS, load_model_definitions

        models = load_model_definitions(sorted(_WHEELS.glob("torchvision-*.whl"))[-1], Path(tempfile.mkdtemp()))
    return models.resnet50().eval()


def main() -> None:
    model = resnet50()
    single, offline = (count_costs(model, (batch, 3, 224, 224)) for batch in (1, OFFLINE_BATCH))
    print(f"ResNet-50 ({single['totals']['macs'] / 1e9:.2f} G MACs) at INT8: kdforge's estimate beside MLPerf Inference "
          f"(closed, NVIDIA, TensorRT); ratio = MLPerf / estimate (above 1: the GPU is slower than estimated for latency, "
          f"faster for throughput)")
    print("| GPU | batch 1 est. (ms) | SingleStream p90 (ms) | ratio | kernels | batch 256 est. (img/s) | Offline (img/s) | ratio "
          "| MLPerf round, system |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, (latency_ms, throughput, where) in MLPERF.items():
        target = CATALOGUE[name]
        one, many = estimate(single, target, "int8"), estimate(offline, target, "int8")
        images_per_s = OFFLINE_BATCH / many["total_ms"] * 1e3
        ss = f"{latency_ms:.3f} | {latency_ms / one['total_ms']:.2f}x" if latency_ms else "- | -"
        print(f"| {target.description} | {one['total_ms']:.3f} | {ss} | {one['kernels']} | {images_per_s:,.0f} | "
              f"{throughput:,.0f} | {throughput / images_per_s:.2f}x | {where} |")


if __name__ == "__main__":
    main()
