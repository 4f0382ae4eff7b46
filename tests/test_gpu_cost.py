"""The GPU kernel model (kdforge/profile/gpu_cost.py) and a query's host costs (gpu_query.py):
which layers fuse, one convolution by hand, tile and wave quantisation, what the L2 keeps, which
layers leave the tensor cores, the term that bounds each kernel, the copies and launches of a
query, and the same model on an ONNX file. The comparison with MLPerf is
benchmarks/gpu_estimates_mlperf.py."""

import math

import pytest
import torch
from torch import nn

from kdforge.nn.adder import AdderConv2d
from kdforge.profile.counts import count_costs
from kdforge.profile.estimates import estimate
from kdforge.profile.gpu_cost import DRAM_LATENCY_CYCLES, fuse
from kdforge.profile.gpu_query import LAUNCH_IN_GRAPH_S, STANDALONE_LAUNCH_S, Deployment
from kdforge.profile.targets import CATALOGUE, measured_cpu

T4, L4 = CATALOGUE["t4"], CATALOGUE["l4"]
T4_CLOCK = 8.1e12 / (2 * 2560)  # the T4 datasheet's FP32 peak over its 2,560 lanes: 1.58 GHz


def _fixed(target=T4):
    """A kernel's launch in a graph and its two DRAM latencies."""
    return LAUNCH_IN_GRAPH_S + 2 * DRAM_LATENCY_CYCLES / target.clock_hz


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
    assert result["kernels"] == 6 and result["launch_ms"] == pytest.approx(6 * LAUNCH_IN_GRAPH_S * 1e3)


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
    floor = 2 * 400 / T4_CLOCK
    result = estimate(costs, T4, "int8")
    assert result["engine_ms"] == pytest.approx((LAUNCH_IN_GRAPH_S + floor + compute) * 1e3)
    assert result["layers"][0]["bound"] == "compute"


def test_tile_quantisation_charges_narrow_layers_a_whole_tile():
    def seconds(out_channels, in_channels=64):
        costs = count_costs(nn.Conv2d(in_channels, out_channels, 1, bias=False).eval(), (1, in_channels, 32, 32))
        return estimate(costs, CATALOGUE["h100"], "fp16")["engine_ms"]

    assert seconds(8) == pytest.approx(seconds(64))  # both fill less than one 64-wide tile
    assert seconds(64, in_channels=17) == pytest.approx(seconds(64, in_channels=32))  # K rounds up to the mma's k


def test_activations_travel_to_dram_only_when_the_working_set_outgrows_the_l2():
    conv = nn.Conv2d(64, 64, 1, bias=False).eval()  # 64 MACs per element read: memory-bound wherever it meets DRAM
    small, large = (count_costs(conv, (b, 64, 56, 56)) for b in (1, 32))
    for costs, t4_dram in ((small, False), (large, True)):
        activations = 2 * costs["layers"][0]["outputs"] * 2  # input and output, 2 bytes each
        assert (activations > T4.l2_mb * 2**20) == t4_dram and activations < L4.l2_mb * 2**20
        weights_us = 64 * 64 * 2 / 320e9 * 1e6
        (t4_kernel,) = estimate(costs, T4, "fp16")["layers"]
        (l4_kernel,) = estimate(costs, L4, "fp16")["layers"]
        assert t4_kernel["memory_us"] == pytest.approx(weights_us + (activations / 320e9 * 1e6 if t4_dram else 0))
        assert l4_kernel["memory_us"] == pytest.approx(64 * 64 * 2 / 300e9 * 1e6)
    assert estimate(large, T4, "fp16")["layers"][0]["bound"] == "memory"
    dram_seconds = (2 * large["layers"][0]["outputs"] + 64 * 64) * 2 / 320e9
    assert estimate(large, T4, "fp16")["engine_ms"] == pytest.approx((_fixed() + dram_seconds) * 1e3)


def test_weights_count_in_the_working_set_the_l2_must_hold():
    """A 1x1 convolution whose activations fit the T4's 4 MB L2 alone but not with its 4.7 MB of
    weights: the activations cross to DRAM too."""
    conv = nn.Conv2d(2048, 2304, 1, bias=False).eval()
    costs = count_costs(conv, (1, 2048, 14, 14))
    activations, weights = (2048 + 2304) * 14 * 14, 2048 * 2304
    assert activations < T4.l2_mb * 2**20 < activations + weights
    (kernel,) = estimate(costs, T4, "int8")["layers"]
    assert kernel["memory_us"] == pytest.approx((activations + weights) / 320e9 * 1e6)


def test_depthwise_and_adder_layers_run_on_cuda_cores():
    depthwise = count_costs(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False).eval(), (1, 64, 56, 56))
    macs = depthwise["totals"]["macs"]
    fma_per_s = T4.fp32_tflops * 1e12 / 2
    assert estimate(depthwise, T4, "int8")["engine_ms"] == pytest.approx((_fixed() + macs / (4 * fma_per_s)) * 1e3)  # dp4a
    assert estimate(depthwise, T4, "fp16")["engine_ms"] == pytest.approx((_fixed() + macs / (2 * fma_per_s)) * 1e3)  # half2
    adder = count_costs(AdderConv2d(64, 64, 3, padding=1).eval(), (1, 64, 56, 56))
    expected = 2 * adder["totals"]["macs"] / T4.scalar_instructions_per_s("fp32")
    assert estimate(adder, T4, "fp32")["engine_ms"] == pytest.approx((_fixed() + expected) * 1e3)


def test_throughput_grows_with_the_batch_and_the_cpu_keeps_its_roofline():
    one, many = (count_costs(_net(), (b, 3, 32, 32)) for b in (1, 256))
    per_image_1 = estimate(one, CATALOGUE["a100"], "int8")["engine_ms"]
    per_image_256 = estimate(many, CATALOGUE["a100"], "int8")["engine_ms"] / 256
    assert per_image_256 < per_image_1 / 10  # launches and idle SMs amortised
    assert "roofline" in estimate(one, measured_cpu(), "fp32")["method"]


def test_the_catalogue_gives_every_gpu_its_sms_l2_clock_and_host_link():
    for target in CATALOGUE.values():
        assert target.sms > 0 and target.l2_mb > 0 and "SM" in target.source
        assert 1.2e9 < target.clock_hz < 2.1e9  # the boost clocks NVIDIA publishes for these parts
        assert target.host_link_gbs > 0 or "unified" in target.host_link
    assert T4.clock_hz == pytest.approx(T4_CLOCK)


def test_a_query_copies_its_input_and_output_over_the_host_link():
    """ResNet-18's input at INT8 over the T4's PCIe Gen3 x16: one launch and 150,528 bytes at
    15.75 GB/s; its 1,000 logits back; and one launch of the engine's graph."""
    costs = count_costs(_net(), (1, 3, 224, 224))
    result = estimate(costs, T4, "int8")
    assert costs["totals"]["output_elements"] == 10
    assert result["query_ms"]["input_copy"] == pytest.approx((STANDALONE_LAUNCH_S + 3 * 224 * 224 / 15.75e9) * 1e3)
    assert result["query_ms"]["output_copy"] == pytest.approx((STANDALONE_LAUNCH_S + 10 / 15.75e9) * 1e3)
    assert result["query_ms"]["graph_launch"] == pytest.approx(STANDALONE_LAUNCH_S * 1e3)
    assert result["total_ms"] == pytest.approx(result["engine_ms"] + sum(result["query_ms"].values()))
    fp32 = estimate(costs, T4, "fp32")  # four bytes an element
    assert fp32["query_ms"]["input_copy"] == pytest.approx((STANDALONE_LAUNCH_S + 4 * 3 * 224 * 224 / 15.75e9) * 1e3)


def test_deployment_settings_drop_the_input_copy_and_launch_kernels_one_by_one():
    costs = count_costs(_net(), (1, 3, 32, 32))
    default = estimate(costs, T4, "int8")
    on_device = estimate(costs, T4, "int8", Deployment(input_on_device=True))
    assert on_device["query_ms"]["input_copy"] == 0 and on_device["engine_ms"] == default["engine_ms"]
    no_graph = estimate(costs, T4, "int8", Deployment(cuda_graph=False))
    assert no_graph["query_ms"]["graph_launch"] == 0
    assert no_graph["engine_ms"] - default["engine_ms"] == pytest.approx(
        default["kernels"] * (STANDALONE_LAUNCH_S - LAUNCH_IN_GRAPH_S) * 1e3)
    assert {k["bound"] for k in no_graph["layers"]} == {"launch"}  # 4 us a launch outweighs every kernel of this net


def test_a_gpu_sharing_the_hosts_memory_copies_nothing():
    result = estimate(count_costs(_net(), (1, 3, 32, 32)), CATALOGUE["orin"], "int8")
    assert result["query_ms"]["input_copy"] == result["query_ms"]["output_copy"] == 0


def test_each_kernel_names_the_term_that_bounds_it():
    big = count_costs(nn.Conv2d(256, 256, 3, padding=1, bias=False).eval(), (8, 256, 56, 56))
    tiny = count_costs(nn.Conv2d(8, 8, 1, bias=False).eval(), (1, 8, 4, 4))
    fat = count_costs(nn.Linear(4096, 4096, bias=False).eval(), (1, 4096))  # 16 M weights for 16 M MACs
    assert estimate(big, T4, "int8")["layers"][0]["bound"] == "compute"
    assert estimate(tiny, T4, "int8")["layers"][0]["bound"] == "launch"
    assert estimate(fat, T4, "int8")["layers"][0]["bound"] == "memory"
    from dataclasses import replace

    slow = replace(T4, fp32_tflops=T4.fp32_tflops / 4)  # a quarter of the clock: the two DRAM latencies outlast a launch
    assert estimate(tiny, slow, "int8")["layers"][0]["bound"] == "floor"


def test_a_squeeze_excite_block_is_four_small_kernels():
    class SqueezeExcite(nn.Module):
        def __init__(self, c=32):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(c, c // 4), nn.Linear(c // 4, c)

        def forward(self, x):
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
            return x * s[:, :, None, None]

    kernels = fuse(count_costs(SqueezeExcite().eval(), (1, 32, 14, 14))["layers"])
    assert [[layer["kind"] for layer in k["layers"]] for k in kernels] == [
        ["elementwise"], ["linear", "elementwise"], ["linear", "elementwise"], ["elementwise"]]


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
    assert from_onnx["totals"]["output_elements"] == from_module["totals"]["output_elements"] == 10  # what a query copies back
    assert math.isclose(onnx_est["total_ms"], module_est["total_ms"], rel_tol=0.05)
    convs = [layer for layer in from_int8["layers"] if layer["kind"] == "conv"]
    assert [c["params"] for c in convs] == [16 * 3 * 9 + 16, 16 * 16 * 9 + 16, 16 * 16 * 9 + 16]  # int8 weights, int32 bias
