"""The TensorRT path: its plain logic here, the engine itself on machines with TensorRT and a GPU."""

import re

import numpy as np
import pytest

from kdforge.errors import UserError
from kdforge.export import tensorrt_plugin


def test_plugin_geometry_reads_the_node_attributes():
    assert tensorrt_plugin.geometry([2, 1], [1, 0, 1, 0]) == (2, 1, 1, 0)
    with pytest.raises(ValueError, match="symmetric"):
        tensorrt_plugin.geometry([1, 1], [1, 1, 0, 0])
    with pytest.raises(ValueError, match="'strides' must be 2 integers >= 1"):
        tensorrt_plugin.geometry([1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="'strides' must be 2 integers >= 1"):
        tensorrt_plugin.geometry([0, 1], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="int32"):
        tensorrt_plugin.geometry([1, 1], [2**31, 0, 2**31, 0])


def test_plugin_shape_descriptor_checks_the_dimensions_it_knows():
    tensorrt_plugin.check_static_shapes([None, 3, 32, 32], [8, 3, 3, 3], 1, 1, 1, 1)  # dynamic batch
    tensorrt_plugin.check_static_shapes([1, 3, 32, 32], [8, 3, None, None], 1, 1, 1, 1)  # weight not yet known
    for x, w, fragment in [([1, 3, 32, 32], [8, 4, 3, 3], "channels"), ([1, 3, 32], [8, 3, 3, 3], "4-D"),
                           ([1, 3, 2, 2], [8, 3, 5, 5], "larger than the padded"),
                           ([4096, 64, 1024, 1024], [64, 64, 3, 3], "int32|index")]:
        with pytest.raises(ValueError, match=fragment):
            tensorrt_plugin.check_static_shapes(x, w, 1, 1, 0, 0)


def test_plugin_output_shape_and_grid_match_the_op():
    from kdforge.nn.adder_op import output_shape

    for (h, k, s, p) in [(32, 3, 1, 1), (32, 3, 2, 1), (7, 3, 2, 0), (8, 1, 2, 0)]:
        assert tensorrt_plugin.output_size(h, k, s, p) == output_shape((1, 1, h, h), (1, 1, k, k), (s, s), (p, p))[2]
    assert tensorrt_plugin.launch_grid(64 * 32 * 32, 16, 64, 32) == (1024, 1)
    assert tensorrt_plugin.launch_grid(65, 33, 64, 32) == (2, 2)


@pytest.mark.parametrize("capability", [80, 90])
def test_forward_kernel_follows_tensorrts_aot_calling_convention(capability):
    """TensorRT launches an AOT plugin kernel with (input pointers, extra scalars, output pointers)."""
    pytest.importorskip("triton")
    from kdforge.nn.adder_triton import FORWARD_SCALARS, compile_ptx

    ptx = compile_ptx(3, capability)
    entry = re.search(r"\.entry adder_forward_kernel\(([^)]*)\)", ptx).group(1)
    types = re.findall(r"\.param \.(\w+)", entry)
    assert types[:2 + len(FORWARD_SCALARS) + 1] == ["u64", "u64"] + ["u32"] * len(FORWARD_SCALARS) + ["u64"]


def test_missing_tensorrt_is_one_sentence():
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from kdforge.export.tensorrt import require_tensorrt

    with pytest.raises(UserError, match="TensorRT is not installed"):
        require_tensorrt()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_of_an_addernet_matches_pytorch(tmp_path):
    import torch

    from kdforge.export.onnx_export import export_onnx
    from kdforge.export.tensorrt import build_engine, engine_runner, engine_timers
    from kdforge.train.models import create_model

    model = create_model("resnet20_adder", 10).eval()
    export_onnx(model, torch.zeros(2, 3, 32, 32), tmp_path / "m.onnx")
    engine = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", (1, 3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(engine_runner(engine)(x.numpy()), model(x).numpy(), atol=1e-3, rtol=1e-3)
    timers = engine_timers(engine_runner(engine), (4, 3, 32, 32))  # what the profile stage times
    host, gpu = timers["tensorrt"](), timers["tensorrt_gpu"]()
    assert 0 < gpu and 0 < host


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_int8_engines_from_the_tensorrt_qdq_file_agree_with_pytorch(tmp_path):
    """Explicit quantisation: the signed, symmetric Q/DQ file kdforge writes for TensorRT."""
    import torch

    from kdforge.export.onnx_export import export_onnx
    from kdforge.export.int8_cpu import TENSORRT
    from kdforge.export.quantize import quantize_int8
    from kdforge.export.tensorrt import build_engine, engine_runner
    from kdforge.train.models import create_model
    from kdforge.train.models.base import calibrate_batch_norm

    torch.manual_seed(0)
    images = torch.randn(256, 3, 16, 16)
    model = calibrate_batch_norm(create_model("resnet8", 10), images).eval()
    fp32 = export_onnx(model, torch.zeros(2, 3, 16, 16), tmp_path / "m.onnx")
    qdq = quantize_int8(fp32, tmp_path / "m.int8.tensorrt.onnx", images.numpy(), TENSORRT)
    engine = build_engine(qdq, tmp_path / "m.engine", (1, 3, 16, 16))
    with torch.no_grad():
        agreement = (engine_runner(engine)(images[:64].numpy()).argmax(1) == model(images[:64]).argmax(1).numpy()).mean()
    assert agreement >= 0.9


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_torch_tensorrt_compiles_an_addernet():
    import torch

    from kdforge.export.torch_tensorrt import compile_student
    from kdforge.train.models import create_model

    model = create_model("resnet8_adder", 10).eval().cuda()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    compiled = compile_student(model, x)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-3, rtol=1e-3)
