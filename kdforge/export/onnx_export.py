"""ONNX export of a deployed student with torch's current (dynamo) exporter: a dynamic batch
axis, input 'input', output 'logits', checked by onnx's checker and shape inference, written
atomically."""

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from kdforge.atomic import atomic_path
from kdforge.export.adder_onnx import translation_table


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 18, portable: bool = False) -> Path:
    """Writes `model` to `path`. Adder layers become kdforge::AdderConv2d nodes, or with
    `portable` standard ONNX operators only."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(Path(path)) as tmp, _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), external_data=False, verbose=False,  # by position: any forward argument name
            custom_translation_table=translation_table(portable),
        )
        program.save(str(tmp))
        check_onnx(tmp)
    return Path(path)


def onnx_flavour(path: Path) -> str:
    """'custom' when the file holds kdforge nodes (it needs kdforge's operator), else 'standard'."""
    domains = {node.domain for node in onnx.load(str(path), load_external_data=False).graph.node}
    return "custom" if "kdforge" in domains else "standard"


def check_onnx(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


class _quiet_exporter:
    """The exporter logs registry notes (e.g. torchvision absent) and deprecation warnings that
    say nothing about the user's model; keep them off the user's terminal."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)
