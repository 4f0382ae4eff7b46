"""Latency estimates on named targets: the CPU's roofline, one layer by hand, the catalogue's
figures, the profile.targets / profile.precision keys, and the report's columns (the GPU kernel
model itself: test_gpu_cost.py)."""

import json
import shutil

import pytest
import torch
import yaml

from conftest import assert_one_sentence, kdforge_cli
from kdforge.nn.adder import AdderConv2d
from kdforge.profile.counts import count_costs
from kdforge.profile.report import student_row
from kdforge.results import ExportRecord, ProfileRecord, VerifyRecord
from kdforge.profile.estimates import estimate
from kdforge.profile.roofline import layer_seconds
from kdforge.profile.targets import CATALOGUE, measured_cpu


def _one_layer(module) -> dict:
    (layer,) = [c for c in count_costs(module.eval(), (1, 64, 56, 56))["layers"] if c["kind"] in ("conv", "adder")]
    return layer


def test_one_convolution_and_one_adder_layer_by_hand():
    """A ResNet-18 3x3 convolution, 64 -> 64 channels at 56x56, batch 1, on a T4."""
    conv = _one_layer(torch.nn.Conv2d(64, 64, 3, padding=1, bias=False))
    macs = 56 * 56 * 64 * 64 * 9                       # 115,605,504
    traffic = 64 * 56 * 56 + 64 * 64 * 9 + 64 * 56 * 56  # input + weights + output = 438,272 elements
    assert (conv["macs"], conv["traffic"]) == (macs, traffic)
    t4 = CATALOGUE["t4"]
    seconds, bound = layer_seconds(conv, t4, "fp16")
    assert bound == "compute" and seconds == pytest.approx(2 * macs / 65e12)          # 3.557 us > 2 B x 438,272 / 320 GB/s = 2.739 us
    seconds, bound = layer_seconds(conv, t4, "fp32")
    assert bound == "compute" and seconds == pytest.approx(2 * macs / 8.1e12)         # 28.5 us on CUDA cores
    adder = _one_layer(AdderConv2d(64, 64, 3, padding=1))
    seconds, bound = layer_seconds(adder, t4, "fp32")
    assert bound == "compute" and seconds == pytest.approx(2 * macs / (8.1e12 / 2))   # 2 add instructions per MAC: 57.1 us
    relu = {"kind": "elementwise", "macs": 0, "traffic": 2 * 64 * 56 * 56}
    assert layer_seconds(relu, t4, "fp16") == (pytest.approx(2 * 2 * 64 * 56 * 56 / 320e9), "memory")


def test_the_catalogue_gives_every_figure_and_its_datasheet():
    assert {"h100", "a100", "l4", "t4", "orin"} <= set(CATALOGUE)
    for target in CATALOGUE.values():
        assert 0 < target.fp32_tflops < target.fp16_tensor_tflops < target.int8_tensor_tops and target.bandwidth_gbs > 0
        assert "datasheet" in target.source.lower() or "technical brief" in target.source.lower()
    cpu = measured_cpu()
    assert cpu.fp32_tflops > 0 and cpu.bandwidth_gbs > 0 and "measured" in cpu.source


def test_estimates_scale_with_the_target_and_the_precision():
    costs = count_costs(torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()).eval(), (1, 64, 56, 56))
    h100, orin = (estimate(costs, CATALOGUE[n], "fp16")["engine_ms"] for n in ("h100", "orin"))
    assert h100 < orin
    assert estimate(costs, CATALOGUE["t4"], "int8")["total_ms"] < estimate(costs, CATALOGUE["t4"], "fp32")["total_ms"]


def _profile_with_targets(finished, tmp_path, *settings):
    root, raw = finished
    shutil.copytree(root / "run", tmp_path / "run")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**raw, "run_dir": str(tmp_path / "run")}))
    return kdforge_cli("run", tmp_path / "ok.yaml", *(a for s in settings for a in ("--set", s)))


def test_configured_targets_add_estimate_columns_to_the_report(finished, tmp_path):
    out = _profile_with_targets(finished, tmp_path, "profile.targets=[t4, orin]", "profile.precision=int8")
    assert out.returncode == 0, out.stderr
    assert "[profile] " in out.stdout and "[distill/ce] up to date" in out.stdout  # only profile and report re-ran
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "t4 int8 est. (us)" in report and "orin int8 est. (us)" in report
    assert "Not a measurement" in report
    estimates = json.loads((tmp_path / "run" / "students" / "ce" / "profile.json").read_text())["estimates"]
    assert set(estimates) == {"t4", "orin"} and estimates["t4"]["precision"] == "int8"
    assert estimates["orin"]["kernels"] == estimates["t4"]["kernels"] > 0 and estimates["t4"]["total_ms"] > 0


def test_an_unknown_target_names_the_key(finished, tmp_path):
    assert_one_sentence(_profile_with_targets(finished, tmp_path, "profile.targets=[mars]"), "profile.targets")


def _figure(p50_ms: float) -> dict:
    return {"p50_ms": p50_ms, "ci_low_ms": p50_ms, "ci_high_ms": p50_ms, "stable": True, "rounds": 5}


def test_a_tensorrt_measurement_on_the_same_gpu_sits_beside_the_estimate():
    estimate_ms = 0.5
    profile = {"costs": {"totals": {"params": 1, "macs": 1, "mul": 1, "add": 1, "peak_activation_bytes": 1024,
                                    "energy_uj": {"fp32": 1.0, "int8": 0.1}}},
               "latency": {"onnxruntime": {**_figure(1), "p90_ms": 1}, "pytorch": _figure(1), "tensorrt": _figure(1.5)},
               "estimates": {name: {"total_ms": estimate_ms, "gpu_name_contains": CATALOGUE[name].gpu_name_contains}
                             for name in ("h100", "t4")},
               "environment": {"gpu": "NVIDIA H100 80GB HBM3"}}
    student = type("S", (), {"method": "kd", "model": "resnet8", "precision": "fp32", "qat": None})()
    verdict = {"backend": "onnxruntime", "samples": 1, "max_abs_diff": 0, "top1_agreement": 1, "accuracy_pytorch": 0.9,
               "accuracy_backend": 0.9, "accuracy_drop": 0, "atol": 1e-3, "atol_key": "verify.atol", "min_agreement": 0.99,
               "passed": True}
    counts = {"pytorch": {}, "onnx": {}, "agree": True, "note": ""}
    row = student_row("kd", student, {"test_accuracy": 0.9}, {"params_training": 1},
                      VerifyRecord.from_json({"onnxruntime": verdict, "counts": counts}), ProfileRecord.model_validate(profile),
                      ExportRecord(onnx_bytes=1, flavour="standard"))
    assert row["trt_over_est_h100"] == pytest.approx(3.0) and row["trt_over_est_t4"] is None
    assert row["est_t4_us"] == estimate_ms * 1e3


def test_deployment_keys_reach_the_estimates(finished, tmp_path):
    out = _profile_with_targets(finished, tmp_path, "profile.targets=[t4]", "profile.input_on_device=true",
                                "profile.cuda_graph=false")
    assert out.returncode == 0, out.stderr
    estimate = json.loads((tmp_path / "run" / "students" / "ce" / "profile.json").read_text())["estimates"]["t4"]
    assert estimate["query_ms"]["input_copy"] == 0 and estimate["query_ms"]["graph_launch"] == 0  # both > 0 by default
    assert "launched one by one" in estimate["deployment"]
