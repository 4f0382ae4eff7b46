"""CIFAR ResNet-20 as a CNN and as its AdderNet twin, each exported by kdforge as FP32 and INT8
ONNX files exactly as the export stage writes them, opened by kdforge's ONNX Runtime session:
median latency per call at batch 1 and 64, every ratio to the CNN's FP32 file, how many
convolutions ONNX Runtime leaves in float after its own graph optimisation and, for the CNN's four
INT8 pairings (U8S8, U8S8 with 7-bit weights, U8U8, S8S8: kdforge.export.int8_cpu), how far this
CPU's integer kernels land from the file's exact arithmetic (saturation shows there). The header
names the CPU's integer instructions: figures differ between VNNI and AVX2-only machines.

Timing: kdforge's own method (interleaved rounds, kdforge/profile/latency.py), all files in
one measurement per batch size. Weights are random (batch-norm statistics calibrated on random
images): latency does not depend on them.

    python benchmarks/low_precision_end_to_end.py [--threads 2]
"""

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from kdforge.export import ort as ort_backend
from kdforge.export.adder_int8 import quantize_adder_layers
from kdforge.export.int8_cpu import CANDIDATES, instructions
from kdforge.export.onnx_export import export_onnx
from kdforge.export.quantize import quantize_int8
from kdforge.profile.latency import LatencySetup, call_timer, cpu_model, measure
from kdforge.train.models import create_model
from kdforge.train.models.base import calibrate_batch_norm

# the CNN's INT8 pairings: each x86 scheme kdforge writes (int8_cpu.CANDIDATES), and S8S8 (ARM's)
PAIRINGS = {"CNN INT8 U8S8": CANDIDATES["x86-vnni"][0], "CNN INT8 U8S8 7-bit": CANDIDATES["x86-avx2"][0],
            "CNN INT8 U8U8": CANDIDATES["x86-avx2"][1], "CNN INT8 S8S8": CANDIDATES["arm64"][0]}
FILES = ("CNN FP32", *PAIRINGS, "AdderNet FP32", "AdderNet INT8")


def export_all(folder: Path, images: torch.Tensor) -> dict[str, Path]:
    example, files = torch.zeros(1, 3, 32, 32), {}
    for family, name in (("CNN", "resnet20"), ("AdderNet", "resnet20_adder")):
        torch.manual_seed(0)
        model = calibrate_batch_norm(create_model(name, 10), images)
        fp32 = export_onnx(model, example, folder / f"{name}.onnx")
        files[f"{family} FP32"] = fp32
        if family == "CNN":
            for i, (label, scheme) in enumerate(PAIRINGS.items()):
                files[label] = quantize_int8(fp32, folder / f"{name}.int8-{i}.onnx", images.numpy(), scheme)
        else:
            files["AdderNet INT8"] = export_onnx(quantize_adder_layers(model, images), example, folder / f"{name}.int8.onnx")
    return files


def float_convolutions(path: Path, folder: Path) -> str:
    """Float Conv nodes of all convolution nodes after ONNX Runtime's optimisation (a file with
    kdforge's adder nodes: as written, which ONNX Runtime leaves as they are)."""
    if not any(n.domain == "kdforge" for n in onnx.load(str(path)).graph.node):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        path = Path(options.optimized_model_filepath)
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return f"{ops.get('Conv', 0)} of {sum(v for k, v in ops.items() if 'Conv' in k)}"


def off_exact(path: Path, x: np.ndarray) -> str:
    """Largest |optimised - exact| logit, relative to the logits' range, where exact is the file's
    own Q/DQ arithmetic (graph optimisations off): what saturating integer kernels lose."""
    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level, options.log_severity_level = level, 3
        outputs.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0])
    return f"{np.abs(outputs[1] - outputs[0]).max() / np.ptp(outputs[0]):.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    images = torch.randn(64, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = export_all(folder, images)
        sessions = {name: ort_backend.session(path, args.threads) for name, path in files.items()}
        print(f"ResNet-20 (3x32x32), kdforge's ONNX files in ONNX Runtime {ort.__version__}; {cpu_model()} "
              f"({instructions()}), {args.threads} threads; median ms per call, ratio to CNN FP32; off exact: largest "
              f"|integer kernels - the file's exact Q/DQ arithmetic| over the logits' range, on the calibration images")
        print("| file | float convs after ORT's optimisation | off exact | batch 1 (ms) | / CNN FP32 | batch 64 (ms) | / CNN FP32 |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        figures = {}
        for batch in (1, 64):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            timers = {name: call_timer(lambda s=s: ort_backend.run(s, x)) for name, s in sessions.items()}
            figures[batch] = {name: f["p50_ms"] for name, f in measure(timers, LatencySetup(round_ms=20, settle_ms=5)).items()}
        for name in FILES:
            cells = [f"{figures[b][name]:.3f} | {figures[b][name] / figures[b]['CNN FP32']:.2f}x" for b in (1, 64)]
            print(f"| {name} | {float_convolutions(files[name], folder)} | {off_exact(files[name], images.numpy()) if name in PAIRINGS else '-'} | "
                  f"{' | '.join(cells)} |")


if __name__ == "__main__":
    main()
