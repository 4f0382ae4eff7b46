import numpy as np
import pytest
import torch

from conftest import run_python
from kdforge.errors import UserError
from kdforge.export import ort as ort_backend
from kdforge.export.onnx_export import check_onnx, export_onnx
from kdforge.export.strip import load_deployed, save_deployed
from kdforge.train.models import create_model

SPEC = {"model": "resnet8", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1).eval()
    save_deployed(folder / "deploy.pt", model, SPEC)
    export_onnx(model, torch.zeros(2, 1, 8, 8), folder / "model.onnx")
    return model, folder


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_runtime_matches_pytorch_at_any_batch(exported, batch):
    model, folder = exported
    x = torch.randn(batch, 1, 8, 8)
    out = ort_backend.run(ort_backend.session(folder / "model.onnx"), x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)


def test_exported_file_passes_checker_and_names_its_tensors(exported):
    proto = check_onnx(exported[1] / "model.onnx")
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert not list(exported[1].glob(".*tmp*"))  # no temporary file left behind


def test_deployed_model_round_trips(exported):
    model, folder = exported
    loaded, spec = load_deployed(folder / "deploy.pt")
    assert spec == SPEC
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_deployed_model_errors(tmp_path, exported):
    with pytest.raises(UserError, match="does not exist"):
        load_deployed(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_deployed(tmp_path / "junk.pt")
    blob = torch.load(exported[1] / "deploy.pt", weights_only=True)
    blob["model"] = "resnet14"
    torch.save(blob, tmp_path / "other.pt")
    with pytest.raises(UserError, match="another architecture than 'resnet14'"):
        load_deployed(tmp_path / "other.pt")


def test_onnx_runtime_path_never_imports_torch(exported):
    code = (
        "import sys, numpy as np; from kdforge.export import ort; "
        f"s = ort.session(r'{exported[1] / 'model.onnx'}'); "
        "print(ort.run(s, np.zeros((1, 1, 8, 8), np.float32)).shape); assert 'torch' not in sys.modules"
    )
    assert run_python(code) == "(1, 10)"
