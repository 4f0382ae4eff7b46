"""kdforge's counts of ONNX exports of torchvision architectures (built without weights, at
224x224) against an established counter, fvcore, on the PyTorch model.

torchvision's wheel does not import against the pinned CPU torch ("operator torchvision::nms does
not exist"), so only its model definitions are loaded: `make setup` installs them
(scripts/models_only_torchvision.py); where no torchvision imports, this module unpacks the wheel
(.venv/wheels) and imports torchvision.models under a bare package that skips
torchvision/__init__.py and its compiled operators.

fvcore is configured as its documentation suggests for inference-time fusion and as kdforge's
convention reads (README, "How kdforge counts"): batch norm, layer norm and pooling are not
MACs (kdforge reports them apart), and scaled_dot_product_attention, which fvcore does not know,
gets a handle counting its two matrix products. The raw fvcore totals are printed beside."""

import importlib.machinery
import logging
import sys
import types
import zipfile
from math import prod
from pathlib import Path

import onnx
import pytest
import torch

from kdforge.export.onnx_export import export_onnx
from kdforge.profile.counts import count_costs
from kdforge.profile.onnx_counts import count_onnx

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16"]
# the largest exports (ResNet-50 39 s, ConvNeXt-T and ViT-B/16 36 s together): `make test-all` checks them
_LARGEST = ("resnet50", "convnext_tiny", "vit_b_16")
_WHEELS = Path(sys.prefix) / "wheels"


def load_model_definitions(wheel_path: Path, folder: Path):
    """torchvision.models from the wheel's Python files alone, under a bare package."""
    with zipfile.ZipFile(wheel_path) as wheel:
        wheel.extractall(folder, [n for n in wheel.namelist() if n.startswith("torchvision/") and n.endswith(".py")])
    package = types.ModuleType("torchvision")
    package.__path__ = [str(folder / "torchvision")]
    package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    package.__spec__.submodule_search_locations = package.__path__
    sys.modules["torchvision"] = package
    import torchvision.models

    return torchvision.models


@pytest.fixture(scope="module")
def torchvision_models(tmp_path_factory):
    """torchvision.models as this Python imports it (`make setup` installs its model definitions,
    scripts/models_only_torchvision.py), else from the wheel's Python files under a bare package."""
    try:
        import torchvision.models

        yield torchvision.models
        return
    except Exception:  # noqa: BLE001 - a torchvision whose compiled operators do not load, or none
        pass
    wheels = sorted(_WHEELS.glob("torchvision-*.whl"))
    if not wheels:
        pytest.skip(f"no torchvision wheel in {_WHEELS} (make setup downloads it where the package index is reachable)")
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    try:
        yield load_model_definitions(wheels[-1], tmp_path_factory.mktemp("torchvision"))
    finally:
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def timm():
    """timm as `make setup` installs it, over torchvision's model definitions
    (scripts/models_only_torchvision.py)."""
    return pytest.importorskip("timm", reason="make setup installs timm where the package index is reachable")


def _sdpa_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(i) for i in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


_NOT_MACS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "adaptive_avg_pool2d"}  # kdforge: apart


def fvcore_macs(model, image) -> tuple[int, int]:
    """(fvcore with kdforge's convention, fvcore as it comes), from one trace."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, image).set_op_handle("aten::scaled_dot_product_attention", _sdpa_handle)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_operator = analysis.by_operator()
    aligned = sum(v for k, v in by_operator.items() if k not in _NOT_MACS)
    raw = sum(v for k, v in by_operator.items() if k != "scaled_dot_product_attention")
    return int(aligned), int(raw)


def comparison_row(models, name: str, folder: Path) -> dict:
    torch.manual_seed(0)
    model = getattr(models, name)(weights=None).eval()
    export_onnx(model, torch.zeros(2, 3, 224, 224), folder / f"{name}.onnx")
    onnx_costs = count_onnx(onnx.load(folder / f"{name}.onnx"))
    aligned, raw = fvcore_macs(model, torch.zeros(1, 3, 224, 224))
    ours = onnx_costs["totals"]["macs"]
    return {"model": name, "kdforge_onnx": ours, "kdforge_pytorch": count_costs(model, (1, 3, 224, 224))["totals"]["macs"],
            "fvcore": aligned, "fvcore_raw": raw, "difference": (ours - aligned) / aligned,
            "unknown": onnx_costs["totals"]["unknown_layers"]}


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in _LARGEST else m for m in MODELS])
def test_onnx_counts_of_torchvision_architectures_match_fvcore(torchvision_models, tmp_path, name):
    row = comparison_row(torchvision_models, name, tmp_path)
    print(row)
    assert row["unknown"] == []
    assert abs(row["difference"]) <= 0.01
    assert row["kdforge_onnx"] == row["kdforge_pytorch"]  # the ONNX graph and the torch.export graph agree


if __name__ == "__main__":  # prints the table of the README: python tests/test_torchvision_counts.py
    import tempfile

    models = load_model_definitions(sorted(_WHEELS.glob("torchvision-*.whl"))[-1], Path(tempfile.mkdtemp()))
    print("| model | kdforge MACs (ONNX) | fvcore, kdforge's convention | difference | fvcore as it comes | why it differs |")
    print("|---|---:|---:|---:|---:|---|")
    for model_name in MODELS:
        r = comparison_row(models, model_name, Path(tempfile.mkdtemp()))
        print(f"| {r['model']} | {r['kdforge_onnx']:,} | {r['fvcore']:,} | {r['difference'] * 100:+.2f}% | {r['fvcore_raw']:,} "
              f"| {(r['fvcore_raw'] - r['kdforge_onnx']) / r['kdforge_onnx'] * 100:+.2f}% |")
