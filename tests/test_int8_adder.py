"""INT8 AdderNet students: the integer adder nodes' native SAD kernel (every code path, checked
in the disassembly), the PyTorch references they are verified against, the calibration's
lossless weight clamp, the fused uint8 layers (batch norm, ReLU and requantization folded in,
uint8 between layers), and a student through every stage."""

import json
import platform
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
import torch

import adder_fuzz_corpus as corpus
from conftest import assert_one_sentence, run_tiny, tiny_config
from kdforge.export import ort as ort_backend
from kdforge.export.adder_int8 import input_ranges, quantize_adder_layers, quantized_layer
from kdforge.export.onnx_export import drop_identity_requantization, export_onnx
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.adder_int8 import QLinearAdderConv2d, QuantizedAdderConv2d, adder_conv2d_integer, qlinear_adder_conv2d

VALID = [c for kind in ("integer", "qlinear") for c in corpus.cases(seed=1, kind=kind) if c["error"] is None]
COMPILER = shutil.which("gcc") or shutil.which("cc")
X86 = platform.machine() in ("x86_64", "AMD64")


def _build(tmp_path, name: str, *flags: str) -> str:
    if COMPILER is None:
        pytest.skip("no C compiler here: the native kernel cannot be built")
    out = tmp_path / f"{name}.so"
    base = [f for f in ort_backend.NATIVE_FLAGS if not f.startswith("-march")]
    built = subprocess.run([COMPILER, *base, *flags, "-o", str(out), str(ort_backend.NATIVE_SOURCE)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return str(out)


def _sad_instructions(library: str) -> int:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump here to read the disassembly")
    text = subprocess.run([objdump, "-d", library], capture_output=True, text=True, check=True).stdout
    return sum("psadbw" in line for line in text.splitlines())


VARIANTS = {  # code path -> compiler flags
    "avx512": ["-march=x86-64-v4"], "avx2": ["-march=x86-64-v3"], "sse2": ["-march=x86-64"],
    "portable": ["-DKDFORGE_PORTABLE_SAD"],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_sad_code_path_matches_the_definition_exactly(tmp_path, variant):
    """Each vector width (and the plain loop other CPUs get) on the valid cases of the integer
    fuzz corpus, compiled and run here; the x86 paths must compile to SAD instructions."""
    flags = VARIANTS[variant]
    if variant != "portable" and not X86:
        pytest.skip("x86 vector paths")
    library = _build(tmp_path, variant, *flags)
    if variant != "portable":
        assert _sad_instructions(library) >= 2, f"the {variant} build has no psadbw instruction"
    if variant == "avx512" and "avx512bw" not in open("/proc/cpuinfo").read():
        pytest.skip("this CPU cannot run the AVX-512 build")
    failures = [f for f in (corpus.outcome(case, corpus.native_runner(library)) for case in VALID) if f]
    assert failures == []


def test_the_library_kdforge_builds_here_uses_sad_instructions():
    library = ort_backend.native_library()
    if library is None or not X86:
        pytest.skip("needs a C compiler and an x86 CPU")
    assert _sad_instructions(str(library)) >= 2


def test_a_receptive_field_that_could_overflow_int32_is_refused(tmp_path):
    """255 * 2903^2 > 2^31 - 1: the kernel says so instead of wrapping around."""
    library = ort_backend.native_library()
    if library is None:
        pytest.skip("no C compiler here")
    side = 2903
    case = {"strides": [1, 1], "pads": [0, 0, 0, 0], "kind": "integer", "zero_point": 0,
            "x_values": np.zeros((1, 1, side, side), np.uint8), "w_values": np.zeros((1, 1, side, side), np.uint8)}
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="overflow the int32 output"):
        corpus.native_runner(str(library))(case)


def test_the_pytorch_reference_is_the_integer_definition():
    """QuantizedAdderConv2d's integer op: QuantizeLinear's rounding (half to even, saturating),
    then -sum |qx - qw| with the zero point as padding, exactly."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1.5, 3.0, (2, 5, 7, 6)).astype(np.float32))
    x[0, 0, 0, :3] = torch.tensor([0.25, 0.75, 1.25])  # exact halves of scale 0.5 round to even
    qw = torch.from_numpy(rng.integers(0, 256, (4, 5, 3, 3), dtype=np.uint8))
    scale, zero_point = 0.5, 3
    y = adder_conv2d_integer(x, qw, scale, zero_point, [2, 1], [1, 1])
    qx = np.clip(np.round(x.numpy() / scale) + zero_point, 0, 255)  # numpy rounds half to even too
    assert list(qx[0, 0, 0, :3]) == [3.0, 5.0, 5.0]
    expected = corpus.reference(qx, qw.numpy(), (2, 1), (1, 1), pad_value=zero_point)
    assert y.dtype == torch.int32 and np.array_equal(y.numpy(), expected)


def test_clamping_the_weights_into_the_shared_range_is_lossless_but_for_rounding():
    """Weights far outside the inputs' range (as AdderNets' are): the clamp's per-filter
    correction keeps the INT8 layer within the rounding error of the float layer; without it the
    outputs would be off by the clamped-away distance."""
    torch.manual_seed(0)
    layer = AdderConv2d(6, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.mul_(5.0)  # N(0, 25) weights against inputs in [0, 2]
    x = torch.rand(3, 6, 5, 5) * 2
    lo, hi = input_ranges(layer, x)[""]
    q = quantized_layer(layer, lo, hi)
    with torch.no_grad():
        exact, approx = layer(x), q(x)
    field = 6 * 9
    assert float((exact - approx).abs().max()) <= field * q.scale  # each term off by at most one step
    assert float(q.correction.abs().max()) > 10 * field * q.scale  # what the correction restores
    assert q.zero_point == 0 and int(q.qweight.max()) == 255 and int(q.qweight.min()) == 0


def test_the_fused_layers_pytorch_op_is_the_contract_exactly():
    """qlinear_adder_conv2d (what the INT8 file is verified against) on the valid cases of the
    qlinear fuzz corpus: the corpus's own float32 transcription of the contract, bit for bit,
    including the exact half-way sums that round to even."""
    cases = [c for c in corpus.cases(seed=2, kind="qlinear") if c["error"] is None]
    assert sum(float(c["multiplier"][0]) == 0.5 for c in cases) > 20
    for case in cases:
        scale, z = 0.25, case["zero_point"]  # a power of two: x = (qx - z) * scale quantizes back to qx exactly
        x = (torch.from_numpy(case["x_values"]).float() - z) * scale
        y = qlinear_adder_conv2d(x, torch.from_numpy(case["w_values"]), scale, z, torch.from_numpy(case["multiplier"]),
                                 torch.from_numpy(case["bias"]), 1.0, case["y_zero_point"], bool(case["relu"]),
                                 case["strides"], case["pads"][:2])
        sums = corpus.reference(case["x_values"], case["w_values"], case["strides"], case["pads"][:2], z).astype(np.int32)
        expected = corpus.requantized(sums, case["multiplier"], case["bias"], case["y_zero_point"], case["relu"])
        assert np.array_equal((y + case["y_zero_point"]).numpy().astype(np.uint8), expected), case["index"]


def _adder_net(norm_affine: bool = True) -> torch.nn.Module:
    """Stem conv, then adder layers with batch norm, a ReLU as a module and as a function, a residual
    sum read by two adder layers, and an adder layer without batch norm: the shapes fusion meets."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.a1, self.n1, self.relu = AdderConv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8, affine=norm_affine), torch.nn.ReLU()
            self.a2, self.n2 = AdderConv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.a3 = AdderConv2d(8, 4, 1)
            self.a4, self.n4 = AdderConv2d(8, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            h = self.relu(self.n1(self.a1(x)))
            x = torch.nn.functional.relu(self.n2(self.a2(h)) + x)
            return self.a3(x).mean((2, 3)) + self.n4(self.a4(x)).mean((2, 3))
    from kdforge.train.models.base import calibrate_batch_norm

    torch.manual_seed(0)
    return calibrate_batch_norm(Net(), torch.randn(64, 3, 12, 12))


def test_adder_layers_fuse_with_their_batch_norm_and_relu(tmp_path):
    """Every adder layer becomes one uint8 -> uint8 layer; the file passes uint8 from one fused
    node to the next (no float island between them), its residual sum becomes QLinearAdd in ONNX
    Runtime, and file and PyTorch twin agree."""
    import onnx

    net, images = _adder_net(), torch.randn(32, 3, 12, 12)
    twin = quantize_adder_layers(net, images)
    fused = [m for m in twin.modules() if isinstance(m, QLinearAdderConv2d)]
    assert [m.relu for m in fused] == [True, False, False, False] and not any(isinstance(m, AdderConv2d) for m in twin.modules())
    with torch.no_grad():
        float_out, int8_out = net(images), twin(images)
    assert float((float_out - int8_out).abs().max()) < 0.05 * float(float_out.abs().max())
    path = export_onnx(twin, torch.zeros(1, 3, 12, 12), tmp_path / "int8.onnx")
    model = onnx.load(str(path))
    producers = {out: n for n in model.graph.node for out in n.output}
    nodes = [n for n in model.graph.node if n.op_type == "QLinearAdderConv2d"]
    assert len(nodes) == 4 and not {"BatchNormalization", "Cast", "Mul", "Sub"} & {n.op_type for n in model.graph.node}
    assert producers[nodes[1].input[0]] is nodes[0]  # adder -> adder: the uint8 tensor itself
    sess = ort_backend.session(path, threads=1)
    assert np.abs(ort_backend.run(sess, images.numpy()) - int8_out.numpy()).max() < 1e-2
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.register_custom_ops_library(str(ort_backend.native_library()))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert "QLinearAdd" in {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_a_batch_norm_without_running_statistics_stays_a_layer_of_its_own():
    torch.manual_seed(0)
    model = torch.nn.Sequential(AdderConv2d(3, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False), torch.nn.ReLU()).eval()
    images = torch.rand(8, 3, 6, 6)
    twin = quantize_adder_layers(model, images)
    fused = [m for m in twin.modules() if isinstance(m, QLinearAdderConv2d)]
    assert len(fused) == 1 and not fused[0].relu and any(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules())
    with torch.no_grad():
        assert float((twin(images) - model(images)).abs().max()) < 0.1


def test_a_model_torch_fx_cannot_trace_gets_one_int8_layer_per_adder_layer(caplog):
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = AdderConv2d(3, 4, 3)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else self.a(-x)
    with caplog.at_level("INFO"):
        twin = quantize_adder_layers(DataDependent().eval(), torch.rand(4, 3, 6, 6))
    assert isinstance(twin.a, QuantizedAdderConv2d) and "cannot be traced by torch.fx" in caplog.text


def test_calibration_images_set_each_layers_scales():
    torch.manual_seed(0)
    model = torch.nn.Sequential(AdderConv2d(1, 2, 3), AdderConv2d(2, 2, 1)).eval()
    small, large = torch.rand(8, 1, 6, 6), torch.rand(8, 1, 6, 6) * 4
    layers = [[m for m in quantize_adder_layers(model, images).modules() if isinstance(m, QLinearAdderConv2d)] for images in (small, large)]
    assert len(layers[0]) == 2 and all(b.scale > a.scale and b.y_scale > a.y_scale for a, b in zip(*layers))
    assert layers[0][0].y_scale == layers[0][1].scale  # one tensor, one quantization: what its writer writes, its reader reads


def test_only_dequantize_quantize_pairs_of_equal_parameters_are_dropped():
    """Hand-built graph: DQ -> Q with equal constants goes; unequal stays; a DQ read elsewhere too stays for that reader."""
    from onnx import TensorProto, helper, numpy_helper

    def q_params(name, scale, zero_point):
        return [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
                numpy_helper.from_array(np.array(zero_point, np.uint8), f"{name}_z")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "a_s", "a_z"], ["d"]),
             helper.make_node("QuantizeLinear", ["d", "a_s", "a_z"], ["q_same"]),
             helper.make_node("QuantizeLinear", ["d", "b_s", "b_z"], ["q_other"]),
             helper.make_node("Relu", ["d"], ["float_reader"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [4])],
                              [helper.make_tensor_value_info(n, t, [4]) for n, t in
                               (("q_same", TensorProto.UINT8), ("q_other", TensorProto.UINT8), ("float_reader", TensorProto.FLOAT))],
                              q_params("a", 0.5, 3) + q_params("b", 0.25, 3))
    model = helper.make_model(graph)
    assert drop_identity_requantization(model) == 0  # q_same is a graph output: kept
    model.graph.node.append(helper.make_node("Identity", ["q_same"], ["same_out"]))
    model.graph.output[0].name = "same_out"
    assert drop_identity_requantization(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "QuantizeLinear", "Relu", "Identity"]
    assert model.graph.node[-1].input[0] == "x"
    branch = helper.make_graph([helper.make_node("Identity", ["d"], ["inner"])], "branch", [],
                               [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [4])])
    with_subgraph = helper.make_model(helper.make_graph(
        nodes + [helper.make_node("If", ["cond"], ["picked"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [4]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [4])], q_params("a", 0.5, 3) + q_params("b", 0.25, 3)))
    assert drop_identity_requantization(with_subgraph) == 0  # its branches may read any outer name


def test_an_int8_adder_student_runs_through_every_stage(tmp_path):
    student = {**tiny_config("unused")["students"][2], "deploy": ["int8"]}
    out = run_tiny(tmp_path, [student], export={"calibration_images": 64})
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "ann"
    assert "integer adder layers, calibrated on 64 training images" in out.stdout
    import onnx

    ops = {n.op_type for n in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "QLinearAdderConv2d"} <= ops and not {"AdderConv2d", "BatchNormalization"} & ops
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["onnxruntime-int8"]["passed"] and verify["onnxruntime-int8 vs pytorch-int8"]["passed"]
    assert verify["onnxruntime-int8 vs pytorch-int8"]["top1_agreement"] >= 0.99
    assert "onnxruntime-int8" in json.loads((folder / "profile.json").read_text())["latency"]
    twin = verify["onnxruntime-int8 vs pytorch-int8"]
    if twin["max_abs_diff"] > 0:  # the tolerance is the config's: below the measured difference the stage fails
        out = run_tiny(tmp_path, [student], export={"calibration_images": 64}, verify={"int8_reference_atol": twin["max_abs_diff"] / 2})
        assert_one_sentence(out, "verify.int8_reference_atol=")
