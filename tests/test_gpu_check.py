"""`make gpu-check` as far as a CPU takes it: every section's function runs on the CPU with small
sizes and gives figures of the right form, and the whole check writes one JSON file in which
each GPU section says why it was skipped."""

import json

import torch

from kdforge import gpu_check

CPU = torch.device("cpu")


def test_the_check_without_a_gpu_writes_json_with_every_gpu_section_skipped_and_why(tmp_path):
    from conftest import run_python

    out = tmp_path / "check.json"
    printed = run_python(f"import sys; from kdforge.gpu_check import main; sys.exit(main(['--out', {str(out)!r}]))",
                         CUDA_VISIBLE_DEVICES="")
    report = json.loads(out.read_text())
    assert set(report["sections"]) == set(gpu_check.SECTIONS)
    assert report["sections"]["environment"]["result"]["torch"] == torch.__version__
    assert all(report["sections"][s] == {"skipped": "no CUDA device"} for s in gpu_check.SECTIONS[1:])
    assert "written to" in printed


def test_a_failing_section_is_recorded_and_the_rest_still_run(monkeypatch):
    monkeypatch.setattr(gpu_check, "adder_kernel", lambda device: 1 / 0)
    monkeypatch.setattr(gpu_check, "resnet50_amp", lambda device: {"images_per_s": 1.0})
    monkeypatch.setattr(gpu_check, "_missing", lambda section: None)
    report = gpu_check.check(torch.device("cuda"), 100, sections=("adder_kernel", "resnet50_amp"))
    assert report["sections"]["adder_kernel"]["error"] == "ZeroDivisionError: division by zero"
    assert report["sections"]["resnet50_amp"]["result"] == {"images_per_s": 1.0}


def test_the_adder_kernel_is_timed_against_the_convolution_of_the_same_shape():
    rows = gpu_check.adder_kernel(CPU, shapes=((2, 4, 8, 8, 4),), repeats=3)
    assert len(rows) == 1 and rows[0]["shape"] == [2, 4, 8, 8, 4] and rows[0]["dtype"] == "float32"
    assert rows[0]["adder_ms"] > 0 and rows[0]["conv_ms"] > 0
    assert abs(rows[0]["adder_over_conv"] - rows[0]["adder_ms"] / rows[0]["conv_ms"]) < 0.02 * rows[0]["adder_over_conv"] + 0.01


def test_the_demos_graphs_run_in_onnxruntime_at_each_batch():
    graphs = gpu_check._demo_graphs()
    assert {"resnet8", "resnet20", "resnet20_adder", "resnet8_binary"} <= set(graphs)
    rows = gpu_check.onnxruntime_students(CPU, batches=(1, 4), repeats=3,
                                          models={m: graphs[m] for m in ("resnet8", "resnet20_adder")})
    assert [r["model"] for r in rows] == ["resnet8", "resnet20_adder"]
    assert all(r["providers"][-1] == "CPUExecutionProvider" and r["batch1_ms"] > 0 and r["batch4_ms"] > 0 for r in rows)


def test_dali_decoding_is_timed_on_the_cpu_pipeline():
    result = gpu_check.dali_decode(CPU, images=24, batch=8, size=32)
    assert list(result) == ["cpu_images_per_s"] and result["cpu_images_per_s"] > 0


def test_a_resnet50_training_step_is_timed():
    result = gpu_check.resnet50_amp(CPU, batch=2, size=64, steps=1)
    assert result["batch"] == 2 and result["images_per_s"] > 0


def test_make_gpu_check_runs_the_check_within_ten_minutes():
    import subprocess

    import os

    quiet = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under `make test` too
    planned = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check", "GPU_PYTHON=python9"], capture_output=True,
                             text=True, cwd=gpu_check.ROOT, env=quiet)
    assert planned.stdout.strip() == "timeout 600 python9 -m kdforge.gpu_check --out gpu_check.json --budget 500"
