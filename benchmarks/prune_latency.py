"""CIFAR ResNet-20 (3x32x32) cut by kdforge's pruning (kdforge.train.prune, Torch-Pruning) to 0.3,
0.5 and 0.7 of its MACs, with channel counts rounded to multiples of 8 (prune.round_to's
default) and not rounded (round_to: 1): MACs reached by kdforge's count, and ONNX Runtime's median
latency of each pruned file beside the unpruned one's, all files in one interleaved measurement
(kdforge/profile/latency.py) per batch size. The header names the CPU's instructions: channel
blocking differs between AVX2 (8 floats) and AVX-512 (16). Weights are random (batch norms
calibrated on random images): latency and the cut's structure under magnitude importance do
not depend on what was learned, accuracy does (the README's "Pruned students" gives the demo's).

    python benchmarks/prune_latency.py [--threads 1]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from kdforge.export import ort as ort_backend
from kdforge.export.int8_cpu import instructions
from kdforge.export.onnx_export import export_onnx
from kdforge.profile.latency import LatencySetup, call_timer, cpu_model, measure
from kdforge.train.models import create_model
from kdforge.train.models.base import calibrate_batch_norm
from kdforge.train.prune import budget_measure, prune_to_budget

BUDGETS = (0.3, 0.5, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randn(64, 3, 32, 32)
    model = calibrate_batch_norm(create_model("resnet20", 10), images).eval()
    labels = torch.randint(0, 10, (64,))
    models, reached = {"unpruned": model}, {"unpruned": 1.0}
    for round_to in (8, 1):
        for budget in BUDGETS:
            pruned = prune_to_budget(model, images, labels, budget_measure("macs", (1, 3, 32, 32)), budget, "magnitude", [model.fc], round_to)
            name = f"{budget} MACs, round_to {round_to}"
            models[name], reached[name] = pruned.model, pruned.cost
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {name: ort_backend.session(export_onnx(m, images[:1], Path(tmp) / f"{i}.onnx"), args.threads)
                    for i, (name, m) in enumerate(models.items())}
        figures = {}
        for batch in (1, 64):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            timers = {name: call_timer(lambda s=s: ort_backend.run(s, x)) for name, s in sessions.items()}
            figures[batch] = {name: f["p50_ms"] for name, f in measure(timers, LatencySetup(round_ms=20, settle_ms=5)).items()}
    print(f"ResNet-20 (3x32x32) pruned by kdforge, ONNX Runtime {ort.__version__}; {cpu_model()} ({instructions()}), "
          f"{args.threads} thread(s); median ms per call, ratio to the unpruned file's")
    print("| model | MACs reached | conv widths (stem, stages' first) | batch 1 (ms) | / unpruned | batch 64 (ms) | / unpruned |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, m in models.items():
        widths = [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)][::6]
        cells = [f"{figures[b][name]:.3f} | {figures[b][name] / figures[b]['unpruned']:.2f}x" for b in (1, 64)]
        print(f"| {name} | {reached[name]:.3f} | {widths} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
