"""Fuzz targets for the readers of files from outside: each takes the bytes of one file and must
either return or raise UserError. Anything else (another exception, a signal, a hang) is a
crash. Used by tests/test_fuzz.py (Hypothesis, a short budget in `make test`, a long one with
`make fuzz`), which also replays every crash ever found, kept in tests/fuzz_regressions/TARGET/.

Targets: the ONNX loader and counter, the checkpoint loader (torch.save files: kdforge opens no
torch.export archive, so this is the loader of torch files that remains), the config loader, the
shard index reader and the image decoder (every path that decodes a sample, each image format)."""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from kdforge.errors import UserError


def _onnx(data: bytes, folder: Path) -> None:
    from unittest import mock

    from kdforge.export.onnx_file import load_model
    from kdforge.profile import onnx_counts

    (folder / "m.onnx").write_bytes(data)
    model = load_model(folder / "m.onnx")
    # the capped child run is its own process (tested in test_hostile_inputs); here shapes it would
    # tell stay unknown, which is the counter's hardest case
    with mock.patch.object(onnx_counts, "trial_run", lambda *args, **kwargs: {"shapes": {}, "seconds": None}):
        onnx_counts.count_onnx(model, 2, folder / "m.onnx", max_bytes=64 << 20)


def _checkpoint(data: bytes, folder: Path) -> None:
    from kdforge.untrusted import load_torch

    (folder / "c.pt").write_bytes(data)
    load_torch(folder / "c.pt", "checkpoint")


def _config(data: bytes, folder: Path) -> None:
    from kdforge.config import load_config

    (folder / "c.yaml").write_bytes(data)
    load_config(folder / "c.yaml")


def _shard_index(data: bytes, folder: Path) -> None:
    from kdforge.train.data.shards import _checked_index

    (folder / "index.json").write_bytes(data)
    (folder / "train-000000.tar").write_bytes(b"")
    (folder / "test-000000.tar").write_bytes(b"")
    _checked_index(folder)


def _image(data: bytes, folder: Path) -> None:
    """Every entry point that decodes a user's image: the training crops and evaluation (ImageFolder),
    `kdforge data pack`'s header check and `kdforge data bench`'s decoding."""
    from kdforge.train.data.bench import decode_rate
    from kdforge.train.data.folder import ImageFolder
    from kdforge.train.data.images import header

    (folder / "x.jpg").write_bytes(data)
    for train, key in ((True, (0, 3)), (False, 0)):
        ImageFolder([(folder / "x.jpg", 0)], 16, train=train, seed=1)[key]
    header("x.jpg", data)
    decode_rate([folder / "x.jpg"], seconds=0.0)


TARGETS = {"onnx": _onnx, "checkpoint": _checkpoint, "config": _config, "shard_index": _shard_index, "image": _image}


def run(target: str, data: bytes) -> str | None:
    """None when the reader returned or raised UserError; else the crash, described."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            TARGETS[target](data, Path(folder))
        except UserError:
            pass
        except Exception as e:  # noqa: BLE001 - that is the finding
            return f"{type(e).__name__}: {e}"
    return None


def seeds() -> dict[str, list[bytes]]:
    """Valid files of each kind, which the fuzzer mutates."""
    conv = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "b"], ["y"], transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.ones((3, 2), np.float32), "fc"), numpy_helper.from_array(np.zeros(3, np.float32), "b")]),
        opset_imports=[helper.make_opsetid("", 17)])
    checkpoint = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2, 3)}, "epoch": 3, "rng": np.arange(4)}, checkpoint)
    config = (b"name: fuzz\nseed: 0\ndata: {name: digits}\nteacher: {model: resnet8, model_args: {}, train: {epochs: 1}}\n"
              b"students:\n- {name: kd, method: kd, model: resnet8, options: {temperature: 4.0}}\n"
              b"defaults: &d {epochs: 1, lr: 0.1}\nprofile: {rounds: 5, sweep: [1, 4]}\n")
    index = json.dumps({"classes": ["a", "b"], "splits": {
        "train": [{"url": "train-000000.tar", "nsamples": 2, "labels": [0, 1]}],
        "test": [{"url": "test-000000.tar", "nsamples": 1, "labels": [1]}]}}).encode()
    images = []
    for fmt in ("JPEG", "PNG", "BMP", "WEBP", "PPM", "GIF", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, fmt)
        images.append(buffer.getvalue())
    return {"onnx": [conv.SerializeToString()], "checkpoint": [checkpoint.getvalue()], "config": [config],
            "shard_index": [index], "image": images}


def onnx_variants(model_bytes: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Structured edits of an ONNX model (protobuf-level, where byte flips rarely reach): each edit
    (what, where, value) changes a node's op type or inputs (to a later node's output: a cycle), an
    input's dims or element type, an attribute's value, an initializer's dims (data that no longer
    holds them, a zero dimension), or removes a node."""
    model = onnx.ModelProto.FromString(model_bytes)
    ops = ["Conv", "Gemm", "MatMul", "Relu", "Add", "Reshape", "ConstantOfShape", "Expand", "Range", "Sign", "Loop",
           "ConvTranspose", "BatchNormalization", "QLinearConv", "Resize", "Tile", "Concat", "Gather", "AdderConv2d"]
    names = ["x", "w", "c", "r", "p", "f", "fc", "b", "y", "", "missing"]
    for what, where, value in edits:
        nodes = model.graph.node
        node = nodes[where % len(nodes)] if len(nodes) else None
        if what == 0 and node is not None:
            node.op_type = ops[value % len(ops)]
            node.domain = "kdforge" if node.op_type == "AdderConv2d" else ""
        elif what == 1 and node is not None:
            del node.input[:]
            node.input.extend(names[(value >> (4 * k)) % len(names)] for k in range(value % 5))
        elif what == 2:
            dims = model.graph.input[0].type.tensor_type.shape.dim
            if len(dims):
                dims[where % len(dims)].dim_value = [0, -1, 1, 7, 1 << 31, 1 << 62][value % 6]
            else:
                dims.add().dim_value = value % 9
        elif what == 3:
            model.graph.input[0].type.tensor_type.elem_type = value % 25
        elif what == 4 and node is not None:
            node.attribute.append(helper.make_attribute(["pads", "strides", "group", "kernel_shape", "axis", "to"][where % 6],
                                                        [value % 9 - 4] * (1 + value % 5) if where % 2 else value % 9 - 4))
        elif what == 5 and len(nodes):
            del nodes[where % len(nodes)]
        elif what == 6:
            model.graph.initializer[where % len(model.graph.initializer)].dims[:] = [value % 7 - 1, value % 5]
        elif what == 7 and node is not None and node.input:  # reads a later node's output: a cycle, or a tensor not yet given
            later = nodes[(where + 1 + value % len(nodes)) % len(nodes)]
            node.input[value % len(node.input)] = later.output[0] if later.output else "missing"
    return model.SerializeToString()
