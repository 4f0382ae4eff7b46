"""INT8 files made for the CPU that runs them (export.int8_cpu, export.calibration): the integer
types follow the CPU's instructions, the file's metadata names them, and verify says when it runs
a file made for another kind of CPU."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import assert_one_sentence, report_tables, run_tiny, tiny_config
from kdforge.export.int8_cpu import CPU_KEY, SCHEMES, host_cpu, scheme_for
from kdforge.export.onnx_export import export_onnx
from kdforge.export.quantize import quantize_int8

STUDENTS = tiny_config("unused")["students"]
ZEN3 = "flags : fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 vaes vpclmulqdq"
ICELAKE = ZEN3 + " avx512f avx512bw avx512_vnni"
ALDERLAKE = ZEN3 + " avx_vnni"
SKYLAKE_SERVER = ZEN3 + " avx512f avx512bw avx512dq"
GRAVITON3 = "Features : fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp sve"
CORTEX_A72 = "Features : fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"


@pytest.mark.parametrize("cpuinfo, target", [(ZEN3, "x86-avx2"), (SKYLAKE_SERVER, "x86-avx2"), (ICELAKE, "x86-vnni"),
                                             (ALDERLAKE, "x86-vnni"), (GRAVITON3, "arm64-dotprod"), (CORTEX_A72, "arm64")])
def test_the_host_cpu_is_read_from_its_instruction_flags(cpuinfo, target):
    assert host_cpu(cpuinfo) == target


def _saturating_net() -> torch.nn.Module:
    """Positive 3x3 weights over 16 channels of positive inputs: adjacent u8 x s8 products of one
    channel pair sum past int16 at 8-bit weights (2 x 255 x 127 > 32,767)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(128, 4))
    with torch.no_grad():
        net[0].weight.copy_(net[0].weight.abs() + 0.5)
    return net.eval()


def _logits(path, images: np.ndarray, optimise: bool) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def test_the_file_made_for_this_cpu_computes_its_own_quantized_arithmetic_exactly(tmp_path):
    """With optimisations off ONNX Runtime runs each DequantizeLinear -> float Conv -> QuantizeLinear,
    the file's exact meaning; optimised, its integer kernels. On this host's settings they agree;
    on an AVX2 host the file made for VNNI (8-bit weights) does not: its int16 pair sums saturate."""
    fp32 = export_onnx(_saturating_net(), torch.zeros(2, 16, 4, 4), tmp_path / "m.onnx")
    images = np.random.default_rng(0).random((64, 16, 4, 4), np.float32)
    own = quantize_int8(fp32, tmp_path / "own.onnx", images, scheme_for("auto"))
    assert np.abs(_logits(own, images, True) - _logits(own, images, False)).max() < 0.05
    if host_cpu() == "x86-avx2":
        vnni = quantize_int8(fp32, tmp_path / "vnni.onnx", images, SCHEMES["x86-vnni"])
        assert np.abs(_logits(vnni, images, True) - _logits(vnni, images, False)).max() > 1.0


def _quantized_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
            and inits[n.input[0]].ndim == 4]


@pytest.mark.parametrize("target, activations, weight_limit", [("x86-vnni", np.uint8, 127), ("x86-avx2", np.uint8, 64),
                                                               ("arm64-dotprod", np.int8, 127), ("arm64", np.int8, 127)])
def test_each_cpu_target_sets_the_files_integer_types_and_names_itself(tmp_path, target, activations, weight_limit):
    fp32 = export_onnx(_saturating_net(), torch.zeros(2, 16, 4, 4), tmp_path / "m.onnx")
    images = np.random.default_rng(0).random((16, 16, 4, 4), np.float32)
    model = onnx.load(str(quantize_int8(fp32, tmp_path / "q.onnx", images, SCHEMES[target], "percentile")))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert points and all(p.dtype == activations for p in points)
    weights = _quantized_weights(model)
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == weight_limit
    props = {p.key: p.value for p in model.metadata_props}
    assert props[CPU_KEY] == target and props["kdforge.int8_scheme"] == SCHEMES[target].name
    assert props["kdforge.calibration"] == "percentile, 16 images"


def test_the_calibrator_sets_the_activation_ranges(tmp_path):
    fp32 = export_onnx(_saturating_net(), torch.zeros(2, 16, 4, 4), tmp_path / "m.onnx")
    images = np.random.default_rng(0).random((512, 16, 4, 4), np.float32)
    images[0, 3, 0, 0] = 40  # one rare outlier: MinMax spans it, Percentile and Entropy clip it

    def scales(calibration):
        model = onnx.load(str(quantize_int8(fp32, tmp_path / f"{calibration}.onnx", images, SCHEMES["x86-avx2"], calibration)))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        return [float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"]

    minmax, percentile, entropy = scales("minmax"), scales("percentile"), scales("entropy")
    assert percentile[0] < minmax[0] / 4 and entropy[0] < minmax[0] / 4 and percentile != entropy


def test_the_pipeline_names_each_files_cpu_and_verify_says_when_it_runs_elsewhere(tmp_path):
    other = "x86-avx2" if host_cpu().startswith("arm64") else "arm64"
    student = {**STUDENTS[1], "deploy": ["int8"]}
    export = {"calibration_images": 64, "int8_cpu": other, "calibration": "entropy"}
    loose = {"int8_min_agreement": 0.0, "int8_max_accuracy_drop": 1.0}  # a 1-epoch student: about naming, not accuracy
    out = run_tiny(tmp_path, [student], export=export, verify=loose)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "kd"
    props = {p.key: p.value for p in onnx.load(str(folder / "model.int8.onnx")).metadata_props}
    assert props[CPU_KEY] == other and props["kdforge.calibration"] == "entropy, 64 images"
    verdict = json.loads((folder / "verify.json").read_text())["onnxruntime-int8"]
    assert verdict["cpu"]["made_for"] == other and verdict["cpu"]["host"] == host_cpu()
    assert f"model.int8.onnx is made for {other}" in out.stdout and verdict["cpu"]["note"] in out.stdout
    details = report_tables((tmp_path / "run" / "report" / "report.md").read_text())[1]
    assert details[0]["INT8 made for"] == f"{other} ({SCHEMES[other].name}, entropy)"

    out = run_tiny(tmp_path, [student], export=export, verify={"int8_min_agreement": verdict["top1_agreement"] + 0.001})
    assert_one_sentence(out, f"model.int8.onnx is made for {other}")  # auto (this host, no note): tests/test_int8.py
