"""An exported AdderNet ResNet-20 (CIFAR shape, 3x32x32) in ONNX Runtime against the same model
in PyTorch with kdforge's native op, at batch 1 and 64, same thread count.

Rows: ONNX Runtime with the native C kernel, with the onnxruntime-extensions Python operator,
and the portable export (standard operators only). Printed: median latency per call and the
ratio to PyTorch (target for the kdforge node: at most 1.5). Timing: kdforge's own method (interleaved
rounds, kdforge/profile/latency.py), PyTorch and the three sessions interleaved.

    python benchmarks/ort_adder.py [--threads 2]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from kdforge.export import ort as ort_backend
from kdforge.export.onnx_export import export_onnx
from kdforge.profile.latency import LatencySetup, call_timer, cpu_model, measure
from kdforge.train.models import create_model
from kdforge.train.models.base import calibrate_batch_norm


def _infer(model, x):
    with torch.inference_mode():
        return model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = calibrate_batch_norm(create_model("resnet20_adder", 10), torch.randn(64, 3, 32, 32))
    print(f"AdderNet ResNet-20, 3x32x32; {cpu_model()}, {args.threads} threads; median ms per call")
    print("| batch | PyTorch (native op) | ORT native kernel | ratio | ORT Python operator | ratio | ORT portable | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        custom, portable = Path(tmp) / "custom.onnx", Path(tmp) / "portable.onnx"
        export_onnx(model, torch.zeros(2, 3, 32, 32), custom)
        export_onnx(model, torch.zeros(2, 3, 32, 32), portable, portable=True)
        sessions = {
            "native": ort_backend.session(custom, args.threads, adder_kernel="native"),
            "python": ort_backend.session(custom, args.threads, adder_kernel="python"),
            "portable": ort_backend.session(portable, args.threads),
        }
        for batch in (1, 64):
            x = torch.randn(batch, 3, 32, 32)
            with torch.inference_mode():
                reference = model(x).numpy()
            timers = {"torch": call_timer(lambda: _infer(model, x))}
            for name, sess in sessions.items():
                out = ort_backend.run(sess, x.numpy())
                assert np.abs(out - reference).max() < 1e-3, f"{name} disagrees with PyTorch"
                timers[name] = call_timer(lambda sess=sess: ort_backend.run(sess, x.numpy()))
            ms = {name: f["p50_ms"] for name, f in measure(timers, LatencySetup(round_ms=20, settle_ms=5)).items()}
            cells = [f"{ms['torch']:.2f}"]
            for name in sessions:
                cells += [f"{ms[name]:.2f}", f"{ms[name] / ms['torch']:.2f}"]
            print(f"| {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
