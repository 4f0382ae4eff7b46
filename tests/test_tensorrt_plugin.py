"""kdforge's TensorRT plugin driven through TensorRT's own `tensorrt.plugin` code (10.13 and 11,
from the tensorrt-cu12-bindings wheels `make setup` downloads) on a stand-in for its compiled
core (tests/tensorrt_stub.py): registration and its validators, twice in one process; the plugin
TensorRT creates from the ONNX node's fields; the shape descriptor on known and dynamic shapes;
and the AOT kernel, whose PTX must take exactly what TensorRT's launcher passes."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from kdforge.errors import UserError
from kdforge.export import tensorrt_plugin
from tests.tensorrt_stub import IDimensionExpr, IExprBuilder, DimsExprs, bindings_wheel, tensorrt_plugin_package

pytest.importorskip("triton")
CAPABILITY = 90  # Hopper: the kernel compiles to PTX without a GPU


@pytest.fixture(params=[10, 11], ids=["tensorrt-10", "tensorrt-11"])
def trt(request, tmp_path):
    wheel = bindings_wheel(request.param)
    if wheel is None:
        pytest.skip(f"no tensorrt-cu12-bindings {request.param}.x wheel in .venv/wheels (make setup downloads it)")
    with tensorrt_plugin_package(wheel, tmp_path) as module:
        yield module


def _fields(trt, strides=(1, 1), pads=(1, 1, 1, 1)):
    """The fields TensorRT's ONNX parser passes for the node's attributes (INTS as int32 arrays)."""
    return trt.PluginFieldCollection([
        trt.PluginField("strides", np.asarray(strides, np.int32), trt.PluginFieldType.INT32),
        trt.PluginField("pads", np.asarray(pads, np.int32), trt.PluginFieldType.INT32),
        trt.PluginField("plugin_namespace", b"kdforge", trt.PluginFieldType.CHAR),
    ])


def _plugin(trt, **attributes):
    tensorrt_plugin.register(capability=CAPABILITY)
    creator = trt.get_plugin_registry().get_creator("AdderConv2d", "1", "kdforge")
    plugin = creator.create_plugin("AdderConv2d", "kdforge", _fields(trt, **attributes), trt.TensorRTPhase.BUILD,
                                   trt.QuickPluginCreationRequest.STRICT_AOT)
    plugin.get_output_data_types([trt.DataType.FLOAT, trt.DataType.FLOAT], [4, 4])
    return plugin


def _dims(*values):
    return DimsExprs([IDimensionExpr(v) for v in values])


def test_the_plugin_registers_through_tensorrts_validators_twice_in_one_process(trt):
    tensorrt_plugin.register(capability=CAPABILITY)
    tensorrt_plugin.register(capability=CAPABILITY)  # the engine build, the runner and Torch-TensorRT each call it
    assert trt.get_plugin_registry().get_creator("AdderConv2d", "1", "kdforge") is not None
    assert trt.plugin.op.kdforge.AdderConv2d is not None


def test_the_shape_descriptor_gives_the_output_shape_known_or_dynamic(trt):
    plugin = _plugin(trt, strides=(2, 2), pads=(1, 1, 1, 1))
    (out,) = plugin.get_output_shapes([_dims(4, 3, 32, 32), _dims(8, 3, 3, 3)], [], IExprBuilder())
    assert [d.value for d in out] == [4, 8, 16, 16]
    (out,) = plugin.get_output_shapes([_dims(None, 3, 32, 32), _dims(8, 3, 3, 3)], [], IExprBuilder())
    assert [d.value for d in out] == [None, 8, 16, 16]  # a dynamic batch stays dynamic
    with pytest.raises(ValueError, match="channels"):
        plugin.get_output_shapes([_dims(1, 4, 32, 32), _dims(8, 3, 3, 3)], [], IExprBuilder())
    with pytest.raises(ValueError, match="symmetric"):
        _plugin(trt, pads=(1, 0, 0, 1))


def _io(trt, dims, kind="FLOAT"):
    desc = trt.DynamicPluginTensorDesc()
    desc.desc = SimpleNamespace(dims=list(dims), type=getattr(trt.DataType, kind), format=trt.TensorFormat.LINEAR,
                                scale=1.0)
    desc.min = desc.opt = desc.max = tuple(dims)
    return desc


class _Setter(dict):
    nbSymExprs = 0


def test_the_aot_kernel_takes_exactly_what_tensorrts_launcher_passes(trt):
    from kdforge.nn.adder_triton import FORWARD_BLOCKS, FORWARD_SCALARS

    plugin = _plugin(trt, strides=(1, 1), pads=(1, 1, 1, 1))
    builder = IExprBuilder()
    x, w = _dims(2, 3, 32, 32), _dims(8, 3, 3, 3)
    plugin.get_output_shapes([x, w], [], builder)
    plugin.set_tactic(0)
    launch, scalars = SimpleNamespace(), _Setter()
    in_out = [_io(trt, (2, 3, 32, 32)), _io(trt, (8, 3, 3, 3)), _io(trt, (2, 8, 32, 32))]
    plugin.get_launch_params([x, w], in_out, 2, launch, scalars, builder)
    assert scalars.nbSymExprs == len(FORWARD_SCALARS) == 11
    assert [scalars[i].expr.value for i in range(11)] == [2, 3, 32, 32, 8, 32, 32, 1, 1, 1, 1]  # FORWARD_SCALARS' order
    assert all(scalars[i].dtype is trt.PluginArgDataType.INT32 for i in range(11))
    assert (launch.grid_x.expr.value, launch.grid_y.expr.value) == (-(-2 * 32 * 32 // FORWARD_BLOCKS["BLOCK_P"]), 1)
    name, ptx = plugin.get_kernel([d.desc for d in in_out[:2]], [in_out[2].desc])
    entry = re.search(rf"\.entry {name.decode() if isinstance(name, bytes) else name}\(([^)]*)\)", ptx.decode()).group(1)
    assert re.findall(r"\.param \.(\w+)", entry) == ["u64", "u64"] + ["u32"] * 11 + ["u64"]  # inputs, scalars, output


def test_ptx_loses_the_scratch_parameters_it_never_reads():
    ptx = (".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 k_param_1,\n\t.param .u64 k_param_2,\n"
           "\t.param .u64 k_param_3\n)\n{\n\tld.param.u64 %rd1, [k_param_0];\n\tld.param.u32 %r1, [k_param_1];\n}\n")
    trimmed = tensorrt_plugin.launchable_ptx(ptx, "k", 2)
    assert re.findall(r"k_param_\d", trimmed.split(")")[0]) == ["k_param_0", "k_param_1"]
    assert "ld.param.u32 %r1, [k_param_1];" in trimmed
    with pytest.raises(ValueError, match="scratch"):
        tensorrt_plugin.launchable_ptx(ptx, "k", 1)  # k_param_1 is read by the body


def test_versions_too_old_for_the_plugin_are_one_sentence():
    tensorrt_plugin.check_versions("10.13.3.9.post1", "3.3.0")
    tensorrt_plugin.check_versions("11.4.0.106", "3.9.0")
    with pytest.raises(UserError, match="TensorRT 10.8.0 is older than 10.9"):
        tensorrt_plugin.check_versions("10.8.0", "3.9.0")
    with pytest.raises(UserError, match="Triton 3.2.0 is older than 3.3"):
        tensorrt_plugin.check_versions("10.13.3", "3.2.0")


def test_the_torch_tensorrt_converters_plugin_call_passes_tensorrts_checks(trt):
    """The converter's call (Torch-TensorRT itself does not import here: it needs TensorRT's core)."""
    from kdforge.export.torch_tensorrt import adder_plugin

    tensorrt_plugin.register(capability=CAPABILITY)
    x, w = trt.ITensor(), trt.ITensor()
    make = adder_plugin(trt.plugin, x, w, (2, 2), (1, 1))
    inputs, _, plugin = make(trt.QuickPluginCreationRequest.STRICT_AOT)
    assert inputs == [x, w] and plugin.attrs["strides"].tolist() == [2, 2] and plugin.attrs["pads"].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="dtype"):
        trt.plugin.op.kdforge.AdderConv2d(x, w, strides=np.asarray([1, 1]), pads=np.asarray([0, 0, 0, 0], np.int32),
                                          plugin_namespace="kdforge")  # int64: what the converter must not pass
