"""`kdforge profile` on models kdforge did not write: a factory `package.module:function`, with
grouped, depthwise and transposed convolutions and attention counted by hand (a torch.export
archive is refused), and --count-only."""

import json
import os

import pytest
import torch
from torch import nn

from conftest import assert_one_sentence, kdforge_cli

FACTORY = '''
import torch
import torch.nn.functional as F
from torch import nn


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
        self.depthwise = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2, bias=False)
        self.qkv = nn.Linear(8, 24, bias=False)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.up(self.depthwise(self.grouped(x)))                 # (1, 8, 8, 8)
        tokens = x.flatten(2).transpose(1, 2)                         # (1, 64, 8)
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)      # (1, 1, 64, 8) each
        attended = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return self.head(torch.cumsum(attended, dim=1).mean(1))


def attention_net():
    return AttentionNet()
'''

EXPECTED = {
    "grouped": 16 * 8 * 8 * (2 * 3 * 3),
    "depthwise": 16 * 4 * 4 * (1 * 3 * 3),
    "up": (16 * 4 * 4) * (8 * 2 * 2),       # input elements x out_channels x kh x kw
    "qkv": 64 * 24 * 8,
    "attention": 64 * 64 * (8 + 8),         # Q K^T and the product with V
    "head": 5 * 8,
}


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "user_models.py").write_text(FACTORY)
    return tmp_path


def _profile(*args, path):
    return kdforge_cli("profile", *args, env={"PYTHONPATH": f"{path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})


def test_a_factory_is_counted_by_hand(factory):
    out = _profile("user_models:attention_net", "--input", "1x8x8x8", "--layers", "--json", factory / "p.json", path=factory)
    assert out.returncode == 0, out.stderr
    costs = json.loads((factory / "p.json").read_text())["costs"]
    assert costs["totals"]["macs"] == sum(EXPECTED.values())
    assert costs["totals"]["mul"] == costs["totals"]["add"] == sum(EXPECTED.values())
    ops = {c["op"] for c in costs["layers"]}
    assert "aten.scaled_dot_product_attention.default" in ops
    assert "aten.cumsum.default" in ops  # not a MAC op: listed by name with its output size, not dropped
    assert "cumsum" in out.stdout or "elementwise" in out.stdout


def test_a_torch_export_archive_is_refused_even_when_harmless(factory, tmp_path):
    """torch.export.load runs what an archive carries (tests/test_hostile_inputs.py has the attacks),
    so kdforge opens none; the sentence says what to give instead."""
    import sys

    sys.path.insert(0, str(factory))
    try:
        from user_models import attention_net
    finally:
        sys.path.remove(str(factory))
    torch.export.save(torch.export.export(attention_net().eval(), (torch.zeros(1, 8, 8, 8),)), tmp_path / "net.pt2")
    assert_one_sentence(kdforge_cli("profile", tmp_path / "net.pt2"), "export the model to ONNX, or profile it by its factory")


def test_a_factory_without_its_input_shape_is_one_sentence(factory):
    assert_one_sentence(_profile("user_models:attention_net", path=factory), "add --input")
    assert_one_sentence(_profile("user_models:attention_net", "--input", "1xthree", path=factory), "NxCxHxW")
    assert_one_sentence(_profile("user_models:nothing_here", "--input", "1x8x8x8", path=factory), "cannot import it")


def test_count_only_gives_counts_and_estimates_without_timing(factory, tmp_path):
    """--count-only: the cost table and a GPU estimate, nothing timed, for a factory and an ONNX file."""
    out = _profile("user_models:attention_net", "--input", "1x8x8x8", "--count-only", "--target", "orin", "--precision",
                   "fp16", "--json", factory / "p.json", path=factory)
    assert out.returncode == 0, out.stderr
    assert "not timed: --count-only" in out.stdout and "GPU kernel model" in out.stdout
    result = json.loads((factory / "p.json").read_text())
    assert result["costs"]["totals"]["macs"] == sum(EXPECTED.values()) and result["estimate"]["total_ms"] > 0
    assert "p50_ms" not in result["latency"]["pytorch"]

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    net(torch.zeros(1, 3, 8, 8))
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 8, 8),), str(tmp_path / "n.onnx"), dynamo=False, opset_version=18)
    out = kdforge_cli("profile", tmp_path / "n.onnx", "--count-only", "--json", tmp_path / "n.json")
    assert out.returncode == 0, out.stderr
    latency = json.loads((tmp_path / "n.json").read_text())["latency"]["onnxruntime"]
    assert latency["not_timed"].startswith("--count-only") and "p50_ms" not in latency


def test_gpu_estimate_flags_set_the_deployment_and_the_table_names_each_kernels_bound(factory):
    """On a T4 (a PCIe host link): --input-on-device drops the input's copy, --no-cuda-graph
    launches each kernel alone; every kernel's row names what bounds it."""
    def estimate(*flags):
        out = _profile("user_models:attention_net", "--input", "1x8x8x8", "--count-only", "--target", "t4", "--precision",
                       "int8", *flags, "--json", factory / "p.json", path=factory)
        assert out.returncode == 0, out.stderr
        return out.stdout, json.loads((factory / "p.json").read_text())["estimate"]

    text, default = estimate()
    assert default["query_ms"]["input_copy"] > 0 and default["query_ms"]["graph_launch"] > 0
    assert "per query: engine" in text and all(f" {k['bound']} " in text for k in default["layers"])
    _, changed = estimate("--input-on-device", "--no-cuda-graph")
    assert changed["query_ms"]["input_copy"] == 0 and changed["query_ms"]["graph_launch"] == 0
    assert changed["engine_ms"] > default["engine_ms"] and changed["kernels"] == default["kernels"]
    for target in ((), ("--target", "cpu")):
        assert_one_sentence(_profile("user_models:attention_net", "--input", "1x8x8x8", "--count-only", *target,
                                     "--no-cuda-graph", path=factory), "add --target with a GPU")
