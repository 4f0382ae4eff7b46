"""`kdforge profile` on ONNX files kdforge did not write: the onnx package's own backend test
models (the files shipped in its wheel and the node test cases it builds in code), of every
opset and IR version, with several, integer, scalar and sequence inputs. Each ends with a cost
table (timed, or saying why not) or, where onnx's shape inference refuses the graph, one
sentence; never a traceback. A sample runs in `make test`, all of them under the `slow` mark."""

import re
from pathlib import Path

import onnx
import pytest

from test_hostile_inputs import kdforge

_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def _shipped() -> list[tuple[str, bytes]]:
    return [(f"{p.relative_to(_DATA).parts[0]}/{p.parent.name if p.name == 'model.onnx' else p.stem}", p.read_bytes())
            for p in sorted(_DATA.rglob("*.onnx"))]


def _node_cases() -> list[tuple[str, bytes]]:
    from onnx.backend.test.case.node import collect_testcases

    return [(f"node/{case.name}", case.model.SerializeToString()) for case in collect_testcases(None)
            if case.model is not None]


def _profile(tmp_path, capsys, name: str, data: bytes):
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    code, out, err = kdforge(capsys, "profile", path, "--rounds", 5, "--round-ms", 0.1, "--dim", "N=2")
    lines = err.strip().splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("kdforge: error: "), (name, err)
        assert "shape inference fails" in lines[0] or "dynamic dimension" in lines[0] or "external data" in lines[0], (name, err)
    else:
        assert code == 0 and "MACs" in out, (name, code, err)
        assert re.search(r"ONNX Runtime latency +(p50 |not timed: )", out), (name, out)
    return code


SAMPLE = ["pytorch-converted/test_Conv2d", "pytorch-operator/test_operator_maxpool", "simple/test_sequence_model1",
          "simple/test_single_relu_model", "light/light_resnet50", "pytorch-converted/test_Embedding",
          "pytorch-operator/test_operator_index"]


@pytest.mark.parametrize("name", SAMPLE)
def test_a_sample_of_the_onnx_backend_models_gets_a_cost_table(tmp_path, capsys, name):
    data = dict(_shipped()).get(name)
    if data is None:
        pytest.skip(f"{name} is not in this onnx wheel")
    _profile(tmp_path, capsys, name, data)


@pytest.mark.slow
def test_every_onnx_backend_model_gets_a_cost_table_or_one_sentence(tmp_path, capsys):
    codes = [_profile(tmp_path, capsys, name, data) for name, data in _shipped() + _node_cases()]
    print(f"{len(codes)} models: {codes.count(0)} cost tables, {codes.count(2)} refused by shape inference")
