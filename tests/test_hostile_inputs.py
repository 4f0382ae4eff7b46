"""Hostile inputs as an attacker writes them by hand: ONNX files that declare giant or malformed
tensors, point at external data or never end, torch.export archives that carry code, YAML bombs,
devices and pipes where files belong, lying shard indexes and names full of escape sequences.
Each ends with exit code 0 (a valid file) or 2 and one `kdforge: error:` line free of control
characters; none runs code, writes outside its folder, or takes the machine.

The commands run in this process (`kdforge.cli.main`) so that a hundred cases stay fast; a
Python exception escaping main, a hang (pytest-timeout) or a second line fails the case."""

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper

from conftest import tiny_config

pytestmark = pytest.mark.timeout(120)


def kdforge(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `kdforge ARGS` run in this process."""
    from kdforge.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result, fragment: str = "") -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kdforge: error: "), (code, err)
    assert not re.search(r"[\x00-\x1f\x7f]", lines[0]), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def _model(nodes, inputs, outputs, initializers=(), opset=18, ir_version=None, **graph) -> onnx.ModelProto:
    def value(spec):
        if isinstance(spec, onnx.ValueInfoProto):
            return spec
        name, shape = spec
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    model = helper.make_model(helper.make_graph(nodes, "g", [value(i) for i in inputs], [value(o) for o in outputs],
                                                list(initializers), **graph), opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _weight(name, shape, value=0.1):
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


def _external(tensor: TensorProto, location: str) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def _relu(shape):
    return _model([helper.make_node("Relu", ["x"], ["y"])], [("x", shape)], [("y", shape)])


# (id, model builder, expected: "" for exit 0, else a fragment of the one error line)
ONNX_CASES = [
    ("valid-relu", lambda: _relu([1, 3, 4, 4]), ""),
    ("valid-ir3-weights-as-inputs", lambda: _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])], [("x", [1, 1, 4, 4]), ("w", [2, 1, 1, 1])], [("y", [1, 2, 4, 4])],
        [_weight("w", [2, 1, 1, 1])], opset=9, ir_version=3), ""),
    ("scalar-input", lambda: _relu([]), ""),
    ("shapeless-input", lambda: _model([helper.make_node("Relu", ["x"], ["y"])],
                                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [("y", None)]),
     "not timed: input 'x' declares no shape"),
    ("negative-dimension", lambda: _relu([1, -3, 4, 4]), "not timed: input 'x' declares size -3"),
    ("no-input", lambda: _model([helper.make_node("Constant", [], ["y"], value=_weight("c", [2]))], [], [("y", [2])]),
     "not timed: "),
    ("sequence-input", lambda: _model(
        [helper.make_node("SequenceLength", ["x"], ["y"])],
        [helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [])]), "not timed: input 'x' is not a tensor"),
    ("dynamic-height", lambda: _relu([1, 3, "h", 4]), "dynamic dimension 2"),
    ("gemm-missing-inputs", lambda: _model([helper.make_node("Gemm", ["x"], ["y"])], [("x", [1, 4])], [("y", [1, 4])]),
     "is not a well-formed ONNX graph: node 'Gemm' (Gemm) has 1 input(s); its schema takes 2 to 3"),
    ("matmul-wrong-rank", lambda: _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [4])], [("y", [2])],
                                         [_weight("w", [4, 2, 3, 5, 6])]), "is not a well-formed ONNX graph: a MatMul node"),
    ("conv-missing-weight", lambda: _model([helper.make_node("Conv", ["x"], ["y"])], [("x", [1, 1, 4, 4])],
                                           [("y", [1, 1, 4, 4])]), "node 'Conv' (Conv) has 1 input(s); its schema takes 2 to 3"),
    ("conv-rank-2-input", lambda: _model([helper.make_node("Conv", ["x", "w"], ["y"])], [("x", [4, 4])], [("y", None)],
                                         [_weight("w", [1, 1, 1, 1])]), "is not a well-formed ONNX graph: a Conv node"),
    ("binary-conv-empty-weight", lambda: _model(
        [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("Conv", ["s", "w"], ["y"])],
        [("x", [1, 1, 4, 4])], [("y", None)], [_weight("w", [0, 1, 3, 3])]), "has an empty weight 'w' (0x1x3x3): it computes nothing"),
    ("giant-input", lambda: _relu([1, 3, 100000, 100000]), "not timed: tensor 'x' would be 1x3x100000x100000"),
    ("one-gib-input", lambda: _relu([1, 1, 16384, 16384]), "not timed: its live activations would reach 2,048 MiB"),
    ("giant-initializer-declared", lambda: _model(
        [helper.make_node("Add", ["x", "w"], ["y"])], [("x", [1])], [("y", None)],
        [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])]),
     "initializer 'w' declares 1048576x1048576 (1,099,511,627,776 elements) but holds data for 0"),
    ("data-dependent-giant", lambda: _model(
        [helper.make_node("Add", ["x", "n"], ["m"]), helper.make_node("Cast", ["m"], ["shape"], to=TensorProto.INT64),
         helper.make_node("ConstantOfShape", ["shape"], ["y"])],
        [("x", [2])], [("y", None)], [numpy_helper.from_array(np.array([60000.0, 60000.0], np.float32), "n")]),
     "not timed: "),
    ("loop-that-never-ends", lambda: _model(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])]))],
        [("x", [1])], [("y", [1])],
        [numpy_helper.from_array(np.array(1 << 62, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond")]),
     "not timed: "),
    ("external-data-initializer", lambda: _model(
        [helper.make_node("Add", ["x", "w"], ["y"])], [("x", [4])], [("y", [4])],
        [_external(_weight("w", [4]), "/etc/passwd")]), "external data"),
    ("external-data-constant-attribute", lambda: _model(
        [helper.make_node("Constant", [], ["c"], value=_external(_weight("c", [4]), "../../secret")),
         helper.make_node("Add", ["x", "c"], ["y"])], [("x", [4])], [("y", [4])]), "external data"),
    ("external-data-in-if-branch", lambda: _model(
        [helper.make_node("If", ["cond"], ["y"],
                          then_branch=helper.make_graph([helper.make_node("Identity", ["t"], ["o"])], "then", [],
                                                        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])],
                                                        [_external(_weight("t", [4]), "/dev/zero")]),
                          else_branch=helper.make_graph([helper.make_node("Identity", ["x"], ["o2"])], "else", [],
                                                        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [4])]))],
        [("x", [4]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [("y", [4])]), "external data"),
    ("external-data-sparse-initializer", lambda: _model(
        [helper.make_node("Add", ["x", "s"], ["y"])], [("x", [4])], [("y", [4])],
        sparse_initializer=[helper.make_sparse_tensor(_external(_weight("s", [1]), "x.bin"),
                                                      numpy_helper.from_array(np.array([0], np.int64), "i"), [4])]),
     "external data"),
    ("control-characters-in-names", lambda: _model(
        [helper.make_node("Relu", ["x\x1b]0;pwned\x07"], ["y"], name="evil\nnode\x1b[2J")],
        [("x\x1b]0;pwned\x07", ["\x1b[2Jbatch\n", 3])], [("y", None)]), ""),
    ("control-characters-in-dynamic-name", lambda: _relu([1, "\x1b[2Jh\n", 4]), "\\x1b[2Jh\\n"),
    ("matmul-on-a-scalar", lambda: _model([helper.make_node("MatMul", ["x", "s"], ["y"])], [("x", [1, 3])], [("y", [1, 3])],
                                          [numpy_helper.from_array(np.array(2.0, np.float32), "s")]),
     "is not a well-formed ONNX graph: a MatMul node: Input tensors of wrong rank (0)"),
    ("cycle", lambda: _model([helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"])],
                             [("x", [1])], [("a", [1])]), "node 'first' reads 'b', which no input, initializer or earlier node gives"),
    ("initializer-data-short", lambda: _model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [3])], [("y", [3])],
                                              [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3], float_data=[1.0, 2.0])]),
     "initializer 'w' declares 3 (3 elements) but holds data for 2"),
    ("relu-with-two-outputs", lambda: _model([helper.make_node("Relu", ["x"], ["y", "z"])], [("x", [2])], [("y", [2])]),
     "node 'Relu' (Relu) has 2 output(s); its schema takes 1 to 1"),
    ("op-of-a-domain-onnx-runtime-lacks", lambda: _model_with_domain("my.ops"),
     "not timed: ONNX Runtime cannot open .* is not a registered function/op; the file needs an operator or feature this ONNX Runtime lacks"),
    ("unknown-op", lambda: _model([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.evil")], [("x", [2])],
                                  [("y", [2])]), "is not a well-formed ONNX graph"),
]


def _model_with_domain(domain: str) -> onnx.ModelProto:
    """A well-formed graph of one node in `domain`, which it imports."""
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(domain, 1)])


@pytest.mark.parametrize("case,build,expected", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_hostile_onnx_files(tmp_path, capsys, monkeypatch, case, build, expected):
    from kdforge.profile import onnx_trial

    monkeypatch.setattr(onnx_trial, "TRIAL_SECONDS", 5)  # the never-ending Loop costs this much, not 30 s
    path = _save(build(), tmp_path / "model.onnx")
    result = kdforge(capsys, "profile", path, "--rounds", 5, "--round-ms", 0.1, "--layers")
    if expected and not expected.startswith("not timed: "):
        assert_refused(result, expected)
    else:  # counted; timed, or the one line that says why not
        code, out, err = result
        assert code == 0, err
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out), "a name reached the terminal raw"
        latency = next(line for line in out.splitlines() if line.startswith("ONNX Runtime latency"))
        assert re.search(expected or "p50 ", latency), latency
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"], "something was written beside the file"


def test_max_tensor_mib_decides_what_is_run(tmp_path, capsys):
    path = _save(_relu([1, 1, 1024, 1024]), tmp_path / "m.onnx")  # 4 MiB per tensor, 8 MiB live
    counts = "MACs"
    for limit, latency in [(16, "p50 "), (6, "not timed: its live activations would reach 8 MiB"),
                           (3, "not timed: tensor 'x' would be 1x1x1024x1024 (4 MiB)")]:
        code, out, err = kdforge(capsys, "profile", path, "--rounds", 5, "--round-ms", 0.1, "--max-tensor-mib", limit)
        assert code == 0 and counts in out and latency in out, (limit, out, err)


def _plant(path: Path, kind: str) -> Path:
    """Something that is no regular file where a file belongs."""
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block until a writer comes
    elif kind == "dev-zero-link":
        path.symlink_to("/dev/zero")  # reading it never ends
    elif kind == "dangling-link":
        path.symlink_to(path.parent / "nowhere")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "folder"])
def test_an_onnx_path_that_is_no_regular_file(tmp_path, capsys, kind):
    assert_refused(kdforge(capsys, "profile", _plant(tmp_path / "model.onnx", kind)), "regular file")


# torch.export archives: every class of attack the loader would run is refused before it opens

def _archive(tmp_path: Path, tamper=None) -> Path:
    program = torch.export.export(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval(),
                                  (torch.zeros(1, 1, 8, 8),))
    good = tmp_path / "good.pt2"
    torch.export.save(program, good)
    if tamper is None:
        return good
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(evil, "w") as target:
        members = {i.filename: source.read(i.filename) for i in source.infolist()}
        tampered = tamper(members)
        for name, data in tampered.items() if isinstance(tampered, dict) else tampered:
            target.writestr(name, data)
    return evil


def _model_json(members: dict, change) -> dict:
    name = next(n for n in members if n.endswith("models/model.json"))
    model = json.loads(members[name])
    change(model)
    return {**members, name: json.dumps(model).encode()}


PT2_ATTACKS = {
    "plain": None,
    "aotinductor-library": lambda m: {**m, "good/data/aotinductor/model/model.so": b"\x7fELF",
                                      "good/data/aotinductor/model/model_compile_flags.json": b'{"cmd": "touch MARKER"}'},
    "traversing-member": lambda m: {**m, "good/../../MARKER": b"x"},
    "guard-code": lambda m: _model_json(m, lambda j: j.update(guards_code=["__import__('os').system('touch MARKER')"])),
    "file-writing-op": lambda m: _model_json(m, lambda j: j["graph_module"]["graph"]["nodes"][0].update(
        target="torch.ops.aten.from_file.default")),
    "symbolic-shape-evaluated-by-sympy": lambda m: _model_json(m, lambda j: j["graph_module"]["graph"]["tensor_values"][
        next(iter(j["graph_module"]["graph"]["tensor_values"]))]["sizes"].__setitem__(
        0, {"as_expr": {"expr_str": "__import__('os').system('touch MARKER')", "hint": None}})),
    "pickled-payload": lambda m: _weights_config(m, lambda c: next(iter(c["config"].values())).update(use_pickle=True)),
    "duplicate-member": lambda m: [*m.items(), (next(n for n in m if n.endswith("model.json")), b"{}")],
}


def _weights_config(members: dict, change) -> dict:
    name = next(n for n in members if n.endswith("_weights_config.json"))
    config = json.loads(members[name])
    change(config)
    return {**members, name: json.dumps(config).encode()}


@pytest.mark.parametrize("attack", PT2_ATTACKS)
def test_torch_export_archives_are_not_opened(tmp_path, capsys, monkeypatch, attack):
    monkeypatch.chdir(tmp_path)
    path = _archive(tmp_path, PT2_ATTACKS[attack])
    assert_refused(kdforge(capsys, "profile", path), "does not open torch.export archives")
    assert not list(tmp_path.rglob("MARKER")) and not (tmp_path.parent / "MARKER").exists()


# configs

def _config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _valid_yaml(tmp_path) -> str:
    return yaml.safe_dump(tiny_config(tmp_path / "run"))


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))

CONFIG_CASES = [
    ("billion-laughs-in-model-args", lambda t: _valid_yaml(t).replace(
        "teacher:\n", "laughs: {}\nteacher:\n  model_args: {lol: *i}\n").replace("laughs: {}\n", BILLION_LAUGHS),
     "expands to more than"),
    ("deep-nesting", lambda t: "name: x\nstudents: " + "[" * 50_000 + "]" * 50_000 + "\n", "nest"),
    ("deep-block-nesting", lambda t: "name: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)), "nest"),
    ("non-utf8", lambda t: b"name: \xff\xfe tiny\n", "not UTF-8"),
    ("python-object-tag", lambda t: "name: !!python/object/apply:os.system ['touch MARKER']\n", "not valid YAML"),
    ("top-level-list", lambda t: "- 1\n- 2\n", "mapping"),
    ("empty", lambda t: "", "mapping"),
    ("model-args-not-a-mapping", lambda t: _valid_yaml(t).replace("teacher:\n", "teacher:\n  model_args: [1, 2]\n"),
     "model_args"),
    ("unknown-model-args", lambda t: _valid_yaml(t).replace("teacher:\n", "teacher:\n  model_args: {width: 4}\n"),
     "cannot be built with model_args"),
    ("giant-model-args", lambda t: _valid_yaml(t).replace("model: resnet8\n  train", "model: mobilenetv2\n  model_args: "
                                                          "{width_mult: 1000.0}\n  train", 1), "parameters"),
    ("model-args-of-a-wrong-type", lambda t: _valid_yaml(t).replace("model: resnet8\n  train", "model: mobilenetv2\n  "
                                                                    "model_args: {width_mult: wide}\n  train", 1), "model_args"),
]


@pytest.mark.parametrize("case,text,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_hostile_configs(tmp_path, capsys, monkeypatch, case, text, expected):
    monkeypatch.chdir(tmp_path)
    line = assert_refused(kdforge(capsys, "run", _config(tmp_path, text(tmp_path)), "--only", "data", "--only", "teacher"),
                          expected)
    assert "c.yaml" in line or "model_args" in line
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("assignment,expected", [
    ("=1", "write it as key=value"), ("export.=1", "write it as key=value"), ("a..b=1", "write it as key=value"),
    ("name", "write it as key=value"), ("name.sub=1", "not a section"), ("export.opset=[", "not valid YAML"),
    ("export.opset=!!python/name:os.system", "not valid YAML"), ("seed=\x1b[2J", "control characters"),
])
def test_malformed_set_values(tmp_path, capsys, assignment, expected):
    config = _config(tmp_path, _valid_yaml(tmp_path))
    assert_refused(kdforge(capsys, "run", config, "--only", "data", "--set", assignment), expected)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "oversized"])
def test_a_config_path_that_is_no_small_regular_file(tmp_path, capsys, kind):
    path = tmp_path / "c.yaml"
    if kind == "oversized":
        path.write_text("# padding\n" * 200_000)
    else:
        _plant(path, kind)
    assert_refused(kdforge(capsys, "run", path), "regular file" if kind != "oversized" else "larger than")


# run directories and data folders

def _run_dir(tmp_path: Path) -> Path:
    """A run directory as kdforge leaves it after the data stage, and its config."""
    raw = tiny_config(tmp_path / "run")
    config = _config(tmp_path, yaml.safe_dump(raw))
    (tmp_path / "run" / "data").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "run" / "data" / "summary.json").write_text(json.dumps(
        {"name": "digits", "num_classes": 10, "in_channels": 1, "image_size": 8, "teacher_classes": None}))
    (tmp_path / "run" / "students" / "ce").mkdir(parents=True)
    from kdforge.train.models import create_model

    torch.save({"model": create_model("resnet8", 10, 1).state_dict()}, tmp_path / "run" / "students" / "ce" / "checkpoint.pt")
    return config


@pytest.mark.parametrize("summary,expected", [
    ("{", "data summary"), ("[]", "corrupt"), ('{"num_classes": "ten", "in_channels": 1, "image_size": 8}', "corrupt"),
    ('{"num_classes": 10, "in_channels": 1, "image_size": 1e9}', "corrupt"),
    ("[" * 10_000 + "]" * 10_000, "nest"),
])
def test_a_corrupt_data_summary(tmp_path, capsys, summary, expected):
    _run_dir(tmp_path)
    (tmp_path / "run" / "data" / "summary.json").write_text(summary)
    assert_refused(kdforge(capsys, "profile", tmp_path / "run" / "students" / "ce" / "checkpoint.pt"), expected)


@pytest.mark.parametrize("manifest", ['{"units": []}', '{"units": {"data": "done"}}', '{"units": {"data": {"status": 1}}}',
                                      '{"units": {"data": {"status": "done", "fingerprint": "x", "outputs": [1]}}}',
                                      "[1]", "\xff", "[" * 10_000])
def test_a_manifest_of_the_wrong_shape(tmp_path, capsys, manifest):
    config = _run_dir(tmp_path)
    (tmp_path / "run" / "manifest.json").write_text(manifest, errors="surrogateescape")
    before = (tmp_path / "run" / "manifest.json").read_bytes()
    assert_refused(kdforge(capsys, "run", config, "--only", "data"), "manifest.json is corrupt")
    assert (tmp_path / "run" / "manifest.json").read_bytes() == before, "the record of the run was lost"


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 12), (i * 90, 40, 200)).save(root / split / label / f"{i}.jpg")
    return root


def _folder_config(tmp_path: Path, root: Path, name: str = "folder") -> Path:
    raw = tiny_config(tmp_path / "run", data={"name": name, "root": str(root), "image_size": 8, "num_workers": 0})
    return _config(tmp_path, yaml.safe_dump(raw))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "dangling-link"])
def test_an_image_folder_with_a_device_or_pipe(tmp_path, capsys, kind):
    root = _image_folder(tmp_path / "images")
    _plant(root / "train" / "a" / "planted.jpg", kind)
    assert_refused(kdforge(capsys, "run", _folder_config(tmp_path, root), "--only", "data"), "planted.jpg")


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


HOSTILE_IMAGES = {  # name: (file name, bytes); each beside good JPEGs and a PNG (and a GIF, not a training suffix)
    "jpeg-declaring-60000x60000": ("planted.jpg", bytes.fromhex("ffd8ffc0001108ea60ea6003012200021101031101ffd9")),
    "png-declaring-10000x10000": ("planted.png", _png_header(10000, 10000)),  # past the limit, under the 2x where PIL itself raises
    "empty-jpg": ("planted.jpg", b""),
    "text-named-png": ("planted.png", b"<html>not found</html>"),
    "bmp-of-two-bytes": ("planted.bmp", b"BM"),
    "webp-header-only": ("planted.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
}


def _hostile_folder(root: Path, kind: str) -> Path:
    from PIL import Image

    _image_folder(root)
    Image.new("P", (12, 12), 3).save(root / "train" / "b" / "good.gif")
    Image.new("RGB", (12, 12), (9, 9, 9)).save(root / "train" / "b" / "good.png")
    name, data = HOSTILE_IMAGES[kind]
    (root / "train" / "a" / name).write_bytes(data)
    return root


@pytest.mark.parametrize("entry", ["data bench", "data pack", "run"])
@pytest.mark.parametrize("kind", list(HOSTILE_IMAGES))
def test_a_hostile_image_is_one_sentence_on_every_path_that_opens_it(tmp_path, capsys, entry, kind):
    """The training loader, `kdforge data bench`'s own decoding and `kdforge data pack` share one
    guarded decoder: a declared size past the limit or a file no decoder reads is one sentence."""
    root = _hostile_folder(tmp_path / "images", kind)
    config = _folder_config(tmp_path, root)
    command = {"data bench": ("data", "bench", config, "--steps", 2), "data pack": ("data", "pack", root, tmp_path / "shards"),
               "run": ("run", config, "--only", "data", "--only", "teacher")}[entry]
    assert_refused(kdforge(capsys, *command), HOSTILE_IMAGES[kind][0])


def test_data_bench_of_a_folder_smaller_than_one_batch_times_that_batch(tmp_path, capsys):
    code, out, err = kdforge(capsys, "data", "bench", _folder_config(tmp_path, _image_folder(tmp_path / "images")), "--steps", 2)
    assert code == 0, err
    assert "training loader (torch):" in out and "loader / (cores x decode)" in out


def _shards(tmp_path: Path) -> Path:
    from kdforge.train.data.shards import pack

    pack(_image_folder(tmp_path / "images"), tmp_path / "shards", 2)
    return tmp_path / "shards"


def _index(shards: Path, change) -> None:
    index = json.loads((shards / "index.json").read_text())
    change(index)
    (shards / "index.json").write_text(json.dumps(index))


INDEX_CASES = [
    ("fifo", lambda s: ((s / "index.json").unlink(), _plant(s / "index.json", "fifo")), "regular file"),
    ("dev-zero-link", lambda s: ((s / "index.json").unlink(), _plant(s / "index.json", "dev-zero-link")), "regular file"),
    ("deep-nesting", lambda s: (s / "index.json").write_text("[" * 100_000 + "]" * 100_000), "nest"),
    ("not-json", lambda s: (s / "index.json").write_text("{"), "malformed"),
    ("classes-not-names", lambda s: _index(s, lambda i: i.update(classes=[{"a": 1}])), "malformed"),
    ("shard-is-a-string", lambda s: _index(s, lambda i: i["splits"].update(train=["x.tar"])), "malformed"),
    ("shard-pipe-url", lambda s: _index(s, lambda i: i["splits"]["train"][0].update(url="pipe:touch MARKER")), "malformed"),
    ("shard-is-dev-zero", lambda s: (_plant(s / "z.tar", "dev-zero-link"),
                                     _index(s, lambda i: i["splits"]["train"][0].update(url="z.tar"))), "regular file"),
    ("lying-sample-count", lambda s: _index(s, lambda i: i["splits"]["train"][-1].update(
        nsamples=i["splits"]["train"][-1]["nsamples"] + 40, labels=i["splits"]["train"][-1]["labels"] + [0] * 40)),
     "fewer or other samples"),
]


@pytest.mark.parametrize("case,damage,expected", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_hostile_shard_indexes(tmp_path, capsys, monkeypatch, case, damage, expected):
    monkeypatch.chdir(tmp_path)
    shards = _shards(tmp_path)
    damage(shards)
    config = _folder_config(tmp_path, shards, "webdataset")
    assert_refused(kdforge(capsys, "data", "bench", config, "--steps", 2), expected)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("factory,expected", [
    (".x:y", "neither a registered model nor a factory"), ("a:b:c", "neither a registered model nor a factory"), (":y", "neither"),
    ("os:getpid", "returned a int"), ("kdforge_raises_at_import:build", "cannot import it (RuntimeError"),
])
def test_factory_strings(tmp_path, capsys, monkeypatch, factory, expected):
    (tmp_path / "kdforge_raises_at_import.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert_refused(kdforge(capsys, "profile", factory, "--input", "1x1x8x8"), expected)


def test_argument_mistakes_are_one_line(capsys):
    assert_refused(kdforge(capsys, "profile", "x.onnx", "--threads", "many"), "invalid int value")
    assert_refused(kdforge(capsys, "profile", "x.onnx", "--threads", "0"), "--threads")
    assert_refused(kdforge(capsys, "frobnicate"), "invalid choice")


def _deploy_file(path: Path, **header) -> Path:
    from kdforge.export.strip import FORMAT
    from kdforge.train.models import create_model

    blob = {"format": FORMAT, "model": "resnet8", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8,
            "method": "ce", "state_dict": create_model("resnet8", 10, 1).state_dict(), **header}
    torch.save(blob, path)
    return path


@pytest.mark.parametrize("header,expected", [
    ({"image_size": 100_000}, "would take"), ({"image_size": "8"}, "positive integer"), ({"image_size": -8}, "positive"),
    ({"num_classes": 1 << 30}, "positive number of classes"), ({"in_channels": 0}, "positive"),
])
@pytest.mark.parametrize("command", ["profile", "export"])
def test_a_deploy_file_that_declares_giant_or_bad_sizes(tmp_path, capsys, header, expected, command):
    path = _deploy_file(tmp_path / "deploy.pt", **header)
    assert_refused(kdforge(capsys, command, path, *(["-o", tmp_path / "m.onnx"] if command == "export" else [])), expected)
    assert not (tmp_path / "m.onnx").exists()


def test_a_factory_input_or_activations_past_the_bound(tmp_path, capsys, monkeypatch):
    (tmp_path / "kdforge_wide_model.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Conv2d(1, 512, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_refused(kdforge(capsys, "profile", "kdforge_wide_model:build", "--input", "1x3x100000x100000"), "would take")
    # 1x512x256x256 fp32 = 128 MiB of output
    assert_refused(kdforge(capsys, "profile", "kdforge_wide_model:build", "--input", "1x1x256x256", "--max-tensor-mib", 64),
                   "MiB of activations at once")
    assert kdforge(capsys, "profile", "kdforge_wide_model:build", "--input", "1x1x16x16", "--rounds", 5, "--round-ms", 0.1)[0] == 0


@pytest.mark.parametrize("kind", ["fifo-image", "out-is-a-file"])
def test_data_pack_refuses_a_pipe_or_a_file_for_a_folder(tmp_path, capsys, kind):
    root = _image_folder(tmp_path / "images")
    out = tmp_path / "shards"
    if kind == "fifo-image":
        _plant(root / "val" / "b" / "pipe.png", "fifo")
    else:
        out.write_text("not a folder")
    assert_refused(kdforge(capsys, "data", "pack", root, out), "pipe.png" if kind == "fifo-image" else "is a file")


def test_a_file_too_slow_to_time_within_a_minute_is_counted_not_timed(tmp_path, capsys, monkeypatch):
    """The timing budget, shrunk so that a tiny graph exceeds it: what a Loop of 10^8 steps does."""
    from kdforge.profile import standalone

    monkeypatch.setattr(standalone, "TIMING_BUDGET_S", 1e-9)
    code, out, err = kdforge(capsys, "profile", _save(_relu([1, 3, 4, 4]), tmp_path / "m.onnx"), "--json", tmp_path / "p.json")
    assert code == 0, err
    assert "ONNX Runtime latency  not timed: one run on zeros took" in out and "lower --rounds" in out
    assert "not_timed" in json.loads((tmp_path / "p.json").read_text())["latency"]["onnxruntime"]


def test_a_sparse_terabyte_onnx_file_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(1 << 40)  # a terabyte of zeros that takes no disk
    assert_refused(kdforge(capsys, "profile", path), "larger than 2,048 MiB")


def test_an_opset_the_exporter_cannot_write_is_refused_and_one_it_can_is_written(tmp_path, capsys):
    """torch's exporter writes opset 18 and converts upwards; below 18 it used to print a traceback
    and quietly write 18."""
    deploy = _deploy_file(tmp_path / "deploy.pt")
    assert_refused(kdforge(capsys, "export", deploy, "--opset", 13, "-o", tmp_path / "a.onnx"), "--opset 13")
    assert_refused(kdforge(capsys, "export", deploy, "--opset", 999, "-o", tmp_path / "a.onnx"), "knows opsets up to")
    assert_refused(kdforge(capsys, "run", _config(tmp_path, _valid_yaml(tmp_path)), "--set", "export.opset=17"),
                   "key 'export.opset'")
    code, _, err = kdforge(capsys, "export", deploy, "--opset", 20, "-o", tmp_path / "b.onnx")
    assert code == 0 and err == "", err
    assert [o.version for o in onnx.load(tmp_path / "b.onnx").opset_import if o.domain == ""] == [20]


def test_a_deploy_file_header_reaches_the_terminal_escaped(tmp_path, capsys):
    path = _deploy_file(tmp_path / "deploy.pt", method="ce\x1b]0;pwned\x07\nsecond line")
    code, out, err = kdforge(capsys, "profile", path, "--rounds", 5, "--round-ms", 0.1)
    assert code == 0, err
    assert "ce\\x1b]0;pwned\\x07\\nsecond line" in out and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
