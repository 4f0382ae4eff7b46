"""The adder convolution against its definition (DESIGN.md) on small odd shapes."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_python
from kdforge.nn.adder import AdderConv2d, to_addernet
from kdforge.nn.adder_op import adder_conv2d
from kdforge.train.models import create_model

GEOMETRIES = [(1, 0), (1, 1), (2, 0), (2, 1)]


def _patches(x, kh, kw, s, p):
    """Xpad[n, c, i*s+u, j*s+v] for every (u, v): a dict of (N, C, Ho, Wo) tensors."""
    xp = nn.functional.pad(x, (p, p, p, p))
    ho, wo = (x.shape[2] + 2 * p - kh) // s + 1, (x.shape[3] + 2 * p - kw) // s + 1
    return {(u, v): xp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s] for u in range(kh) for v in range(kw)}, xp


def direct_forward(x, w, s, p):
    patches, _ = _patches(x, w.shape[2], w.shape[3], s, p)
    return -sum((patch[:, None] - w[None, :, :, u, v, None, None]).abs().sum(2) for (u, v), patch in patches.items())


def direct_grads(x, w, g, s, p):
    """AdderNet's backward by its definition: dW uses X - W, dX uses HardTanh(W - X)."""
    patches, xp = _patches(x, w.shape[2], w.shape[3], s, p)
    grad_w = torch.zeros_like(w)
    grad_xp = torch.zeros_like(xp)
    for (u, v), patch in patches.items():
        diff = patch[:, None] - w[None, :, :, u, v, None, None]  # (N, O, C, Ho, Wo)
        grad_w[:, :, u, v] = (g[:, :, None] * diff).sum((0, 3, 4))
        ho, wo = patch.shape[2:]
        grad_xp[:, :, u:u + s * (ho - 1) + 1:s, v:v + s * (wo - 1) + 1:s] += (g[:, :, None] * (-diff).clamp(-1, 1)).sum(1)
    return grad_xp[:, :, p:p + x.shape[2], p:p + x.shape[3]], grad_w


def _inputs(s, p, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 7, 9, generator=gen)
    w = torch.randn(5, 3, 3, 3, generator=gen)
    return x, w


@pytest.mark.parametrize("s,p", GEOMETRIES)
def test_forward_matches_definition(s, p):
    x, w = _inputs(s, p)
    torch.testing.assert_close(adder_conv2d(x, w, [s, s], [p, p], 0.2), direct_forward(x, w, s, p), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("s,p", GEOMETRIES)
def test_gradients_match_addernet_backward(s, p):
    x, w = _inputs(s, p)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = adder_conv2d(x, w, [s, s], [p, p], 0.0)  # eta = 0: no adaptive rescaling
    g = torch.randn_like(y)
    y.backward(g)
    expected_x, expected_w = direct_grads(x.detach(), w.detach(), g, s, p)
    torch.testing.assert_close(x.grad, expected_x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad, expected_w, rtol=1e-5, atol=1e-4)


def test_adaptive_rescaling_sets_the_weight_gradient_norm():
    x, w = _inputs(1, 1)
    w.requires_grad_(True)
    adder_conv2d(x, w, [1, 1], [1, 1], 0.2).sum().backward()
    assert w.grad.norm().item() == pytest.approx(0.2 * math.sqrt(w.numel()), rel=1e-5)


def test_opcheck():
    x, w = _inputs(2, 1)
    torch.library.opcheck(adder_conv2d, (x.requires_grad_(True), w.requires_grad_(True), [2, 2], [1, 1], 0.2))


def test_torch_compile_and_export_see_one_op():
    layer = AdderConv2d(3, 4, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(torch.compile(layer, backend="aot_eager")(x), layer(x))
    targets = [str(n.target) for n in torch.export.export(layer, (x,)).graph.nodes if n.op == "call_function"]
    assert targets == ["kdforge.adder_conv2d.default"]


def test_numpy_kernel_runs_without_torch():
    code = (
        "import sys, numpy as np; from kdforge.nn.adder_cpu import adder_conv2d_forward as f; "
        "y = f(np.ones((1, 2, 5, 5), np.float32), np.zeros((3, 2, 3, 3), np.float32), (1, 1), (0, 0)); "
        "assert y.shape == (1, 3, 3, 3) and np.all(y == -18); assert 'torch' not in sys.modules; print('ok')"
    )
    assert run_python(code) == "ok"


def test_to_addernet_keeps_first_conv_and_classifier():
    model = create_model("resnet20_adder", 10)
    assert isinstance(model.stem[0], nn.Conv2d) and isinstance(model.fc, nn.Linear)
    adders = [m for m in model.modules() if isinstance(m, AdderConv2d)]
    assert len(adders) == 18 + 2  # 9 blocks x 2 convolutions + 2 downsampling shortcuts
    assert not [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name != "stem.0"]
    # every adder layer is followed by batch norm
    for module in model.modules():
        children = list(module.children())
        for a, b in zip(children, children[1:]):
            if isinstance(a, AdderConv2d):
                assert isinstance(b, nn.BatchNorm2d)
    with pytest.raises(ValueError, match="ungrouped"):
        to_addernet(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), keep=())


def test_addernet_trains_one_step():
    torch.manual_seed(0)
    model = create_model("resnet8_adder", 10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and all(np.isfinite(losses))


TRITON_CHECK = """
import torch
from kdforge.nn import adder_triton
from kdforge.nn.adder_op import adder_conv2d, adder_conv2d_backward
for s, p in [(1, 0), (1, 1), (2, 0), (2, 1)]:
    x, w = torch.randn(2, 3, 7, 9), torch.randn(5, 3, 3, 3)
    y = adder_triton.forward(x, w, [s, s], [p, p])
    torch.testing.assert_close(y, adder_conv2d(x, w, [s, s], [p, p], 0.0), rtol=1e-5, atol=1e-4)
    g = torch.randn_like(y)
    for got, want in zip(adder_triton.backward(g, x, w, [s, s], [p, p]), adder_conv2d_backward(g, x, w, [s, s], [p, p])):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
print("ok")
"""


def test_triton_kernels_match_under_the_interpreter():
    pytest.importorskip("triton")
    assert run_python(TRITON_CHECK, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1").endswith("ok")


@pytest.mark.parametrize("capability", [80, 90])
def test_triton_forward_compiles_to_ptx_without_a_gpu(capability):
    pytest.importorskip("triton")
    from kdforge.nn.adder_triton import compile_ptx

    ptx = compile_ptx(kernel_size=3, capability=capability)
    assert f".target sm_{capability}" in ptx and ".entry adder_forward_kernel" in ptx


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x, w = _inputs(1, 1)
    on_gpu = adder_conv2d(x.cuda(), w.cuda(), [1, 1], [1, 1], 0.2).cpu()
    torch.testing.assert_close(on_gpu, adder_conv2d(x, w, [1, 1], [1, 1], 0.2), rtol=1e-5, atol=1e-4)
