"""The GPU kernel model (kdforge/profile/gpu_cost.py): which layers fuse, one convolution by hand,
tile and wave quantisation, what the L2 keeps, which layers leave the tensor cores, and the same
model on an ONNX file. The comparison with MLPerf is benchmarks/gpu_estimates_mlperf.py."""

import math

import pytest
import torch
from torch import nn

from kdforge.nn.adder import AdderConv2d
from kdforge.profile.counts import count_costs
from kdforge.profile.estimates import estimate
from kdforge.profile.gpu_cost import LAUNCH_S, fuse
from kdforge.profile.targets import CATALOGUE, measured_cpu

T4, L4 = CATALOGUE["t4"], CATALOGUE["l4"]


class Residual(nn.Module):
    def __init__(self, channels=16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


def _net():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), Residual(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def test_batch_norm_activation_and_residual_add_fuse_into_their_convolution():
    costs = count_costs(_net(), (1, 3, 32, 32))
    kernels = fuse(costs["layers"])
    kinds = [[layer["kind"] for layer in k["layers"]] for k in kernels]
    assert kinds == [
        ["conv", "norm", "elementwise"],                  # stem: conv + BN + ReLU
        ["elementwise"],                                  # max pool changes the size: a kernel of its own
        ["conv", "norm", "elementwise"],
        ["conv", "norm", "elementwise", "elementwise"],   # + residual add + ReLU
        ["elementwise"], ["linear"],                      # global pool, classifier
    ]
    residual_kernel = kernels[3]
    assert residual_kernel["reads"] == 2 * 16 * 16 * 16  # its input and the residual, both read
    result = estimate(costs, T4, "int8")
    assert result["kernels"] == 6 and result["launch_ms"] == pytest.approx(6 * LAUNCH_S * 1e3)


def test_one_convolution_by_hand_on_a_t4():
    """ResNet-18's 3x3 convolution, 64 -> 64 channels at 56x56, batch 1, INT8 on a T4 (40 SMs)."""
    costs = count_costs(nn.Conv2d(64, 64, 3, padding=1, bias=False).eval(), (1, 64, 56, 56))
    (layer,) = costs["layers"]
    assert layer["gemm"] == [1, 56 * 56, 64, 64 * 9]  # implicit GEMM: M = positions, N = out channels, K = C x 3 x 3
    per_sm = 130e12 / 40
    # best tile: 128x64 (25 tiles, one wave) or 64x64 (49 tiles, two waves), 576 already a multiple of k = 32
    compute = 2 * 128 * 64 * 576 / per_sm
    weights = 64 * 64 * 9 / 320e9  # activations (2 x 200,704 B) stay in the 4 MB L2
    assert compute > weights
    assert estimate(costs, T4, "int8")["total_ms"] == pytest.approx((LAUNCH_S + compute) * 1e3)


def test_tile_quantisation_charges_narrow_layers_a_whole_tile():
    def seconds(out_channels, in_channels=64):
        costs = count_costs(nn.Conv2d(in_channels, out_channels, 1, bias=False).eval(), (1, in_channels, 32, 32))
        return estimate(costs, CATALOGUE["h100"], "fp16")["total_ms"]

    assert seconds(8) == pytest.approx(seconds(64))  # both fill less than one 64-wide tile
    assert seconds(64, in_channels=17) == pytest.approx(seconds(64, in_channels=32))  # K rounds up to the mma's k


def test_activations_travel_to_dram_only_beyond_the_l2():
    conv = nn.Conv2d(64, 64, 1, bias=False).eval()  # 64 MACs per element read: memory-bound wherever it meets DRAM
    small, large = (count_costs(conv, (b, 64, 56, 56)) for b in (1, 32))
    for costs, t4_dram in ((small, False), (large, True)):
        activations = 2 * costs["layers"][0]["outputs"] * 2  # input and output, 2 bytes each
        assert (activations > T4.l2_mb * 2**20) == t4_dram and activations < L4.l2_mb * 2**20
        (t4_kernel,) = estimate(costs, T4, "fp16")["layers"]
        (l4_kernel,) = estimate(costs, L4, "fp16")["layers"]
        assert t4_kernel["bound"] == ("memory" if t4_dram else "compute") and l4_kernel["bound"] == "compute"
    dram_seconds = (2 * large["layers"][0]["outputs"] + 64 * 64) * 2 / 320e9
    assert estimate(large, T4, "fp16")["total_ms"] == pytest.approx((LAUNCH_S + dram_seconds) * 1e3)


def test_depthwise_and_adder_layers_run_on_cuda_cores():
    depthwise = count_costs(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False).eval(), (1, 64, 56, 56))
    macs = depthwise["totals"]["macs"]
    fma_per_s = T4.fp32_tflops * 1e12 / 2
    assert estimate(depthwise, T4, "int8")["total_ms"] == pytest.approx((LAUNCH_S + macs / (4 * fma_per_s)) * 1e3)  # dp4a
    assert estimate(depthwise, T4, "fp16")["total_ms"] == pytest.approx((LAUNCH_S + macs / (2 * fma_per_s)) * 1e3)  # half2
    adder = count_costs(AdderConv2d(64, 64, 3, padding=1).eval(), (1, 64, 56, 56))
    expected = 2 * adder["totals"]["macs"] / T4.scalar_instructions_per_s("fp32")
    assert estimate(adder, T4, "fp32")["total_ms"] == pytest.approx((LAUNCH_S + expected) * 1e3)


def test_throughput_grows_with_the_batch_and_the_cpu_keeps_its_roofline():
    one, many = (count_costs(_net(), (b, 3, 32, 32)) for b in (1, 256))
    per_image_1 = estimate(one, CATALOGUE["a100"], "int8")["total_ms"]
    per_image_256 = estimate(many, CATALOGUE["a100"], "int8")["total_ms"] / 256
    assert per_image_256 < per_image_1 / 10  # launches and idle SMs amortised
    assert "roofline" in estimate(one, measured_cpu(), "fp32")["method"]


def test_the_catalogue_gives_every_gpu_its_sms_and_l2():
    for target in CATALOGUE.values():
        assert target.sms > 0 and target.l2_mb > 0 and "SM" in target.source


def test_an_onnx_file_gets_the_kernels_of_its_module_and_its_int8_twin_one_more(tmp_path):
    """FP32 from the TorchScript exporter (batch norm folded away), INT8 from ONNX Runtime's QDQ
    quantizer: its activation Q/DQ pairs fuse into their producers, its weights' DequantizeLinear
    are weights, and quantizing the input is one kernel more."""
    import numpy as np
    import onnx

    from kdforge.export.int8_cpu import SCHEMES
    from kdforge.export.quantize import quantize_int8
    from kdforge.profile.onnx_counts import count_onnx

    net, path = _net(), tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=18)
    int8 = quantize_int8(path, tmp_path / "net.int8.onnx", np.random.default_rng(0).random((1, 3, 32, 32), np.float32),
                         SCHEMES["x86-vnni"])
    from_onnx, from_int8 = (count_onnx(onnx.load(str(p)), 1, p, 1 << 30) for p in (path, int8))
    from_module = count_costs(net, (1, 3, 32, 32))
    onnx_est, int8_est, module_est = (estimate(c, T4, "int8") for c in (from_onnx, from_int8, from_module))
    assert onnx_est["kernels"] == module_est["kernels"] == int8_est["kernels"] - 1
    assert math.isclose(onnx_est["total_ms"], module_est["total_ms"], rel_tol=0.05)
    convs = [layer for layer in from_int8["layers"] if layer["kind"] == "conv"]
    assert [c["params"] for c in convs] == [16 * 3 * 9 + 16, 16 * 16 * 9 + 16, 16 * 16 * 9 + 16]  # int8 weights, int32 bias
