"""Quantization-aware distillation (`qat` on an INT8 student): fake quantization on the export's
grids (ONNX Runtime's formulas for CNNs, the integer adder node's sums for AdderNets), and the
qat stage between strip and export."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from conftest import assert_one_sentence, report_tables, run_tiny, tiny_config
from kdforge.export.adder_int8 import quantized_layer
from kdforge.export.int8_cpu import CANDIDATES, TENSORRT
from kdforge.export.strip import load_deployed
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.fake_quant import (FakeQuantAdderLayer, calibrate_fake_quant, scales_and_zero_points, with_fake_quant,
                                   without_fake_quant)
from kdforge.train.models import create_model

STUDENTS = tiny_config('unused')['students']


@pytest.mark.parametrize("kind,reduce_range,symmetric", [
    (TensorProto.UINT8, False, False), (TensorProto.INT8, False, True), (TensorProto.INT8, True, True),
    (TensorProto.UINT8, False, True), (TensorProto.INT8, False, False)])
def test_scales_and_zero_points_are_onnx_runtimes(kind, reduce_range, symmetric):
    rng = np.random.default_rng(0)
    lo, hi = -np.abs(rng.standard_normal(50)) * 3, np.abs(rng.standard_normal(50)) * 2
    lo[:5], hi[5:10] = 0.5, -0.5  # ranges that do not hold 0
    qmin, qmax = get_qmin_qmax_for_qType(kind, reduce_range=reduce_range, symmetric=symmetric)
    scale, zero = scales_and_zero_points(torch.tensor(lo), torch.tensor(np.maximum(hi, lo)), int(qmin), int(qmax), symmetric)
    for i in range(50):
        z, s = compute_scale_zp(np.float32(lo[i]), np.float32(max(hi[i], lo[i])), qmin, qmax, symmetric)
        assert scale[i].item() == pytest.approx(float(s), rel=1e-6) and zero[i].item() == int(z)


def test_a_fake_quantized_adder_layer_sums_as_the_integer_layer():
    """Weights beyond the input's range included: the export clamps them and adds the removed part back."""
    torch.manual_seed(0)
    layer = AdderConv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        layer.weight.mul_(0.5)
        layer.weight[0, 0, 0, 0] = 9.0  # far outside the input's range
    x = torch.rand(8, 4, 6, 6) * 2 - 0.3
    fake = FakeQuantAdderLayer(layer)
    calibrate_fake_quant(fake, x)
    integer = quantized_layer(layer, float(x.min()), float(x.max()))
    with torch.no_grad():
        assert torch.allclose(fake(x), integer(x), atol=1e-4)
        assert not torch.allclose(fake(x), layer(x), atol=1e-2)  # the grid is coarse enough to matter


@pytest.mark.parametrize("scheme", [*CANDIDATES["x86-vnni"], *CANDIDATES["x86-avx2"], TENSORRT], ids=lambda s: s.name)
def test_fake_quantization_wraps_the_integer_layers_and_unwraps_to_the_same_model(scheme):
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    fake = with_fake_quant(model, scheme)
    calibrate_fake_quant(fake, x)
    with torch.no_grad():
        noisy = fake(x)
    plain = without_fake_quant(fake)
    assert {k: v for k, v in plain.state_dict().items()}.keys() == before.keys()
    with torch.no_grad():
        assert 0 < (noisy - plain(x)).abs().max() < 0.1 * plain(x).abs().max()


def test_adder_students_fake_quantize_their_adder_layers_only():
    model = with_fake_quant(create_model("resnet8_adder", 10, 1), CANDIDATES["x86-vnni"][0])
    wrapped = [type(m).__name__ for m in model.modules() if "FakeQuant" in type(m).__name__]
    adders = sum(isinstance(m, AdderConv2d) for m in model.modules())
    assert wrapped == ["FakeQuantAdderLayer"] * adders  # the stem's convolution and the classifier stay float


def test_qat_is_for_int8_students(tmp_path):
    out = run_tiny(tmp_path, [{**STUDENTS[0], "qat": {"epochs": 1, "lr": 0.01}}])
    assert_one_sentence(out, "qat fine-tunes an INT8 student")


def test_an_addernets_ranges_are_not_learned(tmp_path):
    out = run_tiny(tmp_path, [{**STUDENTS[2], "deploy": ["int8"], "qat": {"epochs": 1, "lr": 0.01, "ranges": "learned"}}])
    assert_one_sentence(out, "is an AdderNet, whose INT8 input ranges are calibrated")


def test_a_qat_student_is_fine_tuned_between_strip_and_export_and_ships_from_it(tmp_path):
    student = {**STUDENTS[1], "deploy": ["int8"], "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
               "qat": {"epochs": 1, "lr": 0.01}}
    out = run_tiny(tmp_path, [student], export={"calibration_images": 64})
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "kd"
    assert "[qat/kd] 1 epoch(s) through fake quantization" in out.stdout and (folder / "deploy.qat.pt").is_file()
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["onnxruntime-int8"]["passed"] and not verify["onnxruntime-int8"]["cpu"]["float_layers"]
    main = report_tables((tmp_path / "run" / "report" / "report.md").read_text())[0]
    assert main[0]["precision (drop)"].startswith("int8 QAT (")
    assert main[0]["test acc. (%)"] == f"{verify['onnxruntime']['accuracy_pytorch'] * 100:.2f}"  # the fine-tuned model's
    first = (folder / "model.onnx").read_bytes()

    distilled = (folder / "metrics.jsonl").read_text()

    # qat.epochs sets its length and qat.lr its learning rate; only the stages from qat on rerun
    out = run_tiny(tmp_path, [{**student, "qat": {"epochs": 2, "lr": 0.03}}], export={"calibration_images": 64})
    assert out.returncode == 0, out.stderr
    assert "[distill/kd] up to date" in out.stdout and "[qat/kd] 2 epoch(s)" in out.stdout
    assert len(json.loads((tmp_path / "run" / "manifest.json").read_text())["units"]["qat/kd"]["metrics"]["history"]) == 2
    steps = [json.loads(line) for line in (folder / "qat" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["lr"] == pytest.approx(0.03)  # the cosine schedule's first step
    assert (folder / "metrics.jsonl").read_text() == distilled and (folder / "model.onnx").read_bytes() != first
    assert "int8_input_ranges" not in load_deployed(folder / "deploy.qat.pt")[1]

    # qat.ranges: learned trains the private layers' input ranges, which the FP32 model carries as clips
    out = run_tiny(tmp_path, [{**student, "qat": {"epochs": 1, "lr": 0.01, "ranges": "learned"}}], export={"calibration_images": 64})
    assert out.returncode == 0, out.stderr
    assert "[distill/kd] up to date" in out.stdout and "layer input ranges learned in QAT" in out.stdout
    ranges = load_deployed(folder / "deploy.qat.pt")[1]["int8_input_ranges"]
    assert ranges["stem.0"][0] < 0 and all(ranges[p][0] == 0.0 for p in ranges if p != "stem.0")  # the image, else ReLUs'
    clips = sum(n.op_type == "Clip" for n in onnx.load(str(folder / "model.onnx")).graph.node)
    assert clips == len({tuple(r) for r in ranges.values()})  # layers that read one tensor share its range and Clip
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["onnxruntime"]["passed"] and verify["onnxruntime-int8"]["passed"]  # the FP32 file clips as PyTorch does


def _deployed_with_ranges(tmp_path, ranges) -> Path:
    from kdforge.export.strip import save_deployed

    path = tmp_path / "deploy.qat.pt"
    save_deployed(path, create_model("resnet8", 10, 1), {"model": "resnet8", "model_args": {}, "num_classes": 10,
                                                         "in_channels": 1, "image_size": 8, "int8_input_ranges": ranges})
    return path


def test_a_deployed_model_clips_its_layers_inputs_to_the_learned_ranges(tmp_path):
    from kdforge.export.onnx_export import export_onnx

    torch.manual_seed(0)
    plain = create_model("resnet8", 10, 1).eval()
    path = _deployed_with_ranges(tmp_path, {"fc": [0.0, 0.05]})
    clipped, _ = load_deployed(path)
    clipped.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        embedding = plain.embed(plain.forward_stages(x)[-1])
        assert embedding.max() > 0.05  # the clip is active on these inputs
        assert torch.allclose(clipped(x), plain.fc(embedding.clamp(0.0, 0.05)), atol=1e-6)
    graph = onnx.load(str(export_onnx(clipped, x[:2], tmp_path / "model.onnx")))
    assert [n.op_type for n in graph.graph.node].count("Clip") == 1


@pytest.mark.parametrize("ranges,fragment", [
    ({"no_such_layer": [0.0, 1.0]}, "name layer(s) 'no_such_layer' its model does not have"),
    ({"fc": [0.5, 1.0]}, "damaged int8_input_ranges"),
    ({"fc": [0.0, float("nan")]}, "damaged int8_input_ranges"),
    ({"fc": "0 1"}, "damaged int8_input_ranges"),
])
def test_a_deploy_file_with_damaged_learned_ranges_is_one_sentence(tmp_path, ranges, fragment):
    from kdforge.errors import UserError

    with pytest.raises(UserError, match=re.escape(fragment)):
        load_deployed(_deployed_with_ranges(tmp_path, ranges))

