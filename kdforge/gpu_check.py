"""`make gpu-check`: everything only a GPU can show, in one run, into one JSON file.

    python -m kdforge.gpu_check [--out gpu_check.json] [--budget 540]

Run it on a CUDA machine where kdforge is installed into the Python that has CUDA PyTorch (the
Docker image, or `pip install -e '.[gpu,dev]'`). Sections, each timed on the first CUDA device,
each recorded as figures, or as `skipped` with the reason (no CUDA device, a package missing, the
time budget spent), or as `error` with the exception's first line; a section never stops the rest:

- environment: the GPU, CUDA, and the versions of PyTorch, Triton, ONNX Runtime, DALI, TensorRT;
- tests: every `gpu`- and `tensorrt`-marked test (pytest), counted by outcome;
- adder_kernel: kdforge's Triton adder convolution against cuDNN's convolution of the same shape,
  FP32 and FP16 (the Triton kernel computes in fp32 from fp16 inputs), median of CUDA-event timings;
- onnxruntime: each distinct deployed graph of the demo (configs/digits_demo.yaml) in kdforge's ONNX
  Runtime session (CUDA provider first, adder graphs on kdforge's CPU kernel), batch 1 and 64;
- dali: DALI's `mixed` (nvJPEG) decoding of generated 350-500 px JPEGs against its CPU pipeline;
- resnet50_amp: images/s of one ResNet-50 training step (SGD, bf16 autocast, channels-last).

The same section functions take a device, and run on the CPU with small sizes in the tests
(tests/test_gpu_check.py); the figures below them are only meaningful on a GPU.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ADDER_SHAPES = ((64, 16, 32, 32, 16), (64, 32, 16, 16, 32), (64, 64, 8, 8, 64), (32, 64, 56, 56, 64))  # N, C, H, W, O; 3x3, pad 1


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(run, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """The median time of `run()` in ms: CUDA events on a GPU, the wall clock on the CPU."""
    for _ in range(warmup):
        run()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def environment(device: torch.device) -> dict:
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    for name, module in (("triton", "triton"), ("onnxruntime", "onnxruntime"), ("dali", "nvidia.dali"), ("tensorrt", "tensorrt")):
        try:
            versions[name] = __import__(module, fromlist=["__version__"]).__version__
        except ImportError:
            versions[name] = None
    if versions["onnxruntime"]:
        import onnxruntime

        versions["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        versions.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                        sms=props.multi_processor_count)
    return versions


def marked_tests(timeout_s: float) -> dict:
    """Every gpu- and tensorrt-marked test, counted by outcome (pytest's junit report)."""
    import xml.etree.ElementTree as ElementTree

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
                              f"--junitxml={report}", str(ROOT / "tests")], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
        if not report.exists():
            return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:]}
        cases = ElementTree.parse(report).getroot().iter("testcase")
        outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            kind = "failed" if case.find("failure") is not None or case.find("error") is not None else \
                "skipped" if case.find("skipped") is not None else "passed"
            outcomes[kind].append(name)
    return {"exit_code": run.returncode, **{k: len(v) for k, v in outcomes.items()}, "failed_tests": outcomes["failed"]}


def adder_kernel(device: torch.device, shapes=ADDER_SHAPES, repeats: int = 20) -> list[dict]:
    """kdforge's adder convolution (Triton on a GPU) and the convolution (cuDNN) per shape and precision."""
    import torch.nn.functional as F

    from kdforge.nn import adder_op  # noqa: F401 - registers torch.ops.kdforge.adder_conv2d

    rows = []
    for n, c, h, w, o in shapes:
        for dtype in (torch.float32, torch.float16):
            if dtype == torch.float16 and device.type != "cuda":
                continue  # the CPU's fp16 convolution is not what a deployment would run
            x = torch.randn(n, c, h, w, device=device, dtype=dtype)
            weight = torch.randn(o, c, 3, 3, device=device, dtype=dtype)
            with torch.no_grad():
                adder = median_ms(lambda: torch.ops.kdforge.adder_conv2d(x, weight, [1, 1], [1, 1], 0.0), device, repeats)
                conv = median_ms(lambda: F.conv2d(x, weight, padding=1), device, repeats)
            rows.append({"shape": [n, c, h, w, o], "dtype": str(dtype).split(".")[1], "adder_ms": round(adder, 4),
                         "conv_ms": round(conv, 4), "adder_over_conv": round(adder / conv, 2)})
    return rows


def _demo_graphs() -> dict[str, dict]:
    """model name -> model_args of the demo's students, one per distinct deployed graph."""
    from kdforge.config import load_config

    cfg = load_config(ROOT / "configs" / "digits_demo.yaml")
    return {s.model: dict(s.model_args or {}) for s in cfg.students}


def onnxruntime_students(device: torch.device, batches=(1, 64), repeats: int = 50, models=None) -> list[dict]:
    """Each distinct demo graph, untrained (timing does not depend on the weights), exported as
    the pipeline exports it and run in kdforge's ONNX Runtime session."""
    import numpy as np

    from kdforge.export.onnx_export import export_onnx
    from kdforge.export.ort import run, session
    from kdforge.train.models import create_model

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, args in (models or _demo_graphs()).items():
            model = create_model(name, 10, 1, **args).eval()
            path = export_onnx(model, torch.zeros(1, 1, 8, 8), Path(folder) / f"{name}.onnx")
            sess = session(path, threads=1)
            row = {"model": name, "providers": sess.get_providers()}
            for batch in batches:
                images = np.random.default_rng(0).standard_normal((batch, 1, 8, 8)).astype(np.float32)
                row[f"batch{batch}_ms"] = round(median_ms(lambda: run(sess, images), torch.device("cpu"), repeats), 4)
            rows.append(row)
    return rows


def write_jpegs(folder: Path, count: int) -> Path:
    """An ImageNet-style folder of `count` smooth 350-500 px JPEGs (two classes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        for i in range(n):
            h, w = rng.integers(350, 501, 2)
            yy, xx = np.mgrid[0:h, 0:w]
            image = np.stack([(xx * rng.integers(1, 4)) % 256, (yy * 2) % 256, ((xx + yy) // 3) % 256], -1)
            image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
            (folder / split / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / f"c{i % 2}" / f"{i}.jpg", quality=90)
    return folder


def dali_decode(device: torch.device, images: int = 512, batch: int = 64, size: int = 224) -> dict:
    """DALI's images/s on generated JPEGs: on `device` (nvJPEG with `mixed` on a GPU) and on the CPU."""
    from kdforge.config import DataConfig, TrainConfig
    from kdforge.train.data import build_data
    from kdforge.train.data.dali import DaliLoader
    from kdforge.train.trainer import EpochBatches

    with tempfile.TemporaryDirectory() as folder:
        bundle = build_data(DataConfig(name="folder", root=write_jpegs(Path(folder), images), image_size=size, val_fraction=0.0), 0)
        batches = EpochBatches(bundle.train, TrainConfig(batch_size=batch), seed=0, world=1)
        result = {}
        for where in dict.fromkeys([device.type, "cpu"]):
            loader = DaliLoader(bundle.train, batches, 4, torch.device(where))
            next(iter(loader))  # builds the pipeline, warms the decoder
            started, seen = time.perf_counter(), 0
            for x, _ in loader:
                seen += len(x)
            _synchronize(torch.device(where))
            result[f"{where}_images_per_s"] = round(seen / (time.perf_counter() - started), 1)
    return result


def resnet50_amp(device: torch.device, batch: int = 128, size: int = 224, steps: int = 20) -> dict:
    """Images/s of ResNet-50 training steps on random data: SGD, bf16 autocast, channels-last."""
    from kdforge.train.models import create_model

    model = create_model("imagenet_resnet50", 1000).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    ms = median_ms(step, device, steps, warmup=3)
    return {"batch": batch, "step_ms": round(ms, 2), "images_per_s": round(batch / ms * 1e3, 1)}


SECTIONS = ("environment", "tests", "adder_kernel", "onnxruntime", "dali", "resnet50_amp")
NEEDS = {"adder_kernel": ("triton",), "onnxruntime": ("onnxruntime",), "dali": ("nvidia.dali",)}


def _missing(section: str) -> str | None:
    for module in NEEDS.get(section, ()):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed"
    return None


def check(device: torch.device, budget_s: float, sections=SECTIONS) -> dict:
    started = time.monotonic()
    report = {"device": str(device), "sections": {}}
    calls = {"environment": lambda: environment(device), "tests": lambda: marked_tests(max(budget_s * 0.5, 30)),
             "adder_kernel": lambda: adder_kernel(device), "onnxruntime": lambda: onnxruntime_students(device),
             "dali": lambda: dali_decode(device), "resnet50_amp": lambda: resnet50_amp(device)}
    for section in sections:
        spent = time.monotonic() - started
        reason = (None if section == "environment" else "no CUDA device" if device.type != "cuda" else
                  _missing(section) or (f"the {budget_s:.0f} s budget is spent" if spent > budget_s else None))
        if reason is not None:
            report["sections"][section] = {"skipped": reason}
            continue
        section_started = time.monotonic()
        try:
            report["sections"][section] = {"result": calls[section]()}
        except Exception as error:  # noqa: BLE001 - one section's failure is recorded, the rest still run
            report["sections"][section] = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"}
        report["sections"][section]["seconds"] = round(time.monotonic() - section_started, 1)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget", type=float, default=540, help="seconds after which the remaining sections are skipped")
    args = parser.parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    report = check(device, args.budget)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"gpu check on {report['sections']['environment']['result'].get('gpu', 'no CUDA device')}: "
          + ", ".join(f"{name} {'skipped' if 'skipped' in s else 'error' if 'error' in s else 'done'}" for name, s in report["sections"].items())
          + f"; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
