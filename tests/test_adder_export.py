"""AdderNet students through ONNX: the kdforge node, the portable flavour, ONNX Runtime parity."""

import numpy as np
import onnx
import pytest
import torch

from conftest import run_python
from kdforge.errors import UserError
from kdforge.export import ort as ort_backend
from kdforge.export.onnx_export import check_onnx, export_onnx, onnx_flavour
from kdforge.nn.adder import AdderConv2d
from kdforge.train.models import create_model
from kdforge.train.models.base import calibrate_batch_norm


def calibrated_addernet() -> torch.nn.Module:
    torch.manual_seed(0)
    return calibrate_batch_norm(create_model("resnet8_adder", 10, 1), torch.randn(64, 1, 8, 8))


@pytest.fixture(scope="module")
def adder_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adder")
    model = calibrated_addernet()
    export_onnx(model, torch.zeros(2, 1, 8, 8), folder / "custom.onnx")
    export_onnx(model, torch.zeros(2, 1, 8, 8), folder / "portable.onnx", portable=True)
    return model, folder


def test_every_adder_layer_is_one_kdforge_node(adder_files):
    model, folder = adder_files
    proto = check_onnx(folder / "custom.onnx")
    nodes = [n for n in proto.graph.node if n.domain == "kdforge"]
    layers = [m for m in model.modules() if isinstance(m, AdderConv2d)]
    assert len(nodes) == len(layers) == 8
    assert ("kdforge", 1) in [(o.domain, o.version) for o in proto.opset_import]
    for node, layer in zip(nodes, layers):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.op_type == "AdderConv2d" and len(node.input) == 2
        assert attrs == {"strides": [layer.stride] * 2, "pads": [layer.padding] * 4, "plugin_namespace": b"kdforge"}
    assert onnx_flavour(folder / "custom.onnx") == "custom"


def test_portable_file_uses_standard_operators_only(adder_files):
    proto = check_onnx(adder_files[1] / "portable.onnx")
    assert {n.domain for n in proto.graph.node} == {""}
    assert onnx_flavour(adder_files[1] / "portable.onnx") == "standard"


@pytest.mark.parametrize("flavour,kernel", [("custom", "native"), ("custom", "python"), ("portable", "auto")])
@pytest.mark.parametrize("batch", [1, 6])
def test_onnx_runtime_matches_pytorch(adder_files, flavour, kernel, batch):
    model, folder = adder_files
    x = torch.randn(batch, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(expected).max() > 0.1  # a live network, not all-zero activations
    got = ort_backend.run(ort_backend.session(folder / f"{flavour}.onnx", adder_kernel=kernel), x.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_native_kernel_is_built_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path))
    first = ort_backend.native_library()
    assert first is not None and first.parent == tmp_path
    stamp = first.stat().st_mtime_ns
    assert ort_backend.native_library() == first and first.stat().st_mtime_ns == stamp


def test_native_kernel_demanded_without_a_compiler_is_one_sentence(adder_files, tmp_path, monkeypatch):
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path))  # nothing built here yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(UserError, match="needs a C compiler"):
        ort_backend.session(adder_files[1] / "custom.onnx", adder_kernel="native")
    assert ort_backend.session(adder_files[1] / "custom.onnx")  # auto falls back to the Python operator


@pytest.mark.parametrize("kernel", ["native", "python"])
def test_adder_file_runs_in_a_process_without_torch(adder_files, kernel):
    code = (
        "import sys, numpy as np; from kdforge.export import ort; "
        f"s = ort.session(r'{adder_files[1] / 'custom.onnx'}', adder_kernel='{kernel}'); "
        "print(ort.run(s, np.ones((2, 1, 8, 8), np.float32)).shape); assert 'torch' not in sys.modules"
    )
    assert run_python(code) == "(2, 10)"


def test_plain_onnx_runtime_without_the_operator_fails_with_a_sentence(adder_files, tmp_path):
    import onnxruntime as ort

    with pytest.raises(Exception, match="kdforge"):
        ort.InferenceSession(str(adder_files[1] / "custom.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable ONNX file"):
        ort_backend.session(tmp_path / "junk.onnx")


def test_loading_the_native_kernel_leaves_the_process_floating_point_state_alone():
    """A shared library built with -ffast-math by GCC 12 sets flush-to-zero and denormals-are-zero
    for every thread of the process that loads it; kdforge's must not (checked in a fresh process)."""
    out = run_python(
        "import ctypes, struct\n"
        "from kdforge.export.ort import native_library\n"
        "tiny = lambda: struct.unpack('d', struct.pack('Q', 1))[0] * 1.0 > 0  # the smallest subnormal survives a product\n"
        "before = tiny()\n"
        "library = native_library()\n"
        "ctypes.CDLL(str(library))\n"
        "print(before, tiny(), library is not None)\n")
    assert out.split() == ["True", "True", "True"]
