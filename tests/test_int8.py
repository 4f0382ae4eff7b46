"""INT8 students: ONNX Runtime's static QDQ quantization of a CNN student, verified against the
FP32 PyTorch model by agreement and accuracy drop, timed beside FP32 in the report."""

import json

import numpy as np
import pytest
import torch

from conftest import report_tables, assert_one_sentence, run_tiny, tiny_config
from kdforge.errors import UserError
from kdforge.export.int8_cpu import CANDIDATES, SCHEMES, host_cpu
from kdforge.export.onnx_export import export_onnx
from kdforge.export.quantize import quantize_int8
from kdforge.export.verify import require_passed, verify_int8
from kdforge.train.models import create_model

STUDENTS = tiny_config('unused')['students']


def test_an_int8_student_runs_through_every_stage(tmp_path):
    """A student that classifies (4 epochs, as the issue's tiny case): after one epoch it is at chance,
    and the top-1 of near-tied logits follows any rounding."""
    trained = {"epochs": 4, "batch_size": 64, "lr": 0.1}
    out = run_tiny(tmp_path, [{**STUDENTS[1], "deploy": ["int8"], "train": trained}], export={"calibration_images": 64},
                   teacher={"model": "resnet8", "train": {**trained, "epochs": 3}})
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "kd"
    assert (folder / "model.int8.onnx").is_file() and "calibrated on 64 training images" in out.stdout
    verdict = json.loads((folder / "verify.json").read_text())["onnxruntime-int8"]
    assert verdict["passed"] and verdict["accuracy_drop"] <= 0.02
    cpu = verdict["cpu"]  # export.int8_cpu auto: made for this host, so verify adds no note
    assert (cpu["made_for"], cpu["host"], cpu["note"]) == (host_cpu(), host_cpu(), None)
    assert cpu["scheme"] in {s.name for s in CANDIDATES[host_cpu()]}
    assert "is made for" not in out.stdout
    assert "onnxruntime-int8" in json.loads((folder / "profile.json").read_text())["latency"]
    main, details = report_tables((tmp_path / "run" / "report" / "report.md").read_text())[:2]
    assert main[0]["precision (drop)"] == f"int8 ({verdict['accuracy_drop'] * 100:.2f})"
    assert float(main[0]["ORT p50 (ms)"].split(" ±")[0]) > 0
    assert float(details[0]["energy at precision (uJ, est.)"]) < float(details[0]["energy fp32 (uJ, est.)"])


def test_an_fp16_student_ships_beside_fp32_and_its_tolerance_is_a_config_key(tmp_path):
    student = {**STUDENTS[0], "deploy": ["fp16"]}
    out = run_tiny(tmp_path, [student])
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "ce"
    verdict = json.loads((folder / "verify.json").read_text())["onnxruntime-fp16"]
    assert verdict["passed"] and 0 < verdict["max_abs_diff"] <= 0.1
    assert "onnxruntime-fp16" in json.loads((folder / "profile.json").read_text())["latency"]
    out = run_tiny(tmp_path, [student], verify={"fp16_atol": verdict["max_abs_diff"] / 2})
    assert_one_sentence(out, "verify.fp16_atol=")
    found = json.loads((folder / "verify.json").read_text())["onnxruntime-fp16"]["first_divergence"]
    assert f"the first layer to diverge is {found['layer']}" in out.stderr  # a module of the student, mapped through its wrapper


def test_fp16_adder_students_are_refused_at_the_config(tmp_path):
    out = run_tiny(tmp_path, [{**STUDENTS[2], "deploy": ["fp16"]}])
    assert_one_sentence(out, "cannot deploy onnxruntime-fp16")
    assert "ship an AdderNet as int8 or fp32" in out.stderr and not (tmp_path / "run" / "teacher").exists()


def test_calibration_images_set_the_activation_scales(tmp_path):
    torch.manual_seed(0)
    export_onnx(create_model("resnet8", 10, 1).eval(), torch.zeros(2, 1, 8, 8), tmp_path / "m.onnx")
    images = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    one = quantize_int8(tmp_path / "m.onnx", tmp_path / "one.onnx", images[:1], SCHEMES["x86-avx2"]).read_bytes()
    many = quantize_int8(tmp_path / "m.onnx", tmp_path / "many.onnx", images, SCHEMES["x86-avx2"]).read_bytes()
    assert one != many


def test_an_int8_adder_student_is_refused_by_name(tmp_path):
    export_onnx(create_model("resnet8_adder", 10, 1).eval(), torch.zeros(2, 1, 8, 8), tmp_path / "ann.onnx")
    with pytest.raises(UserError, match="adder layers, which ONNX Runtime's quantizer cannot quantize"):
        quantize_int8(tmp_path / "ann.onnx", tmp_path / "ann.int8.onnx", np.zeros((4, 1, 8, 8), np.float32), SCHEMES["x86-vnni"])
    assert not (tmp_path / "ann.int8.onnx").exists()


def test_the_int8_thresholds_say_by_how_much_a_file_misses_them(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    dataset = [(torch.randn(1, 8, 8), i % 10) for i in range(40)]
    flipped = verify_int8(model, lambda x: -model(torch.from_numpy(x)).detach().numpy(), dataset, 0.97, 0.02)
    assert not flipped["passed"] and flipped["top1_agreement"] < 0.97
    with pytest.raises(UserError, match=r"verify.int8_min_agreement=0.97.*verify.int8_max_accuracy_drop=0.02"):
        require_passed(flipped, "kd", tmp_path)
    same = verify_int8(model, lambda x: model(torch.from_numpy(x)).detach().numpy(), dataset, 1.0, 0.0)
    assert same["passed"] and same["accuracy_drop"] == 0


@pytest.mark.parametrize("name", ["resnet20", "resnet20_binary"])
@pytest.mark.parametrize("scheme", [s for t in ("x86-vnni", "x86-avx2") for s in CANDIDATES[t]], ids=lambda s: s.name)
def test_int8_files_leave_no_float_convolution_after_onnx_runtimes_optimisation(tmp_path, name, scheme):
    """Every x86 scheme (U8S8, with 7-bit weights, U8U8): ONNX Runtime's optimiser turns every
    convolution of a CNN or binary student into QLinearConv (int8 activations left 12 of
    ResNet-20's 21 in float)."""
    import collections

    import onnx
    import onnxruntime as ort

    from kdforge.train.models.base import calibrate_batch_norm

    torch.manual_seed(0)
    images = torch.randn(64, 3, 32, 32)
    fp32 = export_onnx(calibrate_batch_norm(create_model(name, 10), images), torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", images.numpy(), scheme)
    options = ort.SessionOptions()
    options.optimized_model_filepath, options.log_severity_level = str(tmp_path / "optimized.onnx"), 3
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 21 and ops["Conv"] == 0 and ops["QLinearAdd"] == 9


def test_a_graph_whose_shapes_onnx_runtimes_symbolic_inference_gives_up_on_still_quantizes(tmp_path, monkeypatch):
    """An encoder-decoder that up-samples by a scale factor and concatenates the skip ("Incomplete
    symbolic shape inference" in ONNX Runtime's pre-processing, which then saves its partial graph
    to the working directory): kdforge quantizes with ONNX's own shape inference instead, and
    leaves the working directory as it was."""
    import onnx
    import onnxruntime as ort

    import own_models

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    torch.manual_seed(0)
    net = own_models.encoder_decoder().eval()
    fp32 = export_onnx(net, torch.zeros(2, 1, 8, 8), tmp_path / "model.onnx")
    images = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    path = quantize_int8(fp32, tmp_path / "model.int8.onnx", images, SCHEMES[host_cpu()])
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node) >= 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = net(torch.from_numpy(images)).numpy()
    assert np.abs(session.run(None, {"input": images})[0] - reference).max() < 0.1 * np.abs(reference).max()
    assert list((tmp_path / "cwd").iterdir()) == []
