"""INT8 AdderNet students: the integer adder node's native SAD kernel (every code path, checked
in the disassembly), the PyTorch reference it is verified against, the calibration's lossless
weight clamp, and a student through every stage."""

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
from kdforge.nn.adder import AdderConv2d
from kdforge.nn.adder_int8 import QuantizedAdderConv2d, adder_conv2d_integer

VALID = [c for c in corpus.cases(seed=1, integer=True) if c["error"] is None]
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
    case = {"strides": [1, 1], "pads": [0, 0, 0, 0], "integer": True, "zero_point": 0,
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


def test_calibration_images_set_each_layers_scale():
    torch.manual_seed(0)
    model = torch.nn.Sequential(AdderConv2d(1, 2, 3), AdderConv2d(2, 2, 1)).eval()
    small, large = torch.rand(8, 1, 6, 6), torch.rand(8, 1, 6, 6) * 4
    scales = [[m.scale for m in quantize_adder_layers(model, images).modules() if isinstance(m, QuantizedAdderConv2d)]
              for images in (small, large)]
    assert len(scales[0]) == 2 and all(b > a for a, b in zip(*scales))


def test_an_int8_adder_student_runs_through_every_stage(tmp_path):
    student = {**tiny_config("unused")["students"][2], "precision": "int8"}
    out = run_tiny(tmp_path, [student], export={"calibration_images": 64})
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "run" / "students" / "ann"
    assert "integer adder layers, calibrated on 64 training images" in out.stdout
    import onnx

    ops = {n.op_type for n in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "AdderConv2dInteger"} <= ops and "AdderConv2d" not in ops
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["onnxruntime-int8"]["passed"] and verify["onnxruntime-int8 vs pytorch-int8"]["passed"]
    assert verify["onnxruntime-int8 vs pytorch-int8"]["top1_agreement"] >= 0.99
    assert "onnxruntime_int8" in json.loads((folder / "profile.json").read_text())["latency"]
    twin = verify["onnxruntime-int8 vs pytorch-int8"]
    if twin["max_abs_diff"] > 0:  # the tolerance is the config's: below the measured difference the stage fails
        out = run_tiny(tmp_path, [student], export={"calibration_images": 64}, verify={"int8_reference_atol": twin["max_abs_diff"] / 2})
        assert_one_sentence(out, "verify.int8_reference_atol=")
