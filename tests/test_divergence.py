"""Where a file disagrees: the first layer whose output diverges from PyTorch's (kdforge.export.divergence)."""

import onnx
import torch
from onnx import numpy_helper

from kdforge.export.divergence import first_divergence, module_outputs
from kdforge.export.onnx_export import export_onnx
from kdforge.train.models import create_model


def _tampered(tmp_path, model, node_index: int):
    """model.onnx of `model` with the weights of its `node_index`-th convolution scaled by 1.5, and that convolution's scope."""
    path = export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / "model.onnx")
    graph = onnx.load(str(path))
    conv = [n for n in graph.graph.node if n.op_type == "Conv"][node_index]
    weight = next(i for i in graph.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(graph, str(tmp_path / "tampered.onnx"))
    return tmp_path / "tampered.onnx", module_outputs(graph)[conv.output[0]]


def test_the_first_layer_to_diverge_is_the_one_whose_weights_changed(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    images = torch.randn(16, 1, 8, 8)
    for index in (1, 4):
        tampered, layer = _tampered(tmp_path, model, index)
        found = first_divergence(tampered, model, images, tmp_path / "model.onnx")
        assert found["layer"] == layer and found["relative_error"] > 0.1
    assert first_divergence(tmp_path / "model.onnx", model, images)["relative_error"] < 1e-5  # called on a file that passes


def test_a_file_without_the_exporters_scopes_maps_nothing(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    path = export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / "model.onnx")
    graph = onnx.load(str(path))
    for node in graph.graph.node:
        del node.metadata_props[:]
    onnx.save(graph, str(tmp_path / "bare.onnx"))
    assert first_divergence(tmp_path / "bare.onnx", model, torch.randn(4, 1, 8, 8)) is None
