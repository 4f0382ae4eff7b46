"""ONNX Runtime sessions for exported students, with the kdforge::AdderConv2d kernel registered.

Imports no torch: an inference process that runs kdforge's ONNX files needs onnxruntime,
numpy, numba and (for adder models) onnxruntime-extensions.

How the adder node runs here, and why: the PyPI onnxruntime wheel ships no C/C++ headers, so a
compiled custom-op library cannot be built against it on a user's machine. onnxruntime-extensions
(PyPI) loads Python-defined operators into a session; its operators live in the fixed domain
`ai.onnx.contrib` and take scalar attributes only. So `session()` rewrites each
kdforge::AdderConv2d node in memory at load time (the file on disk is untouched) into
ai.onnx.contrib::KdforgeAdderConv2d with scalar stride/pad attributes, whose Python body calls
the same numba kernel as the torch op (kdforge.nn.adder_cpu). It is robust (pip-installable,
no compiler) and exact; its cost is onnxruntime-extensions' copy of each output tensor
(about 0.1 us per element on this machine), which dominates for large batches.
"""

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from kdforge.errors import UserError

ADDER_DOMAIN, ADDER_OP = "kdforge", "AdderConv2d"
_CONTRIB_DOMAIN, _CONTRIB_OP = "ai.onnx.contrib", "KdforgeAdderConv2d"
_SCALAR_ATTRS = ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")
_registered = False


def _register_adder_kernel() -> str:
    """Defines the Python operator once per process; returns the extensions library path."""
    global _registered
    try:
        PyCustomOpDef, get_library_path, onnx_op = _import_extensions()
    except ImportError:
        raise UserError("this ONNX file has kdforge::AdderConv2d nodes; install onnxruntime-extensions to run them "
                        "in ONNX Runtime, or export with export.portable: true.") from None
    if not _registered:
        from kdforge.nn.adder_cpu import adder_conv2d_forward

        @onnx_op(op_type=_CONTRIB_OP, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float],
                 attrs={name: PyCustomOpDef.dt_int64 for name in _SCALAR_ATTRS})
        def _adder(x, w, **attrs):
            if attrs["pad_top"] != attrs["pad_bottom"] or attrs["pad_left"] != attrs["pad_right"]:
                raise ValueError("kdforge AdderConv2d supports symmetric padding only")
            return adder_conv2d_forward(x, w, (attrs["stride_h"], attrs["stride_w"]), (attrs["pad_top"], attrs["pad_left"]))

        _registered = True
    return get_library_path()


def _import_extensions():
    """onnxruntime-extensions imports torch whenever it can (for a Whisper converter kdforge does
    not use; the import is optional there). An inference process should not load torch for it,
    so torch is hidden during that one import unless the process already has it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    finally:
        if hide:
            del sys.modules["torch"]
    return PyCustomOpDef, get_library_path, onnx_op


def rewrite_adder_nodes(model: onnx.ModelProto) -> int:
    """kdforge::AdderConv2d -> ai.onnx.contrib::KdforgeAdderConv2d in place; returns how many."""
    count = 0
    for node in model.graph.node:
        if node.domain == ADDER_DOMAIN and node.op_type == ADDER_OP:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            values = [*attrs.get("strides", [1, 1]), *attrs.get("pads", [0, 0, 0, 0])]
            del node.attribute[:]
            node.attribute.extend(onnx.helper.make_attribute(k, int(v)) for k, v in zip(_SCALAR_ATTRS, values))
            node.domain, node.op_type = _CONTRIB_DOMAIN, _CONTRIB_OP
            count += 1
    if count:
        kept = [o for o in model.opset_import if o.domain != ADDER_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept + [onnx.helper.make_opsetid(_CONTRIB_DOMAIN, 1)])
    return count


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A session on CPU (and CUDA first where onnxruntime-gpu has it), `threads` intra-op threads,
    with the kdforge adder kernel registered when the file has adder nodes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        model = onnx.load(os.fspath(path))
    except Exception:
        raise UserError(f"{path} is not a readable ONNX file.") from None
    if rewrite_adder_nodes(model):
        options.register_custom_ops_library(_register_adder_kernel())
        providers = ["CPUExecutionProvider"]  # the Python operator runs on the CPU
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as e:  # ORT's own message names the node or op it cannot run
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"ONNX Runtime cannot open {path}: {first}") from None


def run(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})[0]
