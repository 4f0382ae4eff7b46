"""kdforge's TensorRT engine builder and runner (kdforge/export/tensorrt.py) against a recording
fake of TensorRT's builder API, in its 10.13 and 11 shapes (11 has no FP16/INT8 builder flags and
no implicit-quantisation calibrator): strongly typed networks, TF32 off, a profile that covers
verify's batches, return values checked, batches beyond the profile run in chunks. The plugin
itself runs through TensorRT's own code in test_tensorrt_plugin.py."""

import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from kdforge.errors import UserError
from kdforge.export import tensorrt as trt_export
from kdforge.export import tensorrt_plugin
from kdforge.export.verify import VERIFY_BATCH


def fake_tensorrt(version: str, calls: list, run_ok: bool = True, shape_ok: bool = True, largest: int = 128):
    flags = {"TF32": "TF32"} if version.startswith("11") else {"TF32": "TF32", "FP16": "FP16", "INT8": "INT8"}

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.append(("profile", name, low, opt, high))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("workspace", size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_profile",))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network_flags", flags))
            return SimpleNamespace(get_input=lambda i: SimpleNamespace(name="input"))

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"plan"

    class Context:
        def set_input_shape(self, name, shape):
            calls.append(("input_shape", shape))
            self.shape = shape
            return shape_ok

        def get_tensor_shape(self, name):
            return (self.shape[0], 10)

        def set_tensor_address(self, name, address):
            pass

        def execute_async_v3(self, stream):
            return run_ok

    engine = SimpleNamespace(num_io_tensors=2, get_tensor_name=lambda i: ["input", "logits"][i],
                             get_tensor_profile_shape=lambda name, p: [(1, 1, 8, 8), (64, 1, 8, 8), (largest, 1, 8, 8)],
                             create_execution_context=Context)
    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    return SimpleNamespace(
        __version__=version, Logger=logger, Builder=Builder, BuilderFlag=SimpleNamespace(**flags),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1), MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        OnnxParser=lambda network, logger: SimpleNamespace(parse=lambda data: True),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: engine))


@pytest.fixture(params=["10.13.3.9", "11.4.0.106"])
def fake(request, monkeypatch):
    calls = []

    def install(**options):
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(request.param, calls, **options))
        return calls

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt_plugin, "register", lambda capability=None: None)
    monkeypatch.setattr(trt_export, "DEVICE", "cpu")
    monkeypatch.setattr(trt_export, "_stream", lambda: SimpleNamespace(cuda_stream=0, synchronize=lambda: None))
    return install


def test_engines_are_strongly_typed_fp32_without_tf32_and_cover_verifys_batches(fake, tmp_path):
    calls = fake()
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", (2, 1, 8, 8))
    assert (tmp_path / "m.engine").read_bytes() == b"plan"
    assert ("network_flags", 1 << 1) in calls  # STRONGLY_TYPED: the file's tensors carry the precision
    assert ("clear_flag", "TF32") in calls and not [c for c in calls if c[0] == "set_flag"]
    (profile,) = [c for c in calls if c[0] == "profile"]
    assert profile[2][0] == 1 and profile[4][0] >= VERIFY_BATCH


def test_the_runner_checks_what_tensorrt_returns_and_splits_batches_beyond_the_profile(fake, tmp_path):
    (tmp_path / "m.engine").write_bytes(b"plan")
    calls = fake(largest=128)
    logits = trt_export.engine_runner(tmp_path / "m.engine")(np.zeros((300, 1, 8, 8), np.float32))
    assert logits.shape == (300, 10)
    assert [c[1][0] for c in calls if c[0] == "input_shape"] == [128, 128, 44]
    with pytest.raises(UserError, match="could not run"):
        fake(run_ok=False)
        trt_export.engine_runner(tmp_path / "m.engine")(np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(UserError, match="refuses a batch"):
        fake(shape_ok=False)
        trt_export.engine_runner(tmp_path / "m.engine")(np.zeros((4, 1, 8, 8), np.float32))


def test_the_int8_file_for_tensorrt_is_signed_and_symmetric(tmp_path):
    from kdforge.export.onnx_export import export_onnx
    from kdforge.export.int8_cpu import SCHEMES, TENSORRT
    from kdforge.export.quantize import quantize_int8

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)).eval()
    fp32 = export_onnx(net, torch.zeros(2, 1, 8, 8), tmp_path / "m.onnx")
    images = np.random.default_rng(0).random((8, 1, 8, 8), np.float32)
    for scheme, dtype in ((TENSORRT, onnx.TensorProto.INT8), (SCHEMES["x86-vnni"], onnx.TensorProto.UINT8)):
        model = onnx.load(str(quantize_int8(fp32, tmp_path / f"{scheme.target}.onnx", images, scheme)))
        inits = {i.name: i for i in model.graph.initializer}
        points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert points and all(p.data_type == dtype for p in points)
        if scheme is TENSORRT:
            assert all(not onnx.numpy_helper.to_array(p).any() for p in points)  # zero points 0: symmetric
