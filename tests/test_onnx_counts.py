"""Counts read off ONNX graphs: kdforge's exports agree exactly with their PyTorch models, and
hand-built graphs as other exporters write them (grouped and transposed convolutions, Gemm,
attention's MatMul of two activations, INT8 ops, old opsets) pin the conventions by hand."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import kdforge_cli
from kdforge.export.onnx_export import export_onnx
from kdforge.profile.counts import count_costs, macs_by_kind
from kdforge.profile.onnx_counts import count_onnx
from kdforge.train.models import create_model


@pytest.mark.parametrize("name,shape,classes", [
    ("resnet8_adder", (1, 1, 8, 8), 10), ("resnet8_binary", (1, 1, 8, 8), 10), ("resnet20", (1, 3, 32, 32), 10),
    pytest.param("mobilenetv2", (1, 3, 32, 32), 100, marks=pytest.mark.slow),  # 40 s; test_torchvision_counts counts MobileNetV2
    ("wrn_16_2", (1, 3, 32, 32), 100), ("imagenet_resnet18", (1, 3, 224, 224), 1000),
])
def test_exported_students_count_as_their_pytorch_models(tmp_path, name, shape, classes):
    model = create_model(name, classes, shape[1]).eval()
    export_onnx(model, torch.zeros(2, *shape[1:]), tmp_path / "m.onnx")
    ours, theirs = count_costs(model, shape), count_onnx(onnx.load(tmp_path / "m.onnx"))
    assert macs_by_kind(theirs) == macs_by_kind(ours)
    assert theirs["totals"]["peak_activation_bytes"] == ours["totals"]["peak_activation_bytes"]
    assert theirs["totals"]["unknown_layers"] == []
    assert count_onnx(onnx.load(tmp_path / "m.onnx"), batch=4)["totals"]["macs"] == 4 * theirs["totals"]["macs"]


def _model(nodes, inputs, outputs, initializers=(), opset=18, ir_version=8, domains=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)])
    model.ir_version = ir_version
    return model


def _layers(model, batch=1):
    return {c["layer"]: c for c in count_onnx(model, batch)["layers"]}


def test_grouped_depthwise_and_transposed_convolutions_by_hand():
    nodes = [
        helper.make_node("Conv", ["x", "w_group"], ["a"], name="grouped", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w_depth"], ["b"], name="depthwise", group=16, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["b", "w_up"], ["y"], name="up", strides=[2, 2]),
    ]
    model = _model(nodes, [("x", ["batch", 8, 10, 10])], ["y"],
                   [("w_group", (16, 2, 3, 3)), ("w_depth", (16, 1, 3, 3)), ("w_up", (16, 4, 2, 2))], opset=11, ir_version=6)
    layers = _layers(model)
    assert layers["grouped"]["macs"] == 16 * 10 * 10 * (2 * 3 * 3)      # outputs x (C/g) x kh x kw
    assert layers["depthwise"]["macs"] == 16 * 5 * 5 * (1 * 3 * 3)
    assert layers["up"]["macs"] == 16 * 5 * 5 * (4 * 2 * 2)             # inputs x (O/g) x kh x kw
    assert layers["up"]["mul"] == layers["up"]["add"] == layers["up"]["macs"]
    assert _layers(model, batch=3)["grouped"]["macs"] == 3 * layers["grouped"]["macs"]


def test_attention_gemm_and_matmul_of_two_activations_by_hand():
    tokens, dim = 5, 8
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="query"),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "qt"], ["scores"], name="scores"),         # two activations
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "q"], ["ctx"], name="context"),
        helper.make_node("Flatten", ["ctx"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "wo"], ["y"], name="head", transB=1),
    ]
    model = _model(nodes, [("x", [1, tokens, dim])], ["y"], [("wq", (dim, dim)), ("wo", (3, tokens * dim))])
    layers = _layers(model)
    assert layers["query"]["macs"] == tokens * dim * dim
    assert layers["scores"]["macs"] == tokens * tokens * dim and layers["scores"]["params"] == 0
    assert layers["context"]["macs"] == tokens * dim * tokens
    assert layers["head"]["macs"] == 3 * tokens * dim and layers["head"]["kind"] == "linear"
    assert layers["softmax"]["kind"] == "elementwise" and layers["softmax"]["elements"] == tokens * tokens


def test_int8_operators_count_their_macs():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="quantize"),
        helper.make_node("ConvInteger", ["xq", "wq"], ["acc"], name="conv_int8"),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Relu", ["accf"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(0), "z"),
                               numpy_helper.from_array(np.ones((8, 4, 3, 3), np.uint8), "wq")])
    layers = _layers(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert layers["conv_int8"]["macs"] == 8 * 4 * 4 * (4 * 3 * 3) and layers["conv_int8"]["kind"] == "conv"
    assert layers["quantize"]["kind"] == "elementwise"


def test_a_node_of_unknown_shape_is_listed_not_dropped():
    nodes = [helper.make_node("Frobnicate", ["x"], ["a"], name="mystery", domain="com.example"),
             helper.make_node("Relu", ["a"], ["y"], name="after")]
    costs = count_onnx(_model(nodes, [("x", [1, 4])], ["y"], domains=["com.example"]))
    assert costs["totals"]["unknown_layers"] == ["mystery", "after"]


def test_the_verify_stage_records_agreeing_counts_for_every_student(finished):
    root, raw = finished
    for student in raw["students"]:
        counts = json.loads((root / "run" / "students" / student["name"] / "verify.json").read_text())["counts"]
        assert counts["agree"] and counts["onnx"] == counts["pytorch"] and counts["onnx"]["conv"] > 0


def test_profile_of_an_onnx_file_prints_per_layer_mul_and_add(tmp_path):
    export_onnx(create_model("resnet8_adder", 10, 1).eval(), torch.zeros(2, 1, 8, 8), tmp_path / "ann.onnx")
    out = kdforge_cli("profile", tmp_path / "ann.onnx", "--layers", "--batch", "2", "--json", tmp_path / "p.json")
    assert out.returncode == 0, out.stderr
    assert "input                 input 2x1x8x8 float" in out.stdout and "multiplications       19,712" in out.stdout
    assert "adder" in out.stdout and "additions" in out.stdout
    totals = json.loads((tmp_path / "p.json").read_text())["costs"]["totals"]
    assert totals["macs"] == 2 * 763_520 and totals["add"] == 2 * (9_856 + 2 * 753_664)


@pytest.mark.parametrize("equation,a,b,macs", [
    ("ij,jk->ik", (2, 3), (3, 4), 2 * 3 * 4), ("bij,bjk->bik", (5, 2, 3), (5, 3, 4), 5 * 2 * 3 * 4),
    ("...ij,...jk->...ik", (7, 2, 3), (7, 3, 4), 7 * 2 * 3 * 4), ("i,i->", (6,), (6,), 6),
])
def test_einsum_counts_one_mac_per_combination_of_its_indices(equation, a, b, macs):
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], name="e", equation=equation)]
    layer = _layers(_model(nodes, [("a", list(a)), ("b", list(b))], ["y"]))["e"]
    assert (layer["kind"], layer["macs"], layer["mul"], layer["add"]) == ("linear", macs, macs, macs)


@pytest.mark.parametrize("op,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_layers_count_their_input_and_hidden_products(op, gates):
    steps, batch, features, hidden = 5, 2, 3, 4
    weights = [("w", (2, gates * hidden, features)), ("r", (2, gates * hidden, hidden))]
    nodes = [helper.make_node(op, ["x", "w", "r"], ["y"], name="rec", hidden_size=hidden, direction="bidirectional")]
    layer = _layers(_model(nodes, [("x", [steps, batch, features])], ["y"], weights))["rec"]
    assert layer["macs"] == steps * batch * 2 * gates * hidden * (features + hidden)


def test_the_attention_op_counts_what_its_expanded_form_counts():
    """Every Attention node test of the onnx package against the same test expanded into MatMuls."""
    from onnx.backend.test.case.node import collect_testcases

    cases = {c.name: c.model for c in collect_testcases("Attention")}
    pairs = [(name, name + "_expanded") for name in sorted(cases) if name + "_expanded" in cases]
    assert len(pairs) >= 10
    # the expanded forms' shapes come from a child process's run each: a spread of 8 pairs, 3-D, 4-D, with past keys
    for name, expanded in pairs[::max(1, len(pairs) // 8)]:
        ours, reference = (count_onnx(cases[n])["totals"]["macs"] for n in (name, expanded))
        assert ours == reference > 0, (name, ours, reference)


def test_matmuls_inside_loop_scan_and_if_count_as_often_as_they_run():
    vec = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("MatMul", ["v", "w"], ["v_out"], name="mm")],
        "loop", [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                 vec("v", [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), vec("v_out", [1, 4])])
    scan_body = helper.make_graph([helper.make_node("MatMul", ["s", "x_t"], ["s_out"], name="mm"),
                                   helper.make_node("Identity", ["s_out"], ["y_t"])],
                                  "scan", [vec("s", [1, 4]), vec("x_t", [4, 4])], [vec("s_out", [1, 4]), vec("y_t", [1, 4])])
    big = helper.make_graph([helper.make_node("MatMul", ["v", "w"], ["b"], name="mm"), helper.make_node("MatMul", ["b", "w"], ["o"], name="mm2")],
                            "big", [], [vec("o", [1, 4])])
    small = helper.make_graph([helper.make_node("MatMul", ["v", "w"], ["o2"], name="mm")], "small", [], [vec("o2", [1, 4])])
    nodes = [
        helper.make_node("Loop", ["trips", "cond", "v"], ["after_loop"], name="loop", body=loop_body),
        helper.make_node("Scan", ["v", "xs"], ["after_scan", "ys"], name="scan", body=scan_body, num_scan_inputs=1),
        helper.make_node("If", ["flag"], ["after_if"], name="if", then_branch=big, else_branch=small),
    ]
    graph = helper.make_graph(nodes, "g", [vec("v", [1, 4]), vec("xs", [5, 4, 4]),
                                            helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [vec("after_loop", [1, 4]), vec("after_scan", [1, 4]), vec("ys", [5, 1, 4]), vec("after_if", [1, 4])],
                              [numpy_helper.from_array(np.ones((4, 4), np.float32), "w"),
                               numpy_helper.from_array(np.array(3, np.int64), "trips"),
                               numpy_helper.from_array(np.array(True), "cond")])
    layers = {c["layer"]: c["macs"] for c in count_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))["layers"]}
    assert layers["loop/mm"] == 3 * 16 and layers["scan/mm"] == 5 * 16  # 3 trips; 5 steps of the scanned axis
    assert layers["if/mm"] == layers["if/mm2"] == 16 and "if/o2" not in layers  # the costlier branch
